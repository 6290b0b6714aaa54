"""Tagging cost of the booru-tag objective: a batch of 8 at 448 px on the CPU, with the tiny toy tagger.

The tiny ONNX tagger (lib_pinning.objectives.tagger_toy) has the WD14 input and output layout but
almost no compute, so this measures what the objective adds around a real tagger's inference:
8-bit conversion, preprocessing (pad to square, bicubic resize to 448, BGR, float32), the one
onnxruntime call per batch, the soft share, and the content cache (a batch seen before is not
tagged again). A real WD14 model's own inference comes on top; it needs the weights, which this
benchmark does not download.

Scaling: the same pipeline for batches of 1, 2, 4, 8 and 16 toy images, and the input sizes 224,
448 and 640 for a batch of 8 (preprocessing grows with the output pixels).

Usage:  python benchmarks/bench_tagger.py [--repeats 5] [--update-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, load_average, machine_line, publish  # noqa: E402
from lib_pinning.generator import DemoPrompt, GenerationRequest, ToyGenerator  # noqa: E402
from lib_pinning.objectives.tagger import TaggerObjective  # noqa: E402
from lib_pinning.objectives.tagger_runtime import TaggerSession, batch_to_pil, prepare_image  # noqa: E402
from lib_pinning.objectives.tagger_toy import TOY_FOLDER, build_toy_tagger  # noqa: E402

logger = logging.getLogger("bench_tagger")

SECTION = "## Booru-tag objective (bench_tagger.py)"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: onnxruntime plans its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def toy_images(n: int) -> torch.Tensor:
    demo = DemoPrompt()
    batch = ToyGenerator().generate(
        GenerationRequest(demo.prompt, demo.negative_prompt, tuple(range(demo.seed, demo.seed + n)))
    )
    return batch.images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_before = load_average()
    images16 = toy_images(16)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {size: TaggerSession(*_files(build_toy_tagger(Path(tmp) / str(size), size))) for size in (224, 448, 640)}
        session = sessions[448]
        batch8 = images16[:8]
        pil8 = batch_to_pil(batch8)
        prepare = median_seconds(lambda: [prepare_image(p, 448) for p in pil8], args.repeats)
        tag = median_seconds(lambda: session.confidences(pil8), args.repeats)

        def fresh_score() -> None:
            TaggerObjective(session, "red, blue", "dark").score_images(batch8)

        score = median_seconds(fresh_score, args.repeats)
        cached_objective = TaggerObjective(session, "red, blue", "dark")
        cached_objective.score_images(batch8)
        cached = median_seconds(lambda: cached_objective.score_images(batch8), args.repeats)
        by_batch = {
            n: median_seconds(lambda n=n: TaggerObjective(session, "red").score_images(images16[:n]), args.repeats)
            for n in (1, 2, 4, 8, 16)
        }
        by_size = {
            size: median_seconds(lambda s=s: TaggerObjective(s, "red").score_images(batch8), args.repeats)
            for size, s in sessions.items()
        }
    generate = median_seconds(lambda: toy_images(8), max(1, args.repeats // 2))
    load_after = load_average()

    notes = [
        command_line("bench_tagger.py"),
        "",
        f"Machine: {machine_line('onnxruntime', 'onnx', 'pillow')}",
        "",
        f"The tiny toy tagger ({TOY_FOLDER}, `lib_pinning/objectives/tagger_toy.py`: WD14 layout, NHWC BGR "
        "input; every tag read from the image pooled to about 64 x 64 cells: little compute), so these are the objective's own costs around a real tagger's inference, "
        "which comes on top and is not measured here (no weights are downloaded). 64 px toy images "
        f"tagged at the model's input size; median of {args.repeats} runs after a warm-up.",
        "",
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run "
        "(other processes shared the cores)." if load_before is not None and load_after is not None else "",
        "",
        "| batch of 8 at 448 px, CPU | ms / batch |",
        "|---|---:|",
        f"| preprocessing only (pad, bicubic resize, BGR float32) | {prepare * 1e3:.1f} |",
        f"| preprocessing + one onnxruntime call | {tag * 1e3:.1f} |",
        f"| objective score, first sight (8-bit, hash, tag, soft share) | {score * 1e3:.1f} |",
        f"| objective score, batch seen before (cache) | {cached * 1e3:.2f} |",
        f"| for comparison: one toy generation of 8 (20 steps) | {generate * 1e3:.1f} |",
        "",
        "Scaling with the batch (448 px, first sight):",
        "",
        "| images | ms / batch | ms / image |",
        "|---:|---:|---:|",
        *[f"| {n} | {t * 1e3:.1f} | {t * 1e3 / n:.2f} |" for n, t in by_batch.items()],
        "",
        "Scaling with the model's input size (batch of 8, first sight):",
        "",
        "| input px | ms / batch |",
        "|---:|---:|",
        *[f"| {size} | {t * 1e3:.1f} |" for size, t in by_size.items()],
    ]
    body = "\n".join(notes)
    publish(body, SECTION, args.update_doc)
    return 0


def _files(folder: Path) -> tuple[Path, Path]:
    return folder / "model.onnx", folder / "selected_tags.csv"


if __name__ == "__main__":
    raise SystemExit(main())
