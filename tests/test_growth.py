"""Growth plans, ancestry, costs, per-image argument resizing and solver-state growth."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pinning_samplers.loop import Hyperbatch
from pinning_samplers.noise import SeededNoise
from pinning_samplers.plan import (
    DEFAULT_SCHEDULE,
    SCHEDULES,
    GrowthPlan,
    growth_levels,
    min_growth_steps,
    plan_growth,
    resolve_plan,
)
from pinning_samplers.rows import SolverState, grow_rows, resize_extra_args, take_rows
from pinning_samplers.sampling import DEFAULT_SPLIT_RHO, SAMPLERS


def simulate_lineage(plan: GrowthPlan) -> list[list[int]]:
    """Brute-force reference: follow every row through the plan's splits.

    Returns, per final image, the rows it occupied at each level (root first), by copying the
    lineage lists exactly as the growth rule says (new row r copies row r - n).
    """
    lineages = [[row] for row in range(plan.sizes[0])]
    for step in range(1, plan.steps):
        before, after = plan.sizes[step - 1], plan.sizes[step]
        if after == before:
            continue
        grown = lineages + [list(lineages[row - before]) for row in range(before, after)]
        lineages = [lineage + [row] for row, lineage in enumerate(grown)]
    return lineages


def count_model_rows(plan: GrowthPlan, evals: list[int]) -> int:
    """Brute-force reference for model_rows: walk the steps as the shared loop does."""
    rows = plan.sizes[0]
    total = 0
    for step, count in enumerate(evals):
        total += rows  # the first evaluation runs before the split
        rows = plan.sizes[step]
        total += (count - 1) * rows
    return total


# -- plans --------------------------------------------------------------------------------------


def test_even_plan_for_8_images_20_steps_has_four_equal_segments():
    plan = plan_growth(8, 20, "even")
    assert plan.sizes == (1,) * 5 + (2,) * 5 + (4,) * 5 + (8,) * 5
    assert plan.splits == ((5, 1, 2), (10, 2, 4), (15, 4, 8))
    assert plan.levels == (1, 2, 4, 8)
    assert plan.level_start_steps == (0, 5, 10, 15)


def test_late_plan_puts_every_split_into_the_second_half():
    plan = plan_growth(8, 20, "late")
    assert plan.sizes == (1,) * 12 + (2,) * 3 + (4,) * 2 + (8,) * 3
    assert min(plan.split_steps) >= 10


def test_non_power_of_two_grows_partially_last():
    plan = plan_growth(6, 12, "even")
    assert plan.levels == (1, 2, 4, 6)
    assert growth_levels(6) == (1, 2, 4, 6)
    assert growth_levels(9) == (1, 2, 4, 8, 9)


def test_none_plan_is_a_plain_batch():
    plan = plan_growth(5, 7, "none")
    assert plan.sizes == (5,) * 7
    assert plan.is_plain and plan.splits == () and plan.levels == (5,)
    assert plan.model_rows() == plan.plain_model_rows() == 35


def test_batch_of_one_never_grows():
    plan = plan_growth(1, 3, "even")
    assert plan.sizes == (1, 1, 1)
    assert plan.schedule == "none"


def test_front_plan_splits_in_the_first_half_and_refreshes_every_copy():
    plan = plan_growth(8, 20, "front")
    assert plan.sizes == (1,) * 4 + (2,) * 5 + (4,) * 4 + (8,) * 7
    assert plan.split_steps == (4, 9, 13)
    assert plan.refresh and not plan_growth(8, 20, "even").refresh
    assert GrowthPlan.from_json(plan.to_json()).refresh


def test_default_schedule_meets_the_cost_target():
    """Issue 15: the default costs at most 0.6 of a plain batch at B=8, S=20."""
    assert DEFAULT_SCHEDULE == "front" and DEFAULT_SCHEDULE in SCHEDULES
    assert plan_growth(8, 20).cost_ratio() <= 0.6
    assert plan_growth(8, 20).cost_ratio([2] * 19 + [1]) <= 0.6
    for info in SAMPLERS.values():
        assert info.cost_ratio(plan_growth(8, 20, info.default_growth)) <= 0.6, info.name


def test_a_plan_can_switch_its_schedules_refresh():
    """Euler a's documented cheaper setting is "even" with the refresh at every split."""
    plain_even, refreshed = plan_growth(8, 20, "even"), plan_growth(8, 20, "even", refresh=True)
    assert refreshed.refresh and not plain_even.refresh and refreshed.sizes == plain_even.sizes
    assert not plan_growth(8, 20, "front", refresh=False).refresh and plan_growth(8, 20, "front").refresh


def test_cost_ratios_order_late_below_even_below_front_below_none():
    """With two splits (B = 4), "front"'s last split at 0.65 of the steps lands where "even"'s
    does, so the two share their sizes there and differ only in the refresh."""
    for batch_size, steps in itertools.product((4, 8, 16), (20, 30)):
        ratios = [plan_growth(batch_size, steps, name).cost_ratio() for name in ("late", "even", "front", "none")]
        assert ratios[0] < ratios[1] <= ratios[2] < ratios[3] == 1.0
        assert (ratios[1] < ratios[2]) is (batch_size > 4)


def test_too_few_steps_falls_back_to_a_plain_batch_with_a_warning(caplog):
    assert min_growth_steps(8) == 5
    with caplog.at_level(logging.WARNING, logger="pinning_samplers.plan"):
        plan = plan_growth(8, 4, "even")
    assert plan.sizes == (8,) * 4 and plan.schedule == "none"
    assert "too few" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pinning_samplers.plan"):
        plan = plan_growth(8, 5, "even")
    assert plan.sizes == (1, 2, 4, 8, 8)
    assert caplog.text == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=4, steps=3, sizes=(1, 2)), "one size per step"),
        (dict(batch_size=4, steps=3, sizes=(1, 2, 2)), "must end at the batch size"),
        (dict(batch_size=4, steps=4, sizes=(1, 3, 4, 4)), "at most 2n"),
        (dict(batch_size=4, steps=4, sizes=(1, 2, 2, 4)), "final step"),
        (dict(batch_size=4, steps=3, sizes=(4, 2, 4)), "at most 2n"),
        (dict(batch_size=0, steps=3, sizes=(1, 1, 1)), "positive int"),
        (dict(batch_size=2, steps=2, sizes=(1.5, 2)), "positive int"),
    ],
)
def test_invalid_plans_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GrowthPlan(**kwargs)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown growth schedule"):
        plan_growth(4, 10, "early")


def test_resolve_plan_checks_the_run_shape():
    plan = plan_growth(4, 10)
    assert resolve_plan(plan, 4, 10) is plan
    assert resolve_plan("late", 4, 10) == plan_growth(4, 10, "late")
    with pytest.raises(ValueError, match="this run has"):
        resolve_plan(plan, 4, 11)
    with pytest.raises(TypeError):
        resolve_plan(3, 4, 10)


# -- ancestry -----------------------------------------------------------------------------------


def test_ancestors_for_six_images():
    plan = plan_growth(6, 12)
    assert [plan.ancestors(i) for i in range(6)] == [
        (0, 0, 0, 0),
        (0, 1, 1, 1),
        (0, 0, 2, 2),
        (0, 1, 3, 3),
        (0, 0, 0, 4),
        (0, 1, 1, 5),
    ]


def test_power_of_two_ancestors_are_remainders():
    plan = plan_growth(16, 20)
    for i in range(16):
        assert plan.ancestors(i) == tuple(i % m for m in plan.levels)


def test_divergence_depth_and_parting_step():
    plan = plan_growth(8, 20, "even")
    assert plan.divergence_depth(0, 1) == 1 and plan.parted_at_step(0, 1) == 5
    assert plan.divergence_depth(0, 2) == 2 and plan.parted_at_step(0, 2) == 10
    assert plan.divergence_depth(3, 7) == 3 and plan.parted_at_step(3, 7) == 15
    with pytest.raises(ValueError):
        plan.divergence_depth(2, 2)
    with pytest.raises(IndexError):
        plan.ancestors(8)
    plain = plan_growth(3, 5, "none")
    assert plain.divergence_depth(0, 2) == 0 and plain.parted_at_step(0, 2) == 0


# -- property tests over batch sizes 1..9 and step counts from log2(B) + 1 -----------------------


@settings(max_examples=150, deadline=None)
@given(
    batch_size=st.integers(1, 9),
    extra_steps=st.integers(0, 40),
    schedule=st.sampled_from(SCHEDULES),
)
def test_plan_properties(batch_size, extra_steps, schedule):
    splits = len(growth_levels(batch_size)) - 1
    steps = max(1, splits + 1) + extra_steps  # from log2(B) + 1 (rounded up) upward
    plan = plan_growth(batch_size, steps, schedule)

    assert len(plan.sizes) == steps and plan.sizes[-1] == batch_size
    grows = schedule != "none" and batch_size > 1 and steps >= min_growth_steps(batch_size)
    if grows:
        assert plan.levels == growth_levels(batch_size)
        assert plan.sizes[0] == 1
        assert all(1 <= step <= steps - 2 for step in plan.split_steps)
        # every level runs at least one step, the last at least two
        segments = [b - a for a, b in zip(plan.level_start_steps, plan.level_start_steps[1:] + (steps,))]
        assert min(segments) >= 1 and segments[-1] >= 2
    else:
        assert plan.sizes == (batch_size,) * steps and plan.schedule == "none"

    lineages = simulate_lineage(plan)
    assert len(lineages) == batch_size
    for i in range(batch_size):
        assert plan.ancestors(i) == tuple(lineages[i])
    for i, j in itertools.combinations(range(batch_size), 2):
        depth = plan.divergence_depth(i, j)
        assert depth == plan.divergence_depth(j, i)
        shared = [a == b for a, b in zip(lineages[i], lineages[j])]
        assert depth == shared.index(False)
        assert (depth >= 1) == grows

    for evals in ([1] * steps, [2] * (steps - 1) + [1]):
        assert plan.model_rows(evals) == count_model_rows(plan, evals)
        assert plan.model_rows(evals) <= plan.plain_model_rows(evals)

    again = GrowthPlan.from_json(plan.to_json())
    assert again == plan
    assert json.loads(plan.to_json())["splits"] == [list(s) for s in plan.splits]


def test_from_dict_rejects_inconsistent_splits():
    data = plan_growth(4, 8).to_dict()
    data["splits"] = [list(s) for s in data["splits"]]
    data["splits"][0][0] -= 1
    with pytest.raises(ValueError, match="disagree"):
        GrowthPlan.from_dict(data)


def test_model_rows_accepts_per_step_counts_only_of_the_right_length():
    plan = plan_growth(4, 8)
    with pytest.raises(ValueError):
        plan.model_rows([1, 2])
    with pytest.raises(ValueError):
        plan.model_rows(0)


# -- resizing per-image arguments ----------------------------------------------------------------


class ListWithAttribute(list):
    """A list subclass carrying an attribute, like the WebUI's SdConditioning."""

    def __init__(self, items, tag):
        super().__init__(items)
        self.tag = tag


def test_take_rows_on_plain_structures():
    tensor = torch.arange(12.0).view(4, 3)
    assert torch.equal(take_rows(tensor, 4, 2), tensor[:2])
    other = torch.ones(3, 2)
    assert take_rows(other, 4, 2) is other
    scalar = torch.tensor(7.5)
    assert take_rows(scalar, 4, 2) is scalar
    assert take_rows(7.5, 4, 2) == 7.5 and take_rows(None, 4, 2) is None

    rows = [["a"], ["b"], ["c"], ["d"]]
    cut = take_rows(rows, 4, 3)
    assert cut == rows[:3] and len(rows) == 4

    tagged = ListWithAttribute(["a", "b", "c", "d"], tag="neg")
    cut = take_rows(tagged, 4, 1)
    assert type(cut) is ListWithAttribute and cut == ["a"] and cut.tag == "neg" and len(tagged) == 4

    assert take_rows(("a", "b", "c", "d"), 4, 2) == ("a", "b")

    nested = {"crossattn": torch.zeros(4, 5, 6), "vector": torch.zeros(4, 7), "scale": 2.0}
    cut = take_rows(nested, 4, 2)
    assert cut["crossattn"].shape == (2, 5, 6) and cut["vector"].shape == (2, 7) and cut["scale"] == 2.0
    assert nested["crossattn"].shape == (4, 5, 6)

    assert take_rows(rows, 4, 4) is rows


def test_resize_extra_args_keeps_keys_and_the_full_size_identity():
    args = {"image_cond": torch.zeros(3, 5, 1, 1), "cond_scale": 7.0, "uncond": [[1], [2], [3]]}
    small = resize_extra_args(args, 3, 1)
    assert small.keys() == args.keys()
    assert small["image_cond"].shape[0] == 1 and small["uncond"] == [[1]] and small["cond_scale"] == 7.0
    full = resize_extra_args(args, 3, 3)
    assert all(full[key] is args[key] for key in args)


# -- solver state -------------------------------------------------------------------------------


def test_grow_rows_copies_from_the_top():
    tensor = torch.arange(3.0)[:, None]
    assert grow_rows(tensor, 5).flatten().tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError):
        grow_rows(tensor, 7)
    with pytest.raises(ValueError):
        grow_rows(tensor, 3)


def test_solver_state_grows_every_per_row_field_only():
    state = SolverState(torch.arange(2.0)[:, None].expand(2, 3))
    state.old_denoised = torch.tensor([[5.0], [6.0]])
    state.h_last = torch.tensor(0.25)
    state.history = None
    state.steps_taken = 3
    state.grow(3)
    assert state.rows == 3
    assert state.x[:, 0].tolist() == [0, 1, 0]
    assert state.old_denoised.flatten().tolist() == [5, 6, 5]
    assert state.h_last.ndim == 0 and state.history is None and state.steps_taken == 3


def test_hyperbatch_rejects_a_noise_sampler_with_too_few_rows():
    def model(x, sigma):
        return x * 0

    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0])
    run = Hyperbatch(
        model, torch.zeros(2, 3), sigmas, None, None, True, plan_growth(2, 3),
        noise_sampler=lambda s, t: torch.zeros(1, 3),
    )
    with pytest.raises(ValueError, match="one row per image"):
        for _ in run:
            run.noise(sigmas[0], sigmas[1])


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.5, math.nan])
def test_hyperbatch_rejects_a_split_rho_outside_0_1(rho):
    with pytest.raises(ValueError, match="split_rho"):
        Hyperbatch(
            lambda x, s: x, torch.zeros(2, 3), torch.tensor([1.0, 0.5, 0.0]), None, None, True,
            "even", split_refresh=rho,
        )


@pytest.mark.parametrize("schedule, solver_adds_noise", [("even", False), ("front", True)])
@pytest.mark.parametrize("rho", sorted({math.sqrt(0.5), 0.3, DEFAULT_SPLIT_RHO, *(i.default_split_rho for i in SAMPLERS.values())}))
def test_the_split_refresh_preserves_the_noise_variance(rho, schedule, solver_adds_noise):
    """The split refresh is variance preserving: a copy's noise component x - D keeps the
    variance sigma^2 of its parent's (a noise of the current level), and its correlation with the
    parent's is sqrt(1 - rho^2). Checked statistically on 36864 values per row, fixed seeds. Both
    ways in: DPM++ 2M's (split_refresh, any plan) and a noisy solver's under a refreshing plan
    ("front": plan_refresh)."""
    shape = (4, 96, 96)
    denoised_value = torch.randn((4, *shape), generator=torch.Generator().manual_seed(3))

    def model(x, sigma):
        return denoised_value[: x.shape[0]]

    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    plan = plan_growth(4, 5, schedule)
    x = denoised_value + sigmas[0] * torch.randn((4, *shape), generator=torch.Generator().manual_seed(4))
    refresh = {"plan_refresh": rho} if solver_adds_noise else {"split_refresh": rho}
    run = Hyperbatch(model, x, sigmas, None, None, True, plan, SeededNoise([10, 11, 12, 13], shape), **refresh)
    fresh = torch.Generator().manual_seed(5)
    split, before, after = plan.splits[0]
    for i, denoised in run:
        if i == split:
            break
        # An exact solver step: the rows reach the next level with fresh noise of that level.
        run.state.x = denoised + sigmas[i + 1] * torch.randn(run.state.x.shape, generator=fresh)
    # Copies inherit their parent's denoised value (the grown `denoised`), rows 0.. their parents.
    assert torch.equal(denoised[before:after], denoised[: after - before])
    parent = (run.state.x[: after - before] - denoised[: after - before]) / sigmas[split]
    copy = (run.state.x[before:after] - denoised[before:after]) / sigmas[split]
    assert copy.var().item() == pytest.approx(parent.var().item(), abs=0.03)
    assert copy.var().item() == pytest.approx(1.0, abs=0.03)
    correlation = torch.corrcoef(torch.stack([copy.flatten(), parent.flatten()]))[0, 1].item()
    assert correlation == pytest.approx(math.sqrt(1 - rho * rho), abs=0.02)


def test_a_noisy_solver_refreshes_only_under_a_refreshing_plan():
    """plan_refresh is ignored by plans without `refresh`: copies leave a split as exact duplicates."""
    shape = (3, 4)
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    x = torch.randn((4, *shape), generator=torch.Generator().manual_seed(4))
    for refresh in (False, True):
        plan = GrowthPlan(4, 5, (1, 2, 4, 4, 4), "custom", refresh)
        run = Hyperbatch(lambda x, s: x * 0, x, sigmas, None, None, True, plan, SeededNoise([1, 2, 3, 4], shape),
                         plan_refresh=DEFAULT_SPLIT_RHO)
        for i, _ in run:
            if i == 1:
                assert torch.equal(run.state.x[0], run.state.x[1]) is not refresh
                break


def test_front_early_is_the_former_front_point_the_fidelity_sweep_measured():
    """DPM++ 2M SDE's default: the last split at 0.55 of the steps, every copy refreshed (the sweep's
    "front q=0.55" candidate, benchmarks/hyperbatch_fidelity.py), 0.569 of the rows at B=8, S=20."""
    from benchmarks.hyperbatch_fidelity import front_plan

    plan = plan_growth(8, 20, "front-early")
    assert plan.sizes == front_plan(0.55, True)(8, 20).sizes
    assert plan.refresh and plan.schedule == "front-early"
    assert plan.split_steps == (4, 7, 11) and round(plan.cost_ratio(), 3) == 0.569
    assert SAMPLERS["dpmpp_2m_sde"].default_growth == "front-early"
    assert SAMPLERS["dpmpp_2m_sde"].default_split_rho == math.sqrt(0.5)
