"""Rendering a search vector back into the WebUI's emphasis syntax, with verification
(see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from lib_pinning.bounds import DEFAULT_WEIGHT_RANGE, UNBOUNDED, WeightRange
from lib_pinning.prompt.parser import _parse_structure
from lib_pinning.prompt.pieces import ParsedPrompt, Piece, _product
from lib_pinning.prompt.syntax import (
    _AND_WEIGHT_END,
    _ESCAPED,
    _EXTRA_NETWORK,
    _WEIGHT_LIKE_END,
    _WORD_CHAR,
    ROUND_MULTIPLIER,
    SCHEDULE_GUARD,
    SQUARE_MULTIPLIER,
    WEIGHT_DECIMALS,
    PromptSyntaxError,
)


def _format_number(value: float) -> str:
    """Shortest decimal that parses back to exactly ``value``, never in exponent notation."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _round_weight(value: float, weight_range: WeightRange = UNBOUNDED) -> float:
    # Rounding a value just inside the range may step over an end that has more decimals.
    return weight_range.clamp(float(_format_number(round(value, WEIGHT_DECIMALS))))


def _piece_chains(
    parsed: ParsedPrompt, offsets: Sequence[float], weight_range: WeightRange = DEFAULT_WEIGHT_RANGE
) -> list[tuple[float, ...]]:
    """The multipliers each piece is rendered with."""
    chains = []
    for piece in parsed.pieces:
        if piece.kind in ("network", "and", "tail"):
            chains.append(())
            continue
        if piece.unit is not None and offsets[piece.unit] != 0.0:
            weight = _round_weight(weight_range.fold(piece.base_weight + offsets[piece.unit]), weight_range)
            chains.append(() if weight == 1.0 else (weight,))
        else:
            chains.append(tuple(f for f in piece.factors if f != 1.0))
    return chains


class _Fragment:
    """Rendered text with two shadows used for safety checks: without extra networks (what the
    WebUI parses) and with edits replaced by ``0`` (an edit may resolve to a number)."""

    def __init__(self, full: str = "", plain: str = "", probe: str = "") -> None:
        self.full = full
        self.plain = plain
        self.probe = probe

    def add(self, full: str, plain: str | None = None, probe: str | None = None) -> None:
        self.full += full
        self.plain += full if plain is None else plain
        self.probe += (full if plain is None else plain) if probe is None else probe

    def wrap(self, prefix: str, suffix: str) -> None:
        self.full = prefix + self.full + suffix
        self.plain = prefix + self.plain + suffix
        self.probe = prefix + self.probe + suffix


def _protected_indices(text: str, positive: bool, first_in_part: bool, at_part_end: bool, tail_has_weight: bool) -> set[int]:
    """Where a lone backslash must go so that literal text cannot turn into syntax.

    A backslash before a character that is not a bracket or backslash produces an empty entry in
    the same bracket context, which merges away: invisible to the weights, but it stops the WebUI's
    regexes from seeing ``AND``/``BREAK`` keywords, an extra network ``<name:``, or an ``AND`` part
    weight ``:N`` at the end of a part.
    """

    def is_word(k: int) -> bool:
        return 0 <= k < len(text) and _WORD_CHAR.match(text[k]) is not None

    indices: set[int] = set()
    keywords = ("AND", "BREAK") if positive else ("BREAK",)
    for keyword in keywords:
        for match in re.finditer(keyword, text):
            if not is_word(match.start() - 1) and not is_word(match.end()):
                indices.add(match.start() + 1)
    if positive:
        for match in re.finditer(r"<(\w+)", text):
            if match.end() == len(text) or text[match.end()] == ":":
                indices.add(match.start(1))
        if first_in_part and is_word(0):
            indices.add(0)
        if at_part_end and not tail_has_weight:
            weight = _AND_WEIGHT_END.search(text)
            if weight:
                indices.add(weight.start(1))
    return indices


def _escape(text: str, protect: set[int], grammar: bool) -> str:
    """Escape ``text`` so that it parses back literally.

    With ``grammar``, ``:`` and ``|`` get a lone backslash in front, so that the schedule grammar
    reads them as plain text: a bare ``|`` outside an alternation makes it reject the whole part
    (turning its edits into literal text), and a stray ``:`` next to a schedule makes the WebUI's
    reading of it vary between runs (see :func:`_find_edits`). For emphasis the backslash is
    invisible.
    """
    out = []
    for k, ch in enumerate(text):
        if k in protect or (grammar and ch in ":|"):
            out.append("\\")
        out.append("\\" + ch if ch in _ESCAPED else ch)
    return "".join(out)


def _group_pieces(pieces: list[Piece], chains: list[tuple[float, ...]]) -> list[tuple[tuple[float, ...], list[Piece]]]:
    """Consecutive pieces rendered with the same multipliers share one bracket group; networks go
    with the group they sit in (the WebUI removes them before reading brackets)."""
    groups: list[tuple[tuple[float, ...], list[Piece]]] = []
    waiting: list[Piece] = []
    for piece, chain in zip(pieces, chains):
        if piece.kind == "network":
            (groups[-1][1] if groups else waiting).append(piece)
        elif groups and groups[-1][0] == chain:
            groups[-1][1].append(piece)
        else:
            groups.append((chain, waiting + [piece]))
            waiting = []
    if waiting:
        groups.append(((), waiting))
    return groups


def _render_part(
    pieces: list[Piece], chains: list[tuple[float, ...]], positive: bool, first_part: bool, tail_has_weight: bool
) -> _Fragment:
    """Render the pieces of one AND part (text, edits, breaks, networks; not its tail)."""
    groups = _group_pieces(pieces, chains)
    escape_grammar = any(p.kind == "edit" for p in pieces)
    out = _Fragment()
    for g, (chain, members) in enumerate(groups):
        inner = _Fragment()
        colon_text = False
        k = 0
        while k < len(members):
            piece = members[k]
            if piece.kind in ("text", "network"):
                run = []
                while k < len(members) and members[k].kind in ("text", "network"):
                    run.append(members[k])
                    k += 1
                text = "".join(p.text for p in run if p.kind == "text")
                colon_text = colon_text or ":" in text or "|" in text
                protect = _protected_indices(
                    text,
                    positive,
                    first_in_part=not first_part and not chain and out.plain == "" and inner.plain == "",
                    at_part_end=not chain and g == len(groups) - 1 and k == len(members),
                    tail_has_weight=tail_has_weight,
                )
                offset = 0
                for p in run:
                    if p.kind == "network":
                        inner.add(p.text, plain="", probe="")
                    else:
                        local = {i - offset for i in protect if offset <= i < offset + len(p.text)}
                        inner.add(_escape(p.text, local, escape_grammar))
                        offset += len(p.text)
                continue
            if piece.kind == "edit":
                inner.add(piece.text, plain=_EXTRA_NETWORK.sub("", piece.text), probe="0")
            else:  # break: keep the keyword a separate word whatever ends up around it
                text = piece.text
                if not text[:1].isspace():
                    text = " " + text
                if not text[-1:].isspace():
                    text += " "
                inner.add(text, plain=_EXTRA_NETWORK.sub("", text))
            k += 1
        for factor in chain:
            if factor == ROUND_MULTIPLIER and not _WEIGHT_LIKE_END.search(inner.probe):
                inner.wrap("(", ")")
            elif factor == SQUARE_MULTIPLIER and not colon_text:
                inner.wrap("[", "]")
            else:
                inner.wrap("(", ":" + _format_number(factor) + ")")
        out.add(inner.full, inner.plain, inner.probe)
    return out


def render_prompt(
    parsed: ParsedPrompt,
    offsets: Sequence[float] | np.ndarray,
    *,
    verify: bool = True,
    weight_range: WeightRange = DEFAULT_WEIGHT_RANGE,
    guard: bool = False,
) -> str:
    """Render ``parsed`` with one weight offset per unit (see the package docstring).

    Every changed weight is ``base + offset`` reflected into ``weight_range``. With ``guard``, each
    part with emphasis brackets and no prompt editing starts with :data:`SCHEDULE_GUARD`, which
    spares the WebUI seconds of parsing per prompt. With ``verify`` the result is parsed again and
    checked to give the intended weights; a mismatch is a bug and raises RuntimeError rather than
    letting a wrong prompt reach the model.
    """
    offsets = [float(v) for v in offsets]
    if len(offsets) != parsed.unit_count:
        raise ValueError(f"expected {parsed.unit_count} offsets, got {len(offsets)}")
    if not all(math.isfinite(v) for v in offsets):
        raise ValueError("weight offsets must be finite")
    chains = _piece_chains(parsed, offsets, weight_range)
    positive = not parsed.negative
    parts: list[tuple[list[Piece], list[tuple[float, ...]], Piece | None]] = [([], [], None)]
    separators: list[Piece] = []
    for piece, chain in zip(parsed.pieces, chains):
        if piece.kind == "and":
            separators.append(piece)
            parts.append(([], [], None))
        elif piece.kind == "tail":
            parts[-1] = (parts[-1][0], parts[-1][1], piece)
        else:
            parts[-1][0].append(piece)
            parts[-1][1].append(chain)
    rendered: list[str] = []
    seen = ""  # what the WebUI reads so far (no extra networks), for the AND boundary check
    for index, (pieces, part_chains, tail) in enumerate(parts):
        tail_weight = tail is not None and _AND_WEIGHT_END.search(_EXTRA_NETWORK.sub("", tail.text)) is not None
        fragment = _render_part(pieces, part_chains, positive, first_part=index == 0, tail_has_weight=tail_weight)
        text = fragment.full
        if guard and any(part_chains) and not any(p.kind == "edit" for p in pieces):
            text = SCHEDULE_GUARD + text
            seen += SCHEDULE_GUARD
        seen += fragment.plain
        if tail is not None:
            text += tail.text
            seen += _EXTRA_NETWORK.sub("", tail.text)
        if index < len(separators):
            # "xAND" is not the keyword: keep a non-word character before it (trailing space is
            # dropped with the part's weight). An empty part can leave the previous AND there.
            if _WORD_CHAR.match(seen[-1:]):
                text += " "
                seen += " "
            text += separators[index].text
            seen += _EXTRA_NETWORK.sub("", separators[index].text)
        rendered.append(text)
    result = "".join(rendered)
    if verify:
        _verify_render(parsed, chains, result)
    return result


def _signature(pieces: Sequence[Piece], chains: Sequence[tuple[float, ...]], negative: bool) -> list[Any]:
    """What the WebUI's weights depend on: per AND part, merged (text, weight) runs, edits and
    breaks with their multipliers, and the part weight; plus the extra networks in order.

    Whitespace that makes no tokens and that the WebUI may or may not keep is left out: next to a
    ``BREAK`` (eaten with the keyword when it shares its text chunk) and at the end of a positive
    part (stripped with the part weight unless syntax followed it, as in ``a [``).
    """
    parts: list[list[Any]] = [[]]
    tails: list[float | None] = [None]
    networks: list[str] = []
    for piece, chain in zip(pieces, chains):
        current = parts[-1]
        if piece.kind != "text" and not negative:
            networks.extend(m.group(0) for m in _EXTRA_NETWORK.finditer(piece.text))
        if piece.kind == "and":
            parts.append([])
            tails.append(None)
        elif piece.kind == "tail":
            weight = _AND_WEIGHT_END.search(_EXTRA_NETWORK.sub("", piece.text))
            tails[-1] = float(weight.group(1)) if weight else None
        elif piece.kind == "text":
            weight = _product(chain)
            if current and current[-1][0] == "text" and current[-1][2] == weight:
                current[-1][1] += piece.text
            else:
                current.append(["text", piece.text, weight])
        elif piece.kind != "network":
            current.append([piece.kind, piece.text if piece.kind == "edit" else "BREAK", chain])
    for part in parts:
        for k, entry in enumerate(part):
            if entry[0] != "text":
                continue
            if k > 0 and part[k - 1][0] == "break":
                entry[1] = entry[1].lstrip()
            if (k + 1 < len(part) and part[k + 1][0] == "break") or (k + 1 == len(part) and not negative):
                entry[1] = entry[1].rstrip()
        part[:] = [e for e in part if e[0] != "text" or e[1]]
    return [parts, tails, networks]


def _verify_render(parsed: ParsedPrompt, chains: list[tuple[float, ...]], rendered: str) -> None:
    expected = _signature(parsed.pieces, chains, parsed.negative)
    try:
        again = _parse_structure(rendered, parsed.negative)
    except PromptSyntaxError as exc:
        raise RuntimeError(f"rendered prompt {rendered!r} does not parse: {exc}") from exc
    actual = _signature(again, [tuple(f for f in p.factors if f != 1.0) for p in again], parsed.negative)
    if actual != expected:
        raise RuntimeError(
            f"rendered prompt {rendered!r} does not give the intended weights:\n  intended {expected}\n  got      {actual}"
        )


def effective_weights(
    parsed: ParsedPrompt, offsets: Sequence[float] | np.ndarray, weight_range: WeightRange = DEFAULT_WEIGHT_RANGE
) -> list[tuple[float, ...]]:
    """Per unit, the weights its pieces get when rendered with ``offsets`` (distinct, in order)."""
    offsets = [float(v) for v in offsets]
    chains = _piece_chains(parsed, offsets, weight_range)
    result: list[list[float]] = [[] for _ in range(parsed.unit_count)]
    for piece, chain in zip(parsed.pieces, chains):
        if piece.unit is None:
            continue
        weight = _product(chain)
        if not result[piece.unit] or result[piece.unit][-1] != weight:
            result[piece.unit].append(weight)
    return [tuple(w) for w in result]
