"""The CMA-ES wrapper: options honoured, reproducible, isolated RNG, exact JSON checkpoints."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from lib_pinning.optimizer import CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions


def sphere(x: np.ndarray) -> tuple[float]:
    return (float(np.sum((np.asarray(x) - 0.3) ** 2)),)


def sphere_and_norm(x: np.ndarray) -> tuple[float, float]:
    return (sphere(x)[0], float(np.linalg.norm(x)))


def run(optimizer: PinningOptimizer, generations: int, objective=None) -> list[list[np.ndarray]]:
    if objective is None:
        objective = sphere if optimizer.n_objectives == 1 else sphere_and_norm
    evaluate = optimizer.penalized(objective)
    history = []
    for _ in range(generations):
        population = optimizer.ask()
        optimizer.tell(population, [evaluate(ind) for ind in population])
        history.append([np.array(ind) for ind in population])
    return history


def test_resolves_original_defaults():
    settings = CmaSettings.resolve(PinningOptions(), dim=10)
    assert settings.lambda_ == int(4 + 3 * np.log(10))
    assert settings.mu == settings.lambda_ // 2
    assert settings.generations == 16 * int(np.floor(np.log(10)))
    assert settings.sigma == 0.2 and settings.centroid_radius == 0.0
    assert not settings.multi_objective
    assert CmaSettings.resolve(PinningOptions(), dim=2).generations == 16  # floor(ln 2) = 0


def test_overrides_reach_the_deap_strategy():
    options = PinningOptions(
        cma_lambda=9, cma_mu=3, cma_weights="equal", cma_cs=0.4, cma_damps=2.0, cma_ccum=0.3,
        cma_ccov1=0.05, cma_ccovmu=0.06, initial_std=0.3,
    )
    opt = PinningOptimizer(CmaSettings.resolve(options, dim=5), seed=1)
    s = opt.strategy
    assert (s.lambda_, s.mu, s.cs, s.damps, s.cc, s.ccov1, s.ccovmu, s.sigma) == (9, 3, 0.4, 2.0, 0.3, 0.05, 0.06, 0.3)
    assert np.allclose(s.weights, 1 / 3)
    assert len(opt.ask()) == 9


def test_converges_on_a_sphere():
    opt = PinningOptimizer(CmaSettings.resolve(PinningOptions(initial_std=0.5), dim=6), seed=3)
    run(opt, 80)
    assert sphere(opt.centroid)[0] < 1e-6


def test_reproducible_from_seed_and_isolated_from_global_rng():
    settings = CmaSettings.resolve(PinningOptions(), dim=4)
    np.random.seed(0)
    a = run(PinningOptimizer(settings, seed=7), 3)
    np.random.seed(12345)  # other code using numpy's global RNG must not change the search
    b = run(PinningOptimizer(settings, seed=7), 3)
    assert all(np.array_equal(x, y) for ga, gb in zip(a, b) for x, y in zip(ga, gb))
    c = run(PinningOptimizer(settings, seed=8), 1)
    assert not np.array_equal(a[0][0], c[0][0])

    before = np.random.get_state()[1].copy()
    run(PinningOptimizer(settings, seed=7), 1)
    assert np.array_equal(before, np.random.get_state()[1]), "the search consumed the global RNG"


@pytest.mark.parametrize("size_limit", [0.0, 0.5])
def test_checkpoint_resume_is_exact(size_limit):
    settings = CmaSettings.resolve(PinningOptions(size_limit=size_limit, initial_std=0.3), dim=5)
    straight = PinningOptimizer(settings, seed=11)
    full = run(straight, 6)

    first = PinningOptimizer(settings, seed=11)
    run(first, 3)
    state = json.loads(json.dumps(first.state_dict()))  # through real JSON
    resumed = PinningOptimizer.from_state(settings, state)
    rest = run(resumed, 3)
    for expected, got in zip(full[3:], rest):
        assert all(np.array_equal(x, y) for x, y in zip(expected, got))
    assert resumed.generation == 6


def test_multi_objective_penalises_beyond_the_limit():
    settings = CmaSettings.resolve(PinningOptions(size_limit=0.2, size_limit_weight=100.0), dim=3)
    opt = PinningOptimizer(settings, seed=0)
    seen = []

    def objective(x):
        seen.append(np.array(x))
        return sphere_and_norm(x)

    evaluate = opt.penalized(objective)
    far = opt.individual([1.0, 0.0, 0.0])
    loss, norm = evaluate(far)
    assert np.allclose(seen[-1], [0.2, 0.0, 0.0]), "evaluated at the closest valid point"
    assert loss == pytest.approx(sphere([0.2, 0, 0])[0] + 100.0 * 0.8**2)
    near = opt.individual([0.1, 0.0, 0.0])
    assert evaluate(near) == objective(near)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # creator classes are created once: no re-creation warning
        PinningOptimizer(settings, seed=1)
    run(opt, 4)
    assert opt.generation == 4 and len(opt.strategy.parents) == settings.mu


def test_rejects_empty_problem_and_bad_mu():
    with pytest.raises(ValueError, match="no weightable units"):
        CmaSettings.resolve(PinningOptions(), dim=0)
    with pytest.raises(ValueError, match="lambda"):
        CmaSettings.resolve(PinningOptions(cma_mu=20), dim=3)


def _memory_orders(optimizer: PinningOptimizer) -> dict[str, list[tuple[bool, bool]]]:
    """Each array attribute of the strategy (lists of arrays too) -> its (C, Fortran) contiguity."""
    orders = {}
    for name, value in vars(optimizer.strategy).items():
        arrays = value if isinstance(value, list) else [value]
        if arrays and all(isinstance(a, np.ndarray) for a in arrays):
            orders[name] = [(a.flags.c_contiguous, a.flags.f_contiguous) for a in arrays]
    return orders


@pytest.mark.parametrize(("size_limit", "dim"), [(0.0, 9), (0.4, 5)])
def test_resume_is_bit_exact_at_every_restore_point(size_limit, dim):
    """A long search restored from its JSON checkpoint after any generation proposes exactly the
    populations of the uninterrupted one (DEAP's B and BD are Fortran-ordered: restored in C order
    the products round differently and the populations drift apart by ~1e-15)."""
    settings = CmaSettings.resolve(PinningOptions(size_limit=size_limit, initial_std=0.3), dim=dim)
    generations = 40
    straight = PinningOptimizer(settings, seed=3)
    full = run(straight, generations)
    for restore in (1, 2, 7, 18, 29, 37):
        first = PinningOptimizer(settings, seed=3)
        run(first, restore)
        resumed = PinningOptimizer.from_state(settings, json.loads(json.dumps(first.state_dict())))
        assert _memory_orders(resumed) == _memory_orders(first), restore
        rest = run(resumed, generations - restore)
        for g, (expected, got) in enumerate(zip(full[restore:], rest), start=restore + 1):
            assert all(np.array_equal(x, y) for x, y in zip(expected, got)), (restore, g)


def test_draws_are_independent_of_other_threads_using_numpy():
    """The WebUI has other threads; one drawing from numpy's global RNG all along must not change
    the search (a swap of the global state in and out would race with it)."""
    import threading

    settings = CmaSettings.resolve(PinningOptions(), dim=4)
    reference = run(PinningOptimizer(settings, seed=7), 6)
    mo_settings = CmaSettings.resolve(PinningOptions(size_limit=0.5, cma_mu=3), dim=4)
    mo_reference = run(PinningOptimizer(mo_settings, seed=7), 6)
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            np.random.standard_normal(64)
            np.random.seed(0)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        for _ in range(10):
            got = run(PinningOptimizer(settings, seed=7), 6)
            assert all(np.array_equal(x, y) for ga, gb in zip(reference, got) for x, y in zip(ga, gb))
            got = run(PinningOptimizer(mo_settings, seed=7), 6)
            assert all(np.array_equal(x, y) for ga, gb in zip(mo_reference, got) for x, y in zip(ga, gb))
    finally:
        done.set()
        thread.join()
