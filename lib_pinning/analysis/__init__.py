"""Analyses of a finished (or interrupted) run, from its own records unless said otherwise.

- :mod:`lib_pinning.analysis.influence`: per-unit influence on the loss (influence.json);
- :mod:`lib_pinning.analysis.weight_map`: the searched weights embedded in 2-D and clustered
  (weight_map.json), with optional dependencies (umap-learn, scikit-learn);
- :mod:`lib_pinning.analysis.region`: a new run from the centre of a weight-map cluster;
- :mod:`lib_pinning.analysis.sweep`: the optional sensitivity sweep (the one analysis that
  generates batches, on request only), with its statistics in
  :mod:`lib_pinning.analysis.sweep_stats` (per-image terms, paired intervals, classes).
"""
