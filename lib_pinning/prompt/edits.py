"""The scan for prompt editing and alternation, and for schedules whose reading the WebUI leaves
to chance (see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import dataclasses

from lib_pinning.prompt.syntax import _MAX_NESTING, _SCHEDULE_NUMBER, PromptSyntaxError


@dataclasses.dataclass
class _EditScan:
    """Result of :func:`_find_edits`."""

    edits: list[tuple[int, int]] | None  # None: the schedule grammar rejects the text
    ambiguous: int | None = None  # offset of a schedule whose reading the WebUI leaves to chance


def _find_edits(text: str, start: int, end: int) -> _EditScan:
    """Find the outermost prompt-editing/alternation constructs in ``text[start:end]``.

    Mirrors the WebUI's schedule grammar: inside a construct every bracket must pair up and ``:``
    or ``|`` may only separate the construct's own parts; at top level unpaired brackets and colons
    are allowed; a construct is used wherever one parses. A ``|`` outside an alternation or a
    backslash at the end (or before a newline) makes the grammar reject the text, and the WebUI
    then uses it literally.

    The grammar is ambiguous, and lark resolves some ambiguities differently from one Python
    process to the next (it depends on string hashing): a schedule followed, through touching
    constructs other than alternations, by a touching stray bracket or colon, as in ``[a:0.5]]``
    or ``[a:0.5](b):``, is prompt editing in some WebUI runs and literal text in others. Measured
    with the WebUI's own parser over 1,500 generated prompts and 10 hash seeds: this condition held
    for exactly the prompts whose reading varied.
    """
    tokens: list[tuple[str, int, int]] = []
    i = start
    while i < end:
        ch = text[i]
        if ch in "()[]:|":
            tokens.append((ch, i, i + 1))
            i += 1
            continue
        j = i
        while j < end and text[j] not in "()[]:|":
            if text[j] == "\\":
                if j + 1 >= end or text[j + 1] == "\n":
                    return _EditScan(None)
                j += 2
            else:
                j += 1
        tokens.append(("text", i, j))
        i = j
    count = len(tokens)
    # A construct: (end token index, kind, edits inside as (start, end, kind)).
    Construct = tuple[int, str, list[tuple[int, int, str]]]
    memo: dict[int, Construct | None] = {}

    def is_number(first: int, stop: int) -> bool:
        if stop != first + 1 or tokens[first][0] != "text":
            return False
        _, a, b = tokens[first]
        return _SCHEDULE_NUMBER.match(text, a, b) is not None

    def kind_at(k: int) -> str:
        return tokens[k][0] if k < count else ""

    def prompt(k: int, depth: int) -> tuple[int, list[tuple[int, int, str]]]:
        found: list[tuple[int, int, str]] = []
        while k < count:
            kind = tokens[k][0]
            if kind == "text":
                k += 1
            elif kind in "([":
                result = construct(k, depth + 1)
                if result is None:
                    break
                k, _, inner = result
                found.extend(inner)
            else:
                break
        return k, found

    def construct(k: int, depth: int) -> Construct | None:
        if k not in memo:
            if depth > _MAX_NESTING:
                raise PromptSyntaxError("brackets are nested too deeply", text, tokens[k][1])
            memo[k] = parse_construct(k, depth)
        return memo[k]

    def parse_construct(k: int, depth: int) -> Construct | None:
        opener, begin, _ = tokens[k]
        k1, found = prompt(k + 1, depth)
        sep = kind_at(k1)
        if opener == "(":
            if sep == ")":
                return k1 + 1, "emphasis", found
            if sep == ":":
                k2, more = prompt(k1 + 1, depth)
                if kind_at(k2) == ")":
                    return k2 + 1, "emphasis", found + more
            return None
        if sep == "]":
            return k1 + 1, "emphasis", found
        if sep == "|":
            k2 = k1
            while kind_at(k2) == "|":
                k2, _ = prompt(k2 + 1, depth)
            if kind_at(k2) == "]":
                return k2 + 1, "alternation", [(begin, tokens[k2][2], "alternation")]
            return None
        if sep == ":":
            k2, _ = prompt(k1 + 1, depth)
            if kind_at(k2) == "]" and is_number(k1 + 1, k2):
                return k2 + 1, "schedule", [(begin, tokens[k2][2], "schedule")]
            if kind_at(k2) == ":":
                k3, _ = prompt(k2 + 1, depth)
                if kind_at(k3) == "]" and is_number(k2 + 1, k3):
                    return k3 + 1, "schedule", [(begin, tokens[k3][2], "schedule")]
        return None

    # Top level: (kind, start, end, holds a schedule); kind: text, stray or a construct kind.
    items: list[tuple[str, int, int, bool]] = []
    edits: list[tuple[int, int, str]] = []
    k = 0
    while k < count:
        kind, a, b = tokens[k]
        if kind == "|":
            return _EditScan(None)
        if kind in "([":
            result = construct(k, 0)
            if result is not None:
                k, construct_kind, inner = result
                edits.extend(inner)
                items.append((construct_kind, a, tokens[k - 1][2], any(e[2] == "schedule" for e in inner)))
                continue
        items.append(("text" if kind == "text" else "stray", a, b, False))
        k += 1
    ambiguous = None
    for n, (kind, a, b, holds_schedule) in enumerate(items):
        if not holds_schedule or ambiguous is not None:
            continue
        m = n
        while m + 1 < len(items) and items[m + 1][1] == items[m][2]:
            follower = items[m + 1][0]
            if follower == "stray":
                ambiguous = next(e[0] for e in edits if a <= e[0] < b and e[2] == "schedule")
                break
            if follower in ("text", "alternation"):
                break
            m += 1
    return _EditScan([(a, b) for a, b, _ in edits], ambiguous)
