"""The Reporter: keeps a run's plots, GIFs and index.html up to date, one update at a time.

What an update costs, and why it does not grow with the run:
- it reads run.json and only the JSON files it has not read before (see `RunCache`);
- per-individual and per-generation artifacts are drawn once, for new items only: an artifact
  that exists and is not older than its record is kept (so a rebuild, or the first update after
  a resume, redraws nothing that is already there);
- cma_plot.png (and cma_mo_plot.png) is redrawn when a generation completes, and by a final
  update only if a generation or an individual arrived since it was drawn. Its data grows with the
  run, but it is blitted over a cached background (plots.py), so a redraw costs the lines, not the
  figure;
- best_generation_summary.gif is a copy of the best individual's summary.gif, made when the best
  changes;
- index.html is re-rendered from cached, pre-serialised rows: a string join;
- final_summary.gif re-encodes one frame per generation, so it is written only when the run ends
  (update with final=True) and by `rebuild`; while a run is live the page says so.

The refresh budget. On a fast backend (the toy model: a generation in a third of a second) even
cheap artifacts cost a large fraction of the run, so live updates may spend at most `budget` times
the wall time the run spent outside the report (generating) since the reporter's first update, in
total:
- an update is skipped (nothing read, nothing drawn) while the time spent so far exceeds that
  share; what it would have done waits in the run directory, where the next update finds it (the
  cache reads whatever it has not read yet, whenever it runs);
- an update that runs reads everything new and rewrites index.html, but draws artifacts only
  while its share lasts, in order of interest: the best individual's artifacts, the CMA plot,
  each completed generation's plots, then the individuals' plots and GIFs oldest first, so the
  newest individuals' artifacts are the ones that lag. It stops at the first item whose kind has
  cost more than the time left, which then waits for an update with more time saved up; one
  item is drawn even when none fits, so a live report always advances. The page shows "pending"
  for what waits and links only files that exist;
- an update with final=True, and so `rebuild`, draws everything outstanding: when a run ends
  (finished, interrupted or failed) its report is complete.
The first update, with no run time to measure yet, draws one item. With a slow backend (the WebUI:
seconds per batch) the share then covers a generation's artifacts many times over, so every later
update draws everything new, the first update's backlog included. budget=None turns the limit off.

A failure to draw one artifact is logged and skipped (the page shows what exists): the report must
never stop a run. Its item stays pending and is queued again by the next update (a full disk that
has room again, a transient error), the final one included; within one update it is not retried.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lib_pinning.report import layout, media, plots
from lib_pinning.report.analysis import RunAnalysis
from lib_pinning.report.page import STATIC_DIR, PageModel, copy_assets
from lib_pinning.report.state import Entry, GenerationState, RunCache
from lib_pinning.store import (
    GENERATION_FILE,
    INDIVIDUAL_FILE,
    IndividualRecord,
    RunStore,
    atomic_write_bytes,
)

log = logging.getLogger(__name__)

# The share of the run's own time (generating) live report updates may take (module docstring):
# the target for the toy demo; a real backend's generations take far longer than the report.
DEFAULT_BUDGET = 0.1

READ = "run directory (read)"  # the `seconds` key of reading the run directory

# Kinds of queued work, each with the cost of its last item (Reporter._costs).
_INDIVIDUAL, _GENERATION, _RUN_PLOTS = "individual", "generation", "run plots"


@dataclass
class _IndividualJob:
    """An individual whose loss plot and GIF are still to be drawn: what they need from its record
    (the record itself is not kept)."""

    entry: Entry
    values: list[float]
    what: str


class Reporter:
    """Refreshes a run's report; create one per run and call `update` after each generation.

    budget: live updates may spend this share of the time the run spends outside the report
    (module docstring); None: no limit.

    `rendered` counts the artifacts drawn by this reporter and `seconds` the time spent on them,
    by file name ("index.html" and READ included), for tests and benchmarks; `last_update_seconds`
    is the duration of the latest update and `last_update_skipped` whether it was skipped;
    `spent` the time of all updates, `skipped` how many were skipped, `pending` how many items
    wait to be drawn.
    """

    def __init__(self, budget: float | None = DEFAULT_BUDGET) -> None:
        if budget is not None and not budget >= 0:
            raise ValueError(f"budget must be a non-negative share of wall time or None, got {budget!r}")
        self.budget = budget
        self._cache: RunCache | None = None
        self._page: PageModel | None = None
        self.rendered: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.last_update_seconds = 0.0
        self.last_update_skipped = False
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        """Everything that belongs to one run directory, the plot templates' run-wide axis ranges
        and the budget's clock included."""
        self._plots = plots.Plotter()  # templates are built on first use
        self._analysis = RunAnalysis()  # influence and weight map: final updates only (analysis.py)
        self._best_key: tuple[int, int] | None = None
        self._assets_version = ""
        self._updates = 0  # updates that ran
        self._individual_jobs: dict[tuple[int, int], _IndividualJob] = {}  # discovery order
        self._generation_jobs: dict[int, GenerationState] = {}
        self._run_plots_due = False
        self._run_plots_drawn: tuple[int, int] | None = None  # (generations, individuals) drawn
        self._clock_start: float | None = None  # the first update's start
        self._costs: dict[str, float] = {}  # kind of work -> estimated seconds of its next item
        self.failures = 0  # artifacts whose drawing raised (each is retried by the next update)
        self._disk_full = False  # this update met a full disk: it draws nothing more
        self._retry_individuals: dict[tuple[int, int], _IndividualJob] = {}
        self._retry_generations: dict[int, GenerationState] = {}
        self._retry_run_plots = False
        self.spent = 0.0
        self.skipped = 0

    @property
    def pending(self) -> int:
        """Items whose artifacts wait for a later update (individuals, generations, the run plots),
        those whose drawing failed included."""
        return (
            len(self._individual_jobs) + len(self._generation_jobs) + int(self._run_plots_due or self._retry_run_plots)
            + len(self._retry_individuals) + len(self._retry_generations)
        )

    def _requeue_failed(self) -> None:
        """Queue the items whose drawing failed in an earlier update again, in front of the rest."""
        self._individual_jobs = {**self._retry_individuals, **self._individual_jobs}
        self._generation_jobs = {**self._retry_generations, **self._generation_jobs}
        self._run_plots_due = self._run_plots_due or self._retry_run_plots
        self._retry_individuals, self._retry_generations, self._retry_run_plots = {}, {}, False

    def update(self, store: RunStore, final: bool = False) -> None:
        """Read what is new in the run directory, draw what is missing, rewrite index.html.

        final=True (the run ended: finished, interrupted or failed) draws everything outstanding,
        whatever the budget, and writes the whole-run aggregates whose cost grows with the run
        (final_summary.gif). A live update (final=False) keeps within the budget.
        """
        started = time.perf_counter()
        if self._cache is None or self._cache.store.root.resolve() != store.root.resolve():
            self._cache = RunCache(store)
            self._page = PageModel(self._cache)
            self._reset_run_state()
        if self._clock_start is None:
            self._clock_start = started
        allowance = self._allowance(started)
        if not final and allowance is not None and allowance < 0:
            self.skipped += 1
            self.last_update_skipped = True
            self.last_update_seconds = time.perf_counter() - started
            self.spent += self.last_update_seconds
            log.debug(
                "report %s: update skipped (%.3f s spent, budget %.3f s); %d items pending",
                store.root, self.spent, self._share(started), self.pending,
            )
            return
        # A final update, or no budget: draw everything outstanding.
        deadline = None if final or allowance is None else started + allowance
        self._read()
        self._requeue_failed()
        self._disk_full = False
        drawn = self._draw_outstanding(deadline, final)
        self._best_gif()
        if final:
            self._final_gif()
            self._analysis.refresh(store, self._run_plot_signature())
        else:
            self._analysis.load(store)
        self._write_page()
        self._updates += 1
        self.last_update_skipped = False
        self.last_update_seconds = time.perf_counter() - started
        self.spent += self.last_update_seconds
        log.debug(
            "report %s updated in %.3f s (%d items drawn, %d pending)",
            store.root, self.last_update_seconds, drawn, self.pending,
        )

    # the budget ------------------------------------------------------------------------------------

    def _share(self, now: float) -> float:
        """What the updates may have spent by `now`: budget x the wall time since the clock started
        that the run spent outside the report (generating). Measured against the run's own time,
        the report costs `budget` of what generating cost, the issue's terms; against the whole
        wall time it could reach budget / (1 - budget) of it."""
        assert self.budget is not None and self._clock_start is not None
        return self.budget * (now - self._clock_start - self.spent)

    def _allowance(self, now: float) -> float | None:
        """The time this update may spend (negative: it is skipped); None: no budget."""
        if self.budget is None:
            return None
        return self._share(now) - self.spent

    # reading and queueing -------------------------------------------------------------------------------

    def _read(self) -> None:
        cache, page = self._cache, self._page
        assert cache is not None and page is not None
        started = time.perf_counter()
        changes = cache.refresh()
        for entry, record in changes.individuals:
            if entry.ok and entry.images:  # a failed individual has no images; the page shows its error
                values, what = _loss_plot_values(record)
                self._individual_jobs[entry.key] = _IndividualJob(entry, values, what)
                entry.pending = True
            entry.row = page.row_json(entry)
        for state in changes.completed:
            self._generation_jobs[state.number] = state
            state.pending = True
        if changes.generation_records:
            self._run_plots_due = True
        self.seconds[READ] += time.perf_counter() - started

    def _draw_outstanding(self, deadline: float | None, final: bool) -> int:
        """Draw queued artifacts in order of interest while the update's time allows (deadline None:
        all of them). The next item is drawn only if its kind's estimated cost still fits before the
        deadline; if it does not, the update stops there and the time saved carries over, so an
        expensive item (a CMA plot whose axes changed) gets drawn by a later update rather than
        being overtaken forever by cheap ones. If nothing fitted, one item of the cheapest kind is
        drawn anyway, so a live report always advances. Returns the number of items drawn."""
        cache = self._cache
        assert cache is not None
        if final and self._run_plot_signature() != self._run_plots_drawn:
            self._run_plots_due = True  # an interrupted generation's individuals, a resumed run
        best = cache.best
        drawn = 0

        def next_item() -> tuple[str, Callable[[], None]] | None:
            """The most interesting queued item: the best individual (the page's best batch GIF
            copies its GIF), the run plots, the completed generations, the other individuals."""
            if best is not None and best.key in self._individual_jobs:
                return _INDIVIDUAL, lambda: self._individual_artifacts(self._individual_jobs.pop(best.key))
            if self._run_plots_due:
                return _RUN_PLOTS, self._run_plots
            if self._generation_jobs:
                number = next(iter(self._generation_jobs))
                return _GENERATION, lambda: self._generation_artifacts(self._generation_jobs.pop(number))
            if self._individual_jobs:
                key = next(iter(self._individual_jobs))
                return _INDIVIDUAL, lambda: self._individual_artifacts(self._individual_jobs.pop(key))
            return None

        def draw(kind: str, job: Callable[[], None]) -> None:
            nonlocal drawn
            started = time.perf_counter()
            job()
            # The estimate for the next item of this kind: this cost, or half the previous estimate
            # if that is more, so a dear item (the first builds the plot templates; a CMA plot whose
            # axes changed costs several blits) weighs on the next few estimates and a one-off
            # stall fades. Erring high lets the live report lag; erring low overruns the budget.
            self._costs[kind] = max(time.perf_counter() - started, 0.5 * self._costs.get(kind, 0.0))
            drawn += 1

        def estimate(kind: str) -> float:
            """A kind not drawn yet is assumed to cost as much as the dearest estimate so far."""
            return self._costs.get(kind, max(self._costs.values(), default=0.0))

        while (item := next_item()) is not None and not self._disk_full:  # a full disk: the rest waits
            kind, job = item
            if deadline is not None and time.perf_counter() + estimate(kind) > deadline:
                break
            draw(kind, job)
        if drawn == 0 and self.pending:
            if self._individual_jobs:
                key = best.key if best is not None and best.key in self._individual_jobs else None
                key = key or next(iter(self._individual_jobs))
                draw(_INDIVIDUAL, lambda: self._individual_artifacts(self._individual_jobs.pop(key)))
            elif (item := next_item()) is not None:
                draw(*item)
        return drawn

    # drawing helpers ---------------------------------------------------------------------------------

    def _draw(self, path: Path, produce: Callable[[], bytes | None], newer_than: Path | None = None) -> bool:
        """Write `path` unless it exists and is at least as new as `newer_than`; True if it exists after."""
        if path.is_file() and (newer_than is None or _mtime(path) >= _mtime(newer_than)):
            return True
        return self._redraw(path, produce)

    @property
    def _store(self) -> RunStore:
        assert self._cache is not None
        return self._cache.store

    # per individual ------------------------------------------------------------------------------------

    def _individual_artifacts(self, job: _IndividualJob) -> None:
        entry = job.entry
        folder = self._store.individual_dir(entry.generation, entry.index)
        source = folder / INDIVIDUAL_FILE
        title = f"generation {entry.generation} · individual {entry.index} · loss {entry.loss:.5g}"
        failures = self.failures
        entry.loss_plot = self._draw(
            folder / layout.INDIVIDUAL_LOSS_PLOT,
            lambda: self._plots.individual.render(job.values, title, job.what),
            source,
        )
        entry.gif = self._draw(
            folder / layout.INDIVIDUAL_GIF, lambda: media.batch_gif([folder / n for n in entry.images]), source
        )
        if self.failures > failures:
            self._retry_individuals[entry.key] = job
        else:
            entry.pending = False
        assert self._page is not None
        entry.row = self._page.row_json(entry)

    # per generation ------------------------------------------------------------------------------------

    def _generation_artifacts(self, state: GenerationState) -> None:
        store = self._store
        folder = store.generation_dir(state.number)
        source = folder / GENERATION_FILE if state.number > 0 else store.individual_dir(0, 0) / INDIVIDUAL_FILE
        best = state.best()
        failures = self.failures
        if best is not None and best.images:
            caption = (
                "baseline: the prompt as written"
                if state.number == 0
                else f"generation {state.number} · best #{best.index} · loss {best.loss:.5g}"
            )
            best_folder = store.individual_dir(best.generation, best.index)
            paths = [best_folder / n for n in best.images]
            labels = [_seed_label(n) for n in best.images]
            state.contact_sheet = self._draw(
                folder / layout.CONTACT_SHEET,
                lambda: media.png_bytes(media.contact_sheet(paths, labels, caption)),
                source,
            )
        ok = [state.entries[i] for i in sorted(state.entries) if state.entries[i].ok]
        pairs = [v for e in ok for v in state.pair_values.get(e.index, ())]
        title = "baseline" if state.number == 0 else f"generation {state.number}"
        state.loss_plot = self._draw(
            folder / layout.GENERATION_LOSS_PLOT,
            lambda: self._plots.generation.render(pairs, [e.loss for e in ok], title),
            source,
        )
        if self.failures > failures:
            self._retry_generations[state.number] = state
            return
        state.pair_values.clear()  # only this plot needed them
        state.pending = False

    # per run ---------------------------------------------------------------------------------------------

    def _run_plot_signature(self) -> tuple[int, int]:
        """What the run plots show: the generations with statistics and the individuals read."""
        cache = self._cache
        assert cache is not None
        generations = sum(1 for g in cache.generations.values() if g.record is not None)
        return (generations, sum(len(g.entries) for g in cache.generations.values()))

    def _run_plots(self) -> None:
        cache = self._cache
        assert cache is not None
        root = self._store.root
        run_id = str(cache.run.get("run_id", self._store.run_id))
        states = [g for _, g in sorted(cache.generations.items()) if g.record is not None]
        records = [g.record for g in states if g.record is not None]
        f_stats = [g.fitness_stats() for g in states]
        cma = cache.run.get("cma")
        total = _total_evaluations(cma)
        failures = self.failures
        self._redraw(
            root / layout.CMA_PLOT,
            lambda: self._plots.cma.render(records, f"CMA-ES · {run_id}", f_stats, evaluations_total=total),
        )
        if isinstance(cma, dict) and cma.get("multi_objective"):
            ok = [e for e in cache.entries() if e.ok]
            options = cache.run.get("options") if isinstance(cache.run.get("options"), dict) else {}
            limit = options.get("size_limit")
            best = cache.best
            self._redraw(
                root / layout.CMA_MO_PLOT,
                lambda: self._plots.mo.render(
                    np.array([e.loss for e in ok]),
                    np.array([e.norm for e in ok]),
                    np.array([e.feasible for e in ok]),
                    float(limit) if isinstance(limit, (int, float)) else None,
                    None if best is None else (best.loss, best.norm),
                    f"MO-CMA-ES · {run_id}",
                ),
            )
        self._run_plots_due = False
        if self.failures > failures:
            self._retry_run_plots = True
            return
        self._run_plots_drawn = self._run_plot_signature()

    def _redraw(self, path: Path, produce: Callable[[], bytes | None]) -> bool:
        """Write `path` from `produce()`; True if written (None from produce: nothing to draw)."""
        started = time.perf_counter()
        try:
            data = produce()
            if data is not None:
                atomic_write_bytes(path, data)
        except OSError as e:  # disk full, permissions: one line, the item is retried later
            log.error("report: writing %s failed: %s", path, e)
            self.failures += 1
            self._disk_full = self._disk_full or e.errno in (errno.ENOSPC, errno.EDQUOT)
            return False
        except Exception:  # one broken artifact must not take the report (or the run) down
            log.exception("report: drawing %s failed", path)
            self.failures += 1
            return False
        finally:
            self.seconds[path.name] += time.perf_counter() - started
        if data is None:
            return False
        self.rendered[path.name] += 1
        return True

    def _best_gif(self) -> None:
        cache = self._cache
        assert cache is not None
        best = cache.best
        target = self._store.root / layout.BEST_GIF
        if best is None or not best.gif or (best.key == self._best_key and target.is_file()):
            return
        source = self._store.individual_dir(best.generation, best.index) / layout.INDIVIDUAL_GIF
        started = time.perf_counter()
        try:
            atomic_write_bytes(target, source.read_bytes())
        except OSError as e:
            log.error("report: copying %s failed: %s", source, e)
            return
        finally:
            self.seconds[layout.BEST_GIF] += time.perf_counter() - started
        self.rendered[layout.BEST_GIF] += 1
        self._best_key = best.key

    def _final_gif(self) -> None:
        """Each generation's best batch (its contact sheet) as one frame, in order."""
        cache = self._cache
        assert cache is not None
        sheets = [
            self._store.generation_dir(n) / layout.CONTACT_SHEET
            for n in sorted(cache.generations)
            if cache.generations[n].contact_sheet
        ]
        if sheets:
            self._redraw(
                self._store.root / layout.FINAL_GIF,
                lambda: media.gif_bytes([media.load_rgb(p, 4096) for p in sheets], media.GENERATION_FRAME_MS),
            )

    # page ------------------------------------------------------------------------------------------------

    def _write_page(self) -> None:
        root = self._store.root
        started = time.perf_counter()
        if not self._assets_version:
            copy_assets(root / layout.ASSETS_DIR)
            digest = hashlib.sha1()
            for name in layout.ASSET_FILES:
                digest.update((STATIC_DIR / name).read_bytes())
            self._assets_version = digest.hexdigest()[:10]
        assert self._page is not None
        present = {
            name: (root / name).is_file()
            for name in (layout.CMA_PLOT, layout.CMA_MO_PLOT, layout.BEST_GIF, layout.FINAL_GIF)
        }
        html = self._page.render(
            present, assets_version=self._assets_version, update=self._updates, analysis=self._analysis.context(root)
        )
        atomic_write_bytes(root / layout.INDEX_HTML, html.encode("utf-8"))
        self.seconds[layout.INDEX_HTML] += time.perf_counter() - started


def rebuild(run_dir: Path) -> Path:
    """Rebuild a run's report from its files (a live, interrupted, crashed or finished run); returns
    the path of index.html. Artifacts that exist are kept; the whole-run ones are rewritten."""
    store = RunStore.open(Path(run_dir))
    store.read_run()  # a run.json of the wrong shape is a RunDirectoryError, not a traceback
    Reporter().update(store, final=True)
    return store.root / layout.INDEX_HTML


def _total_evaluations(cma: object) -> int | None:
    """The evaluations of the whole run (baseline included), from run.json's "cma" settings."""
    if not isinstance(cma, dict):
        return None
    generations, lambda_ = cma.get("generations"), cma.get("lambda")
    if isinstance(generations, int) and isinstance(lambda_, int) and generations > 0 and lambda_ > 0:
        return 1 + generations * lambda_
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _seed_label(name: str) -> str:
    """"03-1234.png" (the store's batch image name) -> "seed 1234"."""
    stem = name.rsplit(".", 1)[0]
    _, _, seed = stem.partition("-")
    return f"seed {seed}" if seed else stem


def _loss_plot_values(record: IndividualRecord) -> tuple[list[float], str]:
    """The pair losses of every objective; for objectives without pairs, the first per-image value."""
    pairs: list[float] = []
    per_image: tuple[list[float], str] | None = None
    for evaluation in (record.objectives or {}).values():
        if not isinstance(evaluation, dict):
            continue
        pairs.extend(float(v) for v in evaluation.get("pair_values") or [])
        if per_image is None:
            for name, values in (evaluation.get("per_image") or {}).items():
                per_image = ([float(v) for v in values], str(name))
                break
    if pairs or per_image is None:
        return pairs, plots.PAIR_LOSS
    return per_image
