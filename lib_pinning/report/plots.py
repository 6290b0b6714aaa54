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

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch
from matplotlib.ticker import MaxNLocator

from lib_pinning.objectives.scale import AESTHETIC_SCORE_RANGE, CLIP_COSINE_RANGE, FLIP_SCALE
from lib_pinning.report.canvas import (
    Blitter,
    Caption,
    FILL_COLOUR,
    finite,
    LINE_COLOUR,
    MARKER_LIMIT,
    MAX_TICKS,
    new_figure,
    style_axes,
    VALUE_MARGIN,
)
from lib_pinning.report.search_plots import CmaPlot, MultiObjectivePlot


HIST_BINS = 20
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




def natural_range(name: str) -> tuple[float, float] | None:
    """The known range of values called `name`, if any (see NATURAL_RANGES)."""
    if name in NATURAL_RANGES:
        return NATURAL_RANGES[name]
    if name.startswith(_COSINE_PREFIXES):
        return CLIP_COSINE_RANGE
    return None


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
        self.stairs: StepPatch = hist_ax.stairs([0.0], [0.0, 1.0], fill=True, color=FILL_COLOUR, edgecolor=LINE_COLOUR)
        (self.line,) = sorted_ax.plot([], [], color=LINE_COLOUR)
        self.line: Line2D
        style_axes(hist_ax, ylabel="count")
        style_axes(sorted_ax, xlabel="rank", integer_x=True)
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
        self.fig = new_figure(6.4, 2.7)
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
        data = finite(values)
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
        self.fig = new_figure(7.2, 5.2)
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
        pairs = finite(pair_values)
        losses = finite(individual_losses)
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
