"""The Reporter: keeps a run's plots, GIFs and index.html up to date, one update at a time.

What an update costs, and why it does not grow with the run:
- it reads run.json and only the JSON files it has not read before (see `RunCache`);
- per-individual and per-generation artifacts are drawn once, for new items only: an artifact
  that exists and is not older than its record is kept (so a rebuild, or the first update after
  a resume, redraws nothing that is already there);
- cma_plot.png (and cma_mo_plot.png) is redrawn when a generation completes. Its data grows with
  the run (one point per generation per line, one marker per individual), but drawing it is
  dominated by the figure's fixed cost; benchmarks/bench_report.py measures it;
- best_generation_summary.gif is a copy of the best individual's summary.gif, made when the best
  changes;
- index.html is re-rendered from cached, pre-serialised rows: a string join;
- final_summary.gif re-encodes one frame per generation, so it is written only when the run ends
  (update with final=True) and by `rebuild`; while a run is live the page says so.

A failure to draw one artifact is logged and skipped (the page shows what exists): the report must
never stop a run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from lib_pinning.report import layout, media, plots
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


class Reporter:
    """Refreshes a run's report; create one per run and call `update` after each generation.

    `rendered` counts the artifacts drawn by this reporter and `seconds` the time spent on them,
    by file name ("index.html" included), for tests and benchmarks; `last_update_seconds` is the
    duration of the latest update.
    """

    def __init__(self) -> None:
        self._cache: RunCache | None = None
        self._page: PageModel | None = None
        self._best_key: tuple[int, int] | None = None
        self._assets_version = ""
        self._updates = 0
        self._plots = plots.Plotter()
        self.rendered: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.last_update_seconds = 0.0

    def update(self, store: RunStore, final: bool = False) -> None:
        """Read what is new in the run directory, draw what is missing, rewrite index.html.

        final=True (the run ended: finished, interrupted or failed) also writes the whole-run
        aggregates whose cost grows with the run (final_summary.gif) and redraws the run plots.
        """
        started = time.perf_counter()
        if self._cache is None or self._cache.store.root.resolve() != store.root.resolve():
            self._cache = RunCache(store)
            self._page = PageModel(self._cache)
            self._best_key = None
            self._assets_version = ""
        cache, page = self._cache, self._page
        assert page is not None
        changes = cache.refresh()
        for entry, record in changes.individuals:
            self._individual_artifacts(entry, record)
            entry.row = page.row_json(entry)
        for state in changes.completed:
            self._generation_artifacts(state)
        if changes.generation_records or final:
            self._run_plots()
        self._best_gif()
        if final:
            self._final_gif()
        self._write_page()
        self._updates += 1
        self.last_update_seconds = time.perf_counter() - started
        log.debug(
            "report %s updated in %.3f s (%d new individuals, %d generations completed)",
            store.root, self.last_update_seconds, len(changes.individuals), len(changes.completed),
        )

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

    def _individual_artifacts(self, entry: Entry, record: IndividualRecord) -> None:
        if not entry.ok or not entry.images:
            return  # a failed individual has no images; the page shows its error
        folder = self._store.individual_dir(entry.generation, entry.index)
        source = folder / INDIVIDUAL_FILE
        title = f"generation {entry.generation} · individual {entry.index} · loss {entry.loss:.5g}"
        values, what = _loss_plot_values(record)
        entry.loss_plot = self._draw(
            folder / layout.INDIVIDUAL_LOSS_PLOT, lambda: self._plots.individual.render(values, title, what), source
        )
        entry.gif = self._draw(
            folder / layout.INDIVIDUAL_GIF, lambda: media.batch_gif([folder / n for n in entry.images]), source
        )

    # per generation ------------------------------------------------------------------------------------

    def _generation_artifacts(self, state: GenerationState) -> None:
        store = self._store
        folder = store.generation_dir(state.number)
        source = folder / GENERATION_FILE if state.number > 0 else store.individual_dir(0, 0) / INDIVIDUAL_FILE
        best = state.best()
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
        state.pair_values.clear()  # only this plot needed them

    # per run ---------------------------------------------------------------------------------------------

    def _run_plots(self) -> None:
        cache = self._cache
        assert cache is not None
        root = self._store.root
        run_id = str(cache.run.get("run_id", self._store.run_id))
        states = [g for _, g in sorted(cache.generations.items()) if g.record is not None]
        records = [g.record for g in states if g.record is not None]
        f_stats = [g.fitness_stats() for g in states]
        self._redraw(root / layout.CMA_PLOT, lambda: self._plots.cma.render(records, f"CMA-ES · {run_id}", f_stats))
        cma = cache.run.get("cma")
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

    def _redraw(self, path: Path, produce: Callable[[], bytes | None]) -> bool:
        """Write `path` from `produce()`; True if written (None from produce: nothing to draw)."""
        started = time.perf_counter()
        try:
            data = produce()
            if data is not None:
                atomic_write_bytes(path, data)
        except Exception:  # one broken artifact must not take the report (or the run) down
            log.exception("report: drawing %s failed", path)
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
        try:
            atomic_write_bytes(target, source.read_bytes())
        except OSError:
            log.exception("report: copying %s failed", source)
            return
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
        started = time.perf_counter()
        html = self._page.render(present, assets_version=self._assets_version, update=self._updates)
        atomic_write_bytes(root / layout.INDEX_HTML, html.encode("utf-8"))
        self.seconds[layout.INDEX_HTML] += time.perf_counter() - started


def rebuild(run_dir: Path) -> Path:
    """Rebuild a run's report from its files (a live, interrupted, crashed or finished run); returns
    the path of index.html. Artifacts that exist are kept; the whole-run ones are rewritten."""
    store = RunStore.open(Path(run_dir))
    Reporter().update(store, final=True)
    return store.root / layout.INDEX_HTML


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
        return pairs, "pair loss"
    return per_image
