"""glibc's heap trimming in the toy wall bench: the same timings with the allocator held steady.

glibc gives memory back to the system when more than its trim threshold lies free at the top of
the heap, and serves blocks above its (self-adjusting) mmap threshold from fresh mappings. A toy
batch frees and takes again a few hundred KB at a time (a row of the toy's latents is 48 KB), so
depending on the order of its allocations and on what ran before it, a batch pays a minor page
fault for every 4 KB page taken again: microseconds each, a large share of a 10 ms batch. Which
variant pays (the plain batch of 8, the half batch, the hyperbatch) changes with the interleaving,
not with the rows, so the faults can move a ratio either way.

`run_steady` repeats the bench in a child process started with the thresholds in `STEADY_MALLOC`
(nothing is given back, nothing is mapped afresh), and `table` shows both side by side with the
faults per batch: what the toy's arithmetic allows without the allocator's part. The product sets
no allocator options: they are process-wide, and the WebUI's process is not the extension's to tune.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEADY_MALLOC = {
    # Above any free top this bench leaves: the heap is never trimmed.
    "MALLOC_TRIM_THRESHOLD_": str(2_000_000_000),
    # Every block of the toy (at most a few MB) from the heap; glibc refuses values above 32 MB.
    "MALLOC_MMAP_THRESHOLD_": str(16 * 2**20),
}


def unavailable() -> str | None:
    """Why the steady run cannot be made here (None when it can): the variables are glibc's."""
    libc, _ = platform.libc_ver()
    return None if libc == "glibc" else f"the C library is {libc or 'not glibc'}, whose allocator these variables do not set"


def run_steady(script: Path, args: Sequence[str]) -> list[dict[str, Any]]:
    """Run `script args --json-out F` with `STEADY_MALLOC` in its environment; F's JSON."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "walls.json"
        subprocess.run(
            [sys.executable, str(script), *args, "--json-out", str(out)],
            env={**os.environ, **STEADY_MALLOC}, check=True, stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


@dataclass(frozen=True)
class AllocatorRow:
    """One sampler's default hyperbatch, its half batch and its plain batch under one allocator."""

    sampler: str
    allocator: str
    growth: str
    rows_ratio: float
    plain_ms: float
    half_ratio: float
    hyper_ratio: float
    faults: tuple[float, float, float]  # per batch: plain, half, hyperbatch


def environment_text() -> str:
    return " ".join(f"{name}={value}" for name, value in STEADY_MALLOC.items())


def table(rows: Sequence[AllocatorRow], batch: int, slack: float) -> list[str]:
    """Both allocators side by side, and what the steady one says about the target."""
    half = batch // 2
    lines = [
        "",
        f"The allocator's part: the default hyperbatch, the plain batch of {half} and the plain batch of "
        f"{batch} timed again in a child process started with `{environment_text()}` (glibc keeps freed "
        "memory instead of giving it back and taking it again page by page; `wall_allocator.py`), next to "
        "this process's figures. Faults: minor page faults per batch (medians), plain "
        f"B={batch} / B={half} / hyperbatch.",
        "",
        f"| sampler | glibc malloc | schedule | r | plain B={batch} ms | faults | B={half} ratio | hyper ratio "
        f"| hyper - B={half} | target (r + {slack}) | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        faults = " / ".join(f"{f:.0f}" for f in row.faults)
        met = row.hyper_ratio <= row.rows_ratio + slack
        lines.append(
            f"| {row.sampler} | {row.allocator} | {row.growth} | {row.rows_ratio:.3f} | {row.plain_ms:.1f} | {faults} "
            f"| {row.half_ratio:.3f} | {row.hyper_ratio:.3f} | {row.hyper_ratio - row.half_ratio:+.3f} "
            f"| {row.rows_ratio + slack:.3f} | {'yes' if met else 'no'} |"
        )
    steady = [row for row in rows if row.allocator == "steady"]
    if steady:
        lines += ["", "Read with the allocator steady:", ""]
        for row in steady:
            half_met = row.half_ratio <= 0.5 + slack
            lines.append(
                f"- {row.sampler}: the plain batch of {half} costs {row.half_ratio:.3f} of the batch of {batch}, "
                + (f"within 0.5 + {slack}" if half_met else f"already beyond 0.5 + {slack}: a hyperbatch near r = 0.5 "
                   "makes as many denoiser calls and solver steps as that batch, on about as many rows, so r + 0.1 "
                   "is out of its reach too unless it costs less than a plain batch of its rows")
                + f"; the hyperbatch adds {row.hyper_ratio - row.half_ratio:+.3f} to it."
            )
    return lines
