"""The split refresh's rho: how far copies part, and whether they keep a plain batch's spread.

DPM++ 2M adds no noise of its own, so a hyperbatch's copies part from their parents only through
the split refresh (`pinning_samplers.loop.Hyperbatch`, rho = `split_rho`). This benchmark puts the
numbers behind `pinning_samplers.sampling.DEFAULT_SPLIT_RHO` on the analytic mixture of
benchmarks/mixture.py (exact denoiser, so every difference is the sampler's): 20 Karras steps,
"even" growth, B = 8, `--roots` independent hyperbatches in one call, fixed seeds.

For each configuration (DPM++ 2M at several rho, the stochastic samplers for reference, and a
plain DPM++ 2M batch):

* parted: the fraction of image pairs whose images end nearest to different mixture components
  (averaged over the roots); a plain batch's images are independent, so it parts the most;
* spread: for each image index, the mean squared distance to its nearest component over the
  roots, relative to the plain DPM++ 2M batch's; `worst` is the smallest ratio over the images
  (1 - worst is how much spread within a component the worst image loses).

Usage:
    python benchmarks/bench_split_rho.py                 # 1000 roots, about ten seconds
    python benchmarks/bench_split_rho.py --roots 200     # quicker, noisier
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.mixture import DIM, MixtureDenoiser, components, karras  # noqa: E402
from pinning_samplers import SAMPLERS, SeededBrownianNoise, SeededNoise  # noqa: E402
from pinning_samplers.sampling import DEFAULT_SPLIT_RHO  # noqa: E402

log = logging.getLogger("bench_split_rho")

BATCH, STEPS = 8, 20
SEEDS = tuple(range(101, 101 + BATCH))
RHOS: tuple[float, ...] = tuple(sorted({0.5, math.sqrt(0.5), 0.9, 1.0, DEFAULT_SPLIT_RHO}))
REFERENCES: tuple[str, ...] = ("euler_ancestral", "dpmpp_2m_sde")
BROWNIAN = {"dpmpp_sde", "dpmpp_2m_sde"}


@dataclass(frozen=True)
class Row:
    """One configuration's figures (see the module docstring)."""

    label: str
    sampler: str
    growth: str
    rho: float | None
    parted: float
    spread: tuple[float, ...]

    def worst(self, plain: Row) -> float:
        return min(a / b for a, b in zip(self.spread, plain.spread))


def sample(name: str, roots: int, growth: str, rho: float | None) -> torch.Tensor:
    """B images of `roots` independent problems each, with per-seed noise as in the WebUI."""
    sigmas = karras(STEPS)
    rng = SeededNoise(list(SEEDS), (roots, DIM))
    x = rng.first() * sigmas[0]
    noise = SeededBrownianNoise.from_sigmas(list(SEEDS), x, sigmas) if name in BROWNIAN else rng
    kwargs = {} if rho is None else {"split_rho": rho}
    return SAMPLERS[name].function(MixtureDenoiser(), x, sigmas, disable=True, noise_sampler=noise, growth=growth, **kwargs)


def measure(label: str, name: str, roots: int, growth: str = "even", rho: float | None = None) -> Row:
    nearest, spread = components(sample(name, roots, growth, rho))
    pairs = list(itertools.combinations(range(BATCH), 2))
    parted = sum(float((nearest[i] != nearest[j]).double().mean()) for i, j in pairs) / len(pairs)
    return Row(label, name, growth, rho, parted, tuple(float(s) for s in spread.mean(dim=1)))


def run(roots: int) -> tuple[Row, list[Row]]:
    """(the plain DPM++ 2M batch, every other configuration)."""
    plain = measure("DPM++ 2M, plain batch", "dpmpp_2m", roots, growth="none")
    rows = [measure(f"DPM++ 2M, rho = {rho:.3f}", "dpmpp_2m", roots, rho=rho) for rho in RHOS]
    rows += [measure(SAMPLERS[name].label, name, roots) for name in REFERENCES]
    return plain, rows


def table(plain: Row, rows: Sequence[Row]) -> str:
    lines = ["| configuration | parted | spread, worst image vs plain 2M |", "|---|---:|---:|"]
    for row in [*rows, plain]:
        lines.append(f"| {row.label} | {row.parted:.2f} | {row.worst(plain):.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--roots", type=int, default=1000, help="independent hyperbatches per configuration")
    args = parser.parse_args(argv)
    if args.roots < 1:
        parser.error("--roots must be positive")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plain, rows = run(args.roots)
    log.info("B = %d, %d Karras steps, \"even\" growth, %d roots (default rho %.3f = sqrt(%.2f))",
             BATCH, STEPS, args.roots, DEFAULT_SPLIT_RHO, DEFAULT_SPLIT_RHO**2)
    log.info("%s", table(plain, rows))
    return 0 if all(math.isfinite(r.parted) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
