"""Smoke test of benchmarks/bench_hyperbatch.py and its modules (hyperbatch_toy, hyperbatch_unet,
hyperbatch_report, hyperbatch_fidelity, fidelity_verdict), so the benchmark cannot silently rot.

It runs the benchmark's own measuring function on a tiny configuration and checks the row
accounting the published tables rest on: a hyperbatch batch evaluates exactly the rows its growth
plan says, a plain batch B x evals, and their ratio is `SamplerInfo.cost_ratio`. The UNet code
path is checked with a very small UNet on a few steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmarks import bench_hyperbatch as bench
from benchmarks import hyperbatch_report as report
from benchmarks import hyperbatch_toy as toy
from benchmarks import hyperbatch_unet as unet
from benchmarks.sd_unet import UNetConfig
from benchmarks import fidelity_verdict
from pinning_samplers import SAMPLERS, plan_growth


def test_measure_accounts_rows_exactly():
    info = SAMPLERS["euler_ancestral"]
    results = toy.measure(
        "euler_ancestral", 4, 8, growths=("none", "even", "late"), prompts=toy.PROMPTS[:2], seed_sets=1
    )
    evals = info.evals(8)
    plain = results["none"]
    assert plain.plan.is_plain
    assert plain.model_rows == [4 * sum(evals)] * 2
    for growth in ("even", "late"):
        hyper = results[growth]
        assert not hyper.plan.is_plain and hyper.plan.schedule == growth
        assert hyper.model_rows == [hyper.plan.model_rows(evals)] * 2
        comparison = toy.Comparison(hyper, plain)
        assert comparison.checks_out
        assert math.isclose(comparison.rows_ratio, info.cost_ratio(hyper.plan))
        assert comparison.rows_ratio < 1.0
        # every batch was timed and scored
        assert len(hyper.wall_s) == len(hyper.variety) == len(hyper.distinct_pairs) == 2
        assert all(0.0 <= d <= 1.0 for d in hyper.distinct_pairs)
        assert all(v > 0.0 for v in hyper.variety)
    assert results["late"].expected_rows < results["even"].expected_rows


def test_tables_and_doc_section(tmp_path: Path):
    results = toy.measure("dpmpp_2m", 4, 8, growths=("none", "even"), prompts=toy.PROMPTS[:1])
    comparisons = [toy.Comparison(results["even"], results["none"])]
    for table in (report.cost_table(comparisons), report.diversity_table(comparisons)):
        assert table.count("\n") == 2 and "dpmpp_2m" in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other (other.py)\n\nkeep me\n")
    report.update_doc(doc, {report.toy_heading("quick"): "first"})
    report.update_doc(doc, {report.toy_heading("quick"): "second", report.UNET_SUBSECTION: "unet"})
    text = doc.read_text()
    assert "keep me" in text and "second" in text and "first" not in text and "unet" in text
    assert text.count(report.SECTION) == 1


def test_quick_profile_trims_only_the_brownian_samplers():
    jobs = toy.profile_jobs("quick", ["euler_ancestral", "dpmpp_sde"], [4, 8], [20, 30], None)
    assert {(j.batch_size, j.steps) for j in jobs if j.sampler == "euler_ancestral"} == {
        (4, 20), (8, 20), (4, 30), (8, 30)
    }
    assert [(j.batch_size, j.steps) for j in jobs if j.sampler == "dpmpp_sde"] == [toy.TARGET_POINT]


def test_unet_code_path_runs_and_counts_rows():
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_levels=(1,), num_heads=2, context_dim=16)
    rows, parameters = unet.run_unet(
        config, torch.device("cpu"), ["euler_ancestral"], [4], [6], repeats=1, image_size=64, growths=("none", "even")
    )
    assert parameters > 0
    by_growth = {r.growth: r for r in rows}
    assert by_growth["none"].rows == 4 * 6
    assert by_growth["even"].rows == by_growth["even"].expected_rows < 4 * 6
    assert "euler_ancestral" in report.unet_table(rows)
    body = report.unet_report(rows, parameters, config, torch.device("cpu"), 64, 1, True, "cmd", "machine", "code", 1.0)
    assert report.unet_table(rows) in body and f"{parameters:,} parameters" in body
    assert "The full-size figures need CUDA" in body and report.unet_heading(True) != report.unet_heading(False)


def test_full_size_unet_is_skipped_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the skip path is not taken")
    assert unet.resolve_unet_device("cuda", tiny=False) is None
    assert unet.resolve_unet_device("cpu", tiny=False) is None
    assert unet.resolve_unet_device("cuda", tiny=True) == torch.device("cpu")


@pytest.mark.parametrize("size", ["16", "100", "0"])
def test_an_image_side_the_unet_cannot_halve_is_refused_before_any_work(size, capsys):
    """A side that is not a multiple of 64 would crash deep inside the UNet's skip connections."""
    assert UNetConfig.sd15().image_multiple == UNetConfig.tiny().image_multiple == 64
    with pytest.raises(SystemExit):
        bench.main(["--no-toy", "--unet-tiny", "--unet-size", size])
    assert "--unet-size must be a positive multiple of 64" in capsys.readouterr().err


# -- the fidelity measure (hyperbatch_fidelity, bench_hyperbatch.py --fidelity) ----------------------


def test_spearman_ranks_with_ties():
    from benchmarks.hyperbatch_fidelity import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_variety_fidelity_scores_every_candidate_against_plain():
    """On a tiny setting: each candidate's rows ratio is its plan's, plain itself correlates 1 with
    plain, and the reference row (plain with other seeds) is there with cost 1."""
    from benchmarks import hyperbatch_fidelity as fidelity

    candidates = [
        fidelity.Candidate("none", fidelity.named("none")),
        fidelity.Candidate("front", fidelity.named("front")),
        fidelity.Candidate("front q=0.3", fidelity.front_plan(0.3, True)),
    ]
    prompts = fidelity.FIDELITY_PROMPTS[::5]
    result = fidelity.variety_fidelity("euler_ancestral", 4, 8, candidates, 1, prompts=prompts)
    rows = {row.label: row for row in result.rows}
    assert rows["none"].rows_ratio == 1.0 and rows["none"].variety_spearman == pytest.approx(1.0)
    assert rows["front"].rows_ratio == pytest.approx(plan_growth(4, 8, "front").cost_ratio())
    assert rows[fidelity.REFERENCE].rows_ratio == 1.0
    assert all(-1.0 <= row.variety_spearman <= 1.0 for row in result.rows)
    assert [row.label for row in fidelity_verdict.pareto(result.rows)][0] == "front"
    table = fidelity_verdict.fidelity_table([result])
    assert table.count("\n") == 1 + len(result.rows)


def test_variety_only_fidelity_report_leaves_the_ranking_out():
    """--fidelity-schedules named --no-fidelity-ranking (the SDE samplers' sweep): the named schedules
    only, and neither the table nor the verdict invents a ranking figure."""
    from benchmarks import hyperbatch_fidelity as fidelity

    candidates = fidelity.named_candidates()
    assert [c.label for c in candidates] == ["front", "even", "late"]
    result = fidelity.variety_fidelity("euler_ancestral", 4, 8, candidates, 1, prompts=fidelity.FIDELITY_PROMPTS[::7])
    table = fidelity_verdict.fidelity_table([result])
    assert all(line.endswith("| - | - |") for line in table.splitlines()[2:])
    verdict = fidelity_verdict.verdict_lines([result], "front", "even")
    assert verdict and not any("ranking" in line or "nan" in line for line in verdict)
    body = report.fidelity_report([result], "cmd", "machine", "code", 1.0, 3)
    assert "Ranking: not measured" in body


def test_a_candidates_split_rho_reaches_the_sampler():
    """The rho candidates really sample with split_rho 1: their batches differ from the default's."""
    from benchmarks import hyperbatch_fidelity as fidelity
    from lib_pinning.generator import GenerationRequest
    from lib_pinning.toy import ToyModel

    default, full = fidelity.full_refresh_candidates()[:2]
    assert full.split_rho == 1.0 and default.split_rho == fidelity.HALF_RHO
    generators = fidelity._generators("dpmpp_2m", 8, ToyModel(), [default, full])
    request = GenerationRequest("red circle", "", (1, 2, 3, 4))
    images = {label: generators[label].generate(request).images for label in (default.label, full.label, "plain")}
    assert not torch.equal(images[default.label], images[full.label])
    assert torch.equal(images[default.label][0], images[full.label][0])  # image 0 is never refreshed


def test_the_default_rule_takes_the_best_variety_and_breaks_near_ties_by_ranking():
    """`choose`: only schedules within the row bound count; a variety Spearman within CHOICE_TIE of
    the best is a tie, which the ranking Spearman decides; the ceiling row never counts."""
    from benchmarks import hyperbatch_fidelity as fidelity

    def row(label, rows, variety, ranking=math.nan):
        return fidelity.FidelityRow(label, rows, variety, ranking)

    rows = [
        row("cheap", 0.42, 0.70, 0.10),
        row("best variety", 0.57, 0.80, 0.20),
        row("near tie, better ranking", 0.49, 0.80 - fidelity_verdict.CHOICE_TIE + 0.001, 0.40),
        row("outside the tie", 0.49, 0.80 - fidelity_verdict.CHOICE_TIE - 0.001, 0.90),
        row("too costly", 0.64, 0.95, 0.95),
        row(fidelity.REFERENCE, 1.0, 0.99, 0.99),
    ]
    assert fidelity_verdict.choose(rows, fidelity_verdict.TARGET_ROWS).label == "near tie, better ranking"
    assert fidelity_verdict.choose(rows, fidelity_verdict.CHEAPER_ROWS).label == "cheap"
    assert fidelity_verdict.choose(rows, 0.3) is None
    assert fidelity_verdict.choose([row("a", 0.5, 0.6), row("b", 0.5, 0.62)], 0.6).label == "b"  # no ranking: variety
    lines = fidelity_verdict.choice_lines([fidelity.FidelityResult("euler_ancestral", 8, 20, 6, 0, rows, {})])
    assert any('default by the rule: "near tie, better ranking"' in line and "NOT met" in line for line in lines)
    assert any('cheaper setting by the rule: "cheap"' in line for line in lines)


def test_the_choice_candidates_name_every_rho():
    """The candidates the defaults are chosen from keep their meaning when a sampler's default rho
    changes: none leaves split_rho to the sampler."""
    from benchmarks import hyperbatch_fidelity as fidelity

    candidates = fidelity.choice_candidates()
    assert all(c.split_rho is not None for c in candidates)
    assert len({c.label for c in candidates}) == len(candidates)
    assert all(c.plan(8, 20).cost_ratio() <= fidelity_verdict.TARGET_ROWS for c in candidates)
    sde, ceiling = fidelity.choice_for("dpmpp_sde")
    assert not ceiling and {c.label for c in sde} < {c.label for c in candidates}
    assert {"front", "even"} <= {c.label for c in sde}
    assert fidelity.choice_for("euler_ancestral") == (candidates, True) or fidelity.choice_for("euler_ancestral")[1]


def test_the_toy_report_names_whose_default_each_schedule_is():
    """The issue-15 lines of the toy report follow the samplers' own defaults, not a fixed name."""
    by_growth: dict[str, list[str]] = {}
    for info in SAMPLERS.values():
        by_growth.setdefault(info.default_growth, []).append(info.label.removesuffix(" - Hyperbatch"))
    for growth, labels in by_growth.items():
        assert report.schedule_role(growth) == "default of " + ", ".join(labels)
    assert report.schedule_role("late") == "cheapest setting"
