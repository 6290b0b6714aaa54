"""Where the toy's frying shows up: the guard's verdict, the sweep's drift and the pixels, by weight.

The sensitivity sweep (lib_pinning.analysis.sweep) must not measure a word's influence from images
that a failure mode degrades. This profile raises one word of a toy prompt from just below the
frying onset (effective weight 1.5, lib_pinning.toy_failures) and reports, for each weight,
against the batch at the starting weight with the same seeds (images quantised as saved, as the
run and the sweep judge them):

* flagged: images the degenerate-image guard flags (lib_pinning.guard, default thresholds);
* drift: the sweep's soft signal (lib_pinning.analysis.sweep_onset.drift): the lower-quartile image's
  largest change of the guard's saturation, clipped share and detail, over their thresholds;
* pixels: the mean absolute pixel change (what an image loss such as FLIP reacts to).

Usage:
    python benchmarks/bench_sweep_onset.py   # a few seconds
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_commit, load_average, machine_line  # noqa: E402
from lib_pinning import guard  # noqa: E402
from lib_pinning.analysis import sweep_onset  # noqa: E402
from lib_pinning.evaluation import quantize  # noqa: E402
from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.run import derive_seeds  # noqa: E402
from lib_pinning.toy import ToyConfig  # noqa: E402

log = logging.getLogger("bench_sweep_onset")

PROMPT = "green circle, ({word}:{weight}), sharp focus"
NEGATIVE = "velvet"
WORD = "quietly"  # inert on this toy: only the failure modes see its weight
START = 1.49
WEIGHTS = (1.29, 1.52, 1.54, 1.55, 1.58, 1.6, 1.63, 1.65, 1.69, 1.8, 1.9, 2.0, 2.1)
SEED_SETS = 2
BATCH = 8


def profile(weights: Sequence[float] = WEIGHTS) -> list[str]:
    """The markdown table's rows: one per weight, one column group per seed set."""
    generator = ToyGenerator(ToySettings(), ToyConfig(inert_words=(WORD,)))
    thresholds = guard.GuardThresholds()
    rows: list[list[str]] = [[f"{w:g}"] for w in weights]
    for k in range(SEED_SETS):
        seeds = tuple(derive_seeds(1 + k * BATCH, BATCH))

        def images(weight: float) -> torch.Tensor:
            batch = generator.generate(GenerationRequest(PROMPT.format(word=WORD, weight=weight), NEGATIVE, seeds))
            return quantize(guard.sanitize(batch.images, batch.nonfinite)[0])

        centre = images(START)
        centre_stats = guard.image_stats(centre)
        for row, weight in zip(rows, weights):
            step = images(weight)
            verdict = guard.inspect(step, None, thresholds)
            moved = sweep_onset.drift(verdict.stats, centre_stats, thresholds)
            row += [f"{verdict.count}/{BATCH}", f"{moved:.4f}", f"{float((step - centre).abs().mean()):.4f}"]
    return [" | ".join(row) for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    header = "| weight | " + " | ".join(f"flagged (set {k}) | drift (set {k}) | pixels (set {k})" for k in range(SEED_SETS)) + " |"
    rule = "| ---: " * (1 + 3 * SEED_SETS) + "|"
    lines = [
        f"`python benchmarks/bench_sweep_onset.py` at commit {git_commit()}; {machine_line()}; "
        f"load average {load_average():.1f}. Prompt `{PROMPT.format(word=WORD, weight='w')}`, negative `{NEGATIVE}`, "
        f"'{WORD}' inert, against w = {START}; seed sets of {BATCH} (derive_seeds from 1 and {1 + BATCH}); "
        f"drift limit {sweep_onset.DRIFT_LIMIT:g}.",
        "",
        header,
        rule,
        *(f"| {row} |" for row in profile()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
