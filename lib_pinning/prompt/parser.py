"""The structured parse: a prompt into weightable units and fixed pieces such as extra networks, prompt
editing, alternation, ``AND`` and ``BREAK`` (see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import dataclasses
import logging
import re

from lib_pinning.prompt.attention import _emphasis_tokens, _parse_weight
from lib_pinning.prompt.edits import _find_edits
from lib_pinning.prompt.pieces import ParsedPrompt, Piece, _product
from lib_pinning.prompt.syntax import (
    _AND,
    _AND_WEIGHT,
    _BREAK,
    _EXTRA_NETWORK,
    _STRAY_NUMBER_CHARS,
    GRANULARITIES,
    ROUND_MULTIPLIER,
    SCHEDULE_GUARD,
    SQUARE_MULTIPLIER,
    Granularity,
    PromptSyntaxError,
)
from lib_pinning.tokenizer import Tokenizer, adapt_tokenizer, default_tokenizer

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Cell:
    """A character, edit, BREAK or lone backslash of one AND part, with its emphasis."""

    kind: str  # "char" | "edit" | "break" | "lone"
    text: str
    start: int  # offsets in the prompt with extra networks removed
    end: int
    factors: list[float] = dataclasses.field(default_factory=list)


class _Source:
    """The prompt after extra networks are cut out, with the map back to the original text."""

    def __init__(self, raw: str, strip_networks: bool) -> None:
        self.raw = raw
        self.networks: list[tuple[int, str]] = []  # (offset in text, source)
        if not strip_networks:
            self.text = raw
            self.raw_index = list(range(len(raw) + 1))
            return
        parts: list[str] = []
        raw_index: list[int] = []
        last = 0
        length = 0
        for match in _EXTRA_NETWORK.finditer(raw):
            parts.append(raw[last : match.start()])
            raw_index.extend(range(last, match.start()))
            length += match.start() - last
            self.networks.append((length, match.group(0)))
            last = match.end()
        parts.append(raw[last:])
        raw_index.extend(range(last, len(raw)))
        raw_index.append(len(raw))
        self.text = "".join(parts)
        self.raw_index = raw_index

    def raw_slice(self, start: int, end: int) -> str:
        """The original text of ``text[start:end]``, including networks strictly inside it."""
        if start >= end:
            return ""
        return self.raw[self.raw_index[start] : self.raw_index[end - 1] + 1]

    def position(self, offset: int) -> int:
        return self.raw_index[min(offset, len(self.raw_index) - 1)]



def _char_class(ch: str) -> str:
    if ch.isspace():
        return "S"
    if ch.isalpha():
        return "L"
    if ch.isnumeric():
        return "N"
    return "P"


class _PromptParser:
    """Builds a :class:`ParsedPrompt`; one instance per parse."""

    def __init__(self, prompt: str, granularity: str | None, negative: bool, tokenizer: Tokenizer | None) -> None:
        self.prompt = prompt
        self.granularity = granularity
        self.negative = negative
        self.tokenizer = tokenizer
        self.source = _Source(prompt, strip_networks=not negative)
        self.pieces: list[Piece] = []
        self.next_unit = 0
        self.network_cursor = 0

    def error(self, reason: str, offset: int | None) -> PromptSyntaxError:
        position = None if offset is None else self.source.position(offset)
        return PromptSyntaxError(reason, self.prompt, position)

    # -- top level ------------------------------------------------------------------------
    def parse(self) -> list[Piece]:
        text = self.source.text
        if self.negative:
            self.parse_part(0, len(text))
        else:
            start = 0
            for match in _AND.finditer(text):
                self.parse_and_part(start, match.start())
                self.emit_networks_until(match.start(), inclusive=True)
                self.pieces.append(Piece("and", self.source.raw_slice(match.start(), match.end())))
                self.skip_networks_inside(match.start(), match.end())
                start = match.end()
            self.parse_and_part(start, len(text))
        self.emit_networks_until(len(text), inclusive=True)
        return self.pieces

    def parse_and_part(self, start: int, end: int) -> None:
        match = _AND_WEIGHT.match(self.source.text, start, end)
        assert match is not None  # every part of the pattern is optional
        text_end = match.end(1)
        self.parse_part(start, text_end)
        if text_end < end:
            self.emit_networks_until(text_end, inclusive=True)
            self.pieces.append(Piece("tail", self.source.raw_slice(text_end, end)))
            self.skip_networks_inside(text_end, end)

    # -- extra networks -------------------------------------------------------------------
    def emit_networks_until(self, offset: int, inclusive: bool) -> None:
        networks = self.source.networks
        while self.network_cursor < len(networks):
            at, source = networks[self.network_cursor]
            if at < offset or (inclusive and at == offset):
                self.pieces.append(Piece("network", source))
                self.network_cursor += 1
            else:
                break

    def skip_networks_inside(self, start: int, end: int) -> None:
        # Networks strictly inside a verbatim piece travel with its raw text.
        networks = self.source.networks
        while self.network_cursor < len(networks) and start < networks[self.network_cursor][0] < end:
            self.network_cursor += 1

    # -- one AND part (or the whole negative prompt) --------------------------------------
    def parse_part(self, start: int, end: int) -> None:
        text = self.source.text
        found = _find_edits(text, start, end)
        if found.ambiguous is not None:
            raise self.error(
                "ambiguous prompt editing: the WebUI reads this schedule as prompt editing in some "
                "runs and as literal text in others, because a bracket or colon touches it; put a "
                "space after it or escape the stray bracket",
                found.ambiguous,
            )
        edits = found.edits
        if edits is None:
            edits = []
            if self.granularity is not None and re.search(r"\[[^\]]*[:|]", text[start:end]):
                logger.warning(
                    "the WebUI ignores prompt editing in %r: its schedule grammar rejects this part "
                    "(a '|' outside [a|b], or a backslash at the end), so the brackets are emphasis",
                    text[start:end],
                )
        # A rendered prompt's guard (the grammar has rejected the part above) makes no tokens:
        # leave it out, so that pinning a pinned prompt does not pile guards up.
        guarded = text.startswith(SCHEDULE_GUARD, start) and start + len(SCHEDULE_GUARD) <= end
        cells = self.scan(start + len(SCHEDULE_GUARD) if guarded else start, end, edits)
        self.check_edit_weights(cells, start, end)
        if self.granularity is not None and any(c.kind == "break" and c.factors for c in cells):
            logger.warning(
                "BREAK inside emphasis brackets in %r is not a chunk break in the WebUI (it becomes "
                "the word BREAK with a negative weight); it is kept as it is",
                text[start:end],
            )
        cells = [c for c in cells if c.kind != "lone"]
        units = self.assign_units(cells) if self.granularity is not None else [None] * len(cells)
        self.check_unit_weights(cells, units)
        self.emit_pieces(cells, units)

    def scan(self, start: int, end: int, edits: list[tuple[int, int]]) -> list[_Cell]:
        """The WebUI's emphasis pass with the edits as opaque items."""
        text = self.source.text
        edit_end = dict(edits)
        cells: list[_Cell] = []
        rounds: list[int] = []
        squares: list[int] = []

        def close(first: int, multiplier: float) -> None:
            for cell in cells[first:]:
                cell.factors.append(multiplier)

        i = start
        while i < end:
            if i in edit_end:
                cells.append(_Cell("edit", self.source.raw_slice(i, edit_end[i]), i, edit_end[i]))
                i = edit_end[i]
                continue
            stop = min([e for e in edit_end if e > i], default=end)
            token = next(iter(_emphasis_tokens(text, i, stop)))
            kind, t_start, t_end, value = token
            if kind == "escape":
                cells.append(_Cell("char", value, t_start, t_end))
            elif kind == "lone":
                cells.append(_Cell("lone", "", t_start, t_end))
            elif kind == "open_round":
                rounds.append(len(cells))
            elif kind == "open_square":
                squares.append(len(cells))
            elif kind == "weight" and rounds:
                close(rounds.pop(), _parse_weight(value, self.prompt, self.source.position(t_start)))
            elif kind == "close_round" and rounds:
                close(rounds.pop(), ROUND_MULTIPLIER)
            elif kind == "close_square" and squares:
                close(squares.pop(), SQUARE_MULTIPLIER)
            else:
                self.scan_text(cells, t_start, t_end, after_edit=t_start in edit_end.values(), before_edit=t_end in edit_end)
            i = t_end
        for first in rounds:
            for cell in cells[first:]:
                cell.factors.append(ROUND_MULTIPLIER)
        for first in squares:
            for cell in cells[first:]:
                cell.factors.append(SQUARE_MULTIPLIER)
        return cells

    def scan_text(self, cells: list[_Cell], start: int, end: int, after_edit: bool, before_edit: bool) -> None:
        text = self.source.text
        chunk = text[start:end]
        position = 0
        for match in _BREAK.finditer(chunk):
            touches_start = match.start() == 0 and after_edit and not chunk[0].isspace()
            touches_end = match.end() == len(chunk) and before_edit and not chunk[-1].isspace()
            if touches_start or touches_end:
                raise self.error(
                    "BREAK directly attached to prompt editing syntax: whether the WebUI sees a BREAK "
                    "depends on the step; put a space between them",
                    start + match.start(),
                )
            for k in range(position, match.start()):
                cells.append(_Cell("char", chunk[k], start + k, start + k + 1))
            cells.append(_Cell("break", self.source.raw_slice(start + match.start(), start + match.end()), start + match.start(), start + match.end()))
            position = match.end()
        for k in range(position, len(chunk)):
            cells.append(_Cell("char", chunk[k], start + k, start + k + 1))

    def check_edit_weights(self, cells: list[_Cell], start: int, end: int) -> None:
        """Reject an edit that can become (part of) an emphasis weight, as in ``(a:[1.2:1.5:5])``."""
        text = self.source.text
        edit_spans = {c.start: c.end for c in cells if c.kind == "edit"}
        edit_starts = {c.end: c.start for c in cells if c.kind == "edit"}
        for cell in cells:
            if cell.kind != "edit":
                continue
            i = cell.start - 1
            while i >= start and (i + 1 in edit_starts or _STRAY_NUMBER_CHARS.match(text[i])):
                i = edit_starts[i + 1] - 1 if i + 1 in edit_starts else i - 1
            if i < start or text[i] != ":":
                continue
            j = cell.end
            while j < end and (j in edit_spans or _STRAY_NUMBER_CHARS.match(text[j])):
                j = edit_spans.get(j, j + 1)
            if j < end and text[j] == ")":
                raise self.error(
                    "prompt editing inside an emphasis weight, e.g. (a:[1.2:1.5:5]), cannot be kept "
                    "fixed while the weight is optimised",
                    cell.start,
                )

    def check_unit_weights(self, cells: list[_Cell], units: list[int | None]) -> None:
        for i, (cell, unit) in enumerate(zip(cells, units)):
            if unit is not None and _product(cell.factors) < 0:
                # Quote the text the weight covers within the unit, not the one character found first.
                end = i
                while end < len(cells) and units[end] == unit and cells[end].factors == cell.factors:
                    end += 1
                text = "".join(c.text for c in cells[i:end]).strip()
                raise self.error(
                    f"negative emphasis weight {_product(cell.factors):g} on {text!r} cannot be "
                    "optimised (weights are kept positive); move that text to the negative prompt",
                    cell.start,
                )

    # -- units ----------------------------------------------------------------------------
    def new_unit(self) -> int:
        self.next_unit += 1
        return self.next_unit - 1

    def assign_units(self, cells: list[_Cell]) -> list[int | None]:
        glued = self.glued_to_edits(cells)
        if self.negative:
            # The WebUI (v1.10.1) leaves extra-network syntax in a negative prompt as text; keep it
            # as it is rather than weighting it (some forks do read it as a network).
            # Matched on the literal text, so that escaping in a rendered prompt does not change it.
            flat = "".join(c.text if c.kind == "char" else "\0" for c in cells)
            for match in _EXTRA_NETWORK.finditer(flat):
                glued.update(range(match.start(), match.end()))
        units: list[int | None] = [None] * len(cells)
        if self.granularity == "phrase":
            self.assign_phrases(cells, glued, units)
            return units
        k = 0
        while k < len(cells):
            if cells[k].kind != "char":
                k += 1
                continue
            run_end = k
            while run_end < len(cells) and cells[run_end].kind == "char":
                run_end += 1
            run = "".join(c.text for c in cells[k:run_end])
            spans = self.token_spans(run) if self.granularity == "token" else self.word_spans(run)
            for a, b in spans:
                members = [k + m for m in range(a, b) if k + m not in glued]
                if members and (self.granularity == "token" or any(cells[m].text.isalnum() for m in members)):
                    unit = self.new_unit()
                    for m in members:
                        units[m] = unit
            k = run_end
        return units

    def token_spans(self, run: str) -> list[tuple[int, int]]:
        if self.tokenizer is None:
            self.tokenizer = default_tokenizer()
        return [(a, b) for a, b in self.tokenizer.pretoken_spans(run) if run[a:b].strip()]

    @staticmethod
    def word_spans(run: str) -> list[tuple[int, int]]:
        spans = []
        for match in re.finditer(r"[^\s,]+", run):
            a, b = match.span()
            # Punctuation touching a comma forms one pre-token with it ("!,"): keep it with the comma.
            if b < len(run) and run[b] == ",":
                while b > a and _char_class(run[b - 1]) == "P":
                    b -= 1
            if a > 0 and run[a - 1] == ",":
                while a < b and _char_class(run[a]) == "P":
                    a += 1
            if a < b:
                spans.append((a, b))
        return spans

    @staticmethod
    def glued_to_edits(cells: list[_Cell]) -> set[int]:
        """Letters or punctuation touching an edit: tokenized together with what it resolves to."""
        glued: set[int] = set()
        for k, cell in enumerate(cells):
            if cell.kind != "edit":
                continue
            for step in (-1, 1):
                m = k + step
                if not (0 <= m < len(cells) and cells[m].kind == "char"):
                    continue
                cls = _char_class(cells[m].text)
                if cls not in ("L", "P"):
                    continue
                while 0 <= m < len(cells) and cells[m].kind == "char" and _char_class(cells[m].text) == cls:
                    glued.add(m)
                    m += step
        return glued

    def assign_phrases(self, cells: list[_Cell], glued: set[int], units: list[int | None]) -> None:
        separator = [False] * len(cells)
        for k, cell in enumerate(cells):
            if not (cell.kind == "char" and cell.text == ","):
                continue
            separator[k] = True
            for step in (-1, 1):
                m = k + step
                while 0 <= m < len(cells) and cells[m].kind == "char":
                    cls = _char_class(cells[m].text)
                    if not (cls == "S" or (cls == "P" and cells[m].factors == cell.factors)):
                        break
                    separator[m] = True
                    m += step
        k = 0
        while k < len(cells):
            if separator[k] or cells[k].kind == "break":
                k += 1
                continue
            stop = k
            while stop < len(cells) and not separator[stop] and cells[stop].kind != "break":
                stop += 1
            members = [m for m in range(k, stop) if cells[m].kind == "char" and m not in glued]
            while members and cells[members[0]].text.isspace():
                members.pop(0)
            while members and cells[members[-1]].text.isspace():
                members.pop()
            if any(cells[m].text.isalnum() for m in members):
                unit = self.new_unit()
                for m in members:
                    units[m] = unit
            k = stop

    # -- pieces ---------------------------------------------------------------------------
    def emit_pieces(self, cells: list[_Cell], units: list[int | None]) -> None:
        pending: list[_Cell] = []
        pending_unit: int | None = None

        def flush() -> None:
            if pending:
                text = "".join(c.text for c in pending)
                self.pieces.append(Piece("text", text, tuple(pending[0].factors), pending_unit))
                pending.clear()

        networks = self.source.networks
        for cell, unit in zip(cells, units):
            if cell.kind == "char":
                if pending and (unit != pending_unit or cell.factors != pending[0].factors):
                    flush()
                # A network before this character (or inside its escape) splits the text there.
                if self.network_cursor < len(networks) and networks[self.network_cursor][0] < cell.end:
                    flush()
                    self.emit_networks_until(cell.end, inclusive=False)
                pending.append(cell)
                pending_unit = unit
                continue
            flush()
            self.emit_networks_until(cell.start, inclusive=True)
            self.pieces.append(Piece(cell.kind, cell.text, tuple(cell.factors), None))
            self.skip_networks_inside(cell.start, cell.end)
        flush()


def parse_prompt(
    prompt: str,
    granularity: Granularity = "word",
    *,
    negative: bool = False,
    tokenizer: object | None = None,
) -> ParsedPrompt:
    """Parse one prompt into pieces and units.

    Args:
        prompt: the prompt text as typed in the WebUI.
        granularity: ``token``, ``word`` or ``phrase`` (see the package docstring).
        negative: parse as a negative prompt (no extra networks, no ``AND``).
        tokenizer: for ``token`` granularity: a :class:`~lib_pinning.tokenizer.Tokenizer` or anything
            :func:`~lib_pinning.tokenizer.adapt_tokenizer` accepts; None loads the default CLIP
            tokenizer. Ignored by the other granularities.

    Raises:
        PromptSyntaxError: the prompt cannot be represented faithfully (see the message).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, not {granularity!r}")
    adapted = adapt_tokenizer(tokenizer) if (tokenizer is not None and granularity == "token") else None
    parser = _PromptParser(prompt, granularity, negative, adapted)
    return ParsedPrompt(prompt, negative, granularity, tuple(parser.parse()))


def _parse_structure(prompt: str, negative: bool) -> list[Piece]:
    """Pieces without units: what the WebUI will make of a (rendered) prompt."""
    return _PromptParser(prompt, None, negative, None).parse()
