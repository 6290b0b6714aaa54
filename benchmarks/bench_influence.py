"""Per-unit influence against the toy's closed form: do the classes of influence.json tell the truth?

For each of 10 prompts this runs a pinning with the demo's settings (`python -m lib_pinning demo`:
the toy model at its default sampling, the default PinningOptions, seeds 1..8) and fits the
influence from the run's own evaluations, as the report does (lib_pinning.analysis.influence,
`analyse_store`). No extra batches.

The truth. On the toy every word has a K-vector, logits = sum of weight x vector (the negative
prompt subtracts) and pi = softmax(logits / T) (lib_pinning.toy). Guidance at cfg c sharpens the
sample frequencies to about q ~ pi^c (the toy's docstring). The run pins its batch to one
prototype m: the prototype most of the best individual's images show (nearest prototype of each
saved image; ties go to the larger q). The pinning loss then goes with the share of the batch
expected outside m,

    miss(w) = 1 - q_m(w),

and the true influence of unit j is g_j = d miss / d w_j at the best individual's weights, by a
central difference of step 0.01 on the weights of the rendered prompts (the closed form is smooth
there, so this is exact to O(1e-4)). True class, with a dead band of TRUTH_BAND = 0.05 per unit
weight (a step of 0.1 moves less than half a percent of the batch):

    g_j < -0.05: tightening;  g_j > 0.05: loosening;  otherwise inert.

Inert words (INERT_WORDS) are words the toy ignores (`ToyConfig(inert_words=...)`: zero vector),
so their g_j is exactly 0. They still count for the failure modes' effective weight (frying from
1.5), like any word: the truth is about the mixture, and the benchmark reports what the estimator
does with them.

Scores (a unit is one weighted word of the prompt or the negative prompt of one prompt):

* agreement: a unit agrees when its estimated class equals its true class; for a truly inert unit
  "cannot tell" also agrees (it claims no effect), for a tightening or loosening unit "cannot
  tell" is a disagreement. Target >= 90% of units. `strict` counts "cannot tell" as a
  disagreement everywhere.
* inert words: the share classed inert or "cannot tell" (never tightening or loosening).
  Target >= 95%.

Sweep mode (`--sweep-budget N [N ...]`): after each run, the optional sensitivity sweep
(lib_pinning.analysis.sweep: extra batches, each unit up and down by a step, paired per-image
differences over the run's seeds and derived seed sets) at each budget N, in batches per prompt,
scored against the same truth. A unit a budget does not reach (fewer than 2 batches per unit) counts
as "cannot tell". The budgets' batch plans are prefixes of one another, so each batch is generated
once (`CachedToyGenerator`). The extra column "|g| >= 0.1" is the agreement over the units whose
true effect is at least twice the dead band (not a replacement of the target).

Usage:
    python benchmarks/bench_influence.py                    # the demo's settings, about two minutes
    python benchmarks/bench_influence.py --generations 40   # longer runs (no early stop): more points
    python benchmarks/bench_influence.py --sweep-budget 16 32 64 128   # the sweep at these budgets
    ... --update-doc                                        # also rewrite its docs/benchmarks.md subsection
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DOC, git_commit, machine_line, write_section  # noqa: E402
from lib_pinning.analysis import influence  # noqa: E402
from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING, UNKNOWN  # noqa: E402
from lib_pinning.analysis import sweep as sweeping  # noqa: E402
from lib_pinning.generator import Batch, DemoPrompt, GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.prompt import PromptSpace  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402
from lib_pinning.store import IndividualRecord, RunStore  # noqa: E402
from lib_pinning.toy import ToyConfig, ToyModel  # noqa: E402

log = logging.getLogger("bench_influence")

SECTION = "## Per-unit influence against the toy's closed form (bench_influence.py)"
INERT_WORDS = ("velvet", "quietly", "serene")
TRUTH_BAND = 0.05
TRUTH_STEP = 0.01
AGREEMENT_TARGET = 0.90
INERT_TARGET = 0.95
# The extra column of the sweep table: units whose true effect is at least twice the dead band.
CLEAR_EFFECT = 0.1

# (prompt, negative prompt): attribute words, filler words (random vectors) and inert words.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("red circle, blue square, soft light, velvet", "blurry"),
    ("a green triangle, quietly, detailed", "serene"),
    ("yellow ring, velvet backdrop", "blurry, quietly"),
    ("purple cross, serene, photo", "dark"),
    ("red square, blue circle, velvet", "noise"),
    ("green circle, quietly, sharp focus", "velvet"),
    ("blue triangle, yellow cross, serene glow", "blurry"),
    ("(red:1.2) ring, velvet, quietly", "dark"),
    ("purple square, green ring, serene", "quietly"),
    ("yellow circle, studio, velvet", "serene, blurry"),
)


@dataclass(frozen=True)
class UnitResult:
    prompt: int
    text: str
    side: str
    inert_word: bool
    gradient: float  # d miss / d weight at the best weights
    truth: str
    estimate: str
    standardized: float | None
    weight: float | None = None  # the rendered weight at the best point (the failure modes start at 1.5)

    @property
    def agrees(self) -> bool:
        return self.estimate == self.truth or (self.truth == INERT and self.estimate == UNKNOWN)

    @property
    def agrees_strictly(self) -> bool:
        return self.estimate == self.truth


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    negative_prompt: str
    evaluations: int
    r2: float | None
    mode: str
    assignments: int  # distinct (seed -> prototype) assignments over the evaluated batches
    explained: float  # share of the loss's variance between those assignments
    units: list[UnitResult]


def sample_frequencies(model: ToyModel, prompt: str, negative: str, cfg: float) -> np.ndarray:
    """q ~ pi^cfg, normalised: the toy's closed-form frequencies of each prototype under guidance."""
    log_q = cfg * model.mixture_log_weights(prompt, negative)
    return torch.softmax(log_q, dim=0).numpy()


def true_gradient(model: ToyModel, space: PromptSpace, x: np.ndarray, mode: int, cfg: float,
                  h: float = TRUTH_STEP) -> np.ndarray:
    """d miss / d x_j (miss = 1 - q_mode) at x, by central differences of half-width h on the
    rendered prompts (TRUTH_STEP: the truth; the sweep's step: what a central difference over the
    sweep's own span would see of the closed form, for the missed-units table)."""
    gradient = np.empty(space.dim)
    for j in range(space.dim):
        step = np.zeros(space.dim)
        step[j] = h
        up = sample_frequencies(model, *space.render(x + step), cfg)[mode]
        down = sample_frequencies(model, *space.render(x - step), cfg)[mode]
        gradient[j] = -(up - down) / (2 * h)
    return gradient


def true_class(gradient: float) -> str:
    if gradient < -TRUTH_BAND:
        return TIGHTENING
    if gradient > TRUTH_BAND:
        return LOOSENING
    return INERT


def assignment(store: RunStore, record: IndividualRecord, model: ToyModel) -> tuple[int, ...]:
    """The prototype each of the record's saved images is nearest to."""
    folder = store.root / f"gen-{record.generation:03d}" / f"ind-{record.index:03d}"
    images = torch.stack([
        torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        for name in record.images
    ])
    return tuple(model.nearest_prototype(images).tolist())


def observed_mode(shown: Sequence[int], q: np.ndarray) -> int:
    """The prototype most of a batch's images show (ties: the larger q)."""
    counts = np.bincount(np.asarray(shown, dtype=int), minlength=len(q))
    return int(max(range(len(counts)), key=lambda k: (counts[k], q[k])))


def explained_by_assignment(losses: Sequence[float], assignments: Sequence[tuple[int, ...]]) -> float:
    """The share of the loss's variance between groups of identical assignments (eta squared): at
    fixed seeds an image changes class only when its seed lands on another prototype, so this says
    how much of the loss is that step function rather than a smooth response to the weights."""
    y = np.asarray(losses, dtype=float)
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 0:
        return float("nan")
    groups: dict[tuple[int, ...], list[float]] = {}
    for value, key in zip(y, assignments):
        groups.setdefault(key, []).append(value)
    between = sum(len(v) * (np.mean(v) - y.mean()) ** 2 for v in groups.values())
    return float(between / total)


class CachedToyGenerator(ToyGenerator):
    """The toy generator, each (prompts, seeds) generated once: the sweep's budgets are prefixes of
    one another (`lib_pinning.analysis.sweep.plan`), so a larger budget reuses a smaller's batches.
    The toy is deterministic, so a cached batch is the batch it would generate again."""

    def __init__(self, settings: ToySettings, config: ToyConfig) -> None:
        super().__init__(settings, config)
        self._cache: dict[tuple[str, str, tuple[int, ...]], Batch] = {}
        self.caching = False  # on for the sweeps only: a run's own batches would only fill memory

    def generate(self, request: GenerationRequest) -> Batch:
        key = (request.prompt, request.negative_prompt, tuple(request.seeds))
        if not self.caching:
            return super().generate(request)
        if key not in self._cache:
            self._cache[key] = super().generate(request)
        return self._cache[key]


@dataclass
class Pinned:
    """A finished run with its closed-form truth at the best weights."""

    store: RunStore
    generator: ToyGenerator
    data: dict
    gradient: np.ndarray
    result: PromptResult
    x: np.ndarray
    mode: int
    cfg: float

    def gradient_over(self, h: float) -> np.ndarray:
        """The closed form's central difference over +-h (the sweep's step) at the best weights."""
        space = PromptSpace.from_json(self.store.read_run()["space"])
        return true_gradient(self.generator.model, space, self.x, self.mode, self.cfg, h)


def pin(
    prompt: str,
    negative: str,
    runs_dir: Path,
    *,
    settings: ToySettings | None = None,
    options: PinningOptions | None = None,
    seeds: Sequence[int] | None = None,
    index: int = 0,
) -> Pinned:
    """One pinning run of `prompt`, its influence classes against the closed-form truth."""
    settings = settings or ToySettings()
    generator = CachedToyGenerator(settings, ToyConfig(inert_words=INERT_WORDS))
    demo = DemoPrompt()
    run = PinningRun.start(
        generator=generator, prompt=prompt, negative_prompt=negative,
        seeds=list(seeds) if seeds is not None else derive_seeds(demo.seed, demo.batch_size),
        options=options or PinningOptions(cli_log=False), runs_dir=runs_dir,
    )
    store = RunStore.open(run.execute(reporter=None).run_dir)
    data = influence.write_influence(store)
    space = PromptSpace.from_json(store.read_run()["space"])
    records = [r for r in store.iter_individuals() if influence.usable(r, space.dim)]
    best = min(records, key=lambda r: r.loss)
    x = np.asarray(best.x_evaluated, dtype=float)
    model = generator.model
    q = sample_frequencies(model, *space.render(x), settings.cfg_scale)
    shown = [assignment(store, r, model) for r in records]
    mode = observed_mode(shown[records.index(best)], q)
    gradient = true_gradient(model, space, x, mode, settings.cfg_scale)
    units = _score_units(data["units"], gradient, index, [max(w) for w in space.weights(x)])
    result = PromptResult(prompt, negative, data["points_available"], data["r2"], model.prototype_names[mode],
                          len(set(shown)), explained_by_assignment([r.loss for r in records], shown), units)
    return Pinned(store, generator, data, gradient, result, x, mode, settings.cfg_scale)


def _score_units(entries: Sequence[dict], gradient: np.ndarray, index: int,
                 weights: Sequence[float]) -> list[UnitResult]:
    """Each unit's estimated class (entries in unit order) against the truth."""
    units = []
    for j, unit in enumerate(entries):
        words = unit["text"].lower().split()
        units.append(UnitResult(
            prompt=index, text=unit["text"], side=unit["side"], inert_word=all(w in INERT_WORDS for w in words),
            gradient=float(gradient[j]), truth=true_class(float(gradient[j])),
            estimate=unit.get("class", UNKNOWN), standardized=unit.get("standardized"), weight=weights[j],
        ))
    return units


def measure(prompt: str, negative: str, runs_dir: Path, **kwargs) -> PromptResult:
    """One pinning run of `prompt` and its influence classes against the closed-form truth."""
    return pin(prompt, negative, runs_dir, **kwargs).result


def measure_sweep(pinned: Pinned, budget: int, step: float) -> tuple[PromptResult, dict]:
    """The sweep at `budget` batches around the run's best, its classes against the same truth."""
    if isinstance(pinned.generator, CachedToyGenerator):
        pinned.generator.caching = True
    data = sweeping.sweep(pinned.store, pinned.generator, budget, step)
    swept = {u["index"]: u for u in data["sweep"]["units"]}
    entries = [swept.get(j, {"text": u["text"], "side": u["side"], "class": UNKNOWN})
               for j, u in enumerate(pinned.data["units"])]
    units = _score_units(entries, pinned.gradient, pinned.result.units[0].prompt if pinned.result.units else 0,
                         [u.weight for u in pinned.result.units])
    # The closed form over the sweep's own span, for the missed-units table (not in influence.json).
    return replace(pinned.result, units=units), dict(data["sweep"], over_step=pinned.gradient_over(step).tolist())


def share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def totals(results: Sequence[PromptResult]) -> dict[str, float]:
    units = [u for r in results for u in r.units]
    inert = [u for u in units if u.inert_word]
    return {
        "units": len(units),
        "agreement": share([u.agrees for u in units]),
        "strict": share([u.agrees_strictly for u in units]),
        "inert_words": len(inert),
        "inert_ok": share([u.estimate in (INERT, UNKNOWN) for u in inert]),
        "cannot_tell": share([u.estimate == UNKNOWN for u in units]),
    }


def _cell(unit: UnitResult) -> str:
    where = " (neg)" if unit.side == "negative" else ""
    mark = "" if unit.agrees else " ✗"
    return f"{unit.text}{where}: {unit.truth} / {unit.estimate} ({unit.gradient:+.2f}){mark}"


def table(results: Sequence[PromptResult]) -> str:
    lines = [
        "| # | prompt | negative | evaluations | assignments | loss variance between them | R² | pinned to | agree "
        "| units: truth / estimate (g = d miss / d w) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for k, r in enumerate(results, 1):
        agree = sum(u.agrees for u in r.units)
        r2 = "-" if r.r2 is None else f"{r.r2:.2f}"
        cells = "; ".join(_cell(u) for u in r.units)
        lines.append(f"| {k} | `{r.prompt}` | `{r.negative_prompt}` | {r.evaluations} | {r.assignments} | "
                     f"{r.explained:.0%} | {r2} | {r.mode} | "
                     f"{agree}/{len(r.units)} | {cells} |")
    return "\n".join(lines)


SECTION_INTRO = f"""Truth, scores and prompts: the docstring of benchmarks/bench_influence.py. In short: the true
class of a unit is the sign of g = d(1 - q_m)/d(weight) at the run's best weights (q ~ pi^cfg, m
the prototype the best batch is pinned to), inert within |g| <= {TRUTH_BAND}; the estimate is
influence.json's class, fitted from the run's own evaluations (no extra batches). A truly
tightening or loosening unit classed "cannot tell" disagrees; a truly inert one classed "cannot
tell" agrees (strict: it disagrees too). Targets: agreement >= {AGREEMENT_TARGET:.0%}, inert words
classed inert or "cannot tell" >= {INERT_TARGET:.0%}. Each table cell: unit: true class / estimated
class (g)."""


def heading(generations: int | None) -> str:
    if generations is None:
        return "### Demo settings (default generations, early stopping on)"
    return f"### {generations} generations, early stopping off"


def report(results: Sequence[PromptResult], seconds: float, command: str) -> str:
    """One configuration's subsection body: the command, commit and machine, the table, the totals."""
    t = totals(results)
    met = lambda value, target: "met" if value >= target else "missed"  # noqa: E731
    classes = {c: sum(1 for r in results for u in r.units if u.estimate == c)
               for c in (TIGHTENING, LOOSENING, INERT, UNKNOWN)}
    truths = {c: sum(1 for r in results for u in r.units if u.truth == c) for c in (TIGHTENING, LOOSENING, INERT)}
    claimed = [u for r in results for u in r.units if u.estimate in (TIGHTENING, LOOSENING)]
    wrong = sum(1 for u in claimed if u.estimate != u.truth)
    return "\n".join([
        f"`{command}` at commit {git_commit()}; {machine_line()}; {seconds:.0f} s.",
        "",
        table(results),
        "",
        f"Totals over {t['units']} units: agreement {t['agreement']:.0%} (target {AGREEMENT_TARGET:.0%}: "
        f"{met(t['agreement'], AGREEMENT_TARGET)}), strict {t['strict']:.0%}; inert words classed inert or "
        f"cannot tell: {t['inert_ok']:.0%} of {t['inert_words']} (target {INERT_TARGET:.0%}: "
        f"{met(t['inert_ok'], INERT_TARGET)}); \"cannot tell\": {t['cannot_tell']:.0%} of the units; "
        f"tightening or loosening claimed for {len(claimed)} units, {wrong} of them against the truth.",
        f"True classes: {truths}; estimated: {classes}.",
    ])


def sweep_row(budget: int, results: Sequence[PromptResult], sweeps: Sequence[dict]) -> str:
    """One budget's line of the sweep table."""
    t = totals(results)
    units = [u for r in results for u in r.units]
    clear = [u for u in units if abs(u.gradient) >= CLEAR_EFFECT]
    claimed = [u for u in units if u.estimate in (TIGHTENING, LOOSENING)]
    wrong = sum(1 for u in claimed if u.estimate != u.truth)
    inert = sum(1 for u in units if u.estimate == INERT)
    seed_sets = [e["seed_sets"] for s in sweeps for e in s["units"]]
    mean_sets = sum(seed_sets) / len(units) if units else float("nan")
    onsets = sum(1 for s in sweeps for e in s["units"] if e.get("failures"))
    return (f"| {budget} | {mean_sets:.1f} | {t['agreement']:.0%} | {t['strict']:.0%} | "
            f"{t['inert_ok']:.0%} of {t['inert_words']} | {len(claimed)} | {wrong} | {inert} | "
            f"{t['cannot_tell']:.0%} | {share([u.agrees for u in clear]):.0%} of {len(clear)} | {onsets} |")


SWEEP_HEADER = (
    "| budget (batches per prompt) | seed sets per unit (mean) | agreement | strict | inert words inert or "
    "cannot tell | tightening/loosening claims | wrong claims | inert claims | cannot tell | agreement, "
    "\\|g\\| >= 0.1 | units with a failure onset |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: |"
)


def missed_units(results: Sequence[PromptResult], sweeps: Sequence[dict]) -> str:
    """The units one budget's sweep disagrees on, with their true g and the sweep's interval."""
    lines = ["| # | unit | weight at best | g | g over ±step | truth | sweep | slope [interval] | images "
             "| unseen-jump bound | steps +/- | failure onset |",
             "| ---: | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | --- | --- |"]
    for k, (r, s) in enumerate(zip(results, sweeps), 1):
        swept = {e["index"]: e for e in s["units"]}
        for j, u in enumerate(r.units):
            if u.agrees:
                continue
            e = swept.get(j, {})
            low, high = e.get("interval") or [None, None]
            interval = "-" if e.get("slope") is None else f"{e['slope']:+.3f} [{low:+.3f}, {high:+.3f}]"
            where = " (neg)" if u.side == "negative" else ""
            over = s.get("over_step")
            over = "-" if over is None else f"{over[j]:+.3f}"
            steps = "-" if not e else f"+{e.get('step_up', e.get('step')):g} / -{e.get('step_down', e.get('step')):g}"
            onsets = "; ".join(f"{f['direction']} to {f['weight']}: {f['kind']} ({f['flagged']}/{f['images']})"
                               for f in e.get("failures") or []) or "-"
            lines.append(f"| {k} | {u.text}{where} | {u.weight:.2f} | {u.gradient:+.3f} | {over} | {u.truth} | "
                         f"{u.estimate} | {interval} | "
                         f"{e.get('samples', 0)} | {e.get('unseen') or float('nan'):.3f} | {steps} | {onsets} |")
    return "\n".join(lines)


def interval_claim(entry: dict, band: float) -> str:
    """The sweep entry's class if a tightening or loosening claim needed its whole interval beyond
    the band (the sweep claims a sign when the interval excludes 0 and the estimate lies beyond the
    band; inert needs the whole interval inside it). A diagnostic for the units just inside the
    truth's band, not the sweep's rule."""
    low, high = entry.get("interval") or [None, None]
    if entry.get("slope") is None or low is None or high is None:
        return UNKNOWN
    if high < -band:
        return TIGHTENING
    if low > band:
        return LOOSENING
    return INERT if entry.get("class") == INERT else UNKNOWN


def with_interval_claims(results: Sequence[PromptResult], sweeps: Sequence[dict]) -> list[PromptResult]:
    """The same sweeps scored with `interval_claim`."""
    out = []
    for r, s in zip(results, sweeps):
        swept = {e["index"]: e for e in s["units"]}
        out.append(replace(r, units=[replace(u, estimate=interval_claim(swept[j], s["band"]) if j in swept else UNKNOWN)
                                     for j, u in enumerate(r.units)]))
    return out


def onset_units(results: Sequence[PromptResult], sweeps: Sequence[dict]) -> str:
    """The units whose sweep ran into a failure onset: where, what, and what it measured instead."""
    lines = ["| # | unit | weight at best | g | truth | sweep | steps +/- | failure onset (weights tried: drift or guard) "
             "| measured up to |",
             "| ---: | --- | ---: | ---: | --- | --- | --- | --- | --- |"]
    for k, (r, s) in enumerate(zip(results, sweeps), 1):
        swept = {e["index"]: e for e in s["units"]}
        for j, u in enumerate(r.units):
            e = swept.get(j, {})
            for f in e.get("failures") or []:
                tried = ", ".join(f"{t['weight']}: {t['kind'] if t['flagged'] else 'drift ' + format(t['drift'], '.3f')}"
                                  for t in f.get("tried") or [f])
                where = " (neg)" if u.side == "negative" else ""
                lines.append(f"| {k} | {u.text}{where} | {u.weight:.2f} | {u.gradient:+.3f} | {u.truth} | {u.estimate} "
                             f"| +{e['step_up']:g} / -{e['step_down']:g} | {f['direction']}: {tried} "
                             f"| {f.get('clear_weight')} |")
    return "\n".join(lines)


def sweep_report(by_budget: dict[int, tuple[list[PromptResult], list[dict]]], step: float, seconds: float,
                 command: str, generated: int) -> str:
    """The sweep subsection body: command and machine, the agreement-vs-budget table (and the same
    sweeps with claims that need the whole interval beyond the band), the misses."""
    largest = max(by_budget)
    return "\n".join([
        f"`{command}` at commit {git_commit()}; {machine_line()}; {seconds:.0f} s, {generated} sweep batches "
        f"generated (step {step:g}, band {sweeping.BAND:g} loss per unit weight).",
        "",
        SWEEP_HEADER,
        *(sweep_row(b, *by_budget[b]) for b in sorted(by_budget)),
        "",
        "The same sweeps, a tightening or loosening claim needing the whole interval beyond the band "
        "(`interval_claim`, a diagnostic):",
        "",
        SWEEP_HEADER,
        *(sweep_row(b, with_interval_claims(*by_budget[b]), by_budget[b][1]) for b in sorted(by_budget)),
        "",
        f"Units the sweep disagrees on at {largest} batches per prompt:",
        "",
        missed_units(*by_budget[largest]),
        "",
        f"Units whose steps ran into a failure onset at {largest} batches per prompt (the onset is found at the "
        "first seed set, so every budget has the same):",
        "",
        onset_units(*by_budget[largest]),
    ])


def sweep_heading(step: float) -> str:
    return f"### Sensitivity sweep (step {step:g}) at demo-settings runs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the prompts to run")
    parser.add_argument("--generations", type=int, default=None,
                        help="generations per run, with early stopping off (default: the demo's settings)")
    parser.add_argument("--sweep-budget", type=int, nargs="+", default=None, metavar="N",
                        help="score the sensitivity sweep at these budgets (batches per prompt), not the surrogate")
    parser.add_argument("--sweep-step", type=float, default=sweeping.DEFAULT_STEP, help="the sweep's weight step")
    parser.add_argument("--update-doc", action="store_true", help=f"rewrite this configuration's subsection of {DOC}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    options = PinningOptions(cli_log=False)
    if args.generations is not None:
        options = options.replace(generations=args.generations, stop_early=False)
    started = time.perf_counter()
    results = []
    budgets = sorted(set(args.sweep_budget or ()))
    by_budget: dict[int, tuple[list[PromptResult], list[dict]]] = {b: ([], []) for b in budgets}
    generated = 0
    with tempfile.TemporaryDirectory(prefix="bench-influence-") as tmp:
        for k, (prompt, negative) in enumerate(PROMPTS[: args.prompts]):
            pinned = pin(prompt, negative, Path(tmp), options=options, index=k)
            results.append(pinned.result)
            log.info("prompt %d: %d/%d units agree", k + 1, sum(u.agrees for u in results[-1].units),
                     len(results[-1].units))
            for budget in budgets:
                result, swept = measure_sweep(pinned, budget, args.sweep_step)
                by_budget[budget][0].append(result)
                by_budget[budget][1].append(swept)
                log.info("prompt %d, sweep %d: %d/%d units agree", k + 1, budget, sum(u.agrees for u in result.units),
                         len(result.units))
            if budgets:
                generated += len(pinned.generator._cache)
    command = "python benchmarks/bench_influence.py"
    if args.prompts != len(PROMPTS):
        command += f" --prompts {args.prompts}"
    if args.generations is not None:
        command += f" --generations {args.generations}"
    if budgets:
        command += " --sweep-budget " + " ".join(map(str, budgets))
        if args.sweep_step != sweeping.DEFAULT_STEP:
            command += f" --sweep-step {args.sweep_step:g}"
        title = sweep_heading(args.sweep_step)
        body = sweep_report(by_budget, args.sweep_step, time.perf_counter() - started, command, generated)
    else:
        title = heading(args.generations)
        body = report(results, time.perf_counter() - started, command)
    sys.stdout.write(f"{title}\n\n{body}\n")
    if args.update_doc:
        write_section(DOC, SECTION, {title: body}, intro=SECTION_INTRO)
        log.info("updated %s", DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
