"""Stopping rules, budgets, the repeat cache, resume with a larger budget, the groups search space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.optimizer import CmaSettings, PinningOptimizer, resolve_groups
from lib_pinning.options import PinningOptions
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.stopping import GenerationOutcome, StopMonitor, StopRules, default_stagnation, planned_batches
from lib_pinning.store import RunStore

FAST = ToySettings(steps=6, cfg_scale=1.5)
SEEDS = derive_seeds(11, 4)


def rules(**changes) -> StopRules:
    base = dict(enabled=True, patience=2, stagnation=8, tolerance=1e-3, tolx=5e-4, mu=2, max_batches=None,
                max_seconds=None)
    return StopRules(**{**base, **changes})


def feed(monitor: StopMonitor, generations: list[list[float]], spread: float = 1.0):
    """Observe generations of values; the best so far is tracked as the run would."""
    best = monitor._reference if monitor._reference is not None else float("inf")
    decisions = []
    for g, values in enumerate(generations, 1):
        best = min(best, *values)
        decisions.append(monitor.observe(GenerationOutcome(g, values, best, spread)))
    return decisions


# -- the criteria, one by one ---------------------------------------------------------------------


def test_plateau_fires_after_patience_flat_generations_and_not_before():
    monitor = StopMonitor(rules(patience=2))
    monitor.restart(0.9)
    # Generation 1 improves (not flat: it counts as progress), 2 and 3 sit on the plateau.
    decisions = feed(monitor, [[0.5, 0.5, 0.7, 0.8], [0.5, 0.5, 0.9, 0.9], [0.5, 0.5004, 0.6, 0.9]])
    assert decisions[:2] == [None, None]
    assert decisions[2] is not None and decisions[2].criterion == "plateau" and decisions[2].generation == 3
    assert "plateau" in decisions[2].message


def test_no_plateau_while_the_search_is_tied_with_its_start():
    # The parents tie with the baseline (every proposal renders alike): not a plateau of the
    # search's own; stagnation ends it if nothing ever improves.
    monitor = StopMonitor(rules(patience=2, stagnation=4))
    monitor.restart(0.9)
    decisions = feed(monitor, [[0.9, 0.9, 0.95, 1.0]] * 3 + [[0.6, 0.6, 0.9, 1.0]] + [[0.6, 0.6, 0.9, 1.0]] * 2)
    assert decisions[:4] == [None] * 4
    assert decisions[5] is not None and decisions[5].criterion == "plateau"
    stuck = StopMonitor(rules(patience=2, stagnation=4))
    stuck.restart(0.9)
    decisions = feed(stuck, [[0.9, 0.9, 0.95, 1.0]] * 4)
    assert decisions[:3] == [None] * 3 and decisions[3].criterion == "stagnation"


def test_no_plateau_when_only_the_best_sits_on_it():
    monitor = StopMonitor(rules(patience=2))
    monitor.restart(0.9)
    decisions = feed(monitor, [[0.5, 0.7, 0.8, 0.9]] + [[0.5, 0.6, 0.7, 0.8]] * 4)
    assert all(d is None for d in decisions)  # the second parent (mu = 2) is never on the plateau


def test_an_improvement_resets_the_plateau_count():
    monitor = StopMonitor(rules(patience=2))
    monitor.restart(0.9)
    decisions = feed(monitor, [[0.5, 0.5, 0.9, 0.9], [0.4, 0.4, 0.9, 0.9], [0.3, 0.3, 0.9, 0.9]])
    assert all(d is None for d in decisions)


def test_floor_fires_at_zero_within_the_tolerance():
    monitor = StopMonitor(rules())
    monitor.restart(0.9)
    assert feed(monitor, [[0.0105, 0.5, 0.6, 0.7]]) == [None]
    monitor.restart(0.9)
    decision = feed(monitor, [[0.0004, 0.5, 0.6, 0.7]])[0]
    assert decision is not None and decision.criterion == "floor"
    assert monitor.before_individual(0.0004, 3, 1.0, 1).criterion == "floor"
    assert monitor.before_individual(0.01, 3, 1.0, 1) is None


def test_tolfun_fires_when_a_whole_generation_scores_the_same():
    # A plateau that is not the best (e.g. every batch collapsed to one mode): the parents are not
    # within the tolerance of the best (0.2), so it is tolfun, not plateau, that ends the run.
    monitor = StopMonitor(rules(patience=2))
    monitor.restart(0.2)
    decisions = feed(monitor, [[0.6, 0.6, 0.6, 0.6], [0.6, 0.6, 0.6, 0.6004]])
    assert decisions[0] is None  # one generation of history is not enough
    assert decisions[1] is not None and decisions[1].criterion == "tolfun"
    monitor.restart(0.2)
    assert feed(monitor, [[0.6, 0.6, 0.6, 0.61], [0.6, 0.6, 0.6, 0.61]]) == [None, None]


def test_tolx_fires_only_below_the_weight_resolution():
    monitor = StopMonitor(rules(tolx=5e-4))
    monitor.restart(0.9)
    assert feed(monitor, [[0.5, 0.6, 0.7, 0.8]], spread=0.01) == [None]
    decision = feed(monitor, [[0.45, 0.6, 0.7, 0.8]], spread=1e-4)[0]
    assert decision is not None and decision.criterion == "tolx"


def test_stagnation_fires_after_its_generations_flat_or_not():
    monitor = StopMonitor(rules(stagnation=4, patience=100))
    monitor.restart(0.9)
    values = [[0.5, 0.6, 0.7, 0.8]] + [[0.5 - 0.0002 * g, 0.6, 0.7, 0.8] for g in range(1, 5)]
    decisions = feed(monitor, values)  # improvements below the tolerance are no improvements
    assert decisions[:4] == [None] * 4
    assert decisions[4] is not None and decisions[4].criterion == "stagnation"


def test_disabled_rules_never_stop_on_convergence_but_the_budget_still_applies():
    monitor = StopMonitor(rules(enabled=False, max_batches=10))
    monitor.restart(0.9)
    assert all(d is None for d in feed(monitor, [[0.0, 0.0, 0.0, 0.0]] * 5, spread=0.0))
    assert monitor.before_individual(0.0, 9, 1.0, 1) is None
    assert monitor.before_individual(0.0, 10, 1.0, 1).criterion == "max_batches"
    timed = StopMonitor(rules(max_seconds=60.0))
    assert timed.before_individual(None, 1, 59.0, 1) is None
    assert timed.before_individual(None, 1, 61.0, 1).criterion == "max_minutes"


def test_planned_batches_from_the_options_alone():
    settings = CmaSettings.resolve(PinningOptions(), dim=7)
    assert planned_batches(PinningOptions(), settings.generations, settings.lambda_) == 1 + 16 * 9
    assert planned_batches(PinningOptions(max_batches=40), settings.generations, settings.lambda_) == 40
    assert default_stagnation(16) == 5 and default_stagnation(32) == 8 and default_stagnation(64) == 16


# -- the run loop -----------------------------------------------------------------------------------


TINY = dict(prompt="red circle", granularity="phrase", initial_std=0.001)


class CountingToy(ToyGenerator):
    """Counts backend calls."""

    def __init__(self, settings: ToySettings = FAST) -> None:
        super().__init__(settings)
        self.calls = 0

    def generate(self, request: GenerationRequest) -> Batch:
        self.calls += 1
        return super().generate(request)


def start(tmp_path: Path, generator=None, prompt="a red circle, blue square", **options) -> PinningRun:
    opts = PinningOptions(**{"generations": 4, "cma_lambda": 4, "cli_log": False, **options})
    return PinningRun.start(generator=generator or CountingToy(), prompt=prompt, negative_prompt="",
                            seeds=SEEDS, options=opts, runs_dir=tmp_path)


def test_max_batches_stops_mid_generation_and_is_recorded(tmp_path):
    generator = CountingToy()
    result = start(tmp_path, generator, max_batches=7, stop_early=False).execute()
    assert result.status == "finished" and result.stop_criterion == "max_batches"
    assert generator.calls == result.batches == 7
    info = RunStore.open(result.run_dir).read_run()
    assert info["stop_criterion"] == "max_batches" and "Max batches 7" in info["stop_reason"]
    assert info["batches"] == 7 and info["planned_batches"] == 7


def test_max_minutes_counts_earlier_sessions(tmp_path):
    run = start(tmp_path, max_minutes=1.0, stop_early=False)
    run.run_info["seconds"] = 61.0  # as if an earlier session had run for a minute
    result = run.execute()
    assert result.stop_criterion == "max_minutes" and result.batches == 1  # only the baseline


def test_all_generations_is_a_stop_reason_too(tmp_path):
    result = start(tmp_path, generations=2, stop_early=False).execute()
    assert result.stop_criterion == "generations" and result.stop_reason.startswith("All 2 planned")


def test_repeats_reuse_the_batch_without_calling_the_backend(tmp_path):
    # One unit and a tiny std: proposals render (3 decimals) to a handful of prompts, among them
    # the prompt as written, i.e. the baseline's.
    generator = CountingToy()
    result = start(tmp_path, generator, **TINY, generations=3, stop_early=False).execute()
    store = RunStore.open(result.run_dir)
    records = list(store.iter_individuals())
    repeats = [r for r in records if r.repeat_of is not None]
    assert len(records) == 1 + 3 * 4 and result.evaluations == 13
    assert generator.calls == result.batches == len(records) - len(repeats)
    assert result.repeats == len(repeats) >= 4
    baseline = records[0]
    for r in repeats:
        source = store.read_individual(*r.repeat_of)
        assert (r.prompt, r.negative_prompt) == (source.prompt, source.negative_prompt)
        assert r.loss == source.loss and r.images == source.images
        assert (store.individual_dir(r.generation, r.index) / r.images[0]).is_file()
    assert any(tuple(r.repeat_of) == (0, 0) for r in repeats) and baseline.repeat_of is None
    assert sum(g.repeats for g in store.iter_generations()) == len(repeats)
    info = store.read_run()
    assert info["repeats"] == len(repeats) and info["batches"] == generator.calls


def test_a_resumed_run_keeps_its_repeat_cache(tmp_path):
    first = start(tmp_path, CountingToy(), **TINY, generations=3, stop_early=False).execute()
    generator = CountingToy()
    resumed = PinningRun.resume(first.run_dir, generator, {"generations": 6}).execute()
    assert resumed.generations_done == 6
    # The cache was rebuilt from the run folder: the prompts of generations 1-3 are not generated again.
    assert generator.calls == resumed.batches - first.batches
    assert resumed.repeats - first.repeats == 12 - generator.calls >= 9


def test_a_budget_stopped_run_resumes_with_a_larger_budget_as_one_straight_run(tmp_path):
    straight = start(tmp_path / "a", stop_early=False).execute()
    stopped = start(tmp_path / "b", max_batches=6, stop_early=False).execute()
    assert stopped.stop_criterion == "max_batches" and stopped.batches == 6
    generator = CountingToy()
    resumed = PinningRun.resume(stopped.run_dir, generator, {"max_batches": 100}).execute()
    assert resumed.stop_criterion == "generations"
    assert generator.calls == straight.batches - 6  # it continued, nothing generated twice

    a = list(RunStore.open(straight.run_dir).iter_individuals())
    b = list(RunStore.open(resumed.run_dir).iter_individuals())
    # The same individuals; offsets equal up to float rounding (the JSON checkpoint's arrays are
    # C-ordered where DEAP's eigh output is not, which can move the last bit of a product).
    assert [(r.key, r.prompt, r.loss) for r in a] == [(r.key, r.prompt, r.loss) for r in b]
    assert all(np.allclose(r.x, q.x, rtol=0, atol=1e-9) for r, q in zip(a, b))
    assert RunStore.open(resumed.run_dir).read_run()["options"]["max_batches"] == 100


def test_a_converged_run_resumes_and_searches_on(tmp_path):
    stopped = start(tmp_path, generations=30, stop_patience=1).execute()
    assert stopped.stop_criterion in ("plateau", "tolfun", "stagnation", "floor", "tolx")
    done = stopped.generations_done
    assert done < 30
    if stopped.stop_criterion == "floor":
        pytest.skip("the floor cannot be improved upon")
    resumed = PinningRun.resume(stopped.run_dir, CountingToy(), {"stop_patience": 2}).execute()
    # The criteria start afresh where it stood: at least `patience` more generations ran.
    assert resumed.generations_done >= done + 2


def test_resume_refuses_options_that_would_change_the_search(tmp_path):
    stopped = start(tmp_path, max_batches=3).execute()
    with pytest.raises(ValueError, match="cannot change initial_std"):
        PinningRun.resume(stopped.run_dir, CountingToy(), {"initial_std": 0.5})


# -- the groups search space ------------------------------------------------------------------------


def test_groups_are_contiguous_cover_every_unit_and_never_mix_the_prompts():
    options = PinningOptions(search_space="groups", search_groups=6)
    groups = resolve_groups(options, 50, (44, 6))
    assert groups[0][0] == 0 and groups[-1][1] == 50
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    assert all(stop <= 44 or start >= 44 for start, stop in groups)
    assert len(groups) == 6


def test_auto_switches_to_groups_above_the_threshold():
    options = PinningOptions()
    assert resolve_groups(options, options.groups_above, None) == ()
    groups = resolve_groups(options, 81, None)
    assert len(groups) == 9  # about sqrt(N)
    settings = CmaSettings.resolve(options, 81)
    assert settings.search_dim == 9 and settings.lambda_ == int(4 + 3 * np.log(9))
    assert resolve_groups(options.replace(search_space="units"), 81, None) == ()


def test_the_groups_optimizer_proposes_per_unit_offsets_shared_within_groups():
    options = PinningOptions(search_space="groups", search_groups=3, initial_std=0.3)
    settings = CmaSettings.resolve(options, 10)
    opt = PinningOptimizer(settings, seed=5)
    target = np.linspace(-0.5, 0.5, 10)
    for _ in range(60):
        population = opt.ask()
        assert all(len(x) == 10 for x in population)
        for x in population:
            for start_, stop_ in settings.groups:
                assert np.allclose(x[start_:stop_], x[start_])
        opt.tell(population, [(float(np.sum((np.asarray(x) - target) ** 2)),) for x in population])
    state = opt.state_dict()
    resumed = PinningOptimizer.from_state(settings, state)
    assert np.allclose(resumed.ask()[0], opt.ask()[0])
    # The best a grouped search can do: each group at its units' mean target.
    best = settings.lift([target[a:b].mean() for a, b in settings.groups])
    assert np.sum((opt.centroid - target) ** 2) < np.sum((best - target) ** 2) + 1e-3
