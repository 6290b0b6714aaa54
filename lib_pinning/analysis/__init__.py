"""Analyses of a finished (or interrupted) run from its own records: no extra batches.

- :mod:`lib_pinning.analysis.influence`: per-unit influence on the loss (influence.json);
- :mod:`lib_pinning.analysis.weight_map`: the searched weights embedded in 2-D and clustered
  (weight_map.json), with optional dependencies (umap-learn, scikit-learn).
"""
