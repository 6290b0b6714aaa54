"""Prompts as weighted units: the search space of the pinning optimiser.

A prompt is split into **units** (what CMA-ES weights: one entry of the search vector each) and
**fixed pieces** (kept verbatim and never weighted). Rendering a search vector gives back prompts in
the WebUI's emphasis syntax. The model follows what AUTOMATIC1111's WebUI (v1.10.1) does with a
prompt, in its order:

1. extra networks ``<name:args>`` are cut out of the positive prompt (``extra_networks.parse_prompt``),
   so they never affect emphasis; they are fixed and may sit anywhere in the rendered text;
2. the positive prompt is split at ``AND`` (``\\bAND\\b``), each part losing a trailing ``:weight``
   (``prompt_parser.get_multicond_prompt_list``); emphasis cannot cross ``AND``. The negative prompt
   has neither step: there ``AND`` is a word and ``<...:...>`` is text, kept fixed;
3. prompt editing ``[a:b:N]``, ``[a:N]``, ``[a::N]`` and alternation ``[a|b]`` are resolved per
   sampling step by a lark grammar (``schedule_parser``); when that grammar rejects a part (a ``|``
   outside ``[a|b]``, a trailing lone backslash) the WebUI uses the text literally, and so do we;
4. every resolved text goes through :func:`parse_prompt_attention`; ``BREAK`` starts a new 75-token
   chunk only when its weight is exactly -1, i.e. outside all brackets.

Emphasis enclosing a fixed piece still applies to it and is rendered around it with the same
multipliers in the same order, so the WebUI computes bit-identical weights for fixed pieces.

Units and weights: a unit may cover text with different base weights (a phrase ``a (b:1.2) c``); it
keeps them and adds one shared offset. A piece's weight is ``base + x[unit]`` reflected into the
run's :class:`~lib_pinning.bounds.WeightRange` (default ``[0, 2]``; see that module for why reflection
rather than clipping or a penalty); the unbounded ``|base + x|`` of older runs is the range
``[0, inf)``. A negative weight would flip the embedding, a different meaning. Changed weights are
rounded to :data:`WEIGHT_DECIMALS` decimals (and never leave the range), and
:meth:`PromptSpace.weights` reports the rounded values the prompt really used. An offset of exactly
0 keeps the original multipliers (``((x))`` stays 1.1 * 1.1, not 1.21), so rendering ``x = 0``
reproduces the prompt's weights exactly, even where the prompt's own weights lie outside the range.

The WebUI's parse cost (:data:`SCHEDULE_GUARD`): before any emphasis is read, every AND part (and
the negative prompt) goes through the WebUI's prompt-editing grammar, a lark Earley parser. Its
top rule ``(prompt | /[][():]/+)*`` over ``prompt: (...)*`` lets a run of items be split into
``prompt`` nodes in every way, and lets every bracket also be read as a stray character, which puts
the contents of every group at the top level too: Earley items grow with the square of the number
of brackets and text pieces, time with about the cube (measured with its lark 1.1.2: 2,324 items
for 10 ``(word:w)`` groups, 85,764 for 80; a 50-word prompt with one group per word took seconds,
plain text is one token and takes a millisecond; ``benchmarks/bench_prompt_parse.py``). The
grammar cannot be made cheaper from inside the prompt, but it can be made to give up at once: a
part that starts with a backslash and a newline is rejected at its first character (no terminal
matches a backslash before a newline) and the WebUI then uses the part as literal text, which is
exactly its reading of a part without prompt editing. Emphasis then reads the backslash as a lone
escape (an empty entry) and the newline as whitespace, which makes no CLIP tokens. So a rendered part
with emphasis brackets and no prompt editing starts with the guard; a part with prompt editing or
alternation must be parsed and is left as it is (its cost still grows with its brackets). Parsing a
rendered prompt again drops the guard's newline, so pinning a pinned prompt does not pile them up.

Granularity (which text becomes one unit):

* ``phrase``: the comma-separated chunks of text; commas, the whitespace around them and punctuation
  glued to them stay fixed. Every comma of the text separates, also inside emphasis brackets
  (``(red hair, blue eyes:1.2)`` is two phrases): brackets disappear from a rendered prompt wherever
  a weight becomes 1, so phrases defined by brackets would not survive a round trip. Commas inside
  prompt editing are part of the (fixed) edit.
* ``word``: runs of text without whitespace or commas (``score_9`` is one word); punctuation-only
  runs stay fixed. Neither needs a tokenizer.
* ``token``: CLIP pre-tokens (see :mod:`lib_pinning.tokenizer` for why a word's BPE sub-tokens cannot
  be separate units); punctuation pre-tokens such as commas are units too.

Text glued to prompt-editing syntax (``[fe|]male``) is fixed: the WebUI tokenizes it together with
whatever the edit resolves to, so weighting it apart would change its tokens.

Rendering writes ``(text:1.07)``, plain text for 1.0, ``(text)``/``[text]`` for an unchanged 1.1 or
1/1.1 where that cannot be misread, and escapes ``( ) [ ] \\``. Literal text must not turn into
syntax, so the renderer may add a lone backslash, which the WebUI drops without a trace (``A\\ND``
for the word AND, ``B\\REAK``, ``<\\lora``, ``x:\\5`` at the end of an AND part, ``\\:`` and
``\\|`` in parts with prompt editing), or a space next to ``BREAK``/``AND``. Every rendered prompt is
parsed again and compared with the intended weights; a difference raises RuntimeError.

Rejected with :class:`PromptSyntaxError` (message and position): an unparsable weight such as
``(a:1.2.3)`` (the WebUI crashes on it); a schedule touching a stray bracket or colon, as in
``[a:0.5]]``, which the WebUI reads as prompt editing in some runs and as text in others (its lark
parser resolves that ambiguity depending on Python's string hashing); prompt editing inside an
emphasis weight ``(a:[1.2:1.5:5])``; ``BREAK`` touching prompt editing; a negative weight on
weightable text; and (in :class:`PromptSpace`) prompts with nothing to weight.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal, get_args

import numpy as np

from lib_pinning.bounds import DEFAULT_WEIGHT_RANGE, UNBOUNDED, WeightRange
from lib_pinning.tokenizer import Tokenizer, adapt_tokenizer, default_tokenizer

__all__ = [
    "GRANULARITIES",
    "Granularity",
    "ParsedPrompt",
    "Piece",
    "PromptSpace",
    "PromptSyntaxError",
    "SCHEDULE_GUARD",
    "Unit",
    "WEIGHT_DECIMALS",
    "effective_weights",
    "parse_prompt",
    "parse_prompt_attention",
    "render_prompt",
]

logger = logging.getLogger(__name__)

Granularity = Literal["token", "word", "phrase"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
PromptSide = Literal["positive", "negative"]

#: Decimals of a rendered (optimised) weight.
WEIGHT_DECIMALS = 3
#: Starts a rendered part so that the WebUI's prompt-editing grammar rejects it at once instead of
#: parsing it for seconds (see the module docstring); invisible to emphasis and to the tokenizer.
SCHEDULE_GUARD = "\\\n"
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
JSON_FORMAT = 1

# The WebUI's lexical rules, restated (see the module docstring for where each applies).
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"(.*?)(\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*\Z", re.S)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EMPHASIS_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_SCHEDULE_NUMBER = re.compile(r"\s*[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)\s*\Z")
_WEIGHT_LIKE_END = re.compile(r":\s*[+-]?[.\d]+\s*\Z")
_AND_WEIGHT_END = re.compile(r":\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*\Z")
_EMPHASIS_SPECIAL = "\\()[]:"
_ESCAPED = "\\()[]"
_STRAY_NUMBER_CHARS = re.compile(r"[\s\d.+-]")
_MAX_NESTING = 200
_WORD_CHAR = re.compile(r"\w")


class PromptSyntaxError(ValueError):
    """A prompt that cannot be parsed, or not represented faithfully as weighted units.

    ``position`` is a 0-based character index into ``prompt`` (None when not about one place).
    """

    def __init__(self, reason: str, prompt: str = "", position: int | None = None) -> None:
        self.reason = reason
        self.prompt = prompt
        self.position = position
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.position is None or not self.prompt:
            return self.reason
        start = max(0, self.position - 20)
        end = min(len(self.prompt), self.position + 20)
        excerpt = ("..." if start else "") + self.prompt[start:end] + ("..." if end < len(self.prompt) else "")
        return f"{self.reason} (at character {self.position + 1}: {excerpt!r})"


# ---------------------------------------------------------------------------------------------
# parse_prompt_attention
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The structured parse
# ---------------------------------------------------------------------------------------------

PIECE_KINDS = ("text", "edit", "break", "network", "and", "tail")


@dataclasses.dataclass(frozen=True)
class Piece:
    """One piece of a parsed prompt, in prompt order.

    Attributes:
        kind: ``text`` (literal text, weighted when ``unit`` is set, else fixed), ``edit`` (prompt
            editing or alternation, verbatim source), ``break`` (a ``BREAK`` with the whitespace it
            absorbs), ``network`` (an extra network ``<name:args>``), ``and`` (the ``AND`` keyword),
            ``tail`` (what follows the text of an ``AND`` part: its ``:weight`` and trailing space).
        text: the literal text for ``text`` pieces (escapes resolved), else the verbatim source.
        factors: the emphasis multipliers applied to the piece, in the order the WebUI applies them
            (innermost closed bracket first, unclosed brackets last). Empty for network/and/tail.
        unit: index of the unit within its prompt, for weighted text.
    """

    kind: str
    text: str
    factors: tuple[float, ...] = ()
    unit: int | None = None

    @property
    def base_weight(self) -> float:
        """The weight the WebUI gives this piece in the original prompt."""
        return _product(self.factors)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A weighted unit, as shown in reports.

    Attributes:
        index: position in the search vector ``x`` (positive units first, then negative).
        prompt: which prompt it belongs to.
        text: its text as written (fixed pieces inside a phrase shown verbatim).
        base_weights: the distinct base weights of its pieces, in order.
    """

    index: int
    prompt: PromptSide
    text: str
    base_weights: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into pieces; units are numbered 0.. in order of appearance."""

    source: str
    negative: bool
    granularity: str
    pieces: tuple[Piece, ...]

    @property
    def unit_count(self) -> int:
        units = [p.unit for p in self.pieces if p.unit is not None]
        return max(units) + 1 if units else 0

    def unit_labels(self) -> list[tuple[str, tuple[float, ...]]]:
        """``(text, base_weights)`` per unit."""
        labels = []
        for unit in range(self.unit_count):
            indices = [k for k, p in enumerate(self.pieces) if p.unit == unit]
            span = self.pieces[indices[0] : indices[-1] + 1]
            text = "".join(p.text for p in span if p.kind in ("text", "edit"))
            weights: list[float] = []
            for k in indices:
                weight = self.pieces[k].base_weight
                if not weights or weights[-1] != weight:
                    weights.append(weight)
            labels.append((text, tuple(weights)))
        return labels

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "negative": self.negative,
            "granularity": self.granularity,
            "pieces": [
                {"kind": p.kind, "text": p.text, "factors": list(p.factors), "unit": p.unit} for p in self.pieces
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedPrompt:
        try:
            pieces = tuple(
                Piece(
                    kind=str(p["kind"]),
                    text=str(p["text"]),
                    factors=tuple(float(f) for f in p.get("factors", ())),
                    unit=None if p.get("unit") is None else int(p["unit"]),
                )
                for p in data["pieces"]
            )
            parsed = cls(
                source=str(data["source"]),
                negative=bool(data["negative"]),
                granularity=str(data["granularity"]),
                pieces=pieces,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed prompt parse in JSON: {exc}") from exc
        parsed._validate()
        return parsed

    def _validate(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}")
        seen = -1
        for piece in self.pieces:
            if piece.kind not in PIECE_KINDS:
                raise ValueError(f"unknown piece kind {piece.kind!r}")
            if piece.unit is not None:
                if piece.kind != "text" or piece.unit > seen + 1 or piece.unit < 0:
                    raise ValueError("units must be text pieces numbered in order of appearance")
                seen = max(seen, piece.unit)
            if not all(math.isfinite(f) for f in piece.factors):
                raise ValueError("emphasis factors must be finite")


def _product(factors: Iterable[float], start: float = 1.0) -> float:
    # Same order of float multiplications as the WebUI's multiply_range.
    value = start
    for factor in factors:
        value *= factor
    return value


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
        for cell, unit in zip(cells, units):
            if unit is not None and _product(cell.factors) < 0:
                raise self.error(
                    f"negative emphasis weight {_product(cell.factors):g} on {cell.text!r} cannot be "
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
        granularity: ``token``, ``word`` or ``phrase`` (see the module docstring).
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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


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
    """Render ``parsed`` with one weight offset per unit (see the module docstring).

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


# ---------------------------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------------------------


class PromptSpace:
    """Positive and negative prompt as one search space: ``x`` has :attr:`dim` entries, the
    positive prompt's units first.

    Args:
        prompt: the positive prompt.
        negative_prompt: the negative prompt ("" gives no units).
        granularity: ``token``, ``word`` or ``phrase``.
        tokenizer: used by ``token`` granularity only (see :func:`parse_prompt`).
        weight_range: the range every changed weight is reflected into.
        schedule_guard: start rendered parts with :data:`SCHEDULE_GUARD` where that spares the
            WebUI's prompt-editing parser (see the module docstring).

    Raises:
        PromptSyntaxError: a prompt cannot be represented, or neither prompt has a weightable unit.
    """

    def __init__(
        self,
        prompt: str,
        negative_prompt: str = "",
        granularity: Granularity = "word",
        tokenizer: object | None = None,
        *,
        weight_range: WeightRange = DEFAULT_WEIGHT_RANGE,
        schedule_guard: bool = True,
    ) -> None:
        if granularity == "token" and tokenizer is None:
            tokenizer = default_tokenizer()
        positive = parse_prompt(prompt, granularity, negative=False, tokenizer=tokenizer)
        negative = parse_prompt(negative_prompt, granularity, negative=True, tokenizer=tokenizer)
        self._init(positive, negative, weight_range, schedule_guard)

    def _init(self, positive: ParsedPrompt, negative: ParsedPrompt, weight_range: WeightRange, schedule_guard: bool) -> None:
        self.positive = positive
        self.negative = negative
        self.weight_range = weight_range
        self.schedule_guard = schedule_guard
        for parsed in (positive, negative):
            for text in _edited_parts_with_many_units(parsed):
                logger.warning(
                    "%r uses prompt editing and has many weighted units: the WebUI parses such a part "
                    "for seconds per individual (its cost grows with the cube of the emphasis groups); "
                    "phrase granularity, or prompt editing in a separate AND part, keeps it fast",
                    text[:60] + ("..." if len(text) > 60 else ""),
                )
        self.granularity = positive.granularity
        if positive.unit_count + negative.unit_count == 0:
            raise PromptSyntaxError(
                f"nothing to weight: neither the prompt {positive.source!r} nor the negative prompt "
                f"{negative.source!r} has text outside prompt editing, extra networks and BREAK"
            )
        units = []
        for side, parsed, first in (("positive", positive, 0), ("negative", negative, positive.unit_count)):
            for k, (text, weights) in enumerate(parsed.unit_labels()):
                units.append(Unit(first + k, side, text, weights))  # type: ignore[arg-type]
        self.units: tuple[Unit, ...] = tuple(units)

    @property
    def dim(self) -> int:
        """Length of the search vector."""
        return len(self.units)

    def _split(self, x: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vector = np.asarray(x, dtype=float).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"x has {vector.shape[0]} entries, the prompt space has {self.dim}")
        if not np.all(np.isfinite(vector)):
            raise ValueError("x must be finite")
        n = self.positive.unit_count
        return vector[:n], vector[n:]

    def render(self, x: Sequence[float] | np.ndarray) -> tuple[str, str]:
        """``(prompt, negative_prompt)`` in emphasis syntax for the search vector ``x``."""
        pos, neg = self._split(x)
        options = {"weight_range": self.weight_range, "guard": self.schedule_guard}
        return render_prompt(self.positive, pos, **options), render_prompt(self.negative, neg, **options)

    def weights(self, x: Sequence[float] | np.ndarray) -> list[tuple[float, ...]]:
        """Per unit, the weights the rendered prompts really use (rounded where changed)."""
        pos, neg = self._split(x)
        return effective_weights(self.positive, pos, self.weight_range) + effective_weights(
            self.negative, neg, self.weight_range
        )

    def to_json(self) -> dict[str, Any]:
        """The parse, for run.json; :meth:`from_json` restores it without re-parsing."""
        return {
            "format": JSON_FORMAT,
            "granularity": self.granularity,
            "prompt": self.positive.to_json(),
            "negative_prompt": self.negative.to_json(),
            "units": [dataclasses.asdict(u) for u in self.units],
            "weight_range": self.weight_range.to_json(),
            "schedule_guard": self.schedule_guard,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptSpace:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise ValueError(f"unsupported prompt space format: {data.get('format') if isinstance(data, dict) else data!r}")
        positive = ParsedPrompt.from_json(data["prompt"])
        negative = ParsedPrompt.from_json(data["negative_prompt"])
        if positive.negative or not negative.negative:
            raise ValueError("prompt and negative_prompt are swapped in the JSON")
        space = cls.__new__(cls)
        # Runs recorded before these keys existed rendered |base + x| with no guard: keep that.
        weight_range = WeightRange.from_json(data.get("weight_range"))
        space._init(positive, negative, weight_range, bool(data.get("schedule_guard", False)))
        return space

    def __repr__(self) -> str:
        return (
            f"PromptSpace(dim={self.dim}, granularity={self.granularity!r}, prompt={self.positive.source!r}, "
            f"negative_prompt={self.negative.source!r}, weight_range=[{self.weight_range.low:g}, {self.weight_range.high:g}])"
        )


#: Weighted units in one AND part with prompt editing above which the WebUI's parse takes seconds.
SLOW_EDITED_PART_UNITS = 20


def _edited_parts_with_many_units(parsed: ParsedPrompt) -> list[str]:
    """The text of each AND part that has prompt editing (so no guard) and many units."""
    found: list[str] = []
    units: set[int] = set()
    edited = False
    text = ""
    for piece in (*parsed.pieces, Piece("and", "")):
        if piece.kind == "and":
            if edited and len(units) > SLOW_EDITED_PART_UNITS:
                found.append(text)
            units, edited, text = set(), False, ""
            continue
        edited = edited or piece.kind == "edit"
        text += piece.text
        if piece.unit is not None:
            units.add(piece.unit)
    return found
