"""What every report plot is drawn with: a pyplot-free figure on its own Agg canvas, the shared
axis style, and the blitting machinery (`Caption`, `Blitter`) described in lib_pinning.report.plots."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from lib_pinning.report.media import png_rgb


DPI = 80
# Fewer ticks, fewer text objects to lay out whenever a static part is drawn.
MAX_TICKS = 5
PLAIN_FORMAT = FuncFormatter(lambda value, _position: f"{value:g}")
LINE_COLOUR = "#1f5fa8"
FILL_COLOUR = "#8fb3de"
# Above this many points a line is drawn without markers.
MARKER_LIMIT = 60
# Room around a fixed value range (so values at its ends are not drawn on the frame) and above a
# full-height histogram bar.
VALUE_MARGIN = 0.03


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def canvas_of(fig: Figure) -> FigureCanvasAgg:
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    return canvas


def figure_png(fig: Figure) -> bytes:
    """Draw `fig` once and encode it as PNG (artists marked animated are left out, as from any
    canvas draw)."""
    canvas = canvas_of(fig)
    canvas.draw()
    return png_rgb(np.asarray(canvas.buffer_rgba()))


def finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def style_axes(
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
        canvas = canvas_of(self.fig)
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
            canvas_of(self.fig).draw()
        finally:
            for artist in self.animated:
                artist.set_animated(True)
        return self._encode()

    def _encode(self) -> bytes:
        pixels = np.asarray(canvas_of(self.fig).buffer_rgba())
        if self.caption is not None:
            if not pixels.flags.writeable:
                pixels = pixels.copy()
            self.caption.stamp(pixels)  # the next PNG restores the background under it
        return png_rgb(pixels)
