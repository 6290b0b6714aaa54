"""File names of the report's artifacts inside a run directory.

    <run>/index.html                     the report page
    <run>/report_assets/report.{css,js}  its stylesheet and script (copied from the package)
    <run>/cma_plot.png                   CMA-ES state over the run
    <run>/cma_mo_plot.png                multi-objective runs: loss vs ||x||, Pareto front
    <run>/best_generation_summary.gif    the best individual's batch
    <run>/final_summary.gif              each generation's best batch in order (final / rebuild)
    <run>/gen-NNN/generation_loss_plot.png
    <run>/gen-NNN/contact_sheet.png      the generation's best batch on one sheet
    <run>/gen-NNN/ind-MMM/loss_plot.png
    <run>/gen-NNN/ind-MMM/summary.gif
"""

from __future__ import annotations

INDEX_HTML = "index.html"
ASSETS_DIR = "report_assets"
ASSET_FILES = ("report.css", "report.js")

CMA_PLOT = "cma_plot.png"
CMA_MO_PLOT = "cma_mo_plot.png"
BEST_GIF = "best_generation_summary.gif"
FINAL_GIF = "final_summary.gif"

GENERATION_LOSS_PLOT = "generation_loss_plot.png"
CONTACT_SHEET = "contact_sheet.png"

INDIVIDUAL_LOSS_PLOT = "loss_plot.png"
INDIVIDUAL_GIF = "summary.gif"
