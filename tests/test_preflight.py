"""The preflight (lib_pinning.preflight): bad input raises PinningInputError from PinningRun.start
before the run folder exists (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
from deap import cma

from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.optimizer import CmaSettings
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError, PinningInputError
from lib_pinning.preflight import check_aesthetic_backend, check_cma, deap_parameters
from lib_pinning.run import PinningRun, derive_seeds


def start(tmp_path, batch_size: int = 2, **options):
    return PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=2)), prompt="red circle, blue square", negative_prompt="",
        seeds=derive_seeds(1, batch_size), options=PinningOptions(cli_log=False, **options),
        runs_dir=tmp_path / "runs",
    )


@pytest.mark.parametrize("batch_size, options, expected", [
    (1, {"flip_loss": "variety"}, "batch of 1 image has no pair"),
    (2, {"tags": "(red:-2)", "flip_weight": 0.0}, "every tag has a weight of 0 or less"),
    (2, {"aesthetic_weight": 1.0}, "own ToyClip"),
    (2, {"cma_ccov1": 1.0, "cma_ccovmu": 1.0}, "keep 0 of the covariance matrix"),
    (2, {"cma_damps": 1e-9}, "is below cs"),
    (2, {"target_images": ("missing.png",)}, "missing.png does not exist"),
])
def test_start_refuses_before_the_run_folder_exists(tmp_path, batch_size, options, expected):
    with pytest.raises(PinningInputError, match=expected):
        start(tmp_path, batch_size, **options)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dim", [1, 7, 40])
@pytest.mark.parametrize("overrides", [{}, {"cma_ccov1": 0.5}, {"cma_ccovmu": 0.9, "cma_cs": 0.2}, {"cma_damps": 2.0}])
@pytest.mark.parametrize("weights", ["superlinear", "linear", "equal"])
def test_deap_parameters_are_deaps_own(dim, overrides, weights):
    settings = CmaSettings.resolve(PinningOptions(cma_weights=weights, **overrides), dim)
    strategy = cma.Strategy(
        centroid=np.zeros(dim), sigma=0.2, lambda_=settings.lambda_, mu=settings.mu, weights=weights,
        **settings.overrides,
    )
    resolved = deap_parameters(settings)
    for name in ("cs", "damps", "ccov1", "ccovmu"):
        assert resolved[name] == pytest.approx(getattr(strategy, name), rel=1e-12), name


def test_cma_defaults_and_moderate_values_pass():
    for options in (PinningOptions(), PinningOptions(cma_ccov1=0.3, cma_ccovmu=0.3), PinningOptions(cma_damps=0.5)):
        check_cma(options, CmaSettings.resolve(options, 7))


def test_cma_checks_only_the_strategy_that_reads_them():
    """MO-CMA-ES (pareto, size limit) takes none of these parameters."""
    options = PinningOptions(cma_damps=1e-9, size_limit=1.0)
    check_cma(options, CmaSettings.resolve(options, 7))


def test_aesthetic_needs_a_backend_without_its_own_clip():
    with pytest.raises(OptionError, match=r"Aesthetic weight \(aesthetic_weight\): .* set it to 0"):
        check_aesthetic_backend(ToyGenerator())
    check_aesthetic_backend(object())  # a backend with no CLIP of its own: the real one is loaded


def test_mask_combinations_are_option_errors():
    with pytest.raises(OptionError, match="but no target images"):
        PinningOptions(target_masks=("m.png",), flip_loss="target_distance")
    with pytest.raises(OptionError, match=r"2 mask\(s\) for 1 target image\(s\)"):
        PinningOptions(target_images=("a.png",), target_masks=("m.png", "n.png"), flip_loss="target_distance")
    with pytest.raises(OptionError, match="set Image loss"):
        PinningOptions(target_images=("a.png",), target_masks=("m.png",), flip_loss="variety")


def test_boolean_options_say_what_they_take():
    spec = PinningOptions.spec("guard")
    assert spec.range_text() == "true or false (also yes/no, on/off, 1/0)"
    with pytest.raises(OptionError, match="'maybe' is not true or false"):
        spec.coerce("maybe")
    assert all(s.range_text() != "any value" for s in PinningOptions.specs())


@pytest.mark.parametrize("granularity, quoted", [("word", "'red'"), ("token", "'red'"), ("phrase", "'red'")])
def test_negative_weight_error_quotes_the_whole_unit(granularity, quoted):
    from lib_pinning.prompt import PromptSpace

    with pytest.raises(ValueError) as caught:
        PromptSpace("(red:-2) circle, blue", "", granularity)
    assert f"negative emphasis weight -2 on {quoted} cannot be optimised" in str(caught.value)
