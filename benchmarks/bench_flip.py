"""Batched FLIP vs the reference, over all pairs of a batch (the pinning loss's workload).

For each image size, 16 images (120 pairs) are scored three ways:

  (a) batched:    lib_pinning's `prepare` once per image, then `pair_flip` over all pairs;
  (b) reference:  a loop over the pairs calling flip_evaluator.evaluate (NVlabs' C++, OpenMP);
  (c) per-pair:   a loop over the pairs with lib_pinning's FLIP, preparing both images for every
                  pair (how the original tool computed its loss).

Usage:  python benchmarks/bench_flip.py [--sizes 512 64] [--repeats 3] [--device cpu --device cuda]
                                        [--threads N] [--update-doc docs/benchmarks.md]

Both implementations get the same number of CPU threads: the usable cores unless --threads says
otherwise (torch.set_num_threads for lib_pinning; OMP_NUM_THREADS, set before flip_evaluator and
its bundled OpenMP runtime load, for the reference).  Medians over --repeats runs are reported.
With --update-doc, the run's table replaces the subsection for its thread count in the section
"Batched FLIP (bench_flip.py)" of the given page, leaving the rest of the page alone.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, usable_cores, write_section  # noqa: E402
from lib_pinning.objectives import flip  # noqa: E402

logger = logging.getLogger("bench_flip")

SECTION = "## Batched FLIP (bench_flip.py)"


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A procedurally drawn 'photo': gradient sky, discs and posts, blurred, with noise (HxWx3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + rng.uniform(0, 6)), 0.3 + 0.5 * yy, 0.6 - 0.3 * xx], -1)
    for _ in range(8):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16.0
    t = torch.nn.functional.pad(t, (2, 2, 2, 2), mode="replicate")
    t = torch.nn.functional.conv2d(t, (k[:, None] * k[None]).expand(3, 1, 5, 5).contiguous(), groups=3)
    img = t[0].permute(1, 2, 0).numpy() + rng.normal(0, 0.03, (h, w, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], object], repeats: int, device: str, warm_up: bool = True
) -> tuple[float, object]:
    """Median wall time of `repeats` runs (after one untimed warm-up run), and the last result."""
    result = None
    if warm_up:
        result = fn()
        _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


@dataclass
class Row:
    size: str
    method: str
    device: str
    seconds: float
    pairs: int

    @property
    def ms_per_pair(self) -> float:
        return 1e3 * self.seconds / self.pairs


def bench_size(
    h: int, w: int, n: int, repeats: int, devices: list[str], ref_repeats: int
) -> tuple[list[Row], np.ndarray]:
    """Rows for one size, and the largest |(a) - (b)| per pair vs (returned mean, map mean)."""
    hwc = [scene(h, w, seed) for seed in range(n)]
    images = torch.from_numpy(np.stack(hwc)).permute(0, 3, 1, 2).contiguous()
    pairs = list(itertools.combinations(range(n), 2))
    label = f"{w}x{h}"
    rows: list[Row] = []

    import flip_evaluator

    def reference() -> np.ndarray:
        """Per pair: (returned mean, float64 mean of the returned error map)."""
        out = []
        for i, j in pairs:
            emap, mean, _ = flip_evaluator.evaluate(
                hwc[i], hwc[j], "LDR", applyMagma=False, parameters={"ppd": flip.DEFAULT_PPD}
            )
            out.append((mean, emap.mean(dtype=np.float64)))
        return np.array(out)

    logger.info("%s: reference loop (%d pairs x %d runs)", label, len(pairs), ref_repeats)
    # No warm-up for the C++ reference: it has no lazy initialisation worth excluding, and at
    # 512x512 one pass over 120 pairs takes tens of seconds.
    t_ref, ref_values = median_time(reference, ref_repeats, "cpu", warm_up=False)
    rows.append(Row(label, "(b) flip-evaluator, loop over pairs", "cpu", t_ref, len(pairs)))

    agreement = np.zeros(2)
    for device in devices:
        x = images.to(device)
        index = flip.upper_pairs(n, device)

        def batched(x: torch.Tensor = x, index: torch.Tensor = index) -> torch.Tensor:
            prepared = flip.prepare(x)
            return flip.pair_flip(prepared, prepared, index)

        def per_pair(x: torch.Tensor = x) -> list[float]:
            out = []
            for i, j in pairs:
                prepared = flip.prepare(torch.stack([x[i], x[j]]))
                out.append(float(flip.pair_flip(prepared, prepared, [(0, 1)])[0]))
            return out

        logger.info("%s: batched on %s", label, device)
        t_batched, values = median_time(batched, repeats, device)
        diff = np.abs(values.cpu().double().numpy()[:, None] - ref_values).max(axis=0)
        agreement = np.maximum(agreement, diff)
        rows.append(Row(label, "(a) lib_pinning batched, all pairs", device, t_batched, len(pairs)))
        logger.info("%s: per-pair loop on %s", label, device)
        t_loop, _ = median_time(per_pair, repeats, device)
        rows.append(Row(label, "(c) lib_pinning, loop over pairs", device, t_loop, len(pairs)))
    return rows, agreement


def table(rows: list[Row]) -> str:
    ref = {r.size: r.seconds for r in rows if r.method.startswith("(b)")}
    lines = [
        "| size | method | device | median s (120 pairs) | ms / pair | speed-up vs (b) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        speedup = ref[r.size] / r.seconds
        lines.append(
            f"| {r.size} | {r.method} | {r.device} | {r.seconds:.3f} | {r.ms_per_pair:.2f} | {speedup:.1f}x |"
        )
    return "\n".join(lines)


SECTION_INTRO = (
    "16 images per batch, all 120 pairs, scored three ways: (a) `lib_pinning.objectives.flip` batched "
    "(`prepare` once per image, then `pair_flip` over all pairs), (b) a loop over the pairs calling "
    "the reference implementation `flip_evaluator.evaluate` (NVlabs' C++), (c) a loop over the pairs "
    "with lib_pinning's FLIP preparing both images of every pair (how the original tool computed its "
    "loss). Lower is better; speed-up is relative to (b). Regenerate a subsection with the command it shows."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 64], help="square image sizes")
    parser.add_argument("--images", type=int, default=16, help="images per batch (pairs = n(n-1)/2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (after a warm-up)")
    parser.add_argument("--ref-repeats", type=int, default=2, help="timed runs of the reference loop")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="repeatable; default cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--update-doc", type=Path, default=None, help="write the section into this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cores = usable_cores()
    threads = args.threads or cores
    torch.set_num_threads(threads)
    # The reference bundles its own OpenMP runtime, which reads this when flip_evaluator loads.
    if "flip_evaluator" in sys.modules:
        logger.warning("flip_evaluator already loaded: its thread count may not follow --threads")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    devices = []
    for device in args.device or ["cpu"]:
        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("CUDA is not available: skipping --device cuda")
            continue
        if device not in devices:
            devices.append(device)

    load_before = load_average()
    rows: list[Row] = []
    worst = np.zeros(2)
    for size in args.sizes:
        size_rows, agreement = bench_size(size, size, args.images, args.repeats, devices, args.ref_repeats)
        rows += size_rows
        worst = np.maximum(worst, agreement)
    load_after = load_average()

    command = "python benchmarks/bench_flip.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        f"Command: `{command.strip()}`",
        "",
        "Machine: " + machine_line("flip-evaluator"),
        "",
        f"Threads: torch intra-op threads set explicitly to {torch.get_num_threads()} "
        f"({'the usable core count' if threads == cores else f'of {cores} usable cores'}); "
        f"the reference's OpenMP runtime likewise (OMP_NUM_THREADS={threads}).",
    ]
    if load_before is not None and load_after is not None:
        notes.append("")
        notes.append(
            f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run "
            "(other processes shared the cores)."
        )
    notes += [
        "",
        f"{args.images} procedurally drawn scenes per size, "
        f"all {args.images * (args.images - 1) // 2} pairs, "
        f"median of {args.repeats} runs after a warm-up (reference: {args.ref_repeats} runs, no warm-up). "
        f"Agreement of (a) with (b), largest over all pairs: {worst[1]:.1e} against the mean of the "
        f"reference's error map, {worst[0]:.1e} against the mean it returns (which it accumulates in a "
        "float32 running sum; see lib_pinning/objectives/flip.py).",
        "",
        table(rows),
    ]
    body = "\n".join(notes)
    print(body)
    if args.update_doc is not None:
        heading = f"### {threads} thread{'s' if threads != 1 else ''}"
        if os.environ.get("OMP_WAIT_POLICY"):
            heading += f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
        write_section(args.update_doc, SECTION, {heading: body}, intro=SECTION_INTRO)
        logger.info("updated %s", args.update_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
