"""The report's plots, drawn as PNG bytes.

Every plot is a standalone `matplotlib.figure.Figure` rendered by its own `FigureCanvasAgg`: no
pyplot, so there is no global figure registry to leak figures into and no backend switch that
would disturb a host application (the WebUI uses matplotlib too).

Speed: a small matplotlib figure costs tens of milliseconds to build (axes, tick objects, text
layout) and as much again to draw, and a run draws one loss plot per individual. So each plot is a
template figure, built once per Reporter and redrawn with new data (`set_data` on its artists), and
it is drawn once per PNG: the canvas's RGBA buffer is encoded with Pillow, where `Figure.savefig`
would draw the whole figure a second time. A template holds one figure (a few hundred kilobytes to
two megabytes of pixel buffer) for the Reporter's lifetime, however long the run.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from PIL import Image

from lib_pinning.store import GenerationRecord

DPI = 80
# PNG zlib level: 1 encodes several times faster than the default 6 for plots that are a few
# tens of kilobytes either way.
PNG_COMPRESS_LEVEL = 1
HIST_BINS = 20
# Fewer ticks, fewer text objects to lay out at every draw.
MAX_TICKS = 5
# Above this many points a line is drawn without markers.
MARKER_LIMIT = 60

_PLAIN = FuncFormatter(lambda value, _position: f"{value:g}")

_LINE = "#1f5fa8"
_FILL = "#8fb3de"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """Draw `fig` once and encode it as PNG."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _style(
    ax: Axes, title: str = "", xlabel: str = "", ylabel: str = "", fontsize: int = 10, integer_x: bool = False
) -> None:
    ax.set_title(title, fontsize=fontsize)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(True, alpha=0.4)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(MAX_TICKS, integer=integer_x))


class _DistributionRow:
    """A histogram (left) and the sorted values (right) of one series, on two given axes."""

    def __init__(self, hist_ax: Axes, sorted_ax: Axes) -> None:
        self.hist_ax = hist_ax
        self.sorted_ax = sorted_ax
        # stairs is one artist where hist() would be one patch per bin
        self.stairs: StepPatch = hist_ax.stairs([0.0], [0.0, 1.0], fill=True, color=_FILL, edgecolor=_LINE)
        (self.line,) = sorted_ax.plot([], [], color=_LINE)
        self.line: Line2D
        _style(hist_ax, ylabel="count")
        _style(sorted_ax, xlabel="rank", integer_x=True)
        hist_ax.yaxis.set_major_locator(MaxNLocator(MAX_TICKS, integer=True))
        self.empty = hist_ax.figure.text(0, 0, "", ha="center", va="center", fontsize=10, color="#667085")

    def show(self, data: np.ndarray, name: str, what: str) -> None:
        empty = data.size == 0
        for ax in (self.hist_ax, self.sorted_ax):
            ax.set_visible(not empty)
        if empty:
            box = self.hist_ax.get_position().union([self.hist_ax.get_position(), self.sorted_ax.get_position()])
            self.empty.set_position(((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2))
            self.empty.set_text(f"no {name} values")
            return
        self.empty.set_text("")
        counts, edges = np.histogram(data, bins=HIST_BINS)
        self.stairs.set_data(counts, edges)
        ordered = np.sort(data)
        self.line.set_data(np.arange(ordered.size), ordered)
        self.line.set_marker("." if ordered.size < MARKER_LIMIT else "None")
        self.hist_ax.set_title(f"{name} distribution", fontsize=10)
        self.hist_ax.set_xlabel(what, fontsize=8)
        self.sorted_ax.set_title(f"all {name} values, sorted", fontsize=10)
        self.sorted_ax.set_ylabel(what, fontsize=8)
        for ax in (self.hist_ax, self.sorted_ax):
            ax.relim()
            ax.autoscale_view()


class IndividualLossPlot:
    """loss_plot.png: one batch's image-pair losses, histogram and sorted."""

    def __init__(self) -> None:
        self.fig = _figure(6.4, 2.7)
        left, right = self.fig.subplots(1, 2)
        self.row = _DistributionRow(left, right)
        self.title = self.fig.suptitle("", fontsize=10)
        self.fig.subplots_adjust(left=0.09, right=0.98, bottom=0.17, top=0.79, wspace=0.3)

    def render(self, values: Sequence[float], title: str, what: str = "pair loss") -> bytes | None:
        """None when there is nothing to plot. `what` names the values (an objective without image
        pairs contributes a per-image value instead)."""
        data = _finite(values)
        if data.size == 0:
            return None
        self.row.show(data, what, what)
        self.title.set_text(title)
        return figure_png(self.fig)


class GenerationLossPlot:
    """generation_loss_plot.png, 2x2 as the original tool drew it: the image (pair) loss distribution
    and the sorted pair losses of all the generation's batches on top, the individuals' losses below."""

    def __init__(self) -> None:
        self.fig = _figure(7.2, 5.2)
        axes = self.fig.subplots(2, 2)
        self.pairs = _DistributionRow(axes[0, 0], axes[0, 1])
        self.losses = _DistributionRow(axes[1, 0], axes[1, 1])
        self.title = self.fig.suptitle("", fontsize=11)
        self.fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.89, wspace=0.28, hspace=0.55)

    def render(self, pair_values: Sequence[float], individual_losses: Sequence[float], title: str) -> bytes | None:
        pairs = _finite(pair_values)
        losses = _finite(individual_losses)
        if pairs.size == 0 and losses.size == 0:
            return None
        self.pairs.show(pairs, "image pair loss", "pair loss")
        self.losses.show(losses, "individual loss", "loss")
        self.title.set_text(title)
        return figure_png(self.fig)


def _set_yscale(ax: Axes, scale: str, **kwargs: float) -> None:
    """Set the y scale with plain tick labels and no minor ticks: a log axis's default minor ticks
    and mathtext labels are most of the cost of drawing these plots."""
    ax.set_yscale(scale, **kwargs)
    if scale == "log":
        # 1-2-5 steps: labelled ticks even when the data span less than a decade
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    if scale != "linear":
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(_PLAIN)


def _log_or_symlog(ax: Axes, values: np.ndarray) -> None:
    """Log scale as the original plot had; symlog when an objective can reach zero or below."""
    if values.size and np.all(values > 0):
        _set_yscale(ax, "log")
    else:
        magnitudes = np.abs(values[values != 0])
        _set_yscale(ax, "symlog", linthresh=float(magnitudes.min()) if magnitudes.size else 1.0)


class CmaPlot:
    """cma_plot.png: the CMA-ES state over the run (x axis: evaluations, baseline included).

    Top left: fitness min / mean / max per generation, best so far, sigma and axis ratio (log);
    top right: the best-so-far offsets x, one line per unit ("object variables"); bottom left: the
    squared lengths of the distribution's main axes; bottom right: the population's standard
    deviation per unit.
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
        self.fig = _figure(10.0, 7.0)
        axes = self.fig.subplots(2, 2)
        self.f_ax = axes[0, 0]
        self.unit_axes = (axes[0, 1], axes[1, 0], axes[1, 1])
        self.series = [self.f_ax.plot([], [], label=label, **style)[0] for _, label, style in self._SERIES]
        _style(
            self.f_ax, "f-values of successful batches (blue), best (cyan), sigma, axis ratio", "evaluations",
            fontsize=9, integer_x=True,
        )
        self.f_ax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.85)
        for ax, (_, title, _) in zip(self.unit_axes, self._PER_UNIT):
            _style(ax, title, "evaluations", fontsize=9, integer_x=True)
        self.unit_lines: list[list[Line2D]] = [[] for _ in self.unit_axes]
        self.title = self.fig.suptitle("", fontsize=11)
        self.fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, wspace=0.22, hspace=0.38)

    def render(
        self,
        records: Sequence[GenerationRecord],
        title: str,
        f_stats: Sequence[tuple[float, float, float]] | None = None,
    ) -> bytes | None:
        """f_stats: (min, mean, max) per record to plot instead of the recorded ones; the caller
        passes the statistics of the successful batches for generations with failures, whose
        placeholder fitness would otherwise flatten the whole log-scale plot."""
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
        _log_or_symlog(self.f_ax, np.concatenate(values))
        for n, (ax, (attribute, _, log_scale)) in enumerate(zip(self.unit_axes, self._PER_UNIT)):
            data = np.array([getattr(r, attribute) for r in records], dtype=float)
            lines = self.unit_lines[n]
            while len(lines) < data.shape[1]:
                lines.append(ax.plot([], [], linewidth=1)[0])
            for k, line in enumerate(lines):
                if k < data.shape[1]:
                    line.set_data(evals, data[:, k])
                else:
                    line.set_data([], [])
            finite = data[np.isfinite(data)]
            _set_yscale(ax, "log" if log_scale and finite.size and np.all(finite > 0) else "linear")
        for ax in (self.f_ax, *self.unit_axes):
            ax.relim()
            ax.autoscale_view()
        self.title.set_text(title)
        return figure_png(self.fig)


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
        self.fig = _figure(7.0, 5.0)
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
        _style(ax, "", "loss (first objective)", "||x|| (second objective)")
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


class Plotter:
    """The plot templates of one Reporter, built on first use."""

    def __init__(self) -> None:
        self._individual: IndividualLossPlot | None = None
        self._generation: GenerationLossPlot | None = None
        self._cma: CmaPlot | None = None
        self._mo: MultiObjectivePlot | None = None

    @property
    def individual(self) -> IndividualLossPlot:
        if self._individual is None:
            self._individual = IndividualLossPlot()
        return self._individual

    @property
    def generation(self) -> GenerationLossPlot:
        if self._generation is None:
            self._generation = GenerationLossPlot()
        return self._generation

    @property
    def cma(self) -> CmaPlot:
        if self._cma is None:
            self._cma = CmaPlot()
        return self._cma

    @property
    def mo(self) -> MultiObjectivePlot:
        if self._mo is None:
            self._mo = MultiObjectivePlot()
        return self._mo
