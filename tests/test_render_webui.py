"""Rendering for the WebUI: the weight bound, the schedule-parser guard, and both against the real
WebUI's `modules/prompt_parser.py` (skipped with a message when that source or lark is missing)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_pinning.bounds import UNBOUNDED, WeightRange
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError
from lib_pinning.prompt import SCHEDULE_GUARD, PromptSpace, parse_prompt, render_prompt
from tests import webui_parser
from tests.test_prompt import FAKE_CLIP, PROPERTY, _parse_or_skip, intended_view, labels, mirror, prompts, webui_view

RANGES = st.sampled_from([(0.0, 2.0), (0.2, 1.6), (0.5, 1.5), (0.0, 1.0), (0.3, 3.0)])
OFFSETS = st.lists(st.floats(-6, 6, allow_nan=False), min_size=40, max_size=40)
_NETWORK = re.compile(r"<(\w+):([^>]+)>")


# -- the bound ------------------------------------------------------------------------------------


@given(value=st.floats(-50, 50, allow_nan=False), bounds=RANGES)
@PROPERTY
def test_fold_is_a_reflection_into_the_range(value: float, bounds: tuple[float, float]) -> None:
    weight_range = WeightRange(*bounds)
    folded = weight_range.fold(value)
    assert bounds[0] - 1e-9 <= folded <= bounds[1] + 1e-9
    assert folded == pytest.approx(mirror(value, *bounds), abs=1e-9)


def test_fold_keeps_the_range_and_the_old_rule() -> None:
    assert WeightRange(0.0, 2.0).fold(1.3) == 1.3
    assert WeightRange(0.0, 2.0).fold(2.5) == pytest.approx(1.5)
    assert WeightRange(0.0, 2.0).fold(-0.4) == pytest.approx(0.4)
    assert WeightRange(0.2, 1.6).fold(1.9) == pytest.approx(1.3)
    assert UNBOUNDED.fold(-0.7) == 0.7 and UNBOUNDED.fold(9.0) == 9.0  # |base + x| of older runs
    with pytest.raises(ValueError):
        WeightRange(1.0, 1.0)


@given(prompt=prompts, granularity=st.sampled_from(["word", "phrase", "token"]), offsets=OFFSETS, bounds=RANGES)
@PROPERTY
def test_no_rendered_weight_leaves_the_range(prompt: str, granularity: str, offsets: list[float], bounds) -> None:
    parsed = _parse_or_skip(prompt, granularity, False)
    if parsed is None:
        return
    x = offsets[: parsed.unit_count] + [0.0] * max(0, parsed.unit_count - len(offsets))
    weight_range = WeightRange(*bounds)
    rendered = render_prompt(parsed, x, weight_range=weight_range)  # self-verifying
    assert webui_view(rendered) == intended_view(parsed, x, *bounds)
    # Every unit the search changed has all its pieces inside the range.
    for piece in parsed.pieces:
        if piece.unit is not None and x[piece.unit] != 0.0:
            weight = min(max(round(mirror(piece.base_weight + x[piece.unit], *bounds), 3), bounds[0]), bounds[1])
            assert bounds[0] <= weight <= bounds[1]


def test_prompt_space_weights_stay_in_the_range_and_record_it() -> None:
    space = PromptSpace("score_9, (1girl:1.3), red hair, smile", "lowres", weight_range=WeightRange(0.2, 1.6))
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.normal(0.0, 2.0, space.dim)
        for weights in space.weights(x):
            assert all(0.2 <= w <= 1.6 for w in weights)
        for number in re.findall(r":(\d+(?:\.\d+)?)\)", space.render(x)[0] + space.render(x)[1]):
            assert 0.2 <= float(number) <= 1.6
    restored = PromptSpace.from_json(space.to_json())
    assert restored.weight_range == WeightRange(0.2, 1.6) and restored.schedule_guard
    x = rng.normal(0.0, 2.0, space.dim)
    assert restored.render(x) == space.render(x)
    legacy = {k: v for k, v in space.to_json().items() if k not in ("weight_range", "schedule_guard")}
    old = PromptSpace.from_json(legacy)  # a run recorded before the bound: |base + x|, no guard
    assert old.weight_range == UNBOUNDED and not old.schedule_guard
    assert old.render(np.full(space.dim, 2.0))[0] == "(score_9:3), (1girl:3.3), (red:3) (hair:3), (smile:3)"


def test_weight_range_options() -> None:
    options = PinningOptions()
    assert (options.weight_min, options.weight_max) == (0.0, 2.0)
    assert PinningOptions(weight_min=0.2, weight_max=1.6).to_infotext() == {"Pin weight min": "0.2", "Pin weight max": "1.6"}
    with pytest.raises(OptionError, match="weight_max"):
        PinningOptions(weight_min=1.0, weight_max=1.0)


# -- the guard ------------------------------------------------------------------------------------


@given(prompt=prompts, granularity=st.sampled_from(["word", "phrase"]), negative=st.booleans(), offsets=OFFSETS)
@PROPERTY
def test_guard_only_prefixes_parts(prompt: str, granularity: str, negative: bool, offsets: list[float]) -> None:
    rendered = _plain_and_guarded(prompt, granularity, negative, offsets)
    if rendered is None:
        return
    parsed, plain, guarded = rendered
    assert _without_guards(guarded, negative) == plain
    again = parse_prompt(guarded, granularity, negative=negative, tokenizer=FAKE_CLIP)
    assert labels(again) == labels(parsed)  # re-pinning a pinned prompt: the guard is not text
    assert render_prompt(again, [0.0] * again.unit_count, guard=True) == render_prompt(
        parse_prompt(plain, granularity, negative=negative, tokenizer=FAKE_CLIP), [0.0] * again.unit_count, guard=True
    )


def _plain_and_guarded(prompt: str, granularity: str, negative: bool, offsets: list[float]):
    """The parsed prompt and its render at these offsets (padded with zeros), without and with the
    guard; None for a prompt the parser refuses."""
    parsed = _parse_or_skip(prompt, granularity, negative)
    if parsed is None:
        return None
    x = offsets[: parsed.unit_count] + [0.0] * max(0, parsed.unit_count - len(offsets))
    return parsed, render_prompt(parsed, x), render_prompt(parsed, x, guard=True)


def _without_guards(prompt: str, negative: bool) -> str:
    if negative:
        return prompt[len(SCHEDULE_GUARD):] if prompt.startswith(SCHEDULE_GUARD) else prompt
    return re.sub(r"(^|\bAND)" + re.escape(SCHEDULE_GUARD), r"\1", prompt)


def test_no_guard_where_prompt_editing_must_be_parsed() -> None:
    space = PromptSpace("a [cat:dog:0.5] b AND c d", "")
    positive, _ = space.render([0.2, 0.2, 0.2, 0.2])
    assert positive == "(a:1.2) [cat:dog:0.5] (b:1.2) AND" + SCHEDULE_GUARD + " (c:1.2) (d:1.2)"


# -- against the real WebUI parser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_parser():
    module, why = webui_parser.load()
    if module is None:
        pytest.skip(f"real WebUI prompt parser unavailable: {why}")
    return module


def _real_view(pp, prompt: str, negative: bool, steps: int = 10) -> list:
    """What the real WebUI makes of a prompt: per AND part and schedule step, the emphasis runs,
    with the text that makes no tokens (empty entries, leading whitespace of a part) left out."""
    if negative:
        parts = [(prompt, 1.0)]
    else:
        _, flat, _ = pp.get_multicond_prompt_list([_NETWORK.sub("", prompt)])
        parts = [(text, 1.0) for text in flat]
    view = []
    for text, _ in parts:
        schedule = pp.get_learned_conditioning_prompt_schedules([text], steps)[0]
        for end, step_text in schedule:
            runs = [[t, w] for t, w in pp.parse_prompt_attention(step_text) if t]
            # The part's leading whitespace may span runs (the guard's newline, then "(\ncat").
            while runs and not runs[0][0].strip():
                runs.pop(0)
            if runs:
                runs[0][0] = runs[0][0].lstrip()
            view.append((end, [(t, w) for t, w in runs if t]))
    return view


@given(prompt=prompts, granularity=st.sampled_from(["word", "phrase"]), negative=st.booleans(), offsets=OFFSETS)
@PROPERTY
def test_real_webui_reads_the_guarded_render_as_the_plain_one(real_parser, prompt, granularity, negative, offsets) -> None:
    rendered = _plain_and_guarded(prompt, granularity, negative, offsets)
    if rendered is None:
        return
    _, plain, guarded = rendered
    assert _real_view(real_parser, guarded, negative) == _real_view(real_parser, plain, negative)


def test_real_webui_weights_of_a_long_guarded_prompt(real_parser) -> None:
    words = " ".join(f"tag{k}," if k % 3 == 2 else f"word{k}" for k in range(50))
    space = PromptSpace(words, "lowres, (worst quality:1.4)")
    x = np.random.default_rng(1).normal(0.0, 0.3, space.dim)
    prompt, negative = space.render(x)
    assert prompt.startswith(SCHEDULE_GUARD) and negative.startswith(SCHEDULE_GUARD)
    # The real parser: no schedule work, and per-word weights exactly as the search meant them.
    assert real_parser.get_learned_conditioning_prompt_schedules([prompt], 20) == [[[20, prompt]]]
    unit_weight = {u.text: w[0] for u, w in zip(space.units, space.weights(x))}
    for text, weight in real_parser.parse_prompt_attention(prompt):
        for word in re.findall(r"\w+", text):
            assert unit_weight[word] == weight, word
    assert _real_view(real_parser, prompt, False) == _real_view(real_parser, render_prompt(space.positive, x[:50]), False)
    # How long the parse takes with and without the guard is measured, not asserted:
    # benchmarks/bench_prompt_parse.py (results in docs/benchmarks.md).
