"""index.html: a Jinja2 template (autoescape on) over the cached run state.

Safety: every user string (prompts, errors, option values, generator settings) reaches the page
either through Jinja's autoescaping or inside a `<script type="application/json">` block whose
JSON has `<`, `>` and `&` written as \\u003c, \\u003e, \\u0026, so no string can close the block or
open a tag; the page's script inserts them with `textContent` only. A Content-Security-Policy
allows nothing but the report's own files, so even a missed escape could not run inline script,
and the page loads nothing from the network.

Size: the individuals table is rendered in the browser from one JSON row per individual (about
300 bytes plus its weights; the unit texts are written once for the whole run), with images
referenced by relative path and loaded lazily. Each row is serialised once and cached, so
rewriting the page costs a string join.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import jinja2
from markupsafe import Markup

from lib_pinning import __version__, guard
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.report import layout
from lib_pinning.report.state import Entry, GenerationState, RunCache
from lib_pinning.store import atomic_write_bytes

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# Where a prompt space's JSON (run.json "space") keeps its units and their texts. The format belongs
# to lib_pinning.prompt (today: "units": [{"index", "prompt": "positive" | "negative", "text",
# "base_weights"}]); the report reads it defensively, accepts the texts when their count matches
# the run's dimension, and otherwise shows each individual's rendered prompt as plain text.
_UNIT_TEXT_KEYS = ("text", "display", "word", "token", "phrase", "source", "string")
_SIDE_KEYS = (
    ("positive", "negative"),
    ("prompt_units", "negative_units"),
    ("units", "negative_units"),
    ("prompt", "negative_prompt"),
    ("prompt", "negative"),
)
# Weight highlighting: the unit's offset x (its weight's change from the prompt as written), in
# steps of 0.1, capped at 5 steps.
_BUCKET_STEP = 0.1
_BUCKETS = 5

_environment: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _environment
    if _environment is None:
        _environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _environment.filters["num"] = format_number
    return _environment


def script_json(value: Any) -> str:
    """JSON safe to place inside a <script> element: no `<`, `>` or `&` survives literally."""
    text = json.dumps(_finite_json(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _finite_json(value: Any) -> Any:
    """NaN and infinities are not JSON; the page shows them as missing."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def format_number(value: Any, digits: int = 5) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.{digits}g}"


# prompt units -----------------------------------------------------------------------------------


def _unit_list(value: Any) -> list[str] | None:
    if isinstance(value, dict):
        value = value.get("units")
    if not isinstance(value, list):
        return None
    texts: list[str] = []
    for unit in value:
        if isinstance(unit, str):
            texts.append(unit)
        elif isinstance(unit, dict):
            text = next((unit[k] for k in _UNIT_TEXT_KEYS if isinstance(unit.get(k), str)), None)
            if text is None:
                return None
            texts.append(text)
        elif isinstance(unit, (list, tuple)) and unit and isinstance(unit[0], str):
            texts.append(unit[0])  # [text, weight] pairs
        else:
            return None
    return texts


def _is_negative(unit: Any) -> bool | None:
    if not isinstance(unit, dict):
        return None
    for key in ("negative", "is_negative"):
        if isinstance(unit.get(key), bool):
            return unit[key]
    for key in ("prompt", "side", "part"):  # PromptSpace's units say "prompt": "positive" | "negative"
        side = unit.get(key)
        if isinstance(side, str) and side.lower() in ("positive", "negative", "pos", "neg"):
            return side.lower().startswith("neg")
    return None


def unit_texts(space: Any, dim: int) -> tuple[list[str], list[str]] | None:
    """(positive, negative) unit texts from a PromptSpace's JSON, when they account for `dim` weights
    (the weights list the positive prompt's units first, then the negative prompt's)."""
    if not isinstance(space, dict) or dim <= 0:
        return None
    for positive_key, negative_key in _SIDE_KEYS:
        raw = space.get(positive_key)
        positive = _unit_list(raw)
        if positive is None:
            continue
        raw_units = raw.get("units") if isinstance(raw, dict) else raw
        flags = [_is_negative(u) for u in raw_units]
        if flags and all(f is not None for f in flags) and any(flags):
            # one list holding both sides, each unit marked
            if len(positive) == dim and flags == sorted(flags):
                split = flags.index(True)
                return positive[:split], positive[split:]
            continue
        negative = _unit_list(space.get(negative_key)) if negative_key in space else []
        if negative is not None and len(positive) + len(negative) == dim:
            return positive, negative
    return None


def weight_class(delta: float) -> str:
    """CSS class of a unit whose weight moved by `delta` from the prompt as written (its offset)."""
    if not math.isfinite(delta):
        return "w0"
    step = max(-_BUCKETS, min(_BUCKETS, int(round(delta / _BUCKET_STEP))))
    return "w0" if step == 0 else (f"wp{step}" if step > 0 else f"wn{-step}")


def weight_text(weights: Sequence[float]) -> str:
    return " / ".join(f"{w:.3g}" for w in weights)


def unit_views(
    texts: Sequence[str], offsets: Sequence[float], weights: Sequence[Sequence[float]]
) -> list[dict[str, Any]]:
    views = []
    for k, (text, offset) in enumerate(zip(texts, offsets)):
        weight = f"weight {weight_text(weights[k])}, " if k < len(weights) and weights[k] else ""
        views.append({"text": text, "title": f"{weight}offset {offset:+.3f}", "cls": weight_class(offset)})
    return views


# page model --------------------------------------------------------------------------------------


class PageModel:
    """Builds the template context from a RunCache; unit texts and base weights are resolved once."""

    def __init__(self, cache: RunCache) -> None:
        self.cache = cache
        self._units: tuple[list[str], list[str]] | None = None
        self._units_resolved = False
        self._space: PromptSpace | None = None
        self._space_resolved = False

    def shown_prompts(self, entry: Entry) -> tuple[str, str]:
        """The entry's prompts as a person should copy them (PromptSpace.display: no schedule guard);
        its generated prompts where the run's space cannot be read back."""
        if not self._space_resolved and self.cache.run:
            try:
                self._space = PromptSpace.from_json(self.cache.run.get("space"))
            except (ValueError, KeyError, TypeError):
                self._space = None
            self._space_resolved = True
        if self._space is not None and len(entry.offsets) == self._space.dim:
            try:
                return self._space.display(entry.offsets)
            except (ValueError, RuntimeError):
                logger.warning("cannot render individual %s/%s without the guard", entry.generation, entry.index)
        return entry.prompt, entry.negative_prompt

    def units(self) -> tuple[list[str], list[str]] | None:
        if not self._units_resolved and self.cache.run:
            cma = self.cache.run.get("cma")
            dim = cma.get("dim") if isinstance(cma, dict) else None
            if not isinstance(dim, int):
                baseline = self.cache.baseline
                if baseline is None:
                    return None
                dim = len(baseline.offsets)
            self._units = unit_texts(self.cache.run.get("space"), dim)
            self._units_resolved = True
        return self._units

    def row_json(self, entry: Entry) -> str:
        """The individual's table row (cached by the caller, rebuilt when its artifacts are drawn)."""
        fitness = [round(v, 8) for v in entry.fitness]
        row = {
            "g": entry.generation,
            "i": entry.index,
            "s": entry.status,
            "e": entry.error,
            "f": fitness,
            "l": entry.loss if entry.ok else None,  # a failed batch's loss is a placeholder
            "c": entry.components,
            "n": round(entry.norm, 6),
            "fe": entry.feasible,
            "p": entry.prompt,
            "np": entry.negative_prompt,
            "x": [round(v, 4) for v in entry.offsets],
            "w": [round(w[0], 4) if len(w) == 1 else [round(v, 4) for v in w] for w in entry.weights],
            "dir": entry.folder,
            "gif": entry.gif,
            "plot": entry.loss_plot,
            "img": entry.images[0] if entry.images else None,
            "t": None if entry.generate_seconds is None else round(entry.generate_seconds, 4),
        }
        if entry.repeat_of is not None:
            row["rp"] = list(entry.repeat_of)  # a repeat: the batch of that individual, not generated again
        if entry.pending:
            row["pd"] = True  # loss plot and GIF not drawn yet: the table says so, links neither
        if entry.degenerate_images:
            # The guard's reasons (reason -> images), the images flagged, and whether the run penalised them.
            row["dg"] = entry.degenerate
            row["dn"] = entry.degenerate_images
            row["dx"] = entry.excluded
        return script_json(row)

    def card(self, entry: Entry | None, label: str) -> dict[str, Any] | None:
        if entry is None:
            return None
        units = self.units()
        views: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        if units is not None and len(units[0]) + len(units[1]) == len(entry.offsets):
            positive, negative = units
            n = len(positive)
            views = (
                unit_views(positive, entry.offsets[:n], entry.weights[:n]),
                unit_views(negative, entry.offsets[n:], entry.weights[n:]),
            )
        shown = self.shown_prompts(entry)
        return {
            "label": label,
            "generation": entry.generation,
            "index": entry.index,
            "status": entry.status,
            "loss": entry.loss,
            "fitness": entry.fitness,
            "degenerate": guard.describe(entry.degenerate, len(entry.images)) if entry.degenerate_images else None,
            "prompt": shown[0],
            "negative_prompt": shown[1],
            "units": views[0],
            "negative_units": views[1],
            "folder": entry.folder,
            "images": [
                {"src": f"{entry.folder}/{name}", "label": name.rsplit(".", 1)[0],
                 "notes": entry.image_notes[i] if i < len(entry.image_notes) else []}
                for i, name in enumerate(entry.images)
            ],
            "gif": f"{entry.folder}/{layout.INDIVIDUAL_GIF}" if entry.gif else None,
            "levels": level_rows(entry),
            "steps": entry.steps,
        }

    def generation_rows(self) -> list[dict[str, Any]]:
        rows = []
        for number in sorted(self.cache.generations):
            state = self.cache.generations[number]
            rows.append(_generation_row(state))
        return rows

    def context(self, run_artifacts: dict[str, bool], assets_version: str, update: int) -> dict[str, Any]:
        """run_artifacts: which run-level files exist. assets_version / update: cache-busting query
        strings, so a reload shows the redrawn plots (browsers cache file:// images too)."""
        cache = self.cache
        run = cache.run
        cma = run.get("cma") if isinstance(run.get("cma"), dict) else {}
        multi = bool(cma.get("multi_objective"))
        best = cache.best
        baseline = cache.baseline
        units = self.units()
        entries = cache.entries()
        meta = {
            "status": str(run.get("status", "unknown")),
            "multi": multi,
            "components": cache.component_names,
            "units": None if units is None else {"pos": units[0], "neg": units[1]},
            "best": None if best is None else [best.generation, best.index],
            "generations": sorted(cache.generations),
        }
        rows = "[" + ",".join(e.row for e in entries) + "]"
        plots = [
            {"src": name, "title": title, "present": run_artifacts.get(name, False), "note": note, "cls": cls}
            for name, title, note, cls in (
                (
                    layout.CMA_PLOT,
                    "CMA-ES over the run",
                    "drawn after the first generation (a fast run's live report may lag)",
                    "wide",
                ),
                *(
                    ((layout.CMA_MO_PLOT, "Loss vs size (multi-objective)", "drawn after the first generation", ""),)
                    if multi
                    else ()
                ),
                (layout.BEST_GIF, "Best batch", "appears with the first successful batch", "gif"),
                (layout.FINAL_GIF, "Best batch of each generation", "written when the run ends", "sheet"),
            )
        ]
        return {
            "title": f"Prompt pinning · {run.get('run_id', cache.store.run_id)}",
            "run_id": str(run.get("run_id", cache.store.run_id)),
            "status": meta["status"],
            "error": run.get("error"),
            "created": run.get("created"),
            "updated": run.get("updated"),
            "generations_done": len([g for g in cache.generations.values() if g.record is not None]),
            "generations_total": cma.get("generations"),
            "evaluations": len(entries),
            "repeats": sum(1 for e in entries if e.repeat_of is not None),
            "stop_reason": run.get("stop_reason"),
            "planned_batches": run.get("planned_batches"),
            "failed": sum(1 for e in entries if not e.ok),
            "degenerate": sum(1 for e in entries if e.degenerate_images),
            "degenerate_generations": [int(g) for g in run.get("degenerate_generations") or []],
            "degenerate_reasons": guard.describe(
                _reason_totals(entries), sum(len(e.images) for e in entries if e.degenerate_images)
            ),
            "guard": bool((run.get("options") or {}).get("guard", True)),
            "multi": multi,
            "cma": cma,
            "prompt": str(run.get("prompt", "")),
            "negative_prompt": str(run.get("negative_prompt", "")),
            "best": self.card(best, "Best"),
            "baseline": self.card(baseline, "Baseline (the prompt as written)"),
            "plots": plots,
            "generations": self.generation_rows(),
            "options": option_rows(run.get("options")),
            "settings": settings_rows(run),
            "targets": [str(t) for t in run.get("targets") or [] if isinstance(t, str)],
            "components": cache.component_names,
            "meta_json": Markup(script_json(meta)),
            "rows_json": Markup(rows),
            "assets": layout.ASSETS_DIR,
            "assets_version": assets_version,
            "update": update,
            "package_version": __version__,
        }

    def render(
        self, run_artifacts: dict[str, bool], assets_version: str, update: int, analysis: dict[str, Any] | None = None
    ) -> str:
        """analysis: the analysis sections' views (lib_pinning.report.analysis), None: not yet."""
        template = environment().get_template("index.html.j2")
        return template.render({
            "influence": None, "weight_map": None, "influence_failed": False, "weight_map_failed": False,
            **self.context(run_artifacts, assets_version, update),
            **(analysis or {}),
        })


def level_rows(entry: Entry) -> list[dict[str, Any]]:
    """The hyperbatch's split levels as table rows, first split first (none for a plain batch)."""
    return [
        {
            "level": level.level,
            "step": level.step,
            "pairs": level.pairs,
            "pair_share": level.pair_share,
            "mean": level.mean,
            "variety_share": level.variety_share,
        }
        for level in sorted(entry.levels, key=lambda level: level.level)
    ]


def _generation_row(state: GenerationState) -> dict[str, Any]:
    record = state.record
    folder = f"gen-{state.number:03d}"
    best = state.best()
    f_min, f_mean, f_max = state.fitness_stats() if state.complete else (None, None, None)
    return {
        "number": state.number,
        "complete": state.complete,
        "individuals": len(state.entries),
        "evaluations": record.evaluations if record is not None else (1 if state.number == 0 else None),
        "min": f_min,
        "mean": f_mean,
        "max": f_max,
        "sigma": None if record is None else record.sigma,
        "axis_ratio": None if record is None else record.axis_ratio,
        "failed": sum(1 for e in state.entries.values() if not e.ok),
        "degenerate": sum(1 for e in state.entries.values() if e.degenerate_images),
        "seconds": None if record is None else record.seconds,
        "best": None if best is None else {"index": best.index, "loss": best.loss},
        "contact_sheet": f"{folder}/{layout.CONTACT_SHEET}" if state.contact_sheet else None,
        "loss_plot": f"{folder}/{layout.GENERATION_LOSS_PLOT}" if state.loss_plot else None,
        "pending": state.pending,
    }


def _reason_totals(entries: Sequence[Entry]) -> dict[str, int]:
    """Images per guard reason over the run, in the guard's order."""
    totals: dict[str, int] = {}
    for reason in guard.REASONS:
        count = sum(e.degenerate.get(reason, 0) for e in entries)
        if count:
            totals[reason] = count
    return totals


def _value_text(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, float):
        return format_number(value, 6)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def option_rows(options: Any) -> list[dict[str, Any]]:
    """The run's options with their UI labels, defaults marked (unknown keys shown as they are)."""
    if not isinstance(options, dict):
        return []
    specs = {spec.key: spec for spec in PinningOptions.specs()}
    rows = []
    for key, value in options.items():
        spec = specs.get(key)
        default = spec.default if spec is not None else None
        if isinstance(default, tuple):
            default = list(default)
        rows.append({
            "key": str(key),
            "label": spec.label if spec is not None else str(key),
            "help": spec.help if spec is not None else "",
            "value": _value_text(value),
            "default": spec is not None and value == default,
        })
    return rows


def settings_rows(run: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    cma = run.get("cma")
    if isinstance(cma, dict):
        for key in ("dim", "lambda", "mu", "generations", "multi_objective"):
            if key in cma:
                rows.append({"label": f"CMA {key.replace('_', ' ')}", "value": _value_text(cma[key])})
    for key, label in (("seeds", "seeds"), ("cma_seed", "CMA seed"), ("version", "extension version")):
        if key in run:
            rows.append({"label": label, "value": _value_text(run[key])})
    generator = run.get("generator")
    if isinstance(generator, dict):
        for key, value in generator.items():
            rows.append({"label": f"generator: {key}", "value": _value_text(value)})
    elif generator is not None:
        rows.append({"label": "generator", "value": _value_text(generator)})
    return rows


def copy_assets(destination: Path) -> None:
    """Copy the page's CSS and JS next to the report when missing or different."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in layout.ASSET_FILES:
        source = (STATIC_DIR / name).read_bytes()
        target = destination / name
        if not target.is_file() or target.read_bytes() != source:
            atomic_write_bytes(target, source)
