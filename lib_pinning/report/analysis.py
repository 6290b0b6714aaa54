"""The report's analysis sections: per-unit influence (id "influence") and the weight map (id
"weight-map").

Both summarise the whole run, so they are computed by final updates only (the run ended, or
`rebuild`), and again only when the run's records changed since (a resumed run): a live page says
when they will appear. A failure here is logged and the page shows the sections without them;
like every artifact, the analyses must never stop a run or its report.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

from lib_pinning.analysis import cluster_process, influence, weight_map
from lib_pinning.analysis.sweep_onset import describe as describe_onset, steps_note as sweep_steps_note
from lib_pinning.analysis.sweep_stats import unmeasured_note
from lib_pinning.report import analysis_plots
from lib_pinning.store import RunDirectoryError, RunStore, atomic_write_bytes, read_json

log = logging.getLogger(__name__)

INFLUENCE_PLOT = "influence.png"
WEIGHT_MAP_PLOT = "weight_map.png"

# CSS class per influence class (report.css).
CLASS_CSS = {
    influence.TIGHTENING: "inf-tight",
    influence.LOOSENING: "inf-loose",
    influence.INERT: "inf-inert",
    influence.UNKNOWN: "inf-unknown",
}


def _number(value: Any, digits: int = 3) -> str:
    return f"{value:+.{digits}g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def influence_view(data: dict[str, Any] | None, present: bool) -> dict[str, Any] | None:
    """The template's view of influence.json (None: not computed yet)."""
    if data is None:
        return None
    rows = []
    for unit in data.get("units") or []:
        low, high = unit.get("interval") or [None, None]
        title = (f"{unit['class']}: slope {_number(unit.get('slope'))} [{_number(low)}, {_number(high)}]; "
                 f"weight +{influence.STEP:g}: {_number(unit.get('up'))}, -{influence.STEP:g}: {_number(unit.get('down'))}")
        rows.append({
            "text": str(unit.get("text", "")),
            "side": unit.get("side"),
            "class": unit.get("class", influence.UNKNOWN),
            "cls": CLASS_CSS.get(unit.get("class"), "inf-unknown"),
            "title": title,
            "slope": _number(unit.get("slope")),
            "interval": f"[{_number(low)}, {_number(high)}]",
            "up": _number(unit.get("up")),
            "down": _number(unit.get("down")),
            "parts": _parts_text(unit.get("components") or {}),
        })
    return {
        "plot": INFLUENCE_PLOT if present else None,
        "positive": [r for r in rows if r["side"] != "negative"],
        "negative": [r for r in rows if r["side"] == "negative"],
        "rows": rows,
        "notes": [str(n) for n in data.get("notes") or []],
        "points": data.get("points", 0),
        "model": data.get("model"),
        "r2": data.get("r2"),
        "step": influence.STEP,
        "confidence": data.get("confidence"),
        "summary": influence.summary_lines(data),
        "sweep": _sweep_view(data.get("sweep")),
    }


def _parts_text(components: dict[str, Any]) -> str:
    """Each objective part's class, a part named after its objective ("flip_nearest_mode.fidelity")
    shown as its own name ("fidelity") after the objective's: the full names repeated the
    objective's on every part and filled the column."""
    texts = []
    for name, part in components.items():
        objective, _, own = str(name).rpartition(".")
        texts.append(f"{own if objective in components else name}: {part.get('class', influence.UNKNOWN)}")
    return ", ".join(texts)


def _sweep_view(sweep: Any) -> dict[str, Any] | None:
    """The sensitivity sweep (lib_pinning.analysis.sweep), None when there was none. A format-1
    sweep (one pair at the run's seeds, no interval) shows its loss changes with '-' intervals;
    format 3 adds the failure onsets the sweep ran into and the steps it measured at instead, and
    lists the units the budget did not reach (their row says so instead of the samples)."""
    if not isinstance(sweep, dict):
        return None
    rows, onsets = [], []
    for u in sweep.get("units") or []:
        if not isinstance(u, dict):
            continue
        low, high = u.get("interval") or [None, None]
        rows.append({
            "text": str(u.get("text", "")), "side": u.get("side"), "class": u.get("class", influence.UNKNOWN),
            "cls": CLASS_CSS.get(u.get("class"), "inf-unknown"), "slope": _number(u.get("slope")),
            "interval": "-" if low is None or high is None else f"[{_number(low)}, {_number(high)}]",
            "up": _number(u.get("up")), "down": _number(u.get("down")), "step": u.get("step"),
            "samples": u.get("samples", "-"), "seed_sets": u.get("seed_sets", 1),
            "degenerate": u.get("degenerate", 0), "steps": sweep_steps_note(u),
            "unmeasured": unmeasured_note(u),
        })
        where = " (negative prompt)" if u.get("side") == "negative" else ""
        onsets.extend(f"{describe_onset(str(u.get('text', '')), f, where)}; measured up to {f.get('clear_weight')}"
                      for f in u.get("failures") or [] if isinstance(f, dict))
    return {
        "onsets": onsets,
        "rows": rows, "batches": sweep.get("batches"), "step": sweep.get("step"), "band": sweep.get("band"),
        "seed_sets": len(sweep.get("seed_sets") or [sweep.get("seeds")]), "per_image": sweep.get("per_image"),
        "format": sweep.get("format", 1),
    }


def weight_map_view(data: dict[str, Any] | None, present: bool) -> dict[str, Any] | None:
    """The template's view of weight_map.json (None: not computed yet)."""
    if data is None:
        return None
    clusters = [
        {
            "id": c["id"], "size": c["size"], "mean_loss": c["mean_loss"], "best_loss": c["best"]["loss"],
            "where": f"generation {c['best']['generation']} · individual {c['best']['index']}",
            "prompt": str(c["best"].get("shown_prompt", c["best"].get("prompt", ""))),
            "negative_prompt": str(c["best"].get("shown_negative_prompt", c["best"].get("negative_prompt", ""))),
            "image": c["best"].get("image"),
        }
        for c in data.get("clusters") or []
    ]
    return {
        "plot": WEIGHT_MAP_PLOT if present else None,
        "notes": [str(n) for n in data.get("notes") or []],
        "points": len(data.get("points") or []),
        "clusters": clusters,
        "clustered": bool(data.get("clustered")),
        "embedding": _embedding_text((data.get("method") or {}).get("embedding")),
        "noise": sum(1 for p in data.get("points") or [] if p.get("cluster") == -1),
    }


def _embedding_text(method: Any) -> str:
    """How the page names the map's embedding (weight_map.choose_embedding)."""
    return "with UMAP" if method == weight_map.UMAP else "on their first two principal axes"


class RunAnalysis:
    """Computes, writes and shows the analyses of one run directory."""

    def __init__(self) -> None:
        # The helper that imports scikit-learn for the final update's clusters starts with the
        # report, i.e. as the run starts (cluster_process.py; at most one per process).
        cluster_process.ClusterProcess.start()
        self._signature: tuple[int, float] | None = None
        self.influence: dict[str, Any] | None = None
        self.weight_map: dict[str, Any] | None = None
        self.failed: set[str] = set()  # the analyses whose last computation raised (the page says so)

    def refresh(self, store: RunStore, signature: tuple[int, float]) -> None:
        """Recompute when the records changed (`signature`: what the reporter has read)."""
        if signature == self._signature and self.influence is not None:
            return
        self._signature = signature
        self.failed.clear()
        self.influence = self._run("influence", lambda: influence.write_influence(store))
        helper = cluster_process.take()
        try:
            with cluster_process.serving(helper):
                self.weight_map = self._run("weight map", lambda: weight_map.write_weight_map(store))
        finally:
            if helper is not None:
                helper.close()  # its fit was not needed (too few points) or it answered already
        self._plot(store.root / INFLUENCE_PLOT, lambda: analysis_plots.influence_png(self.influence or {}))
        self._plot(store.root / WEIGHT_MAP_PLOT, lambda: analysis_plots.weight_map_png(self.weight_map or {}))

    def load(self, store: RunStore) -> None:
        """Show what an earlier final update wrote (a live page of a resumed run)."""
        if self.influence is None:
            self.influence = _read(store.root / influence.INFLUENCE_FILE)
        if self.weight_map is None:
            self.weight_map = _read(store.root / weight_map.WEIGHT_MAP_FILE)

    def _run(self, what: str, job: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        try:
            return job()
        except Exception:  # an analysis bug or a full disk must not take the report down
            log.exception("report: the %s analysis failed", what)
            self.failed.add(what)
            return None

    @staticmethod
    def _plot(path: Path, produce: Callable[[], bytes | None]) -> None:
        try:
            data = produce()
            if data is None:
                path.unlink(missing_ok=True)  # a stale plot of an earlier session would contradict the page
            else:
                atomic_write_bytes(path, data)
        except Exception:
            log.exception("report: drawing %s failed", path)

    def context(self, root: Path) -> dict[str, Any]:
        return {
            "influence": influence_view(self.influence, (root / INFLUENCE_PLOT).is_file()),
            "weight_map": weight_map_view(self.weight_map, (root / WEIGHT_MAP_PLOT).is_file()),
            "influence_failed": "influence" in self.failed,
            "weight_map_failed": "weight map" in self.failed,
        }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except RunDirectoryError as e:
        log.warning("report: ignoring unreadable %s (%s)", path, e)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("units", data.get("points")), list) else None
