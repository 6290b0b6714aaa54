"""The tables and text of bench_hyperbatch.py's section of docs/benchmarks.md.

One subsection per measurement: the toy grid (`toy_report`, from `hyperbatch_toy`'s comparisons),
the UNet timing (`unet_report`, from `hyperbatch_unet`'s rows) and the fidelity sweep
(`fidelity_report`, around `fidelity_verdict`'s table and verdicts). Every figure a reader sees is
formatted here from the measured results, so the measuring modules stay free of markdown and a
change of wording touches no measurement. `update_doc` writes the subsections through
`common.write_section`, leaving the rest of the file as it was.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from benchmarks import fidelity_verdict
from benchmarks import hyperbatch_fidelity as fidelity
from benchmarks.common import write_section
from benchmarks.hyperbatch_toy import CFG_SCALE, GROWTHS, TARGET_POINT, Comparison, OverheadProbe
from benchmarks.hyperbatch_unet import UNetRow
from benchmarks.sd_unet import UNetConfig
from pinning_samplers import DEFAULT_SCHEDULE, SAMPLERS
from pinning_samplers.plan import FRONT_LAST_SPLIT

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

SECTION_INTRO = (
    "Hyperbatch samplers start a batch from one latent and split it during sampling, so early "
    "steps are shared: fewer model rows, at some cost in variety. Ratios are hyperbatch over the "
    "plain sampler (schedule \"none\") with the same prompts and seeds; model rows count one row "
    "per image per denoiser call (with CFG the UNet evaluates twice that, for plain and hyperbatch "
    "alike). Regenerate a subsection with the command it shows."
)


def toy_heading(profile: str) -> str:
    """The toy subsection of a profile: a quick run writes its own, so a full run's tables stay."""
    return f"{TOY_SUBSECTION}, {profile} profile"


def unet_heading(tiny: bool) -> str:
    """The UNet subsection: a tiny run's is its own, so a code-path check never replaces GPU figures."""
    return f"{UNET_SUBSECTION}: tiny code-path check" if tiny else UNET_SUBSECTION


def update_doc(path: Path, subsections: Mapping[str, str]) -> None:
    """Write the given subsections into this benchmark's section of `path`, leaving the rest."""
    write_section(path, SECTION, subsections, intro=SECTION_INTRO)


def _ms(seconds: float) -> str:
    """Seconds as milliseconds, one decimal: a toy batch takes tens of milliseconds."""
    return f"{1e3 * seconds:.1f}"


def cost_table(comparisons: Sequence[Comparison]) -> str:
    """Rows and times per cell and schedule, with the check that the rows are the plan's."""
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
    """Variety and different-prototype pairs per cell and schedule: what the saved rows cost."""
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
    """Each hyperbatch row against the plain row of its sampler, B and S: rows, seconds, speed-up."""
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
    skipped: Sequence[str] = (),
) -> str:
    """The toy subsection: setup, the issue's target, the schedule summary and the three tables.

    code: `bench_hyperbatch.code_version()` taken before the measurements started (the code that
    was imported). skipped: registered samplers the toy backend does not offer, named at the end
    with their evaluations per step so a reader knows why they have no rows.
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
    if skipped:
        described = ", ".join(
            f"{name} ({SAMPLERS[name].evals_per_step} model evaluation(s) per step)" for name in skipped
        )
        parts += [
            "",
            f"Not on the toy backend (`ToySettings` does not offer it): {described}; its row counts "
            "follow from `SamplerInfo.cost_ratio` like those of the samplers above.",
        ]
    return "\n".join(parts)


def unet_report(
    rows: Sequence[UNetRow],
    parameters: int,
    config: UNetConfig,
    device: torch.device,
    image_size: int,
    repeats: int,
    tiny: bool,
    command: str,
    info: str,
    code: str,
    elapsed: float,
) -> str:
    """The UNet subsection: setup, what was timed and how, the table; a tiny run says where the
    full-size figures come from, since its own times are no speed figure."""
    kind = "tiny (32 base channels; a code-path check, not a speed figure)" if tiny else "SD 1.5 shapes"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    body = "\n".join([
        f"Command: `{command}`",
        "",
        f"Code: {code}.",
        "",
        f"Machine: {info}; UNet on {device.type} ({gpu}), "
        f"{'float16' if device.type == 'cuda' else 'float32'}. Run time: {elapsed / 60:.1f} min.",
        "",
        f"Random-weight UNet, {kind}: {parameters:,} parameters, {image_size}x{image_size} images "
        f"({config.in_channels}x{image_size // 8}x{image_size // 8} latents), CFG 7 batched as cond + "
        f"uncond rows in one call, per-seed noise as in the WebUI. Median of {repeats} timed "
        "rounds after a warm-up round; speed-up = plain seconds / hyperbatch seconds.",
        "",
        unet_table(rows),
    ])
    if tiny:
        body += (
            "\n\nThe full-size figures need CUDA: `python benchmarks/bench_hyperbatch.py --no-toy "
            "--unet --device cuda --update-doc docs/benchmarks.md` writes them under "
            f"\"{UNET_SUBSECTION}\" (a run longer than a machine's command limit can be split "
            "with --unet-samplers)."
        )
    return body


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
