"""The WebUI's emphasis parser restated: :func:`parse_prompt_attention` gives the same output as
v1.10.1's function of that name (see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lib_pinning.prompt.syntax import (
    _BREAK,
    _EMPHASIS_SPECIAL,
    _EMPHASIS_WEIGHT,
    _ESCAPED,
    ROUND_MULTIPLIER,
    SQUARE_MULTIPLIER,
    PromptSyntaxError,
)


def _emphasis_tokens(text: str, start: int = 0, end: int | None = None) -> Iterable[tuple[str, int, int, str]]:
    """Lex ``text[start:end]`` like the WebUI's ``re_attention``: ``(kind, start, end, value)``.

    Kinds: ``escape`` (value: the literal character), ``lone`` (a backslash that escapes nothing),
    ``open_round``, ``open_square``, ``weight`` (value: the number text of ``:N)``), ``close_round``,
    ``close_square``, ``text`` and ``colon``.
    """
    end = len(text) if end is None else end
    i = start
    while i < end:
        ch = text[i]
        if ch == "\\":
            if i + 1 < end and text[i + 1] in _ESCAPED:
                yield "escape", i, i + 2, text[i + 1]
                i += 2
            else:
                yield "lone", i, i + 1, ""
                i += 1
        elif ch == "(":
            yield "open_round", i, i + 1, ch
            i += 1
        elif ch == "[":
            yield "open_square", i, i + 1, ch
            i += 1
        elif ch == ":":
            match = _EMPHASIS_WEIGHT.match(text, i, end)
            if match:
                yield "weight", i, match.end(), match.group(1)
                i = match.end()
            else:
                yield "colon", i, i + 1, ch
                i += 1
        elif ch == ")":
            yield "close_round", i, i + 1, ch
            i += 1
        elif ch == "]":
            yield "close_square", i, i + 1, ch
            i += 1
        else:
            j = i + 1
            while j < end and text[j] not in _EMPHASIS_SPECIAL:
                j += 1
            yield "text", i, j, text[i:j]
            i = j


def _parse_weight(number: str, prompt: str, position: int) -> float:
    try:
        return float(number)
    except ValueError:
        raise PromptSyntaxError(f"invalid emphasis weight {number!r}", prompt, position) from None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(text, weight)`` pairs exactly as the WebUI's function of this name.

    ``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1, ``(x:1.3)`` by 1.3; brackets nest and multiply; an
    unclosed bracket applies to the rest of the text (round before square, in opening order);
    ``\\( \\) \\[ \\] \\\\`` are literal characters and any other backslash disappears (it leaves an
    empty entry); ``BREAK`` becomes ``("BREAK", -1)`` (times the brackets around it); consecutive
    entries with equal weights merge; an empty text gives ``[("", 1.0)]``.

    Raises:
        PromptSyntaxError: ``(x:1.2.3)`` and other unparsable weights (the WebUI raises ValueError).
    """
    entries: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(first: int, multiplier: float) -> None:
        for entry in entries[first:]:
            entry[1] *= multiplier

    def add_text(chunk: str) -> None:
        for k, part in enumerate(_BREAK.split(chunk)):
            if k:
                entries.append(["BREAK", -1.0])
            entries.append([part, 1.0])

    for kind, start, end, value in _emphasis_tokens(text):
        if kind in ("escape", "lone"):
            entries.append([value, 1.0])
        elif kind == "open_round":
            rounds.append(len(entries))
        elif kind == "open_square":
            squares.append(len(entries))
        elif kind == "weight" and rounds:
            scale(rounds.pop(), _parse_weight(value, text, start))
        elif kind == "close_round" and rounds:
            scale(rounds.pop(), ROUND_MULTIPLIER)
        elif kind == "close_square" and squares:
            scale(squares.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(text[start:end])
    for first in rounds:
        scale(first, ROUND_MULTIPLIER)
    for first in squares:
        scale(first, SQUARE_MULTIPLIER)
    if not entries:
        return [("", 1.0)]
    merged: list[list[Any]] = [entries[0]]
    for entry in entries[1:]:
        if entry[1] == merged[-1][1]:
            merged[-1][0] += entry[0]
        else:
            merged.append(entry)
    return [(t, float(w)) for t, w in merged]
