"""The plots of the search itself: cma_plot.png (the CMA-ES state over the run, on axes framed to
change rarely, see `axis_frame`) and the multi-objective scatter with its Pareto front."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullLocator

from lib_pinning.report.canvas import (
    Blitter,
    figure_png,
    MARKER_LIMIT,
    MAX_TICKS,
    new_figure,
    PLAIN_FORMAT,
    style_axes,
    VALUE_MARGIN,
)
from lib_pinning.store import GenerationRecord


# CMA plot ---------------------------------------------------------------------------------------


def _set_yscale(ax: Axes, scale: str, **kwargs: float) -> None:
    """Set the y scale with plain tick labels and no minor ticks: a log axis's default minor ticks
    and mathtext labels are most of the cost of drawing these plots."""
    ax.set_yscale(scale, **kwargs)
    if scale == "log":
        # 1-2-5 steps: labelled ticks even when the data span less than a decade
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    if scale != "linear":
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(PLAIN_FORMAT)


def _decade(value: float, up: bool) -> float:
    """`value` rounded away from zero (up) or towards it to a power of ten, mirrored for negative
    values (symlog limits and thresholds)."""
    if value == 0:
        return 0.0
    magnitude = abs(value)
    outward = up if value > 0 else not up
    exponent = math.ceil(math.log10(magnitude)) if outward else math.floor(math.log10(magnitude))
    return math.copysign(10.0**exponent, value)


@dataclass(frozen=True)
class AxisFrame:
    """The y scale and limits of one CMA axis."""

    scale: str  # "log", "symlog" or "linear"
    low: float
    high: float
    linthresh: float = 0.0  # symlog only


def _log_snap(value: float, up: bool) -> float:
    """A positive value rounded up or down to 1, 2 or 5 times a power of ten: the log axes'
    labelled ticks, so a limit always carries a label."""
    base = 10.0 ** math.floor(math.log10(value))
    tolerance = 1e-9 * value
    if up:
        return next(base * f for f in (1.0, 2.0, 5.0, 10.0) if base * f >= value - tolerance)
    return next(base * f for f in (10.0, 5.0, 2.0, 1.0) if base * f <= value + tolerance)


def _nice_step(span: float) -> float:
    """A 1-2-5 step that cuts `span` into at most MAX_TICKS intervals."""
    raw = span / MAX_TICKS
    base = 10.0 ** math.floor(math.log10(raw))
    return next(base * f for f in (1.0, 2.0, 5.0, 10.0) if base * f >= raw)


def axis_frame(values: np.ndarray, log_allowed: bool, symlog_allowed: bool) -> AxisFrame:
    """The y scale and limits of a CMA axis: log when allowed and every value is positive (symlog
    when allowed, for values at or below 0), limits snapped outwards to 1-2-5 steps (log), powers
    of ten (symlog) or multiples of a 1-2-5 step (linear).

    The CMA plot shows every generation, so its values' extent only grows as the run goes on, and
    snapped limits change only when it crosses a step: the plot's static part is redrawn a few
    times per decade of drift instead of at every generation. Snapping looked better than growing
    the range by a share of its span (tried: as many redraws, and a converging run's log axes
    ended up spanning decades with no data)."""
    if values.size == 0:
        return AxisFrame("linear", 0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    if log_allowed and lo > 0:
        low, high = _log_snap(lo, up=False), _log_snap(hi, up=True)
        return AxisFrame("log", low, high if high > low else _log_snap(low * 1.5, up=True))
    if symlog_allowed:
        return _symlog_frame(values, lo, hi)
    if hi == lo:
        pad = max(abs(hi) * 0.1, 1e-3)
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo)
    return AxisFrame("linear", math.floor(lo / step) * step, math.ceil(hi / step) * step)


def _symlog_frame(values: np.ndarray, lo: float, hi: float) -> AxisFrame:
    magnitudes = np.abs(values[values != 0])
    linthresh = _decade(float(magnitudes.min()), up=False) if magnitudes.size else 1.0
    low, high = _decade(lo, up=False), _decade(hi, up=True)
    low = min(low, -linthresh) if lo < 0 else min(low, 0.0)
    high = max(high, linthresh) if hi > 0 else max(high, 0.0)
    return AxisFrame("symlog", low, high if high > low else low + 1.0, linthresh)


def _apply_axis(ax: Axes, frame: AxisFrame) -> None:
    if frame.scale == "symlog":
        _set_yscale(ax, "symlog", linthresh=frame.linthresh)
    else:
        _set_yscale(ax, frame.scale)
    ax.set_ylim(frame.low, frame.high)


class CmaPlot:
    """cma_plot.png: the CMA-ES state over the run (x axis: evaluations, baseline included).

    Top left: fitness min / mean / max per generation, best so far, sigma and axis ratio (log, or
    symlog when a value can be zero or below); top right: the best-so-far offsets x, one line per
    unit ("object variables"); bottom left: the squared lengths of the distribution's main axes;
    bottom right: the population's standard deviation per unit.

    The x axis spans the whole run (its evaluations are known in advance), and the y limits are
    snapped (`axis_frame`), so a generation's redraw is often a blit: only the lines and the legend
    are drawn again.
    """

    _SERIES = (
        ("fitness_min", "f min", dict(color="#1f5fa8", linestyle="-")),
        ("fitness_mean", "f mean", dict(color="#1f5fa8", linestyle="--")),
        ("fitness_max", "f max", dict(color="#1f5fa8", linestyle=":")),
        ("best_so_far_fitness", "best so far", dict(color="#17becf", linestyle="-", linewidth=2)),
        ("sigma", "sigma", dict(color="#2ca02c", linestyle="-")),
        ("axis_ratio", "axis ratio", dict(color="#d62728", linestyle="-")),
    )
    _PER_UNIT = (
        ("best_so_far_x", "object variables: best offsets x", False),
        ("axis_scales", "scaling of all main axes", True),
        ("population_std", "standard deviations in all coordinates", True),
    )

    def __init__(self) -> None:
        self.fig = new_figure(10.0, 7.0)
        axes = self.fig.subplots(2, 2)
        self.f_ax = axes[0, 0]
        self.unit_axes = (axes[0, 1], axes[1, 0], axes[1, 1])
        self.series = [self.f_ax.plot([], [], label=label, **style)[0] for _, label, style in self._SERIES]
        style_axes(
            self.f_ax, "f-values of successful batches (blue), best (cyan), sigma, axis ratio", "evaluations",
            fontsize=9, integer_x=True,
        )
        self.legend = self.f_ax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.85)
        for ax, (_, title, _) in zip(self.unit_axes, self._PER_UNIT):
            style_axes(ax, title, "evaluations", fontsize=9, integer_x=True)
        self.unit_lines: list[list[Line2D]] = [[] for _ in self.unit_axes]
        self.title = self.fig.suptitle("", fontsize=11)
        self.fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, wspace=0.22, hspace=0.38)
        self.blitter: Blitter | None = None  # built when the number of units is known

    def _blitter(self, dim: int) -> Blitter:
        """Unit lines are added when a run has more units than lines; the animated list follows."""
        if self.blitter is None or any(len(lines) < dim for lines in self.unit_lines):
            for ax, lines in zip(self.unit_axes, self.unit_lines):
                while len(lines) < dim:
                    lines.append(ax.plot([], [], linewidth=1)[0])
            # The legend, drawn over the lines as in an ordinary draw (it has zorder 5).
            animated: list[Artist] = [*self.series]
            for ax, lines in zip(self.unit_axes, self.unit_lines):
                animated.extend(lines)
            for ax in (self.f_ax, *self.unit_axes):
                animated.extend(ax.spines.values())
            animated.append(self.legend)
            self.blitter = Blitter(self.fig, animated)
        return self.blitter

    def render(
        self,
        records: Sequence[GenerationRecord],
        title: str,
        f_stats: Sequence[tuple[float, float, float]] | None = None,
        evaluations_total: int | None = None,
    ) -> bytes | None:
        """f_stats: (min, mean, max) per record to plot instead of the recorded ones; the caller
        passes the statistics of the successful batches for generations with failures, whose
        placeholder fitness would otherwise flatten the whole log-scale plot. evaluations_total:
        the run's evaluations when it ends (the x axis spans them; else the evaluations so far)."""
        if not records:
            return None
        evals = np.array([r.evaluations for r in records], dtype=float)
        marker = "." if len(evals) < MARKER_LIMIT else "None"
        stats = (
            np.array(f_stats, dtype=float)
            if f_stats is not None
            else np.array([(r.fitness_min, r.fitness_mean, r.fitness_max) for r in records], dtype=float)
        )
        values = []
        for n, (line, (attribute, _, _)) in enumerate(zip(self.series, self._SERIES)):
            data = stats[:, n] if n < 3 else np.array([getattr(r, attribute) for r in records], dtype=float)
            line.set_data(evals, data)
            line.set_marker(marker)
            values.append(data[np.isfinite(data)])
        f_frame = axis_frame(np.concatenate(values), log_allowed=True, symlog_allowed=True)
        per_unit = [
            np.array([getattr(r, attribute) for r in records], dtype=float) for attribute, _, _ in self._PER_UNIT
        ]
        dim = max(data.shape[1] if data.ndim == 2 else 0 for data in per_unit)
        blitter = self._blitter(dim)
        unit_frames = []
        for data, lines, (_, _, log_scale) in zip(per_unit, self.unit_lines, self._PER_UNIT):
            width = data.shape[1] if data.ndim == 2 else 0
            for k, line in enumerate(lines):
                if k < width:
                    line.set_data(evals, data[:, k])
                    line.set_marker(marker)
                else:
                    line.set_data([], [])
            finite = data[np.isfinite(data)] if data.size else data
            unit_frames.append(axis_frame(finite, log_allowed=log_scale, symlog_allowed=False))
        last = float(evals.max()) if evals.size else 1.0
        x_high = float(max(evaluations_total or 0, last, 1.0))
        frame = (title, x_high, f_frame, tuple(unit_frames))  # the title names the run: static

        def apply() -> None:
            self.title.set_text(title)
            for ax in (self.f_ax, *self.unit_axes):
                ax.set_xlim(0.0, x_high * (1 + VALUE_MARGIN))
            _apply_axis(self.f_ax, f_frame)
            for ax, unit_frame in zip(self.unit_axes, unit_frames):
                _apply_axis(ax, unit_frame)

        return blitter.png(frame, apply)


def pareto_front(losses: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both loss and norm, ordered by loss."""
    order = np.lexsort((norms, losses))
    front = []
    best_norm = math.inf
    for i in order:
        if norms[i] < best_norm:
            front.append(i)
            best_norm = norms[i]
    return np.asarray(front, dtype=int)


class MultiObjectivePlot:
    """cma_mo_plot.png: loss vs ||x|| of every successful individual, the size limit and the Pareto
    front. An infeasible individual (its proposed offsets exceeded the size limit) is drawn at the
    point actually rendered, its projection onto the limit."""

    def __init__(self) -> None:
        self.fig = new_figure(7.0, 5.0)
        ax = self.ax = self.fig.subplots()
        empty = np.empty((0, 2))
        self.feasible = ax.scatter(
            empty[:, 0], empty[:, 1], s=16, facecolors="none", edgecolors="#2ca02c", label="feasible"
        )
        self.infeasible = ax.scatter(
            empty[:, 0], empty[:, 1], s=18, marker="x", color="#d62728", label="infeasible (projected)"
        )
        (self.front,) = ax.plot([], [], color="#1f5fa8", linewidth=1.5, drawstyle="steps-post", label="Pareto front")
        (self.limit,) = ax.plot([], [], color="#7f7f7f", linestyle="--", linewidth=1, label="size limit")
        self.best = ax.scatter(empty[:, 0], empty[:, 1], s=90, marker="*", color="#ff7f0e", zorder=5, label="best")
        style_axes(ax, "", "loss (first objective)", "||x|| (second objective)")
        # Below the axes: inside, it would hide points wherever it went.
        self.fig.legend(fontsize=8, loc="lower center", ncol=5, frameon=False)
        self.fig.subplots_adjust(left=0.11, right=0.97, bottom=0.18, top=0.92)

    def render(
        self,
        losses: Sequence[float],
        norms: Sequence[float],
        feasible: Sequence[bool],
        size_limit: float | None,
        best: tuple[float, float] | None,
        title: str,
    ) -> bytes | None:
        loss = np.asarray(losses, dtype=float)
        norm = np.asarray(norms, dtype=float)
        ok = np.asarray(feasible, dtype=bool)
        keep = np.isfinite(loss) & np.isfinite(norm)
        loss, norm, ok = loss[keep], norm[keep], ok[keep]
        if loss.size == 0:
            return None
        points = np.column_stack([loss, norm])
        self.feasible.set_offsets(points[ok])
        self.infeasible.set_offsets(points[~ok])
        front = pareto_front(loss, norm)
        self.front.set_data(loss[front], norm[front])
        self.best.set_offsets(np.empty((0, 2)) if best is None else np.array([best], dtype=float))
        x0, x1 = float(loss.min()), float(loss.max())
        y_top = max(float(norm.max()), size_limit or 0.0)
        pad_x = (x1 - x0) * 0.05 or 0.05 * max(abs(x0), 1e-3)
        self.limit.set_data([x0 - pad_x, x1 + pad_x] if size_limit else [], [size_limit] * 2 if size_limit else [])
        self.ax.set_xlim(x0 - pad_x, x1 + pad_x)
        self.ax.set_ylim(0.0, y_top * 1.08 or 1.0)
        self.ax.set_title(title, fontsize=10)
        return figure_png(self.fig)
