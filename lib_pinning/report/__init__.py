"""The run report: plots (matplotlib, Agg, blitted), GIFs (Pillow) and a self-contained index.html.

`Reporter().update(store)` after each generation keeps a live run's report current at a cost that
does not grow with the run and stays within a share of the run's time (the refresh budget, 10% by
default: on a fast backend the newest artifacts lag); `update(store, final=True)` when the run
ends draws everything outstanding and adds the whole-run summary GIF; `rebuild(run_dir)` rebuilds
the report of any run directory, including one left by an interrupt or a crash. See `layout` for
the files written.
"""

from __future__ import annotations

from lib_pinning.report.reporter import Reporter, rebuild

__all__ = ["Reporter", "rebuild"]
