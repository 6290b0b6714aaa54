"""Reading the fidelity curve of `hyperbatch_fidelity`: the table, the undominated schedules, the
issue's target, and the rule the per-sampler defaults are picked by."""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmarks.hyperbatch_fidelity import REFERENCE, FidelityResult, FidelityRow


def fidelity_table(results: Sequence[FidelityResult]) -> str:
    lines = [
        "| sampler | B | S | schedule | rows ratio | Spearman variety | variety ratio "
        "| Spearman ranking (mean) | per run |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for row in sorted(result.rows, key=lambda r: r.rows_ratio):
            per_run = ", ".join(f"{v:.2f}" for v in row.ranking_per_run) or "-"
            ranking = "-" if math.isnan(row.ranking_spearman) else f"{row.ranking_spearman:.3f}"
            lines.append(
                f"| {result.sampler} | {result.batch_size} | {result.steps} | {row.label} | {row.rows_ratio:.3f} "
                f"| {row.variety_spearman:.3f} | {row.variety_ratio:.2f} | {ranking} | {per_run} |"
            )
    return "\n".join(lines)


def pareto(rows: Sequence[FidelityRow]) -> list[FidelityRow]:
    """The rows no other row beats on both cost and variety fidelity, cheapest first."""
    ordered = sorted(rows, key=lambda r: (r.rows_ratio, -r.variety_spearman))
    front, best = [], -2.0
    for row in ordered:
        if row.variety_spearman > best:
            front.append(row)
            best = row.variety_spearman
    return front


def _ranking_text(row: FidelityRow) -> str:
    """The ranking figure of a verdict line; empty when the ranking was not measured."""
    return "" if math.isnan(row.ranking_spearman) else f" and {row.ranking_spearman:.3f} for ranking"


TARGET_SPEARMAN = 0.9
TARGET_ROWS = 0.6
"""The issue's target for the default: Spearman >= 0.9 with plain at <= 0.6 of plain's rows."""


def verdict_lines(results: Sequence[FidelityResult], default: str, cheaper: str) -> list[str]:
    """Per sampler: the default's and the cheaper setting's figures, the target check, the curve."""
    lines = []
    for result in results:
        by_label = {row.label: row for row in result.rows}
        for label, role in ((default, "default"), (cheaper, "cheaper setting")):
            row = by_label.get(label)
            if row is None:
                continue
            line = (
                f"- {result.sampler}, \"{label}\" ({role}): {row.rows_ratio:.3f} of the plain rows, "
                f"Spearman {row.variety_spearman:.3f} for variety{_ranking_text(row)}"
            )
            if role == "default":
                met = row.variety_spearman >= TARGET_SPEARMAN and row.rows_ratio <= TARGET_ROWS + 1e-9
                line += f" (target Spearman >= {TARGET_SPEARMAN} at <= {TARGET_ROWS} rows: {'met' if met else 'NOT met'})"
            lines.append(line + ".")
        reference = by_label.get(REFERENCE)
        if reference is not None:
            lines.append(
                f"- {result.sampler}, ceiling (plain with other seeds against plain): Spearman "
                f"{reference.variety_spearman:.3f} for variety{_ranking_text(reference)}."
            )
        curve = ", ".join(
            f"{row.label} {row.rows_ratio:.2f} -> {row.variety_spearman:.2f}"
            for row in pareto([r for r in result.rows if r.label != REFERENCE])
        )
        lines.append(f"- {result.sampler}, cost -> variety Spearman, undominated schedules: {curve}.")
    return lines


CHEAPER_ROWS = 0.45
"""The cost bound of the documented cheaper setting: the "even" family (0.425 to 0.433 of the rows
at B=8, S=20), about three quarters of the default's bound."""

CHOICE_TIE = 0.05
"""Variety Spearmans this close to the best count as tied (six seed sets over 15 prompts move a
schedule's figure by a few hundredths between sweeps), and the tie goes to the ranking measure."""


def choose(rows: Sequence[FidelityRow], max_rows: float) -> FidelityRow | None:
    """The rule defaults are picked by: among the schedules at <= `max_rows` of the plain rows, the
    highest variety Spearman; those within `CHOICE_TIE` of it are tied, and the tie goes to the
    highest ranking Spearman (then variety). None when no schedule is that cheap."""
    eligible = [
        r for r in rows
        if r.label != REFERENCE and r.rows_ratio <= max_rows + 1e-9 and not math.isnan(r.variety_spearman)
    ]
    if not eligible:
        return None
    best = max(r.variety_spearman for r in eligible)
    tied = [r for r in eligible if r.variety_spearman >= best - CHOICE_TIE]
    return max(
        tied,
        key=lambda r: (-math.inf if math.isnan(r.ranking_spearman) else r.ranking_spearman, r.variety_spearman),
    )


def choice_lines(results: Sequence[FidelityResult]) -> list[str]:
    """Per sampler: the rule's pick at <= TARGET_ROWS (the default's bound) and at <= CHEAPER_ROWS,
    with their figures and whether the issue's target is met."""
    lines = [
        f"Rule: among the schedules at <= {TARGET_ROWS} of the plain rows, the highest variety Spearman; "
        f"those within {CHOICE_TIE} of it are tied and the highest ranking Spearman among them wins. "
        f"The cheaper setting: the same rule at <= {CHEAPER_ROWS} of the rows."
    ]
    for result in results:
        for bound, role in ((TARGET_ROWS, "default"), (CHEAPER_ROWS, "cheaper setting")):
            row = choose(result.rows, bound)
            if row is None:
                lines.append(f"- {result.sampler}, {role}: no schedule at <= {bound} rows.")
                continue
            line = (
                f"- {result.sampler}, {role} by the rule: \"{row.label}\", {row.rows_ratio:.3f} of the plain rows, "
                f"Spearman {row.variety_spearman:.3f} for variety{_ranking_text(row)}"
            )
            if role == "default":
                met = row.variety_spearman >= TARGET_SPEARMAN
                line += f" (target Spearman >= {TARGET_SPEARMAN} at <= {TARGET_ROWS} rows: {'met' if met else 'NOT met'})"
            lines.append(line + ".")
        reference = next((r for r in result.rows if r.label == REFERENCE), None)
        if reference is not None:
            lines.append(
                f"- {result.sampler}, ceiling (plain with other seeds against plain): Spearman "
                f"{reference.variety_spearman:.3f} for variety{_ranking_text(reference)}."
            )
    return lines

