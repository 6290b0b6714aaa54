"""A run's target set and the objective that scores against it.

The targets are the user's images (with their masks, lib_pinning.objectives.targets), else the
baseline batch: by default a run pins the prompt to its own pictures. They are saved in the run
folder once (run.json's `targets` and `target_masks`) and always read back from there, so a
resumed run, and every batch after the baseline, scores against the very pixels the first session
saved; targets deleted from the folder are saved again from their source.
"""

from __future__ import annotations

import logging
from typing import Any

from lib_pinning.generator import Generator
from lib_pinning.objectives.compose import CompositeObjective, build_objective
from lib_pinning.objectives.targets import load_targets
from lib_pinning.options import PinningOptions
from lib_pinning.store import IndividualRecord, RunStore

log = logging.getLogger(__name__)


def run_objective(
    store: RunStore, run_info: dict[str, Any], options: PinningOptions, generator: Generator, baseline: IndividualRecord
) -> CompositeObjective:
    """The run's objective over its targets, which are saved first (and run_info's `targets` and
    `target_masks` set) when the run folder does not hold them yet."""
    saved = [*run_info["targets"], *(run_info.get("target_masks") or [])]
    if saved and not all((store.root / name).is_file() for name in saved):
        log.warning("the run's target images are missing: saving them again from their source")
        run_info["targets"] = []
    if not run_info["targets"]:
        images = store.load_batch_images(baseline)
        masks = None
        if options.target_images:
            images, masks = load_targets(options.target_images, options.target_masks, size=tuple(images.shape[2:]))
        run_info["targets"] = store.save_targets(images)
        run_info["target_masks"] = [] if masks is None else store.save_masks(masks)
    targets = store.load_targets(run_info["targets"])
    masks = store.load_masks(run_info["target_masks"]) if run_info.get("target_masks") else None
    return build_objective(options, targets, masks=masks, generator=generator, device=getattr(generator, "device", "cpu"))
