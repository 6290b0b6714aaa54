"""CLIP scoring throughput (the learned objectives' cost) against a toy generation.

For each CLIP architecture (random weights: `pretrained=None`, nothing is downloaded), a batch of
images is scored the way the aesthetic and tag objectives score it: `ClipEncoder.encode_images`
(content hash, torch preprocessing from the input size down to 224 px, the image tower,
L2-normalisation) with the embedding cache off, plus the aesthetic head for ViT-L-14. The same run
times one toy generation of the same batch size (`ToyGenerator().generate`, 20 steps), so the
table says how much a learned objective adds to each individual of a demo run.

Usage:  python benchmarks/bench_clip.py [--models ViT-B-32 ViT-L-14] [--batch 8] [--size 512]
                                        [--repeats 3] [--device cpu --device cuda] [--threads N]
                                        [--update-doc docs/benchmarks.md]

`--device cuda` runs in float16 and is skipped with a message when CUDA is unavailable. Medians
over --repeats runs after one warm-up run are reported.

In this repository's CPU test environment the registry's torchvision is a CUDA build that cannot
import; the benchmark then falls back to the test set-up's workaround (tests/clip_env.py).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, load_average, machine_line, publish, usable_cores  # noqa: E402
from lib_pinning.generator import DemoPrompt, GenerationRequest, ToyGenerator  # noqa: E402
from lib_pinning.objectives.aesthetic import AestheticHead  # noqa: E402
from lib_pinning.objectives.clip import load_clip  # noqa: E402

logger = logging.getLogger("bench_clip")

SECTION = "## CLIP scoring (bench_clip.py)"


@dataclass
class Row:
    model: str
    device: str
    dtype: str
    seconds: float  # median wall-clock seconds per batch
    cpu_seconds: float  # median process CPU seconds per batch (all threads)

    def images_per_second(self, batch: int) -> float:
        return batch / self.seconds


def import_open_clip() -> str:
    """Import open_clip; returns a note when this environment's torchvision workaround was needed."""
    try:
        import open_clip  # noqa: F401

        return ""
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        from tests.clip_env import ensure_open_clip

        ensure_open_clip()
        return (
            "open_clip imported through tests/clip_env.py (this environment's CUDA-built torchvision "
            "needs its op schemas declared on the CPU torch)."
        )


def median_seconds(fn: Callable[[], object], repeats: int, device: str) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of fn over `repeats` runs after a warm-up.

    CPU time is reported beside wall time because the machine the numbers come from is shared:
    under load the wall time grows with the other processes, the CPU time much less.
    """
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return statistics.median(walls), statistics.median(cpus)


def sample_images(batch: int, size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, 8, 8, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def bench_model(name: str, device: str, images: torch.Tensor, repeats: int) -> Row:
    dtype = torch.float16 if device == "cuda" else torch.float32
    encoder = load_clip(name, None, device=device, dtype=dtype, cache_size=0)
    head = AestheticHead(encoder.embed_dim).to(device) if name == "ViT-L-14" else None

    def score() -> torch.Tensor:
        emb = encoder.encode_images(images)
        if head is None:
            return emb
        with torch.no_grad():
            return head(emb.to(device))

    wall, cpu = median_seconds(score, repeats, device)
    label = name + (" + aesthetic head" if head is not None else "")
    return Row(label, device, str(dtype).replace("torch.", ""), wall, cpu)


def table(rows: list[Row], batch: int, toy: tuple[float, float]) -> str:
    lines = [
        f"| model | device | dtype | wall s / batch of {batch} | CPU s / batch | images / s (wall) "
        "| x toy generation (wall) | x toy generation (CPU) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.device} | {r.dtype} | {r.seconds:.3f} | {r.cpu_seconds:.3f} "
            f"| {r.images_per_second(batch):.2f} | {r.seconds / toy[0]:.0f}x | {r.cpu_seconds / toy[1]:.0f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"], help="open_clip architectures")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--size", type=int, default=512, help="side of the square input images (SD 1.5: 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (after a warm-up)")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="repeatable; default cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--update-doc", type=Path, default=None, help="write the section into this file")
    args = parser.parse_args(argv)
    # open_clip logs every construction step on the root logger at INFO: keep the root at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)

    cores = usable_cores()
    torch.set_num_threads(args.threads or cores)
    devices: list[str] = []
    for device in args.device or ["cpu"]:
        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("CUDA is not available: skipping --device cuda")
            continue
        if device not in devices:
            devices.append(device)
    shim_note = import_open_clip()

    load_before = load_average()
    demo = DemoPrompt()
    generator = ToyGenerator()
    request = GenerationRequest(demo.prompt, demo.negative_prompt, tuple(range(args.batch)))
    toy = median_seconds(lambda: generator.generate(request), max(args.repeats, 5), "cpu")
    images = sample_images(args.batch, args.size)
    rows = [bench_model(name, device, images, args.repeats) for device in devices for name in args.models]
    load_after = load_average()

    notes = [
        command_line("bench_clip.py", argv),
        "",
        "Machine: " + machine_line("open_clip_torch"),
        "",
        f"Random weights (`pretrained=None`), {args.batch} images of {args.size}x{args.size} per batch, "
        f"embedding cache off; median of {args.repeats} runs after a warm-up. One toy generation "
        f"(`ToyGenerator().generate`, batch {args.batch}, default settings: 20 steps, Euler ancestral) "
        f"took a median {toy[0] * 1000:.0f} ms wall-clock ({toy[1] * 1000:.0f} ms CPU) in the same run; the "
        "last columns give the scoring time in units of that. CPU time is process time over all torch "
        "threads, less sensitive than wall time to other processes on the machine.",
    ]
    if shim_note:
        notes += ["", shim_note]
    if load_before is not None and load_after is not None:
        notes += [
            "",
            f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run "
            "(other processes shared the cores).",
        ]
    notes += ["", table(rows, args.batch, toy)]
    body = "\n".join(notes)
    publish(body, SECTION, args.update_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
