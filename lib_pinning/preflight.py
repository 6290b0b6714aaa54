"""Checks of a run's input that need its files, its backend or its resolved search, made before the
run folder is created: bad input is answered at once with a `PinningInputError` naming the input
and the fix, instead of a failed run folder after the baseline batch.

What the options alone decide (ranges, masks without targets, ...) is checked by the options model
itself (`PinningOptions._check_combination`); this module adds what needs more than the options:
the target files (readable, of the backend's image size, masks that count somewhere), the batch
size a loss needs, the tags, the booru tags and their tagger, the aesthetic score's CLIP, the CMA-ES parameters together (with the
automatic values DEAP would fill in) and the runs folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lib_pinning.objectives.compose import AESTHETIC, FLIP, TAGGER, TAGS, active_terms
from lib_pinning.objectives.pinning import pinning_pairs
from lib_pinning.objectives.tags import check_tags
from lib_pinning.objectives.targets import load_targets
from lib_pinning.optimizer import CmaSettings
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError, PinningInputError

# The covariance matrix's smallest axis, relative to its start, below which its float64
# eigendecomposition loses the axis (negative eigenvalues: NaN, or LinAlgError). Measured with
# DEAP on a sphere and a linear function (N = 7 and 40, 200 generations), the strategy broke once
# (1 - ccov1 - ccovmu)^generations fell to 1e-14..1e-30; 1e-12 refuses a little before that.
_COVARIANCE_FLOOR = 1e-12


def check_run_input(
    options: PinningOptions, *, generator: Any, seeds: Sequence[int], settings: CmaSettings, runs_dir: Path
) -> None:
    """Every check that needs more than the options; raises PinningInputError (one line)."""
    terms = active_terms(options)
    if FLIP in terms:
        check_batch_size(options, len(seeds))
    if TAGS in terms:
        check_tags(options.tags, options.negative_tags)
    if AESTHETIC in terms:
        check_aesthetic_backend(generator)
    if TAGGER in terms:
        from lib_pinning.objectives.tagger import check_tagger_input

        check_tagger_input(options, generator)
    check_cma(options, settings)
    if options.target_images:
        load_targets(options.target_images, options.target_masks, size=image_size(generator))
    check_runs_dir(runs_dir)


def image_size(generator: Any) -> tuple[int, int] | None:
    """(height, width) of the backend's images when it knows them before generating, else None
    (the targets' size is then checked against the baseline batch)."""
    size = getattr(generator, "image_size", None)
    return (int(size[0]), int(size[1])) if size is not None else None


def check_batch_size(options: PinningOptions, batch_size: int) -> None:
    """The image loss must have pairs to compare (the loss's own pair rule: `pinning_pairs`)."""
    if options.target_masks:
        return  # the masked loss compares each image with each target: always pairs
    n_targets = len(options.target_images) or batch_size  # without targets, the baseline batch
    if len(pinning_pairs(n_targets, batch_size, options.flip_loss)) == 0:
        raise PinningInputError(
            f"Image loss {options.flip_loss!r} compares the images of a batch with each other and a batch "
            f"of {batch_size} image has no pair: set the batch size to 2 or more, or choose another "
            "image loss (e.g. 'nearest_mode')"
        )


def check_aesthetic_backend(generator: Any) -> None:
    """The aesthetic head reads CLIP ViT-L/14 embeddings; a backend with its own CLIP (the toy
    model's, for any name) has none to give it."""
    from lib_pinning.objectives.aesthetic import AESTHETIC_CLIP

    own = getattr(generator, "clip_encoder", None)
    if own is None:
        return
    name = "/".join(AESTHETIC_CLIP)
    encoder = own(name)
    if encoder is not None and getattr(encoder, "name", None) != name:
        raise OptionError(
            "aesthetic_weight", PinningOptions.spec("aesthetic_weight").label,
            f"the aesthetic score needs {name} image embeddings and this backend scores images with its "
            f"own {type(encoder).__name__}: set it to 0 (the toy model has no aesthetic score)",
        )


def deap_parameters(settings: CmaSettings) -> dict[str, float]:
    """cs, damps, ccov1 and ccovmu as DEAP's `cma.Strategy.computeParams` resolves them (the
    given overrides, else its formulas for this search's dimension, mu and weights)."""
    n, mu, given = settings.search_dim, settings.mu, settings.overrides
    if settings.weights == "superlinear":
        weights = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    elif settings.weights == "linear":
        weights = mu + 0.5 - np.arange(1, mu + 1)
    else:
        weights = np.ones(mu)
    weights = weights / weights.sum()
    mueff = 1.0 / float(np.sum(weights**2))
    cs = given.get("cs", (mueff + 2.0) / (n + mueff + 3.0))
    ccov1 = given.get("ccov1", 2.0 / ((n + 1.3) ** 2 + mueff))
    ccovmu = given.get("ccovmu", 2.0 * (mueff - 2.0 + 1.0 / mueff) / ((n + 2.0) ** 2 + mueff))
    damps = given.get("damps", 1.0 + 2.0 * max(0.0, math.sqrt((mueff - 1.0) / (n + 1.0)) - 1.0) + cs)
    return {"cs": cs, "damps": damps, "ccov1": ccov1, "ccovmu": min(1.0 - ccov1, ccovmu), "ccovmu_given": ccovmu}


def check_cma(options: PinningOptions, settings: CmaSettings) -> None:
    """CMA-ES parameters that are valid one by one but break the strategy together.

    Only the single-objective strategy takes them (MO-CMA-ES uses its own constants).
    - Each update keeps 1 - ccov1 - ccovmu of the covariance matrix (DEAP caps ccovmu at
      1 - ccov1); the updates add rank mu + 1 at most, so the other axes shrink by that factor per
      generation. Past about 1e-12 the eigendecomposition breaks (NaN in the checkpoint, LinAlgError).
    - The step size changes by exp((|ps| / E|N(0, I)| - 1) cs / damps) per generation; with
      damps below cs a generation can shrink it more than e-fold, and it collapses to 0 or overflows.
    """
    if settings.multi_objective or not settings.overrides:
        return
    p = deap_parameters(settings)
    given = settings.overrides
    if "ccov1" in given or "ccovmu" in given:
        keep = 1.0 - p["ccov1"] - p["ccovmu"]
        generations = max(1, settings.generations)
        if keep <= 0 or keep**generations < _COVARIANCE_FLOOR:
            limit = math.floor((1.0 - _COVARIANCE_FLOOR ** (1.0 / generations)) * 1000) / 1000
            key = "cma_ccov1" if "ccov1" in given else "cma_ccovmu"
            raise OptionError(
                key, PinningOptions.spec(key).label,
                f"ccov1 {_value(given, p, 'ccov1')} + ccovmu {_value(given, p, 'ccovmu_given')} keep "
                f"{max(keep, 0.0):.3g} of the covariance matrix per generation, which degenerates it (NaN) "
                f"within this run's {generations} generation(s): keep ccov1 + ccovmu at most {limit:g}, "
                "or leave them empty (automatic)",
            )
    if "damps" in given or "cs" in given:
        if p["damps"] < p["cs"]:
            key = "cma_damps" if "damps" in given else "cma_cs"
            raise OptionError(
                key, PinningOptions.spec(key).label,
                f"damps {_value(given, p, 'damps')} is below cs {_value(given, p, 'cs')}, so the step size "
                f"can change by a factor exp({p['cs'] / p['damps']:.3g}) in one generation and collapses "
                "(LinAlgError): use damps of at least cs, or leave it empty (automatic)",
            )


def _value(given: dict[str, float], resolved: dict[str, float], name: str) -> str:
    key = "ccovmu" if name == "ccovmu_given" else name
    return f"{resolved[name]:.3g}" + ("" if key in given else " (automatic)")


def check_runs_dir(runs_dir: Path) -> None:
    """The runs folder exists as a writable folder, or can be created (its nearest existing
    ancestor is a writable folder); nothing is created here."""
    path = Path(runs_dir).expanduser()
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise PinningInputError(
            f"Runs folder {path}: {probe} is a file, not a folder: choose another folder for the runs"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        detail = "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        raise PinningInputError(f"Runs folder {path} {detail}: choose a folder you can write to")
