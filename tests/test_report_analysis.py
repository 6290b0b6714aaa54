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
