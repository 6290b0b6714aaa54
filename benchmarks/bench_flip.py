"""Batched FLIP vs the reference, over all pairs of a batch (the pinning loss's workload).

For each image size, 16 images (120 pairs) are scored three ways:

  (a) batched:    lib_pinning's `prepare` once per image, then `pair_flip` over all pairs;
  (b) reference:  a loop over the pairs calling flip_evaluator.evaluate (NVlabs' C++, OpenMP);
  (c) per-pair:   a loop over the pairs with lib_pinning's FLIP, preparing both images for every
                  pair (how the original tool computed its loss).

Usage:  python benchmarks/bench_flip.py [--sizes 512 64] [--repeats 3] [--device cpu --device cuda]
                                        [--threads N] [--update-doc docs/benchmarks.md]
        python benchmarks/bench_flip.py --memory [--memory-sizes 512 2048 4096] [--update-doc ...]

--memory measures peak memory instead of time: for each size, one pair scored by (a) and by (b),
each in a fresh Python process that reports its own peak resident set size (VmHWM); a second
process per side that only imports and loads the two images gives the part that is not the metric.

Both implementations get the same number of CPU threads: the usable cores unless --threads says
otherwise (torch.set_num_threads for lib_pinning; OMP_NUM_THREADS, set before flip_evaluator and
its bundled OpenMP runtime load, for the reference).  Medians over --repeats runs are reported.
With --update-doc, the run's table replaces the subsection for its thread count (or, with --memory,
the subsection "Peak memory, one pair") in the section "Batched FLIP (bench_flip.py)" of the given
page, leaving the rest of the page alone.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_commit, load_average, machine_line, usable_cores, write_section  # noqa: E402
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


ROOT = Path(__file__).resolve().parents[1]
MEMORY_HEADING = "### Peak memory, one pair"

# Run in a fresh interpreter so that each figure is one process's own peak: argv = (side, a.npy,
# b.npy, evaluate 0/1, ppd).  The peak is VmHWM of /proc/self/status (KiB), which execve starts
# afresh; ru_maxrss is not used where VmHWM exists, because Linux carries it over from the forking
# parent (here a process that has drawn 4096x4096 scenes), through exec.
_MEMORY_CHILD = """
import resource, sys
import numpy as np

def peak_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

side, a_path, b_path, evaluate, ppd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", float(sys.argv[5])
a, b = np.load(a_path), np.load(b_path)
if side == "a":
    import torch
    from lib_pinning.objectives import flip
    if evaluate:
        as_tensor = lambda v: torch.from_numpy(v).permute(2, 0, 1)[None]
        flip.flip_mean(as_tensor(a), as_tensor(b), ppd)
else:
    import flip_evaluator
    if evaluate:
        flip_evaluator.evaluate(a, b, "LDR", applyMagma=False, parameters={"ppd": ppd})
print(peak_kib())
"""


def peak_rss_mib(side: str, a_path: Path, b_path: Path, evaluate: bool, root: Path = ROOT) -> float:
    """Peak RSS (MiB) of a fresh process that loads the pair and, if `evaluate`, scores it with
    side "a" (lib_pinning's flip_mean, imported from `root`) or "b" (flip_evaluator)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, side, str(a_path), str(b_path), "1" if evaluate else "0",
         repr(flip.DEFAULT_PPD)],
        cwd=root, capture_output=True, text=True, check=True,
    )
    return int(out.stdout.split()[-1]) / 1024.0


@dataclass
class MemoryRow:
    size: str
    ours: float
    reference: float
    ours_base: float
    reference_base: float


def bench_memory(sizes: list[int]) -> list[MemoryRow]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            a_path, b_path = Path(tmp) / "a.npy", Path(tmp) / "b.npy"
            np.save(a_path, scene(size, size, 0))
            np.save(b_path, scene(size, size, 1))
            logger.info("%dx%d: peak memory of one pair", size, size)
            figures = [peak_rss_mib(side, a_path, b_path, evaluate) for evaluate in (True, False) for side in "ab"]
            rows.append(MemoryRow(f"{size}x{size}", *figures))
    return rows


def memory_table(rows: list[MemoryRow]) -> str:
    lines = [
        "| size | (a) lib_pinning `flip_mean`, peak RSS MiB | (b) flip-evaluator, peak RSS MiB | (a) / (b) "
        "| imports + the two images only, (a) / (b) MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.ours:.0f} | {r.reference:.0f} | {r.ours / r.reference:.2f} "
            f"| {r.ours_base:.0f} / {r.reference_base:.0f} |"
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
    parser.add_argument("--memory", action="store_true", help="measure peak memory of one pair instead of time")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[512, 2048, 4096], help="with --memory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python benchmarks/bench_flip.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.memory:
        return memory_main(args, command.strip())

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

    notes = [
        f"Command: `{command.strip()}` (commit {git_commit()})",
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


def memory_main(args: argparse.Namespace, command: str) -> int:
    code = git_commit()
    rows = bench_memory(args.memory_sizes)
    body = "\n".join(
        [
            f"Command: `{command}` (commit {code})",
            "",
            "Machine: " + machine_line("flip-evaluator"),
            "",
            "One pair of procedurally drawn scenes per size (float32 HxWx3 arrays saved to disk), scored "
            "once in a fresh Python process per figure, which reports its own peak resident set size "
            "(`VmHWM` of /proc/self/status): (a) `flip.flip_mean` (default banding, means only), (b) "
            "`flip_evaluator.evaluate` (LDR, no colour map; it always returns the error map). The last "
            "column is the same process without the scoring: interpreter, imports and the two images.",
            "",
            memory_table(rows),
        ]
    )
    print(body)
    if args.update_doc is not None:
        write_section(args.update_doc, SECTION, {MEMORY_HEADING: body}, intro=SECTION_INTRO)
        logger.info("updated %s", args.update_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
