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

The package's modules, one job each: :mod:`~lib_pinning.prompt.syntax` (shared names and the
WebUI's lexical rules), :mod:`~lib_pinning.prompt.attention` (the WebUI-exact emphasis parser),
:mod:`~lib_pinning.prompt.edits` (the prompt-editing and ambiguity scan),
:mod:`~lib_pinning.prompt.pieces` and :mod:`~lib_pinning.prompt.parser` (the structured parse),
:mod:`~lib_pinning.prompt.render` (rendering with verification) and
:mod:`~lib_pinning.prompt.space` (:class:`PromptSpace`).
"""

from __future__ import annotations

from lib_pinning.prompt.attention import parse_prompt_attention
from lib_pinning.prompt.parser import parse_prompt
from lib_pinning.prompt.pieces import PIECE_KINDS, ParsedPrompt, Piece, Unit
from lib_pinning.prompt.render import effective_weights, render_prompt
from lib_pinning.prompt.space import JSON_FORMAT, SLOW_EDITED_PART_UNITS, PromptSpace
from lib_pinning.prompt.syntax import (
    GRANULARITIES,
    ROUND_MULTIPLIER,
    SCHEDULE_GUARD,
    SQUARE_MULTIPLIER,
    WEIGHT_DECIMALS,
    Granularity,
    PromptSide,
    PromptSyntaxError,
)

__all__ = [
    "GRANULARITIES",
    "Granularity",
    "JSON_FORMAT",
    "PIECE_KINDS",
    "ParsedPrompt",
    "Piece",
    "PromptSide",
    "PromptSpace",
    "PromptSyntaxError",
    "ROUND_MULTIPLIER",
    "SCHEDULE_GUARD",
    "SLOW_EDITED_PART_UNITS",
    "SQUARE_MULTIPLIER",
    "Unit",
    "WEIGHT_DECIMALS",
    "effective_weights",
    "parse_prompt",
    "parse_prompt_attention",
    "render_prompt",
]
