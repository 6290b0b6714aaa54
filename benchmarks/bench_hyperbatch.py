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
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import hyperbatch_fidelity as fidelity  # noqa: E402
from benchmarks import fidelity_verdict  # noqa: E402
from benchmarks.common import load_average, machine_line, write_section  # noqa: E402
from benchmarks.hyperbatch_toy import (  # noqa: E402
    CFG_SCALE,
    GROWTHS,
    PROMPTS,
    TARGET_POINT,
    Comparison,
    OverheadProbe,
    probe_overheads,
    profile_jobs,
    run_toy,
    toy_samplers,
)
from benchmarks.hyperbatch_unet import UNetRow, resolve_unet_device, run_unet  # noqa: E402
from benchmarks.sd_unet import UNetConfig  # noqa: E402
from pinning_samplers import DEFAULT_SCHEDULE, SAMPLERS  # noqa: E402
from pinning_samplers.plan import FRONT_LAST_SPLIT  # noqa: E402

logger = logging.getLogger("bench_hyperbatch")

SECTION = "## Hyperbatch samplers (bench_hyperbatch.py)"
TOY_SUBSECTION = "### Toy model (CPU)"
"""The toy results' heading; the profile name is appended (`toy_heading`), so a quick run does
not overwrite a full run's tables."""
UNET_SUBSECTION = "### SD 1.5-shaped UNet"
FIDELITY_SUBSECTION = "### Fidelity: ranking prompts like plain batches (toy)"

TARGET_ROWS_RATIO = 0.6
"""Issue 15's target: at most this fraction of a plain batch's model rows at B=8, S=20 for the
default schedule (`pinning_samplers.DEFAULT_SCHEDULE`)."""
WALL_SLACK = 0.1
"""Issue 15: a hyperbatch's wall-time ratio to plain may exceed its rows ratio by at most this."""

BATCH_SIZES: tuple[int, ...] = (4, 8, 16)
STEPS: tuple[int, ...] = (20, 30)


# ---------------------------------------------------------------------------------------------
# Toy tables
# ---------------------------------------------------------------------------------------------


def toy_heading(profile: str) -> str:
    return f"{TOY_SUBSECTION}, {profile} profile"


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def cost_table(comparisons: Sequence[Comparison]) -> str:
    lines = [
        "| sampler | B | S | schedule | rows (hyper / plain) | rows ratio | `cost_ratio` | check "
        "| wall ms plain | wall ms hyper | wall ratio | denoiser-time ratio |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        h, p = c.hyper, c.plain
        lines.append(
            f"| {h.sampler} | {h.batch_size} | {h.steps} | {h.growth} | {h.model_rows[0]} / {p.model_rows[0]} "
            f"| {c.rows_ratio:.3f} | {h.plan_cost_ratio:.3f} | {'ok' if c.checks_out else 'MISMATCH'} "
            f"| {_ms(p.median_wall_s)} | {_ms(h.median_wall_s)} | {c.time_ratio:.2f} | {c.model_time_ratio:.2f} |"
        )
    return "\n".join(lines)


def diversity_table(comparisons: Sequence[Comparison]) -> str:
    lines = [
        "| sampler | B | S | schedule | batches | variety plain | variety hyper | variety ratio "
        "| different-prototype pairs plain | hyper |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        h, p = c.hyper, c.plain
        lines.append(
            f"| {h.sampler} | {h.batch_size} | {h.steps} | {h.growth} | {len(h.variety)} "
            f"| {p.mean_of(p.variety):.4f} | {h.mean_of(h.variety):.4f} | {c.variety_ratio():.3f} "
            f"| {p.mean_of(p.distinct_pairs):.2f} | {h.mean_of(h.distinct_pairs):.2f} |"
        )
    return "\n".join(lines)


def prompt_table(comparisons: Sequence[Comparison], prompts: Sequence[tuple[str, str]], point: tuple[int, int]) -> str:
    """Variety ratio and different-prototype pairs per prompt, at one (B, S)."""
    picked = [c for c in comparisons if (c.hyper.batch_size, c.hyper.steps) == point]
    header = "| sampler | schedule | " + " | ".join(
        f"{label}: variety ratio | {label}: diff. pairs plain / hyper" for label, _ in prompts
    ) + " |"
    lines = [header, "|---|---|" + "---:|---:|" * len(prompts)]
    for c in picked:
        cells = []
        for label, _ in prompts:
            cells.append(f"{c.variety_ratio(label):.3f}")
            cells.append(
                f"{c.plain.mean_of(c.plain.distinct_pairs, label):.2f} / {c.hyper.mean_of(c.hyper.distinct_pairs, label):.2f}"
            )
        lines.append(f"| {c.hyper.sampler} | {c.hyper.growth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def schedule_summary(comparisons: Sequence[Comparison]) -> str:
    """Per schedule, over every measured cell: the spread of cost and what variety it keeps."""
    lines = [
        "| schedule | cells | rows ratio (min - max) | rows ratio at B=8, S=20 | wall ratio (median) "
        "| variety ratio (mean) | different-prototype pairs, hyper / plain (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for growth in GROWTHS[1:]:
        cells = [c for c in comparisons if c.hyper.growth == growth]
        if not cells:
            continue
        rows = [c.rows_ratio for c in cells]
        target = sorted({f"{c.rows_ratio:.3f}" for c in cells if (c.hyper.batch_size, c.hyper.steps) == TARGET_POINT})
        plain_distinct = statistics.fmean(c.plain.mean_of(c.plain.distinct_pairs) for c in cells)
        hyper_distinct = statistics.fmean(c.hyper.mean_of(c.hyper.distinct_pairs) for c in cells)
        lines.append(
            f"| {growth} | {len(cells)} | {min(rows):.3f} - {max(rows):.3f} | {', '.join(target) or '-'} "
            f"| {statistics.median(c.time_ratio for c in cells):.2f} "
            f"| {statistics.fmean(c.variety_ratio() for c in cells):.3f} "
            f"| {hyper_distinct:.2f} / {plain_distinct:.2f} |"
        )
    return "\n".join(lines)


def schedule_role(growth: str) -> str:
    """What a named schedule is to the samplers: whose default it is (each sampler's own, see
    `SamplerInfo.default_growth`), else a cheaper or the cheapest setting."""
    owners = [info.label.removesuffix(" - Hyperbatch") for info in SAMPLERS.values() if info.default_growth == growth]
    if owners:
        return "default of " + ", ".join(owners)
    return "cheapest setting" if growth == "late" else "cheaper setting"


def schedule_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """One sentence per schedule: what it costs and what variety it keeps, from the measurements."""
    lines = []
    for growth in ("front", "even", "late"):
        role = schedule_role(growth)
        cells = [c for c in comparisons if c.hyper.growth == growth]
        if not cells:
            continue
        rows = [c.rows_ratio for c in cells]
        at_target = [c.rows_ratio for c in cells if (c.hyper.batch_size, c.hyper.steps) == TARGET_POINT]
        variety = statistics.fmean(c.variety_ratio() for c in cells)
        hyper_distinct = statistics.fmean(c.hyper.mean_of(c.hyper.distinct_pairs) for c in cells)
        plain_distinct = statistics.fmean(c.plain.mean_of(c.plain.distinct_pairs) for c in cells)
        target = f" ({min(at_target):.3f} to {max(at_target):.3f} at B=8, S=20)" if at_target else ""
        line = (
            f"- \"{growth}\" ({role}): {min(rows):.3f} to {max(rows):.3f} of the plain model rows{target}; "
            f"keeps {variety:.2f} of the plain batches' FLIP variety on average, and "
            f"{hyper_distinct:.2f} of its image pairs are on different prototypes against {plain_distinct:.2f} "
            "for plain batches"
        )
        if hyper_distinct < 0.01:
            line += (
                ": its first split comes after the toy has settled on a prototype, so a batch's images "
                "differ only in detail and a loose prompt looks as pinned as a tight one"
            )
        lines.append(line + ".")
    return lines


def target_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """The issue's targets per sampler at B=8, S=20: the default schedule's rows, and every
    schedule's wall-time ratio against its rows ratio (+ WALL_SLACK)."""
    lines = []
    for c in comparisons:
        if (c.hyper.batch_size, c.hyper.steps) != TARGET_POINT:
            continue
        if c.hyper.growth == DEFAULT_SCHEDULE:
            verdict = "met" if c.rows_ratio <= TARGET_ROWS_RATIO + 1e-9 else "NOT met"
            lines.append(
                f"- {c.hyper.sampler}: {c.rows_ratio:.3f} of the plain rows at B=8, S=20, {c.hyper.growth} "
                f"(target <= {TARGET_ROWS_RATIO}): {verdict}"
            )
        wall_ok = c.time_ratio <= c.rows_ratio + WALL_SLACK
        lines.append(
            f"- {c.hyper.sampler}, {c.hyper.growth}: wall-time ratio {c.time_ratio:.2f} against rows ratio "
            f"{c.rows_ratio:.3f} (target <= rows + {WALL_SLACK}): {'met' if wall_ok else 'NOT met'}"
        )
    return lines


def unet_table(rows: Sequence[UNetRow]) -> str:
    plain = {(r.sampler, r.batch_size, r.steps): r for r in rows if r.growth == "none"}
    lines = [
        "| sampler | B | S | schedule | rows ratio | check | s plain | s hyper | wall ratio | speed-up |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.growth == "none":
            continue
        p = plain[(r.sampler, r.batch_size, r.steps)]
        ok = r.rows == r.expected_rows and p.rows == p.expected_rows
        lines.append(
            f"| {r.sampler} | {r.batch_size} | {r.steps} | {r.growth} | {r.rows / p.rows:.3f} "
            f"| {'ok' if ok else 'MISMATCH'} | {p.median_s:.3f} | {r.median_s:.3f} "
            f"| {r.median_s / p.median_s:.2f} | {p.median_s / r.median_s:.2f}x |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


CODE_PATHS: tuple[str, ...] = (
    "pinning_samplers",
    "lib_pinning/generator.py",
    "lib_pinning/toy.py",
    "lib_pinning/toy_words.py",
    "lib_pinning/toy_failures.py",
    "lib_pinning/toy_clip.py",
    "lib_pinning/toy_prototypes.py",
    "lib_pinning/prompt",
    "lib_pinning/objectives",
    "benchmarks/bench_hyperbatch.py",
    "benchmarks/hyperbatch_toy.py",
)
"""The code a toy measurement depends on; its git state goes into the report. The toy's prototypes
(`toy_prototypes`) and its reading of a prompt's emphasis (`lib_pinning.prompt`) shape every image,
and the benchmark's own modules choose what is measured and how it is timed."""


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


SECTION_INTRO = (
    "Hyperbatch samplers start a batch from one latent and split it during sampling, so early "
    "steps are shared: fewer model rows, at some cost in variety. Ratios are hyperbatch over the "
    "plain sampler (schedule \"none\") with the same prompts and seeds; model rows count one row "
    "per image per denoiser call (with CFG the UNet evaluates twice that, for plain and hyperbatch "
    "alike). Regenerate a subsection with the command it shows."
)


def toy_report(
    comparisons: Sequence[Comparison],
    profile: str,
    command: str,
    info: str,
    elapsed: float,
    loads: tuple[str, str],
    prompts: Sequence[tuple[str, str]],
    probe: OverheadProbe,
    code: str,
) -> str:
    """The toy subsection: setup, the issue's target, the schedule summary and the three tables.

    code: `code_version()` taken before the measurements started (the code that was imported).
    """
    batches = sorted({len(c.hyper.variety) for c in comparisons})
    parts = [
        f"Command: `{command}` ({profile} profile)",
        "",
        f"Code: {code}.",
        "",
        f"Machine: {info}. The machine was shared with other jobs (1-minute load average "
        f"{loads[0]} before, {loads[1]} after, on {os.cpu_count()} cores), so wall times are "
        "noisy; plain and hyperbatch batches ran interleaved, which keeps their ratios fairer than "
        f"the absolute times. Run time: {elapsed / 60:.1f} min.",
        "",
        f"Toy model: 64x64, cfg {CFG_SCALE}, each sampler on its WebUI default schedule (Karras; "
        "exponential for DPM++ 2M SDE). Prompts: "
        + "; ".join(f"{label} \"{prompt}\"" for label, prompt in prompts)
        + f". {' or '.join(str(b) for b in batches)} batches per schedule and cell (prompts x seed "
        "sets, the same for every schedule); wall times are medians over them.",
        "",
        f"Issue targets (default schedule \"{DEFAULT_SCHEDULE}\" at most {TARGET_ROWS_RATIO} of the plain "
        f"sampler's model rows at B=8, S=20; every schedule's wall-time ratio at most its rows ratio + {WALL_SLACK}):",
        "",
        *target_lines(comparisons),
        "",
        "Per schedule, over all measured cells:",
        "",
        *schedule_lines(comparisons),
        "",
        schedule_summary(comparisons),
        "",
        "Cost. `cost_ratio` is `SamplerInfo.cost_ratio(plan)`; check = every batch's "
        "`Batch.model_rows` equals `plan.model_rows(evals)` and the plain batches' equal B x evals. "
        "Denoiser-time ratio: time inside the toy denoiser only.",
        "",
        cost_table(comparisons),
        "",
        f"Reading the wall times: one toy denoiser call on {probe.batch_size} rows took "
        f"{probe.denoiser_call_ms:.1f} ms and on 1 row {probe.denoiser_row_call_ms:.1f} ms (a call's fixed "
        "cost, which a hyperbatch pays at every step like a plain batch: it makes as many calls, on fewer "
        f"rows); Euler a's noise for one step, one draw from each of the {probe.batch_size} seeds' "
        f"generators, took {probe.seeded_draw_ms:.1f} ms; a plain batch makes it at every step, a "
        "hyperbatch for its active rows only, but an image's generator must still advance once per step "
        "whether its row exists yet or not (as the WebUI's per-seed generators do, so its noise does not "
        "depend on the plan): a row that appears late catches up in one call (`SeededNoise`, "
        "bench_seeded_catchup.py) that costs about half the draws it skips. The "
        f"first query of {probe.batch_size} per-seed Brownian trees (which builds them: a tree is built "
        f"at its row's first query) took {probe.first_tree_query_ms:.0f} ms and a following neighbouring query "
        f"{probe.later_tree_query_ms:.0f} ms (medians, same run). The trees are queried "
        "for the active rows only (each row is a pure function of its own seed), so the SDE samplers "
        "spend most of a toy batch drawing noise, less for a hyperbatch than for a plain batch. A split's "
        f"refresh noise for {probe.batch_size} copies (`split_noise`, one small per-seed generator each, no "
        f"tree) took {probe.split_noise_ms:.2f} ms, so DPM++ 2M, whose plain solver draws no noise, pays "
        "for no tree query at its splits and builds no tree at all. On a real UNet the model's share dominates (see the "
        "UNet subsection). The denoiser-time ratio follows "
        "the rows only loosely on the toy: a call's fixed overhead is comparable to its per-row work, "
        "and a hyperbatch makes as many calls as a plain batch, on fewer rows. Where a toy batch's time "
        "goes (what every batch pays whatever its rows, per row, and the hyperbatch's own cost per step) "
        "and the floor its row savings allow: section \"Hyperbatch wall time on the toy: where it goes "
        "(bench_hyperbatch_wall.py)\".",
        "",
        "Diversity. Variety = `PinningObjective(None, \"variety\")` (mean + std of FLIP over all pairs "
        "of a batch), averaged over the batches; ratio = hyperbatch mean / plain mean. Different-"
        "prototype pairs: fraction of image pairs whose images are nearest to different prototypes "
        "(`ToyModel.nearest_prototype`); pairs on the same prototype differ only in detail.",
        "",
        diversity_table(comparisons),
        "",
        f"By prompt at B={TARGET_POINT[0]}, S={TARGET_POINT[1]} (fewer batches each, so noisier):",
        "",
        prompt_table(comparisons, prompts, TARGET_POINT),
    ]
    return "\n".join(parts)


def fidelity_report(
    results: Sequence[fidelity.FidelityResult], command: str, info: str, code: str, elapsed: float,
    generations: int, loads: tuple[str, str] | None = None, cpu: float | None = None, choice: bool = False,
) -> str:
    """The fidelity subsection: setup, the verdict per sampler, the table."""
    prompts = "; ".join(f"{kind} \"{prompt}\"" for kind, prompt, _ in fidelity.FIDELITY_PROMPTS)
    runs = "; ".join(f"\"{prompt}\"" + (f" (negative \"{neg}\")" if neg else "") for prompt, neg in fidelity.RUN_PROMPTS)
    first = results[0]
    return "\n".join([
        f"Command: `{command}`",
        "",
        f"Code: {code}.",
        "",
        f"Machine: {info}. Run time: {elapsed / 60:.1f} min"
        + (f" ({cpu / 60:.1f} min CPU in the measures)" if cpu is not None else "")
        + (f"; load average {loads[0]} at the start, {loads[1]} at the end" if loads is not None else "")
        + ".",
        "",
        f"Variety: Spearman rank correlation, over {len(fidelity.FIDELITY_PROMPTS)} prompts, between a "
        f"schedule's batch variety (`PinningObjective(None, \"variety\")`, mean over {first.seed_sets} seed "
        "sets) and the plain batch's with the same seeds; variety ratio = mean hyperbatch variety / mean "
        f"plain variety. Prompts: {prompts}.",
        "",
        (
            f"Ranking: the nearest-mode loss against the run's baseline images of the {first.individuals} "
            f"distinct individuals of {len(fidelity.RUN_PROMPTS)} toy pinning runs (default options, "
            f"{generations} generations, plain Euler a, B={first.batch_size}), each re-sampled with its run's "
            f"seeds under the schedule and plainly; one Spearman per run ({runs}), and their mean."
            if first.individuals
            else "Ranking: not measured in this run (--no-fidelity-ranking): re-sampling a run's individuals "
            "under every schedule costs about six times the variety sweep."
        ),
        "",
        "\"front q=Q\": last split at Q of the steps, the others evenly before it; "
        + ("\"front\" is q=0.55 (the former default). " if choice else f"the named \"front\" is q={FRONT_LAST_SPLIT}. ")
        + "\"refresh\": every copy gets the variance-preserving noise refresh "
        "(rho = sqrt(1/2)) at its split (\"front\" plans have it unless marked; DPM++ 2M refreshes "
        f"always). \"{fidelity.REFERENCE}\" is plain against plain with other seeds: the ceiling.",
        "",
        *(
            [
                "Candidates (--fidelity-schedules choice) are named with their rho. "
                f"{', '.join(sorted(fidelity.BROWNIAN_SAMPLERS))} query per-seed Brownian trees (40 to 80 "
                "times an Euler a batch on the toy), so they get the four candidates that decide their "
                "default (" + ", ".join(f'"{c.label}"' for c in fidelity.choice_for("dpmpp_sde")[0])
                + ") and no ceiling row (theirs, 0.81 and 0.86 for variety, are in \"Fidelity: SDE "
                "samplers (toy)\").",
                "",
            ]
            if choice else []
        ),
        *(fidelity_verdict.choice_lines(results) if choice else fidelity_verdict.verdict_lines(results, "front", "even")),
        "",
        fidelity_verdict.fidelity_table(results),
    ])


def _load_text() -> str:
    load = load_average()
    return "n/a" if load is None else f"{load:.1f}"


def update_doc(path: Path, subsections: Mapping[str, str]) -> None:
    """Write the given subsections into this benchmark's section of `path`, leaving the rest."""
    write_section(path, SECTION, subsections, intro=SECTION_INTRO)


def main(argv: list[str] | None = None) -> int:
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
        body = toy_report(comparisons, args.profile, command, info, elapsed, loads, prompts, probe, code)
        if skipped:
            described = ", ".join(
                f"{name} ({SAMPLERS[name].evals_per_step} model evaluation(s) per step)" for name in skipped
            )
            body += (
                f"\n\nNot on the toy backend (`ToySettings` does not offer it): {described}; its row counts "
                "follow from `SamplerInfo.cost_ratio` like those of the samplers above."
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
            kind = "tiny (32 base channels; a code-path check, not a speed figure)" if args.unet_tiny else "SD 1.5 shapes"
            gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
            body = "\n".join([
                f"Command: `{command}`",
                "",
                f"Code: {code}.",
                "",
                f"Machine: {info}; UNet on {device.type} ({gpu}), "
                f"{'float16' if device.type == 'cuda' else 'float32'}. Run time: {elapsed / 60:.1f} min.",
                "",
                f"Random-weight UNet, {kind}: {parameters:,} parameters, {size}x{size} images "
                f"({config.in_channels}x{size // 8}x{size // 8} latents), CFG 7 batched as cond + uncond "
                f"rows in one call, per-seed noise as in the WebUI. Median of {args.unet_repeats} timed "
                "rounds after a warm-up round; speed-up = plain seconds / hyperbatch seconds.",
                "",
                unet_table(rows),
            ])
            if args.unet_tiny:
                heading = f"{UNET_SUBSECTION}: tiny code-path check"
                body += (
                    "\n\nThe full-size figures need CUDA: `python benchmarks/bench_hyperbatch.py --no-toy "
                    "--unet --device cuda --update-doc docs/benchmarks.md` writes them under "
                    f"\"{UNET_SUBSECTION}\" (a run longer than a machine's command limit can be split "
                    "with --unet-samplers)."
                )
            else:
                heading = UNET_SUBSECTION
            subsections[heading] = body
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
