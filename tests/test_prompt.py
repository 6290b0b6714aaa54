"""Tests for lib_pinning.prompt.

Expected values marked "WebUI" were produced by running AUTOMATIC1111 v1.10.1's own
``modules/prompt_parser.py`` (commit 82a973c0) on the same input; the WebUI is not needed to run
these tests.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_pinning.prompt import (
    GRANULARITIES,
    ParsedPrompt,
    PromptSpace,
    PromptSyntaxError,
    SCHEDULE_GUARD,
    parse_prompt,
    parse_prompt_attention,
    render_prompt,
)
from lib_pinning.tokenizer import EncodingTokenizer

PROPERTY = settings(
    derandomize=True, max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------------------------
# parse_prompt_attention: expected values from the WebUI's function
# ---------------------------------------------------------------------------------------------

WEBUI_ATTENTION = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    ("", [("", 1.0)]),
    ("((a))", [("a", 1.2100000000000002)]),
    ("[a]", [("a", 0.9090909090909091)]),
    ("[[a]]", [("a", 0.8264462809917354)]),
    ("(a [b] c", [("a ", 1.1), ("b", 1.0), (" c", 1.1)]),
    ("[a (b:1.5)", [("a ", 0.9090909090909091), ("b", 1.3636363636363635)]),
    ("(a:0.5", [("a:0.5", 1.1)]),
    (")a] b", [(")a] b", 1.0)]),
    ("a:1.2) b", [("a:1.2) b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
    ("a\\b", [("ab", 1.0)]),
    ("(a)\\", [("a", 1.1), ("", 1.0)]),
    ("a\\\\b", [("a\\b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("(a: 1.5 )", [("a", 1.5)]),
    ("(a:+.5)", [("a", 0.5)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:1.2.3 x)", [("a:1.2.3 x", 1.1)]),
    ("(a:b:1.3)", [("a:b", 1.3)]),
    ("\\(a:1.5\\)", [("(a:1.5)", 1.0)]),
    ("(a)(b:1.1)c", [("ab", 1.1), ("c", 1.0)]),
    ("((a:1.1))", [("a", 1.2100000000000002)]),
    ("( [a] :2)", [(" ", 2.0), ("a", 1.8181818181818181), (" ", 2.0)]),
    ("[a:b:0.5]", [("a:b:0.5", 0.9090909090909091)]),
    ("(x:1.2]", [("x:1.2]", 1.1)]),
    ("((a)b", [("a", 1.2100000000000002), ("b", 1.1)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(a)BREAK(b)", [("a", 1.1), ("", 1.0), ("BREAK", -1.0), ("", 1.0), ("b", 1.1)]),
]


@pytest.mark.parametrize(("text", "expected"), WEBUI_ATTENTION)
def test_parse_prompt_attention_matches_webui(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_prompt_attention(text)
    assert got == expected
    # Bit-identical floats: merging in the WebUI depends on exact equality.
    assert [w.hex() for _, w in got] == [float(w).hex() for _, w in expected]


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "x (y:1..5)"])
def test_parse_prompt_attention_rejects_bad_weights(text: str) -> None:
    # The WebUI crashes with ValueError from float(); ours is a ValueError with a position.
    with pytest.raises(PromptSyntaxError, match="invalid emphasis weight") as info:
        parse_prompt_attention(text)
    assert isinstance(info.value, ValueError)
    assert info.value.position == text.index(":")


@given(st.text(alphabet=st.characters(blacklist_characters="\\()[]:", blacklist_categories=("Cs",)), max_size=20))
@PROPERTY
def test_plain_text_has_weight_one(text: str) -> None:
    entries = parse_prompt_attention(text)
    if re.search(r"\bBREAK\b", text):
        assert ("BREAK", -1.0) in entries
    else:
        assert entries == [(text, 1.0)]


# ---------------------------------------------------------------------------------------------
# A WebUI view for the tests: what each AND part becomes, from regexes and parse_prompt_attention
# only (independent of the structured parser under test).
# ---------------------------------------------------------------------------------------------

_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_PART_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def normalise(entries: list[tuple[str, float]], strip_end: bool) -> list[tuple[str, float]]:
    """Drop what makes no tokens: empty entries, whitespace the WebUI may eat next to BREAK or at
    the end of a positive part; merge equal weights again."""

    def is_break(entry: list) -> bool:
        return entry[0] == "BREAK" and entry[1] < 0

    def merge(seq: list[list]) -> list[list]:
        out: list[list] = []
        for text, weight in seq:
            if out and out[-1][1] == weight and not is_break(out[-1]) and not is_break([text, weight]):
                out[-1][0] += text
            else:
                out.append([text, weight])
        return out

    seq = merge([[t, w] for t, w in entries if t])
    for i, entry in enumerate(seq):
        if is_break(entry):
            continue
        if i > 0 and is_break(seq[i - 1]):
            entry[0] = entry[0].lstrip()
        if i + 1 < len(seq) and is_break(seq[i + 1]):
            entry[0] = entry[0].rstrip()
    if strip_end and seq and not is_break(seq[-1]):
        seq[-1][0] = seq[-1][0].rstrip()
    return [(t, w) for t, w in merge([e for e in seq if e[0]])]


def webui_view(prompt: str, negative: bool = False) -> tuple[list, list]:
    """Per AND part: (part weight, normalised emphasis); plus the extra networks."""
    if negative:
        return [(1.0, normalise(parse_prompt_attention(prompt), False))], []
    networks = [m.group(0) for m in _NETWORK.finditer(prompt)]
    parts = []
    for part in re.split(r"\bAND\b", _NETWORK.sub("", prompt)):
        text, weight = _PART_WEIGHT.search(part).groups()
        parts.append((float(weight) if weight else 1.0, normalise(parse_prompt_attention(text), True)))
    return parts, networks


def mirror(value: float, low: float = 0.0, high: float = 2.0) -> float:
    """Reference reflection into [low, high], one mirror at a time (independent of bounds.py)."""
    while value < low or value > high:
        value = 2 * low - value if value < low else 2 * high - value
    return value


def intended_view(
    parsed: ParsedPrompt, x: list[float] | None = None, low: float = 0.0, high: float = 2.0
) -> tuple[list, list]:
    """The same view built from the parse and the weight rule: a piece of unit u weighs
    ``base + x[u]`` mirrored into [low, high] and rounded to 3 decimals, or exactly ``base`` when
    ``x[u] == 0``; edits expand through parse_prompt_attention times their multipliers, as the view
    above sees them."""
    parts: list[list] = [[1.0, []]]
    networks: list[str] = []
    for piece in parsed.pieces:
        if piece.kind != "text" and not parsed.negative:
            networks += [m.group(0) for m in _NETWORK.finditer(piece.text)]
        if piece.kind == "and":
            parts.append([1.0, []])
        elif piece.kind == "tail":
            match = re.search(r":\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*$", _NETWORK.sub("", piece.text))
            parts[-1][0] = float(match.group(1)) if match else 1.0
        elif piece.kind == "text":
            weight = piece.base_weight
            if x is not None and piece.unit is not None and x[piece.unit] != 0:
                weight = min(max(round(mirror(weight + x[piece.unit], low, high), 3), low), high)
            parts[-1][1].append((piece.text, weight))
        elif piece.kind == "break":
            parts[-1][1].append(("BREAK", -piece.base_weight))
        elif piece.kind == "edit":
            source = piece.text if parsed.negative else _NETWORK.sub("", piece.text)
            for text, weight in parse_prompt_attention(source):
                for factor in piece.factors:
                    weight *= factor
                parts[-1][1].append((text, weight))
    view = [(w, normalise(entries, not parsed.negative)) for w, entries in parts]
    return view, networks


def fake_clip() -> EncodingTokenizer:
    """A stand-in CLIP tokenizer: one id per CLIP pre-token, no vocabulary needed."""
    import regex

    pattern = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", regex.IGNORECASE)
    return EncodingTokenizer(lambda text: [len(m.group(0)) for m in pattern.finditer(text)], name="fake")


FAKE_CLIP = fake_clip()


# ---------------------------------------------------------------------------------------------
# Structured parse
# ---------------------------------------------------------------------------------------------


def labels(parsed: ParsedPrompt) -> list[str]:
    return [text for text, _ in parsed.unit_labels()]


def test_word_units_and_fixed_punctuation() -> None:
    parsed = parse_prompt("masterpiece, (best quality:1.2), score_9, 1girl - solo!", "word")
    assert labels(parsed) == ["masterpiece", "best", "quality", "score_9", "1girl", "solo!"]
    assert [w for _, w in parsed.unit_labels()] == [(1.0,), (1.2,), (1.2,), (1.0,), (1.0,), (1.0,)]
    fixed = [p.text for p in parsed.pieces if p.kind == "text" and p.unit is None]
    assert fixed == [", ", " ", ", ", ", ", " - "]


def test_word_keeps_punctuation_glued_to_a_comma_fixed() -> None:
    # "!," is one CLIP pre-token: weighting "!" apart from "," would re-tokenize it.
    parsed = parse_prompt("hello!, world", "word")
    assert labels(parsed) == ["hello", "world"]


def test_phrase_units_keep_per_piece_base_weights() -> None:
    parsed = parse_prompt("a (b:1.2) c, (red hair, blue eyes:1.3), d", "phrase")
    assert parsed.unit_labels() == [
        ("a b c", (1.0, 1.2, 1.0)),
        ("red hair", (1.3,)),
        ("blue eyes", (1.3,)),
        ("d", (1.0,)),
    ]
    # 1.1 is written "(...)"; the fixed ", " keeps its 1.3 and shares a bracket with "red hair".
    assert render_prompt(parsed, [0.1, 0.0, -0.2, 0.0]) == "(a )(b:1.3)( c), (red hair, :1.3)(blue eyes), d"


def test_token_units_are_pretokens() -> None:
    parsed = parse_prompt("a photorealistic cat, score_9 (don't)", "token", tokenizer=FAKE_CLIP)
    assert labels(parsed) == ["a", "photorealistic", "cat", ",", "score", "_", "9", "don", "'t"]


def test_word_and_phrase_never_touch_the_tokenizer() -> None:
    class Exploding:
        def pretoken_spans(self, text: str) -> list[tuple[int, int]]:
            raise AssertionError("tokenizer used")

        def count_tokens(self, text: str) -> int:
            raise AssertionError("tokenizer used")

    for granularity in ("word", "phrase"):
        parse_prompt("a cat, a dog", granularity, tokenizer=Exploding())
        PromptSpace("a cat", "ugly", granularity, tokenizer=Exploding())


@pytest.mark.parametrize(
    ("prompt", "kinds"),
    [
        ("<lora:add_detail:0.5> cat", ["network", "text", "text"]),
        ("<hypernet:h:1>cat", ["network", "text"]),
        ("[cat:dog:0.5]", ["edit"]),
        ("[cat:dog:10]", ["edit"]),
        ("[cat:0.5]", ["edit"]),
        ("[cat::0.5]", ["edit"]),
        ("[cat|dog]", ["edit"]),
        ("[cat: 1e1 ]", ["edit"]),
        ("cat AND dog :0.5", ["text", "tail", "and", "text", "text", "tail"]),
        ("cat BREAK dog", ["text", "break", "text"]),
    ],
)
def test_fixed_pieces(prompt: str, kinds: list[str]) -> None:
    parsed = parse_prompt(prompt, "word")
    assert [p.kind for p in parsed.pieces] == kinds
    for piece in parsed.pieces:
        assert (piece.unit is not None) == (piece.kind == "text" and piece.text.strip() != "")
    # Whatever the offsets, fixed pieces come back verbatim.
    rendered = render_prompt(parsed, [0.3] * parsed.unit_count)
    for piece in parsed.pieces:
        if piece.kind in ("network", "edit", "and", "tail"):
            assert piece.text in rendered


def test_emphasis_around_a_fixed_piece_is_kept() -> None:
    parsed = parse_prompt("([cat:dog:0.5]:1.2) on a ((mat))", "word")
    edit = parsed.pieces[0]
    assert (edit.kind, edit.text, edit.factors) == ("edit", "[cat:dog:0.5]", (1.2,))
    assert render_prompt(parsed, [0.1, -0.1, 0.2]) == "([cat:dog:0.5]:1.2) (on) (a:0.9) (mat:1.41)"
    # WebUI: [[5, '(cat:1.2) ...'], [10, '(dog:1.2) ...']]: the edit keeps 1.2 at every step.
    assert intended_view(parsed)[0][0][1][0] == ("cat:dog:0.5", 1.2 / 1.1)


def test_nested_emphasis_on_fixed_pieces_is_bit_exact() -> None:
    parsed = parse_prompt("(([a|b] x)", "word")
    assert parsed.pieces[0].factors == (1.1, 1.1)
    rendered = render_prompt(parsed, [0.5])
    assert rendered == "(([a|b] ))(x:1.71)"
    again = parse_prompt(rendered, "word")
    assert again.pieces[0].factors == (1.1, 1.1)


def test_emphasis_does_not_cross_and() -> None:
    parsed = parse_prompt("(a AND b)", "word")
    assert parsed.unit_labels() == [("a", (1.1,)), ("b)", (1.0,))]


def test_negative_prompt_has_no_and_and_no_networks() -> None:
    parsed = parse_prompt("bad <lora:x:1> hands AND feet", "word", negative=True)
    assert labels(parsed) == ["bad", "hands", "AND", "feet"]
    assert not any(p.kind in ("network", "and") for p in parsed.pieces)
    assert render_prompt(parsed, [0, 0, 0, 0]) == "bad <lora:x:1> hands AND feet"


def test_rejected_grammar_makes_brackets_emphasis() -> None:
    # WebUI: "[a:b:0.5] a | b" -> [[10, '[a:b:0.5] a | b']]: a stray '|' disables prompt editing.
    parsed = parse_prompt("[a:b:0.5] a | b", "word")
    assert not any(p.kind == "edit" for p in parsed.pieces)
    assert parsed.unit_labels()[0] == ("a:b:0.5", (1 / 1.1,))


def test_text_glued_to_an_edit_is_fixed() -> None:
    parsed = parse_prompt("[fe|]male, photo", "word")
    assert labels(parsed) == ["photo"]
    assert render_prompt(parsed, [0.2]) == "[fe|]male, (photo:1.2)"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x [a:0.5]] y", "ambiguous prompt editing"),
        ("[a:0.5](b):", "ambiguous prompt editing"),
        ("(a:[1.2:1.5:5])", "inside an emphasis weight"),
        ("x[a|b]BREAK y", "BREAK directly attached"),
        ("(a:-1) b", "negative emphasis weight"),
        ("(a:1.2.3)", "invalid emphasis weight"),
    ],
)
def test_unrepresentable_prompts_raise(prompt: str, message: str) -> None:
    with pytest.raises(PromptSyntaxError, match=message) as info:
        parse_prompt(prompt, "word")
    assert info.value.position is not None and 0 <= info.value.position < len(prompt)
    assert "at character" in str(info.value)


def test_ambiguity_is_not_raised_for_common_idioms() -> None:
    # Measured with the WebUI over 12 hash seeds: always read as prompt editing.
    for prompt in ["([a:b:0.5]:1.2)", "[[a:b:0.5]", "x:[a:0.5]", "[a:0.5] ]", "[a|b]]", "[a:b:0.5][c:d:0.5]"]:
        parse_prompt(prompt, "word")


def test_literal_keywords_stay_literal() -> None:
    # A lone backslash disappears, so "A\\ND" is the text "AND" and "BRE\\AK" the text "BREAK";
    # rendered as they read, they would split the prompt and start a chunk.
    parsed = parse_prompt("cat A\\ND dog, BRE\\AK", "word")
    assert labels(parsed) == ["cat", "AND", "dog", "BREAK"]
    for x in ([0.0] * 4, [0.0, 0.2, 0.0, 0.2]):
        rendered = render_prompt(parsed, x)
        parts, _ = webui_view(rendered)
        assert len(parts) == 1
        assert ("BREAK", -1.0) not in parts[0][1]
        assert "".join(t for t, _ in parts[0][1]) == "cat AND dog, BREAK"


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

EXAMPLE = "((masterpiece)), [blurry], (cat:1.3) on a mat, score_9 BREAK <lora:x:0.5> photo[a|b] [dog:cat:0.5]"


def test_render_zero_reproduces_the_prompt() -> None:
    for granularity in ("word", "phrase"):
        parsed = parse_prompt(EXAMPLE, granularity)
        assert render_prompt(parsed, [0.0] * parsed.unit_count) == EXAMPLE


def test_render_weights() -> None:
    parsed = parse_prompt(EXAMPLE, "word")
    x = [0.0, -1.5, 0.0004, 0.0, -0.3, 0.1234, 0.2]
    rendered = render_prompt(parsed, x)
    # 0 keeps the exact original multipliers; |1/1.1 - 1.5| reflects to 0.591; 1.3004 rounds to
    # 1.3; weight 1.0 is plain text; 1.1234 rounds to 1.123.
    assert rendered == (
        "((masterpiece)), (blurry:0.591), (cat:1.3) on (a:0.7) (mat:1.123), (score_9:1.2) "
        "BREAK <lora:x:0.5> photo[a|b] [dog:cat:0.5]"
    )


def test_render_escapes_text() -> None:
    parsed = parse_prompt("\\(lit\\) a\\\\ b:2 c", "word")
    assert labels(parsed) == ["(lit)", "a\\", "b:2", "c"]
    rendered = render_prompt(parsed, [0.1, 0.1, 0.1, 0.0])
    # "(b:2)" would read as weight 2, so 1.1 is written out there.
    assert rendered == "(\\(lit\\)) (a\\\\) (b:2:1.1) c"
    assert parse_prompt_attention(rendered) == [
        ("(lit)", 1.1), (" ", 1.0), ("a\\", 1.1), (" ", 1.0), ("b:2", 1.1), (" c", 1.0)
    ]


def test_render_guards_a_trailing_number() -> None:
    # "x:5[]": the empty brackets stop the WebUI from reading ":5" as the AND-part weight.
    parsed = parse_prompt("x:5[]", "word")
    rendered = render_prompt(parsed, [0.0])
    assert rendered == "x:\\5"
    assert webui_view(rendered)[0] == [(1.0, [("x:5", 1.0)])]


def test_render_guards_weight_lookalikes_before_a_bracket() -> None:
    parsed = parse_prompt("(a:5\\)", "phrase")  # unbalanced: text "a:5)" at 1.1
    assert parsed.unit_labels() == [("a:5)", (1.1,))]
    assert parse_prompt_attention(render_prompt(parsed, [0.0])) == [("a:5)", 1.1)]
    parsed = parse_prompt("(x:5[]", "word")  # text "x:5" at 1.1, rendered "(x:5)" would be weight 5
    rendered = render_prompt(parsed, [0.0])
    assert parse_prompt_attention(rendered) == [("x:5", 1.1)]


def test_render_keeps_break_a_keyword() -> None:
    parsed = parse_prompt("(a)BREAK b", "word")
    rendered = render_prompt(parsed, [-0.1, 0.0])
    assert rendered == "a BREAK b"
    assert parse_prompt_attention(rendered) == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]


def test_render_keeps_and_keywords_apart() -> None:
    # The middle part "((" renders as nothing; "ANDAND" would no longer split the prompt.
    parsed = parse_prompt("x AND((AND y", "word")
    rendered = render_prompt(parsed, [0.0, 0.0])
    assert rendered == "x AND AND y"
    assert len(webui_view(rendered)[0]) == 3


def test_render_rejects_bad_offsets() -> None:
    parsed = parse_prompt("a b", "word")
    with pytest.raises(ValueError, match="expected 2 offsets"):
        render_prompt(parsed, [0.0])
    with pytest.raises(ValueError, match="finite"):
        render_prompt(parsed, [0.0, float("nan")])


# ---------------------------------------------------------------------------------------------
# Property tests: round trips over generated prompts
# ---------------------------------------------------------------------------------------------

ATOMS = [
    "cat", "a", "score_9", "photo", "hello!", "1girl", "don't", "ANDy", "AND", "BREAK", "B", "REAK",
    " ", " ", "  ", ", ", ",", "!", ".", ":", "\n", "|", "<", ">", "1", "0.5", "12",
    "(", ")", "[", "]", "((", "))", "\\(", "\\)", "\\[", "\\]", "\\\\", "\\", ":1.2)", ":0.5", ":-1)",
    "(q:1.3)", "[w]", "(a, b:1.2)", "[a:b:0.5]", "[x|y]", "[c:3]", "[::0.5]", "[(d):e:2]", "[fe|]male",
    "(([k:l:0.3]))", "[a, b|c]", "<lora:x:1>", "<hypernet:h:0.5>", " AND ", " AND:0.5", " BREAK ",
]

prompts = st.lists(st.sampled_from(ATOMS), max_size=9).map("".join)


def _parse_or_skip(prompt: str, granularity: str, negative: bool) -> ParsedPrompt | None:
    try:
        return parse_prompt(prompt, granularity, negative=negative, tokenizer=FAKE_CLIP)
    except PromptSyntaxError:
        return None


@given(
    prompt=prompts,
    granularity=st.sampled_from(GRANULARITIES),
    negative=st.booleans(),
    offsets=st.lists(
        st.one_of(st.just(0.0), st.floats(-3, 3, allow_nan=False), st.sampled_from([-1.0, 0.1, 1e-9])),
        min_size=40,
        max_size=40,
    ),
)
@PROPERTY
def test_render_round_trip(prompt: str, granularity: str, negative: bool, offsets: list[float]) -> None:
    parsed = _parse_or_skip(prompt, granularity, negative)
    if parsed is None:
        return
    x = offsets[: parsed.unit_count] + [0.0] * max(0, parsed.unit_count - len(offsets))
    rendered = render_prompt(parsed, x)  # also self-checks; RuntimeError would fail the test
    again = parse_prompt(rendered, granularity, negative=negative, tokenizer=FAKE_CLIP)
    assert labels(again) == labels(parsed)
    # The WebUI view of the rendered prompt gives exactly the intended weights.
    assert webui_view(rendered, negative) == intended_view(parsed, x)
    # Fixed pieces come back with the same multipliers.
    fixed = [(p.kind, p.base_weight) for p in parsed.pieces if p.kind in ("edit", "break")]
    assert [(p.kind, p.base_weight) for p in again.pieces if p.kind in ("edit", "break")] == fixed


@given(prompt=prompts, granularity=st.sampled_from(GRANULARITIES), negative=st.booleans())
@PROPERTY
def test_render_zero_is_equivalent(prompt: str, granularity: str, negative: bool) -> None:
    parsed = _parse_or_skip(prompt, granularity, negative)
    if parsed is None:
        return
    rendered = render_prompt(parsed, [0.0] * parsed.unit_count)
    assert webui_view(rendered, negative) == webui_view(prompt, negative) == intended_view(parsed)
    if "\\" not in prompt.replace("\\\\", "").replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", ""):
        # Without lone backslashes (the WebUI turns them into empty entries, which we drop) the
        # emphasis of every part is identical, entry for entry.
        if not _has_edit_or_break(parsed):
            assert _raw_parts(rendered, negative) == _raw_parts(prompt, negative)


def _has_edit_or_break(parsed: ParsedPrompt) -> bool:
    return any(p.kind in ("edit", "break") for p in parsed.pieces)


def _raw_parts(prompt: str, negative: bool) -> list[list[tuple[str, float]]]:
    if negative:
        return [parse_prompt_attention(prompt)]
    return [
        parse_prompt_attention(_PART_WEIGHT.search(part).group(1))
        for part in re.split(r"\bAND\b", _NETWORK.sub("", prompt))
    ]


# ---------------------------------------------------------------------------------------------
# PromptSpace
# ---------------------------------------------------------------------------------------------


def test_prompt_space_basics() -> None:
    space = PromptSpace("(cat:1.2), dog", "ugly, [blurry]", "word")
    assert space.dim == 4
    assert [(u.index, u.prompt, u.text, u.base_weights) for u in space.units] == [
        (0, "positive", "cat", (1.2,)),
        (1, "positive", "dog", (1.0,)),
        (2, "negative", "ugly", (1.0,)),
        (3, "negative", "blurry", (1 / 1.1,)),
    ]
    # Parts with emphasis start with the guard that spares the WebUI's schedule parser.
    assert space.render(np.zeros(4)) == (SCHEDULE_GUARD + "(cat:1.2), dog", SCHEDULE_GUARD + "ugly, [blurry]")
    x = np.array([0.1, -1.2, 0.5, -0.00001])
    assert space.render(x) == (SCHEDULE_GUARD + "(cat:1.3), (dog:0.2)", SCHEDULE_GUARD + "(ugly:1.5), (blurry:0.909)")
    assert PromptSpace("cat", "", schedule_guard=False).render([0.2]) == ("(cat:1.2)", "")
    # What a person sees and copies has the same weights and no guard.
    assert space.display(x) == ("(cat:1.3), (dog:0.2)", "(ugly:1.5), (blurry:0.909)")
    assert PromptSpace("cat dog", "").render([0.0, 0.0]) == ("cat dog", "")  # no brackets, no guard
    assert space.weights(x) == [(1.3,), (0.2,), (1.5,), (0.909,)]
    assert space.weights(np.zeros(4))[3] == (1 / 1.1,)


def test_prompt_space_empty_negative_and_errors() -> None:
    space = PromptSpace("a cat", "", "phrase")
    assert space.dim == 1 and space.negative.unit_count == 0
    assert space.render([0.5]) == (SCHEDULE_GUARD + "(a cat:1.5)", "")
    with pytest.raises(ValueError, match="has 1"):
        space.render([0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        space.weights([float("inf")])
    with pytest.raises(PromptSyntaxError, match="nothing to weight"):
        PromptSpace("<lora:x:1> [a:b:0.5], BREAK", "", "word")
    with pytest.raises(ValueError, match="granularity"):
        PromptSpace("a", "", "letter")  # type: ignore[arg-type]


def test_prompt_space_json_round_trip() -> None:
    space = PromptSpace(EXAMPLE + " AND dog :0.7", "(bad hands:1.2), <lora:y:1>", "phrase")
    data = json.loads(json.dumps(space.to_json()))
    restored = PromptSpace.from_json(data)
    assert restored.units == space.units
    x = np.linspace(-0.5, 0.5, space.dim)
    assert restored.render(x) == space.render(x)
    assert restored.weights(x) == space.weights(x)
    broken = json.loads(json.dumps(data))
    broken["prompt"]["pieces"][0]["kind"] = "bogus"
    with pytest.raises(ValueError, match="unknown piece kind"):
        PromptSpace.from_json(broken)
    with pytest.raises(ValueError, match="format"):
        PromptSpace.from_json({**data, "format": 99})


def test_prompt_space_token_granularity_with_injected_tokenizer() -> None:
    space = PromptSpace("photorealistic cat, 8k", "", "token", tokenizer=FAKE_CLIP)
    assert [u.text for u in space.units] == ["photorealistic", "cat", ",", "8", "k"]
    assert space.render([0, 0.2, 0, 0, 0]) == (SCHEDULE_GUARD + "photorealistic (cat:1.2), 8k", "")
