"""The report's plots, drawn as PNG bytes.

Every plot is a standalone `matplotlib.figure.Figure` rendered by its own `FigureCanvasAgg`: no
pyplot, so there is no global figure registry to leak figures into and no backend switch that
would disturb a host application (the WebUI uses matplotlib too).

Speed: a run draws one loss plot per individual and two plots per generation, and a small
matplotlib figure costs tens of milliseconds to build and as much again to draw, most of it laying
out and rasterising text (tick labels, titles). Three things keep that off the run:

- Templates: each plot is a figure built once per Reporter and redrawn with new data (`set_data`
  on its artists). A template holds one figure (a few hundred kilobytes to two megabytes of pixel
  buffer) for the Reporter's lifetime, however long the run.
- Blitting, matplotlib's documented technique for fast redraws, on the Agg canvas: the axes of
  the loss plots and of the CMA plot have limits that are fixed for a run or only grow
  (`ValueRange`, `axis_frame`), so their static part (axes, ticks, labels, grid) is drawn once,
  cached as pixels (`canvas.copy_from_bbox`), and each PNG restores it (`canvas.restore_region`),
  draws only the data artists over it (`Figure.draw_artist`) and stamps the title (`Caption`).
  The static part is redrawn only when its "frame" (limits, labels, value counts) changes. The
  axes' spines are drawn with the data, and the grid below it (`set_axisbelow`), so a blitted PNG
  stacks its artists in the same order as an ordinary draw and matches it pixel for pixel
  (tests/test_report_budget.py).
- PNG encoding at zlib level 1 (`media.png_rgb`).

Plots whose limits depend on every value (the multi-objective scatter, drawn only for runs with a
size limit) are drawn the ordinary way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from PIL import Image, ImageDraw, ImageFont

from lib_pinning.objectives.scale import AESTHETIC_SCORE_RANGE, CLIP_COSINE_RANGE, FLIP_SCALE
from lib_pinning.report.media import png_rgb
from lib_pinning.store import GenerationRecord

DPI = 80
HIST_BINS = 20
# Fewer ticks, fewer text objects to lay out whenever a static part is drawn.
MAX_TICKS = 5
# Above this many points a line is drawn without markers.
MARKER_LIMIT = 60
# Room around a fixed value range (so values at its ends are not drawn on the frame) and above a
# full-height histogram bar.
VALUE_MARGIN = 0.03
COUNT_MARGIN = 0.05
# A range that grows grows by this fraction of its span beyond the value that fell outside, so a
# run that keeps moving outwards redraws its static part a logarithmic number of times.
GROWTH = 0.25

PAIR_LOSS = "pair loss"
# Values with a known range, by the name the plots give them: FLIP errors (pair losses, a masked
# target distance), the aesthetic predictor's rating scale, CLIP image-text cosines (a tag
# objective's per-image values, keyed "tag:<text>" / "negative tag:<text>"). A value outside its
# range widens the plot's range; values of any other name start from the first values plotted.
NATURAL_RANGES: dict[str, tuple[float, float]] = {
    PAIR_LOSS: (FLIP_SCALE.best, FLIP_SCALE.worst),
    "target_distance": (FLIP_SCALE.best, FLIP_SCALE.worst),
    "aesthetic": AESTHETIC_SCORE_RANGE,
}
_COSINE_PREFIXES = ("tag:", "negative tag:")

_PLAIN = FuncFormatter(lambda value, _position: f"{value:g}")

_LINE = "#1f5fa8"
_FILL = "#8fb3de"


def natural_range(name: str) -> tuple[float, float] | None:
    """The known range of values called `name`, if any (see NATURAL_RANGES)."""
    if name in NATURAL_RANGES:
        return NATURAL_RANGES[name]
    if name.startswith(_COSINE_PREFIXES):
        return CLIP_COSINE_RANGE
    return None


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _canvas(fig: Figure) -> FigureCanvasAgg:
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    return canvas


def figure_png(fig: Figure) -> bytes:
    """Draw `fig` once and encode it as PNG (artists marked animated are left out, as from any
    canvas draw)."""
    canvas = _canvas(fig)
    canvas.draw()
    return png_rgb(np.asarray(canvas.buffer_rgba()))


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
    # Grid below the data: the grid belongs to the cached background, the data is drawn over it.
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(MAX_TICKS, integer=integer_x))


class Caption:
    """A one-line figure title that changes with every PNG ("generation 3 · individual 2 · loss
    0.91234"), stamped into the pixel buffer with Pillow, centred at the top like a suptitle.

    Why not a matplotlib Text: laying out and rasterising a 40-character title took 3.7 ms per
    draw here (most of a blitted loss plot), Pillow's FreeType rendering of the same string in the
    same font file (matplotlib's default family) 0.2 ms. Black on the white margin, as a suptitle.
    """

    def __init__(self, fontsize: float, top: float) -> None:
        """fontsize in points; top: the text's top edge in figure coordinates (0 bottom, 1 top)."""
        self.font = ImageFont.truetype(findfont(FontProperties()), max(1, round(fontsize * DPI / 72)))
        self.top = top
        self.text = ""

    def stamp(self, pixels: np.ndarray) -> None:
        """Draw the text into an H x W x 3|4 uint8 array, in place."""
        if not self.text:
            return
        left, top, right, bottom = (int(v) for v in self.font.getbbox(self.text))
        width, height = right - left, bottom - top
        if width <= 0 or height <= 0:
            return
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).text((-left, -top), self.text, fill=255, font=self.font)
        rows, columns = pixels.shape[:2]
        x0 = (columns - width) // 2
        y0 = int(round((1.0 - self.top) * rows)) + top
        # clip to the image
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + width, columns), min(y0 + height, rows)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        alpha = np.asarray(mask, dtype=np.uint16)[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
        region = pixels[cy0:cy1, cx0:cx1, :3]
        region[...] = (region.astype(np.uint16) * (255 - alpha) + 127) // 255  # black over the background


class Blitter:
    """A figure whose static part is drawn once per frame and whose animated artists are drawn over
    it for each PNG (matplotlib's blitting: `copy_from_bbox`, `restore_region`, `draw_artist`).

    `animated` lists the artists that change from one PNG to the next, in drawing order; they are
    marked animated, which leaves them out of an ordinary canvas draw, so that draw renders exactly
    the background. A `Caption`, if given, is stamped last. `backgrounds` counts the background
    draws (tests and the benchmark).
    """

    def __init__(self, fig: Figure, animated: Sequence[Artist], caption: Caption | None = None) -> None:
        self.fig = fig
        self.animated = list(animated)
        self.caption = caption
        for artist in self.animated:
            artist.set_animated(True)
        self._frame: Hashable = None
        self._background: Any = None
        self.backgrounds = 0

    def png(self, frame: Hashable, apply_frame: Callable[[], None]) -> bytes:
        """The figure as PNG. `frame` identifies the static part (compared with the cached one's);
        `apply_frame` sets the axes up for it and runs only when it changed."""
        canvas = _canvas(self.fig)
        if self._background is None or frame != self._frame:
            apply_frame()
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            self._frame = frame
            self.backgrounds += 1
        else:
            canvas.restore_region(self._background)
        for artist in self.animated:
            axes = artist.axes
            if artist.get_visible() and (axes is None or axes.get_visible()):
                self.fig.draw_artist(artist)
        return self._encode()

    def reference_png(self) -> bytes:
        """The current figure drawn the ordinary way, every artist in one draw (and the caption):
        what a blitted PNG must equal. The cached background is a copy and stays valid."""
        for artist in self.animated:
            artist.set_animated(False)
        try:
            _canvas(self.fig).draw()
        finally:
            for artist in self.animated:
                artist.set_animated(True)
        return self._encode()

    def _encode(self) -> bytes:
        pixels = np.asarray(_canvas(self.fig).buffer_rgba())
        if self.caption is not None:
            if not pixels.flags.writeable:
                pixels = pixels.copy()
            self.caption.stamp(pixels)  # the next PNG restores the background under it
        return png_rgb(pixels)


class ValueRange:
    """A value axis's range over a run: the values' natural range when they have one, else the first
    values' range (with a margin; from 0 when `from_zero` and the values are not negative: a loss,
    whose 0 is a perfect batch). It only grows, by `growth` times its span beyond a value that
    falls outside. Fixed limits keep a plot's static part, and its scale, the same from one PNG to
    the next, and plots drawn at different times comparable."""

    def __init__(
        self, natural: tuple[float, float] | None = None, from_zero: bool = False, growth: float = GROWTH
    ) -> None:
        self.low: float | None = None if natural is None else float(natural[0])
        self.high: float | None = None if natural is None else float(natural[1])
        self.from_zero = from_zero
        self.growth = growth

    def cover(self, data: np.ndarray) -> tuple[float, float]:
        lo, hi = float(data.min()), float(data.max())
        if self.low is None or self.high is None:
            anchored = self.from_zero and lo >= 0
            if anchored:
                lo = 0.0
            span = hi - lo
            pad = 0.1 * span if span > 0 else max(0.1 * abs(hi), 1e-6)
            self.low, self.high = (lo if anchored else lo - pad), hi + pad
        elif lo < self.low or hi > self.high:
            low, high = min(lo, self.low), max(hi, self.high)
            grow = self.growth * (high - low)
            self.low = low - grow if lo < self.low else low
            self.high = high + grow if hi > self.high else high
        return self.low, self.high


@dataclass(frozen=True)
class RowFrame:
    """The static part of a distribution row: what its values are, their range, and how many."""

    name: str  # in the titles: "<name> distribution", "all <name> values, sorted"
    what: str  # the value axis label
    low: float
    high: float
    count: int  # values plotted: the rank axis spans them, the count axis reaches it; 0 hides the row


def _rank_limits(count: int) -> tuple[float, float]:
    """The rank axis of `count` sorted values, with matplotlib's default 5% margins."""
    if count <= 1:
        return (-1.0, 1.0)
    pad = 0.05 * (count - 1)
    return (-pad, count - 1 + pad)


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

    @property
    def animated(self) -> list[Artist]:
        """The data, then the spines over it, as an ordinary draw stacks them (spines: zorder 2.5)."""
        return [
            self.stairs,
            self.line,
            *self.hist_ax.spines.values(),
            *self.sorted_ax.spines.values(),
        ]

    def apply(self, frame: RowFrame) -> None:
        empty = frame.count == 0
        for ax in (self.hist_ax, self.sorted_ax):
            ax.set_visible(not empty)
        if empty:
            box = self.hist_ax.get_position().union([self.hist_ax.get_position(), self.sorted_ax.get_position()])
            self.empty.set_position(((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2))
            self.empty.set_text(f"no {frame.name} values")
            return
        self.empty.set_text("")
        pad = (frame.high - frame.low) * VALUE_MARGIN
        values = (frame.low - pad, frame.high + pad)
        self.hist_ax.set_xlim(*values)
        self.hist_ax.set_ylim(0.0, frame.count * (1 + COUNT_MARGIN))
        self.sorted_ax.set_xlim(*_rank_limits(frame.count))
        self.sorted_ax.set_ylim(*values)
        self.hist_ax.set_title(f"{frame.name} distribution", fontsize=10)
        self.hist_ax.set_xlabel(frame.what, fontsize=8)
        self.sorted_ax.set_title(f"all {frame.name} values, sorted", fontsize=10)
        self.sorted_ax.set_ylabel(frame.what, fontsize=8)

    def show(self, data: np.ndarray, frame: RowFrame) -> None:
        """Set the data artists; `data` lies within the frame's range."""
        if frame.count == 0:
            return
        counts, edges = np.histogram(data, bins=HIST_BINS, range=(frame.low, frame.high))
        self.stairs.set_data(counts, edges)
        ordered = np.sort(data)
        self.line.set_data(np.arange(ordered.size), ordered)
        self.line.set_marker("." if ordered.size < MARKER_LIMIT else "None")


class IndividualLossPlot:
    """loss_plot.png: one batch's image-pair losses, histogram and sorted.

    The value axis spans the values' natural range ([0, 1] for FLIP pair losses), the rank axis the
    run's pair count and the count axis up to that count, so every individual of a run is drawn on
    the same axes: comparable at a glance (a pinned batch is one full-height bar), and blitted.
    """

    def __init__(self) -> None:
        self.fig = _figure(6.4, 2.7)
        left, right = self.fig.subplots(1, 2)
        self.row = _DistributionRow(left, right)
        self.title = Caption(10, top=0.985)
        self.fig.subplots_adjust(left=0.09, right=0.98, bottom=0.17, top=0.79, wspace=0.3)
        self.blitter = Blitter(self.fig, self.row.animated, self.title)
        self._ranges: dict[str, ValueRange] = {}

    def frame(self, data: np.ndarray, what: str) -> RowFrame:
        value_range = self._ranges.get(what)
        if value_range is None:
            value_range = self._ranges[what] = ValueRange(natural_range(what))
        low, high = value_range.cover(data)
        return RowFrame(what, what, low, high, int(data.size))

    def render(self, values: Sequence[float], title: str, what: str = PAIR_LOSS) -> bytes | None:
        """None when there is nothing to plot. `what` names the values (an objective without image
        pairs contributes a per-image value instead)."""
        data = _finite(values)
        if data.size == 0:
            return None
        frame = self.frame(data, what)
        self.row.show(data, frame)
        self.title.text = title
        return self.blitter.png(frame, lambda: self.row.apply(frame))


class GenerationLossPlot:
    """generation_loss_plot.png, 2x2 as the original tool drew it: the image (pair) loss distribution
    and the sorted pair losses of all the generation's batches on top, the individuals' losses below.

    Pair losses use their natural range; the individuals' losses a run-wide range from 0 (a perfect
    batch) that only grows, so the generations' plots show the run's progress on one scale."""

    def __init__(self) -> None:
        self.fig = _figure(7.2, 5.2)
        axes = self.fig.subplots(2, 2)
        self.pairs = _DistributionRow(axes[0, 0], axes[0, 1])
        self.losses = _DistributionRow(axes[1, 0], axes[1, 1])
        self.title = Caption(11, top=0.99)
        self.fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.89, wspace=0.28, hspace=0.55)
        self.blitter = Blitter(self.fig, [*self.pairs.animated, *self.losses.animated], self.title)
        self.pair_range = ValueRange(natural_range(PAIR_LOSS))
        self.loss_range = ValueRange(from_zero=True)

    @staticmethod
    def _frame(data: np.ndarray, value_range: ValueRange, name: str, what: str) -> RowFrame:
        if data.size == 0:
            return RowFrame(name, what, 0.0, 1.0, 0)
        low, high = value_range.cover(data)
        return RowFrame(name, what, low, high, int(data.size))

    def render(self, pair_values: Sequence[float], individual_losses: Sequence[float], title: str) -> bytes | None:
        pairs = _finite(pair_values)
        losses = _finite(individual_losses)
        if pairs.size == 0 and losses.size == 0:
            return None
        pair_frame = self._frame(pairs, self.pair_range, "image pair loss", PAIR_LOSS)
        loss_frame = self._frame(losses, self.loss_range, "individual loss", "loss")
        self.pairs.show(pairs, pair_frame)
        self.losses.show(losses, loss_frame)
        self.title.text = title

        def apply() -> None:
            self.pairs.apply(pair_frame)
            self.losses.apply(loss_frame)

        return self.blitter.png((pair_frame, loss_frame), apply)


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
        ax.yaxis.set_major_formatter(_PLAIN)


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
        self.fig = _figure(10.0, 7.0)
        axes = self.fig.subplots(2, 2)
        self.f_ax = axes[0, 0]
        self.unit_axes = (axes[0, 1], axes[1, 0], axes[1, 1])
        self.series = [self.f_ax.plot([], [], label=label, **style)[0] for _, label, style in self._SERIES]
        _style(
            self.f_ax, "f-values of successful batches (blue), best (cyan), sigma, axis ratio", "evaluations",
            fontsize=9, integer_x=True,
        )
        self.legend = self.f_ax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.85)
        for ax, (_, title, _) in zip(self.unit_axes, self._PER_UNIT):
            _style(ax, title, "evaluations", fontsize=9, integer_x=True)
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
