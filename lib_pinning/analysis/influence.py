"""Per-unit influence: which words hold the picture, from the run's own evaluations.

Every run evaluates dozens to hundreds of weight vectors at the same seeds. Near the best of them
the loss is smooth enough for a local surrogate: a ridge regression of the loss (and of each
objective part) on the offsets from the best vector, with a linear and a diagonal quadratic term
per unit,

    loss(best + z) ~ a + sum_j b_j z_j + c_j z_j^2.

b_j is the slope at the best vector: how the loss changes when unit j's weight goes up (b_j < 0:
raising it lowers the loss, the unit *tightens* the picture) or down. Cross terms are left out on
purpose: with d units they would need d^2 / 2 more parameters than a short run has points.

Uncertainty: a bootstrap over the points (seeded, so influence.json is the same on every rebuild)
gives a percentile interval of each slope. A unit is classed on that interval, in standardised
units (the slope times the unit's spread over the points, over the loss's spread), so the band
means the same for a FLIP loss and a CLIP score:

- tightening: the whole interval is below -INERT_BAND;
- loosening: the whole interval is above +INERT_BAND;
- inert: the whole interval is inside the band (moving the unit explains little of the loss);
- cannot tell: anything else (too wide an interval), or too few points, or a unit whose weight
  never moved.

Only ok individuals count: not failed (no loss), not degenerate (their loss is the guard's, not the
objective's), not repeats (a repeat's loss is a copy of an earlier point, not a new observation).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lib_pinning.store import IndividualRecord, RunDirectoryError, RunStore, atomic_write_json, read_json

log = logging.getLogger(__name__)

INFLUENCE_FILE = "influence.json"
FORMAT = 1

TIGHTENING, LOOSENING, INERT, UNKNOWN = "tightening", "loosening", "inert", "cannot tell"
CLASSES = (TIGHTENING, LOOSENING, INERT, UNKNOWN)

# Standardised slope below which a unit is inert: moving it over its searched spread changes the
# loss by less than a tenth of the loss's spread.
INERT_BAND = 0.1
# The weight step whose effect is reported as "up" / "down": the report's colour step, and about
# one emphasis level ((word:1.1)).
STEP = 0.1
CONFIDENCE = 0.95
BOOTSTRAP = 200
SEED = 0
# Ridge penalty on the standardised features, relative to the number of points: small, so slopes
# are barely shrunk towards 0 (shrinking would bias units towards "inert"), but enough to keep a
# resample with a near-constant column solvable.
RIDGE = 1e-3
# The neighbourhood of the best vector: the nearest NEIGHBOURS_PER_PARAMETER x parameters points
# (at least MIN_NEIGHBOURS), or the nearest NEIGHBOUR_SHARE of the usable points when that is more,
# so a long run's far-away early generations do not bend a local fit. The share lets the
# neighbourhood grow with the run: at fixed seeds the loss moves in steps (an image changes only
# when its seed lands on another mode), and a fixed count of points sees too few of them for an
# interval to exclude 0. On the toy's 40-generation runs (~360 points) the nearest half tells
# more units than the fixed count, and none against the closed-form truth (docs/benchmarks.md,
# benchmarks/bench_influence.py).
NEIGHBOURS_PER_PARAMETER = 4
MIN_NEIGHBOURS = 30
NEIGHBOUR_SHARE = 0.5


@dataclass(frozen=True)
class UnitInfo:
    """A unit of the search vector, as run.json's prompt space records it."""

    index: int
    side: str  # "positive" | "negative"
    text: str


def units_from_space(space: Any, dim: int) -> list[UnitInfo]:
    """The units of run.json's "space" (lib_pinning.prompt.PromptSpace.to_json); placeholders
    ("unit k") when it does not account for `dim` units."""
    raw = space.get("units") if isinstance(space, dict) else None
    if isinstance(raw, list) and len(raw) == dim and all(isinstance(u, dict) for u in raw):
        return [
            UnitInfo(k, str(u.get("prompt", "positive")), str(u.get("text", f"unit {k}"))) for k, u in enumerate(raw)
        ]
    return [UnitInfo(k, "positive", f"unit {k}") for k in range(dim)]


def usable(record: IndividualRecord, dim: int) -> bool:
    """Whether a record is a genuine observation of the objective (module docstring)."""
    return (
        record.status == "ok"
        and not record.degenerate
        and record.repeat_of is None
        and len(record.x_evaluated) == dim
        and math.isfinite(record.loss)
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _classify(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNKNOWN
    if high < -INERT_BAND:
        return TIGHTENING
    if low > INERT_BAND:
        return LOOSENING
    if -INERT_BAND <= low and high <= INERT_BAND:
        return INERT
    return UNKNOWN


def _fit(features: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge coefficients [parameters, targets] on centred columns (the intercept is not penalised)."""
    f = features - features.mean(axis=0)
    t = targets - targets.mean(axis=0)
    gram = f.T @ f + ridge * len(f) * np.eye(f.shape[1])
    return np.linalg.solve(gram, f.T @ t)


def estimate(
    records: Sequence[IndividualRecord],
    units: Sequence[UnitInfo],
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = SEED,
) -> dict[str, Any]:
    """The influence of every unit, as influence.json holds it (module docstring)."""
    dim = len(units)
    points = [r for r in records if usable(r, dim)]
    notes: list[str] = []
    # The objective parts every point recorded (a part some points lack cannot be fitted on all).
    shared = set.intersection(*(set(r.components) for r in points)) if points else set()
    component_names = sorted(n for n in shared if all(math.isfinite(float(r.components[n])) for r in points))
    targets_names = ["loss", *component_names]
    result: dict[str, Any] = {
        "format": FORMAT,
        "method": "ridge local surrogate (linear + diagonal quadratic) around the best point, bootstrap intervals",
        "points_available": len(points),
        "points": 0,
        "model": None,
        "confidence": CONFIDENCE,
        "bootstrap": bootstrap,
        "seed": seed,
        "inert_band": INERT_BAND,
        "step": STEP,
        "targets": targets_names,
        "center": None,
        "r2": None,
        "notes": notes,
    }
    unknown = [_unit_entry(u, None) for u in units]
    if dim == 0:
        result["units"] = []
        return result
    if points:
        # The centre is named even when there are too few points to fit: a sweep measures around it.
        best = min(points, key=lambda r: r.loss)
        center = np.asarray(best.x_evaluated, dtype=float)
        result["center"] = _center_of(best, center)
    if len(points) < dim + 3:
        notes.append(f"only {len(points)} usable evaluations for {dim} units: too few to fit (need {dim + 3})")
        result["units"] = unknown
        return result

    x = np.asarray([r.x_evaluated for r in points], dtype=float)
    y = np.asarray([[r.loss, *(r.components[n] for n in component_names)] for r in points], dtype=float)
    quadratic_parameters = 1 + 2 * dim
    keep = min(len(points), max(NEIGHBOURS_PER_PARAMETER * quadratic_parameters, MIN_NEIGHBOURS,
                                math.ceil(NEIGHBOUR_SHARE * len(points))))
    order = np.argsort(np.linalg.norm(x - center, axis=1), kind="stable")[:keep]
    z, y = x[order] - center, y[order]
    quadratic = len(z) >= 2 * quadratic_parameters
    if not quadratic:
        notes.append(f"{len(z)} points: a linear surrogate (the quadratic one needs {2 * quadratic_parameters})")
    features = np.hstack([z, z**2]) if quadratic else z
    scale = features.std(axis=0)
    moved = scale[:dim] > 1e-12
    scale = np.where(scale > 1e-12, scale, 1.0)
    standard = features / scale
    coefficients = _fit(standard, y, RIDGE) / scale[:, None]

    # The bootstrap: the same fit on resampled points (one seeded generator: deterministic).
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, *coefficients.shape))
    for b in range(bootstrap):
        rows = rng.integers(0, len(z), len(z))
        draws[b] = _fit(standard[rows], y[rows], RIDGE) / scale[:, None]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)

    fitted = (features - features.mean(axis=0)) @ coefficients + y.mean(axis=0)
    residual = ((y - fitted) ** 2).sum(axis=0)
    spread_y = y.std(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), 0.0)
    spread_z = z.std(axis=0)
    if not moved.all():
        notes.append("some units kept one weight over all the points used: their influence cannot be told")
    if spread_y[0] <= 0:
        notes.append("the loss was the same at every point used: every unit is inert")

    def standardised(value: np.ndarray, target: int) -> np.ndarray:
        if spread_y[target] <= 0:
            return np.zeros_like(value)
        return value * spread_z / spread_y[target]

    def steps(draw: np.ndarray, sign: float) -> np.ndarray:
        """Loss change for a weight step of sign x STEP, per unit and target."""
        linear = draw[:dim] * sign * STEP
        return linear + (draw[dim:] * STEP**2 if quadratic else 0.0)

    up, down = steps(coefficients, 1.0), steps(coefficients, -1.0)
    up_draws = np.stack([steps(d, 1.0) for d in draws])
    down_draws = np.stack([steps(d, -1.0) for d in draws])
    up_range = np.percentile(up_draws, [tail, 100 - tail], axis=0)
    down_range = np.percentile(down_draws, [tail, 100 - tail], axis=0)

    entries = []
    for j, unit in enumerate(units):
        per_target = []
        for t in range(len(targets_names)):
            s_low, s_high = standardised(low[:dim, t], t)[j], standardised(high[:dim, t], t)[j]
            cls = _classify(s_low, s_high) if moved[j] else UNKNOWN
            per_target.append({
                "slope": _finite(coefficients[j, t]),
                "interval": [_finite(low[j, t]), _finite(high[j, t])],
                "standardized": _finite(standardised(coefficients[:dim, t], t)[j]),
                "standardized_interval": [_finite(s_low), _finite(s_high)],
                "curvature": _finite(coefficients[dim + j, t]) if quadratic else None,
                "up": _finite(up[j, t]),
                "up_interval": [_finite(up_range[0, j, t]), _finite(up_range[1, j, t])],
                "down": _finite(down[j, t]),
                "down_interval": [_finite(down_range[0, j, t]), _finite(down_range[1, j, t])],
                "class": cls,
            })
        entry = _unit_entry(unit, per_target[0])
        entry["components"] = dict(zip(component_names, per_target[1:]))
        entries.append(entry)
    result.update(
        points=len(z), model="quadratic" if quadratic else "linear",
        r2=_finite(r2[0]), units=entries,
    )
    return result


def _center_of(best: IndividualRecord, center: np.ndarray) -> dict[str, Any]:
    return {"generation": best.generation, "index": best.index, "x": center.tolist(), "loss": best.loss}


def _unit_entry(unit: UnitInfo, fit: dict[str, Any] | None) -> dict[str, Any]:
    empty = {"slope": None, "interval": [None, None], "standardized": None, "standardized_interval": [None, None],
             "curvature": None, "up": None, "up_interval": [None, None], "down": None,
             "down_interval": [None, None], "class": UNKNOWN}
    return {"index": unit.index, "side": unit.side, "text": unit.text, **(fit or empty), "components": {}}


def analyse_store(store: RunStore) -> dict[str, Any]:
    """Influence of a run directory's units, from its records."""
    run = store.read_run()
    records = list(store.iter_individuals())
    cma = run.get("cma") if isinstance(run.get("cma"), dict) else {}
    dim = cma.get("dim") if isinstance(cma.get("dim"), int) else (len(records[0].x_evaluated) if records else 0)
    return estimate(records, units_from_space(run.get("space"), dim))


def write_influence(store: RunStore) -> dict[str, Any]:
    """Compute the influence and write it to the run folder's influence.json (atomically). A sweep
    the file holds (lib_pinning.analysis.sweep: batches that cost time) is kept while it was made
    around the same best point, and dropped once the best moved (a resumed run)."""
    data = analyse_store(store)
    path = store.root / INFLUENCE_FILE
    try:
        old = read_json(path) if path.is_file() else None
    except RunDirectoryError:
        old = None
    if isinstance(old, dict) and isinstance(old.get("sweep"), dict) and old.get("center") == data.get("center"):
        data["sweep"] = old["sweep"]
    atomic_write_json(path, data)
    return data


def ranked(data: dict[str, Any], count: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `count` tightest units (most negative standardised slope first) and the `count` loosest
    (most positive first). Ranked by slope whatever their class, so a short, noisy run still says
    which way its units lean; the class says how sure that is."""
    units = [u for u in data.get("units") or [] if u.get("standardized") is not None]
    tight = sorted((u for u in units if u["standardized"] < 0), key=lambda u: u["standardized"])
    loose = sorted((u for u in units if u["standardized"] > 0), key=lambda u: -u["standardized"])
    return tight[:count], loose[:count]


def summary_lines(data: dict[str, Any], count: int = 3) -> list[str]:
    """Two lines for the CLI and the WebUI: the tightest and the loosest units, each with the loss
    change its slope gives a weight step up and, unless it is certain, its class. The slope, not the
    fitted change of a step (`up`, curvature included), so that the number leans the way the unit is
    ranked: a unit at the bottom of its curve raises the loss both ways."""
    def describe(unit: dict[str, Any]) -> str:
        where = " (negative)" if unit.get("side") == "negative" else ""
        sure = "" if unit["class"] in (TIGHTENING, LOOSENING) else f", {unit['class']}"
        return f"{unit['text']!r}{where} ({unit['slope'] * STEP:+.3g} loss at weight +{STEP:g}{sure})"

    tight, loose = ranked(data, count)
    counts = {c: sum(1 for u in data.get("units") or [] if u.get("class") == c) for c in CLASSES}
    tally = ", ".join(f"{n} {c}" for c, n in counts.items() if n)
    return [
        "tightest units: " + (", ".join(describe(u) for u in tight) or "none") + f"  [{tally}]",
        "loosest units:  " + (", ".join(describe(u) for u in loose) or "none"),
    ]
