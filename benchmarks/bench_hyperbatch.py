"""Hyperbatch vs plain sampling: model rows, wall time and batch variety.

A hyperbatch sampler starts a batch of B images from one latent and splits it during sampling
(1 -> 2 -> 4 ... -> B), so the early steps are shared. That saves model rows, but shared steps also
make the images more alike, and pinning measures exactly how alike a prompt's images are. This
benchmark puts numbers on both sides of that trade on the embedded toy model, for every sampler the
toy backend offers, batch sizes B and step counts S, and the growth schedules "front" and "even"
(each sampler's default is one of them: `SamplerInfo.default_growth`), "late" (cheapest) and
"none" (the plain sampler):

* model rows: `Batch.model_rows` of the generated batch (one row per image per denoiser call), its
  ratio to the plain sampler's rows, checked against `SamplerInfo.cost_ratio(plan)` (the plan's
  arithmetic) -- the run fails if a single batch disagrees;
* wall time per batch (median over the batches of a configuration) and its ratio to plain, and the
  same for the time spent inside the denoiser alone (the part a real UNet makes dominant);
* variety: `PinningObjective(None, "variety")` (mean + std of FLIP over all pairs of the batch),
  hyperbatch relative to plain over the same prompts and seeds (ratio of the means), and the
  fraction of image pairs whose images sit nearest to different prototypes
  (`ToyModel.nearest_prototype`), for both.

Plain and hyperbatch batches use the same seeds (common random numbers) and run interleaved, so a
change in the machine's load hits both. Prompts span looseness: a tight prompt (few prototypes
plausible), a medium and a loose one.

With `--unet` (and a GPU: `--device cuda`) the same samplers drive a randomly initialised UNet with
Stable Diffusion 1.5's shapes (4x64x64 latents for 512x512 images, 320 base channels, channel
multipliers 1-2-4-4, cross-attention on 77x768 context; 859.5M parameters), built here from plain
torch modules, with classifier-free guidance batched the way the WebUI does it (cond and uncond
rows in one UNet call). That measures wall-clock speed-ups where the model, not the sampler's
bookkeeping, costs the time. `--unet-tiny` builds the same architecture with 32 base channels and
runs it wherever (the CPU), to exercise that code path.

Usage:
    python benchmarks/bench_hyperbatch.py                          # quick profile (toy, CPU)
    python benchmarks/bench_hyperbatch.py --profile full           # every toy sampler on the grid
    python benchmarks/bench_hyperbatch.py --no-toy --unet --device cuda
    python benchmarks/bench_hyperbatch.py --no-toy --unet-tiny     # UNet code path, tiny, CPU
    python benchmarks/bench_hyperbatch.py --no-toy --fidelity      # schedules ranked against plain
    python benchmarks/bench_hyperbatch.py --no-toy --fidelity --fidelity-samplers dpmpp_sde dpmpp_2m_sde \
        --fidelity-schedules named --no-fidelity-ranking --fidelity-seed-sets 2 \
        --fidelity-heading "### Fidelity: SDE samplers (toy)"    # the slow SDE samplers, variety only
    python benchmarks/bench_hyperbatch.py --no-toy --fidelity --fidelity-schedules rho \
        --fidelity-heading "### Fidelity: full split refresh (toy)"  # split_rho 1 against sqrt(1/2)
    python benchmarks/bench_hyperbatch.py --no-toy --fidelity --fidelity-schedules choice --fidelity-workers 2 \
        --fidelity-samplers euler_ancestral dpmpp_2m dpmpp_sde dpmpp_2m_sde \
        --fidelity-heading "### Fidelity: chosen defaults (toy)"  # the sweep the defaults come from
    ... --update-doc docs/benchmarks.md                            # write the section of that file

--fidelity measures whether a schedule ranks prompts as plain batches do (`hyperbatch_fidelity`):
Spearman correlation of batch variety over 15 toy prompts (tight to loose, several seed sets) and
of the pinning objective over the individuals of real toy pinning runs, next to the row cost, for
the named schedules and a sweep of "front" plans.

Profiles: "quick" (the default, about 5 minutes on 2 shared cores) runs euler_ancestral and
dpmpp_2m on the whole grid (B 4/8/16, S 20/30; three prompts x four seed sets = 12 batches per
schedule and cell) and the Brownian-noise SDE samplers at B=8, S=20 only (three prompts x two seed
sets): on the toy model their per-seed Brownian trees, queried for all B images at every step, cost
far more than the denoiser. "full" runs every toy sampler on the whole grid, the SDE samplers still
with two seed sets (10 minutes at a load average of 4 on 2 cores, about three times that at 7-8).
Wall-time medians are over a cell's batches, which differ in prompt and seeds but not in cost.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import hyperbatch_fidelity as fidelity  # noqa: E402
from benchmarks.common import load_average, machine_line  # noqa: E402
from benchmarks.hyperbatch_report import (  # noqa: E402
    FIDELITY_SUBSECTION,
    fidelity_report,
    toy_heading,
    toy_report,
    unet_heading,
    unet_report,
    update_doc,
)
from benchmarks.hyperbatch_toy import (  # noqa: E402
    PROMPTS,
    TARGET_POINT,
    probe_overheads,
    profile_jobs,
    run_toy,
    toy_samplers,
)
from benchmarks.hyperbatch_unet import resolve_unet_device, run_unet  # noqa: E402
from benchmarks.sd_unet import UNetConfig  # noqa: E402
from pinning_samplers import SAMPLERS  # noqa: E402

logger = logging.getLogger("bench_hyperbatch")

BATCH_SIZES: tuple[int, ...] = (4, 8, 16)
STEPS: tuple[int, ...] = (20, 30)
"""The grid of both profiles (B and S; see the module docstring); --batch-sizes and --steps override it."""

CODE_PATHS: tuple[str, ...] = (
    "pinning_samplers",
    "lib_pinning",
    "benchmarks/bench_hyperbatch.py",
    "benchmarks/hyperbatch_toy.py",
    "benchmarks/hyperbatch_fidelity.py",
    "benchmarks/hyperbatch_report.py",
)
"""The code a toy measurement depends on; its git state goes into the report. All of lib_pinning:
the toy's images go through the generator, the guard, the prompt parser and the prototypes, and
`--fidelity` runs real pinning runs (run loop, options, store, optimizer), so a narrower list would
let a local change in one of them pass as "no local changes". The benchmark modules choose what is
measured and how it is timed, and hyperbatch_report turns the measurements into the published
ratios and means."""


def code_version() -> str:
    """The git commit the measured code came from, and which of `CODE_PATHS` had local changes.

    Figures from a run on uncommitted code can not be reproduced from the commit alone; saying so
    in the report keeps a reader from comparing them with a later run as if they were.
    """
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    if not changed:
        return f"git {head}, no local changes under {', '.join(CODE_PATHS)}"
    return f"git {head} plus local changes in {', '.join(line[3:] for line in changed)}"


def _load_text() -> str:
    """The 1-minute load average as the report prints it, before and after a measurement."""
    load = load_average()
    return "n/a" if load is None else f"{load:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements the flags ask for, print each subsection and write them with --update-doc;
    1 when a batch's model rows disagree with its plan, so a wrong row count cannot pass unnoticed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--samplers", nargs="+", default=None, help="default: every sampler the toy offers")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--seed-sets", type=int, default=None, help="override the profile's seed sets per cell")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"use the first N of the {len(PROMPTS)} prompts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--no-toy", action="store_true", help="skip the toy-model measurements")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device of the UNet timing")
    parser.add_argument("--unet", action="store_true", help="time a random SD 1.5-shaped UNet (needs CUDA)")
    parser.add_argument("--unet-tiny", action="store_true", help="the same UNet with 32 base channels (any device)")
    parser.add_argument("--unet-size", type=int, default=None, help="image side in pixels (default 512; tiny 128)")
    parser.add_argument("--unet-steps", type=int, nargs="+", default=[20])
    parser.add_argument("--unet-batch-sizes", type=int, nargs="+", default=None, help="default: --batch-sizes")
    parser.add_argument("--unet-samplers", nargs="+", default=None, help="default: every registered sampler")
    parser.add_argument("--unet-repeats", type=int, default=2, help="timed rounds after one warm-up round")
    parser.add_argument("--fidelity", action="store_true", help="rank schedules against plain (hyperbatch_fidelity)")
    parser.add_argument("--fidelity-samplers", nargs="+", default=["euler_ancestral", "dpmpp_2m"])
    parser.add_argument("--fidelity-seed-sets", type=int, default=6)
    parser.add_argument("--fidelity-generations", type=int, default=3, help="generations of the toy runs")
    parser.add_argument(
        "--fidelity-schedules", choices=list(fidelity.CANDIDATE_SETS), default="sweep",
        help="sweep: the named schedules and the 'front' sweep; named: front, even and late alone; "
        "rho: front and cheaper plans with the full split refresh (split_rho 1); choice: the "
        "candidates the per-sampler defaults are chosen from (every rho explicit)",
    )
    parser.add_argument(
        "--fidelity-ranking", action=argparse.BooleanOptionalAction, default=True,
        help="also re-rank the individuals of toy pinning runs (the costlier half)",
    )
    parser.add_argument(
        "--fidelity-heading", default=FIDELITY_SUBSECTION,
        help="the doc subsection to write, so that a run of other samplers keeps the existing table",
    )
    parser.add_argument(
        "--fidelity-workers", type=int, default=1,
        help="processes for the fidelity measures, one task per sampler and measure",
    )
    parser.add_argument("--update-doc", type=Path, default=None, help="write the section into this file")
    args = parser.parse_args(argv)
    multiple = (UNetConfig.tiny() if args.unet_tiny else UNetConfig.sd15()).image_multiple
    if args.unet_size is not None and (args.unet_size <= 0 or args.unet_size % multiple):
        parser.error(f"--unet-size must be a positive multiple of {multiple} pixels "
                     f"(8 per latent pixel, halved at each of the UNet's levels), got {args.unet_size}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_hyperbatch.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    command = command.strip()
    info = machine_line()
    code = code_version()
    subsections: dict[str, str] = {}
    failed = False

    if not args.no_toy:
        available = toy_samplers()
        samplers = args.samplers or list(available)
        unknown = [s for s in samplers if s not in available]
        if unknown:
            parser.error(f"the toy backend does not offer {unknown}; choose from {list(available)}")
        skipped = [s for s in SAMPLERS if s not in available]
        if skipped:
            logger.info("not on the toy backend (ToySettings does not offer them): %s", ", ".join(skipped))
        prompts = PROMPTS[: max(1, args.prompts)]
        jobs = profile_jobs(args.profile, samplers, args.batch_sizes, args.steps, args.seed_sets)
        loads = (_load_text(), "")
        started = time.perf_counter()
        comparisons = run_toy(jobs, prompts)
        elapsed = time.perf_counter() - started
        loads = (loads[0], _load_text())
        failed = not all(c.checks_out for c in comparisons)
        probe = probe_overheads()
        body = toy_report(
            comparisons, args.profile, command, info, elapsed, loads, prompts, probe, code, skipped=skipped
        )
        subsections[toy_heading(args.profile)] = body
        print(body)
        print(f"\ntoy measurements took {elapsed:.0f} s")

    if args.fidelity:
        started = time.perf_counter()
        batch_size, steps = TARGET_POINT
        runs = [
            fidelity.toy_run_individuals(prompt, negative, batch_size, steps, args.fidelity_generations, index)
            for index, (prompt, negative) in enumerate(fidelity.RUN_PROMPTS)
        ] if args.fidelity_ranking else []
        load_before = _load_text()
        results, cpu = fidelity.measure_samplers(
            args.fidelity_samplers, batch_size, steps, args.fidelity_schedules, args.fidelity_seed_sets, runs,
            workers=args.fidelity_workers,
        )
        logger.info("fidelity done after %.0f s (%.0f s CPU in the measures)", time.perf_counter() - started, cpu)
        body = fidelity_report(
            results, command, info, code, time.perf_counter() - started, args.fidelity_generations,
            loads=(load_before, _load_text()), cpu=cpu, choice=args.fidelity_schedules == "choice",
        )
        subsections[args.fidelity_heading] = body
        print(body)

    if args.unet or args.unet_tiny:
        device = resolve_unet_device(args.device, args.unet_tiny)
        if device is None:
            print("UNet timing skipped: no CUDA device (use --device cuda on a GPU machine, or --unet-tiny)")
        else:
            config = UNetConfig.tiny() if args.unet_tiny else UNetConfig.sd15()
            size = args.unet_size or (128 if args.unet_tiny else 512)
            samplers = args.unet_samplers or list(SAMPLERS)
            started = time.perf_counter()
            rows, parameters = run_unet(
                config, device, samplers, args.unet_batch_sizes or args.batch_sizes, args.unet_steps,
                args.unet_repeats, size,
            )
            elapsed = time.perf_counter() - started
            failed = failed or any(r.rows != r.expected_rows for r in rows)
            body = unet_report(
                rows, parameters, config, device, size, args.unet_repeats, args.unet_tiny, command, info, code,
                elapsed,
            )
            subsections[unet_heading(args.unet_tiny)] = body
            print(body)

    if args.update_doc is not None and subsections:
        update_doc(args.update_doc, subsections)
        logger.info("updated %s", args.update_doc)
    if failed:
        logger.error("row accounting mismatch: see the tables")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
