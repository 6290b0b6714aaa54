"""The plots of the run analyses: per-unit influence bars and the weight map.

Drawn once per final report update (they summarise the whole run), the ordinary way: standalone
figures on their own Agg canvas, no pyplot (see plots.py for why). Text is most of their cost (the
glyphs' layout and rendering); the map's long title is stamped with Pillow (canvas.Caption, as the
loss plots' titles), which took a fifth of the map's drawing as a matplotlib title.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING
from lib_pinning.analysis.weight_map import UMAP
from lib_pinning.report.canvas import Caption, canvas_of, new_figure, figure_png
from lib_pinning.report.media import png_rgb

# The same colours as the page's class legend (report.css .inf-*).
CLASS_COLOURS = {TIGHTENING: "#2b8a3e", LOOSENING: "#c92a2a", INERT: "#868e96"}
UNKNOWN_COLOUR = "#f59f00"
LABEL_CHARACTERS = 28
CLUSTER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
MAP_TITLE_POINTS = 9
# The map's axes end at 0.94 of the figure's height; the title's top edge sits in the margin above.
MAP_TITLE_TOP = 0.985


@lru_cache(maxsize=1)
def _map_title() -> Caption:
    return Caption(MAP_TITLE_POINTS, top=MAP_TITLE_TOP)


def _label(unit: dict[str, Any]) -> str:
    text = " ".join(str(unit.get("text", "")).split())
    if len(text) > LABEL_CHARACTERS:
        text = text[: LABEL_CHARACTERS - 1] + "…"
    return ("neg: " if unit.get("side") == "negative" else "") + text


def influence_png(data: dict[str, Any]) -> bytes | None:
    """Horizontal bars: each unit's standardised slope with its interval, coloured by class; None
    when no unit has a fitted slope."""
    units = [u for u in data.get("units") or [] if u.get("standardized") is not None]
    if not units:
        return None
    fig = new_figure(7.5, 0.9 + 0.32 * len(units))
    ax = fig.add_axes((0.32, 0.9 / (0.9 + 0.32 * len(units)) * 0.7, 0.64, 1 - 0.9 / (0.9 + 0.32 * len(units))))
    rows = np.arange(len(units))[::-1]
    values = np.array([u["standardized"] for u in units])
    low = np.array([u["standardized_interval"][0] for u in units], dtype=float)
    high = np.array([u["standardized_interval"][1] for u in units], dtype=float)
    colours = [CLASS_COLOURS.get(u["class"], UNKNOWN_COLOUR) for u in units]
    ax.barh(rows, values, color=colours, height=0.6)
    ax.errorbar(values, rows, xerr=np.vstack([values - low, high - values]).clip(min=0), fmt="none",
                ecolor="#212529", capsize=3, linewidth=1)
    band = float(data.get("inert_band") or 0.0)
    ax.axvspan(-band, band, color="#e9ecef", zorder=0)
    ax.axvline(0, color="#495057", linewidth=0.8)
    ax.set_yticks(rows, [_label(u) for u in units], fontsize=9)
    ax.set_xlabel("standardised slope of the loss (< 0: raising the weight lowers the loss)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return figure_png(fig)


def weight_map_png(data: dict[str, Any]) -> bytes | None:
    """The embedded points coloured by loss, each cluster's members with its marker and its label at
    their middle, noise as small dots, the CMA-ES mean's path as a line; None when nothing was
    embedded."""
    points = [p for p in data.get("points") or [] if p.get("xy") is not None]
    if not data.get("embedded") or not points:
        return None
    fig = new_figure(7.5, 6.0)
    ax = fig.add_axes((0.08, 0.08, 0.78, 0.86))
    xy = np.array([p["xy"] for p in points])
    loss = np.array([p["loss"] for p in points])
    labels = np.array([-1 if p.get("cluster") is None else p["cluster"] for p in points])
    style = {"cmap": "viridis", "vmin": loss.min(), "vmax": loss.max()}
    scatter = None
    # Colour is the loss, so the clusters differ by marker, drawn large with a dark edge; points in
    # no cluster (HDBSCAN's noise, or no clustering) are small edgeless dots underneath, so that a
    # cluster's members stand out from the cloud around them (a '.' marker at the members' size
    # looked like cluster 0's circles). The legend says which marker is which.
    for label in sorted(set(labels.tolist())):
        inside = labels == label
        if label < 0:
            drawn = ax.scatter(xy[inside, 0], xy[inside, 1], c=loss[inside], marker="o", s=12, linewidths=0,
                               alpha=0.8, zorder=1, label="no cluster", **style)
        else:
            drawn = ax.scatter(xy[inside, 0], xy[inside, 1], c=loss[inside], s=64, edgecolors="#212529",
                               linewidths=0.9, marker=CLUSTER_MARKERS[label % len(CLUSTER_MARKERS)], zorder=2,
                               label=f"C{label}", **style)
        scatter = scatter or drawn
    best = int(np.argmin(loss))
    ax.scatter([xy[best, 0]], [xy[best, 1]], marker="*", s=220, color="#f03e3e", edgecolors="white", zorder=4)
    path = np.array([p["xy"] for p in data.get("path") or [] if p.get("xy") is not None])
    if len(path):
        ax.plot(path[:, 0], path[:, 1], color="#e8590c", linewidth=1.5, marker="o", markersize=3, zorder=3)
        ax.annotate("start", path[0], fontsize=8, color="#e8590c")
    for c in data.get("clusters") or []:
        members = np.array([p["xy"] for p in points if p.get("cluster") == c["id"]])
        if len(members):
            middle = members.mean(axis=0)
            ax.annotate(f"C{c['id']}", middle, fontsize=11, weight="bold", ha="center",
                        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7})
    if data.get("clusters"):
        legend = ax.legend(loc="best", fontsize=8, framealpha=0.8, markerscale=0.8)
        for handle in legend.legend_handles:  # the markers in a neutral colour: colour means loss
            handle.set_facecolor("#adb5bd")
    colourbar = fig.add_axes((0.88, 0.08, 0.03, 0.86))
    fig.colorbar(scatter, cax=colourbar, label="loss")
    method = "UMAP" if (data.get("method") or {}).get("embedding") == UMAP else "principal axes"
    ax.set_xticks([])
    ax.set_yticks([])
    canvas = canvas_of(fig)
    canvas.draw()
    pixels = np.array(canvas.buffer_rgba())  # a copy: the caption is stamped into it
    title = _map_title()
    title.text = f"searched weights ({method}): colour = loss, marker = cluster (dot: none), ★ best, line = CMA-ES mean"
    title.stamp(pixels)
    return png_rgb(pixels)
