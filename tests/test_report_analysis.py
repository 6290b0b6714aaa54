"""The report's views of the analyses (lib_pinning.report.analysis): what the page's sections say."""

from __future__ import annotations

from lib_pinning.analysis import weight_map
from lib_pinning.report.analysis import influence_view, weight_map_view


def test_objective_parts_are_named_after_their_objective_once() -> None:
    unit = {"text": "red", "class": "inert", "components": {
        "flip_nearest_mode": {"class": "inert"}, "flip_nearest_mode.fidelity": {"class": "tightening"},
        "tags": {"class": "loosening"}, "a.b": {"class": "inert"}}}
    (row,) = influence_view({"units": [unit]}, present=False)["rows"]
    # "a.b" keeps its name: no objective "a" among the parts.
    assert row["parts"] == "flip_nearest_mode: inert, fidelity: tightening, tags: loosening, a.b: inert"


def test_the_map_section_names_the_embedding_it_used() -> None:
    def view(method):
        return weight_map_view({"points": [], "method": {"embedding": method}}, present=False)["embedding"]

    assert view(weight_map.UMAP) == "with UMAP"
    assert view(weight_map.PRINCIPAL_AXES) == "on their first two principal axes"


def test_the_map_plot_has_its_title_above_the_axes() -> None:
    import io

    import numpy as np
    from PIL import Image

    from lib_pinning.report.analysis_plots import MAP_TITLE_TOP, weight_map_png

    rng = np.random.default_rng(0)
    points = [{"xy": xy.tolist(), "loss": float(loss), "cluster": int(k)}
              for xy, loss, k in zip(rng.normal(size=(20, 2)), rng.uniform(size=20), [0] * 10 + [-1] * 10)]
    data = {"embedded": True, "points": points, "clusters": [{"id": 0}], "method": {"embedding": weight_map.UMAP},
            "path": [{"xy": [0.0, 0.0]}, {"xy": [0.5, 0.5]}]}
    pixels = np.asarray(Image.open(io.BytesIO(weight_map_png(data))).convert("L"))
    # The band between the title's top edge and the axes (which start at 0.94 of the height) is
    # white but for the title: the stamped text must be there, dark, and centred.
    band = pixels[int((1 - MAP_TITLE_TOP) * len(pixels)) - 1: int(0.06 * len(pixels))]
    dark = np.argwhere(band < 100)
    assert len(dark) > 200
    assert abs(dark[:, 1].mean() - pixels.shape[1] / 2) < pixels.shape[1] * 0.1
