"""benchmarks/bench_hyperbatch_wall.py: its arithmetic, and that it runs and reports every schedule."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_hyperbatch_wall as bench
from benchmarks import hyperbatch_wall_timing as timing
from benchmarks import wall_allocator
from pinning_samplers import GrowthPlan


def test_fit_line_recovers_a_line_and_refuses_too_few_points() -> None:
    intercept, slope = timing.fit_line([1, 2, 4, 8], [3.0 + 0.5 * b for b in (1, 2, 4, 8)])
    assert intercept == pytest.approx(3.0) and slope == pytest.approx(0.5)
    with pytest.raises(ValueError):
        timing.fit_line([1], [2.0])
    with pytest.raises(ValueError):
        timing.fit_line([2, 2], [1.0, 3.0])


def test_floor_is_the_rows_ratio_without_fixed_cost_and_one_without_rows() -> None:
    assert bench.floor_ratio(0.0, 2.0, 8, 0.569) == pytest.approx(0.569)
    assert bench.floor_ratio(5.0, 0.0, 8, 0.3) == pytest.approx(1.0)
    # A batch paying A = 4 ms whatever its rows and 1 ms per row: (4 + 0.5 * 8) / (4 + 8).
    assert bench.floor_ratio(4.0, 1.0, 8, 0.5) == pytest.approx(8 / 12)


def test_skipped_draws_count_the_first_draw_and_the_steps_before_a_row_appears() -> None:
    # Rows 1 and 2-3 appear at steps 1 and 2: row 1 skips 2 draws, rows 2 and 3 skip 3 each.
    plan = GrowthPlan(4, 4, (1, 2, 4, 4))
    assert bench.skipped_draws(plan) == 2 + 3 + 3
    assert bench.skipped_draws(GrowthPlan(4, 2, (4, 4))) == 0


def test_it_runs_and_reports_every_schedule(capsys) -> None:
    assert bench.main(["--samplers", "dpmpp_2m", "euler_ancestral", "--steps", "6", "--repeats", "1",
                       "--no-steady-allocator"]) == 0
    out = capsys.readouterr().out
    assert "| euler_ancestral | front (default) | " in out and "later batches: jumps ms" in out
    assert "- dpmpp_2m, late: " in out and "- euler_ancestral, front: " in out and "catching up" in out
    for schedule in timing.SCHEDULES[1:]:
        assert f"| dpmpp_2m | {schedule} | " in out
    assert "fit F + n P" in out and "| dpmpp_2m | 6 | " in out
    assert "| dpmpp_2m | front (default) | " in out and "A run's first batch" in out
    assert "| euler_ancestral | front | 0." in out.split("A run's first batch (")[1]


def test_each_sampler_is_timed_at_its_own_default_first() -> None:
    assert timing.schedules_for("dpmpp_2m_sde") == ("front-early", "front", "even", "late")
    assert timing.schedules_for("euler_ancestral") == ("front", "even", "late")
    assert bench.late_rows(GrowthPlan(4, 4, (1, 2, 4, 4))) == 3
    assert [s for s in bench.SAMPLERS_DEFAULT if timing.brownian_steps(s)] == ["dpmpp_sde", "dpmpp_2m_sde"]


def test_the_parts_excesses_add_up_to_ratio_minus_r() -> None:
    """A hyperbatch whose every part shrinks with the rows adds nothing; the parts' excesses sum to
    ratio - r (here plain 10 ms, hyper 6 ms at r = 0.5: +0.1)."""
    plain = timing.Parts(denoiser=6.0, splits=0.0, solver=3.0, outside=1.0)
    hyper = timing.Parts(denoiser=3.5, splits=0.5, solver=1.5, outside=0.5)
    excesses = [bench.excess(getattr(hyper, n), getattr(plain, n), 0.5, 10.0) for n in bench.PART_NAMES]
    assert excesses == pytest.approx([0.05, 0.0, 0.05, 0.0])  # denoiser, solver, splits, outside
    assert sum(excesses) == pytest.approx(6.0 / 10.0 - 0.5)


def test_the_report_splits_each_schedule_into_its_parts(capsys) -> None:
    assert bench.main(["--samplers", "dpmpp_2m", "--steps", "6", "--repeats", "1", "--cold-repeats", "0",
                       "--no-steady-allocator"]) == 0
    table = capsys.readouterr().out.split("Where ratio - r goes")[1].split("The same target asked")[0]
    rows = [line for line in table.splitlines() if line.startswith("| dpmpp_2m |")]
    assert [row.split(" | ")[1] for row in rows] == ["front", "even", "late"]
    plain_splits = [float(row.split(" | ")[6].split("(")[1].split(" / ")[0]) for row in rows]
    hyper_splits = [float(row.split(" | ")[6].split(" / ")[1].rstrip(") |")) for row in rows]
    assert plain_splits == [0.0, 0.0, 0.0] and all(ms > 0 for ms in hyper_splits)


def test_the_half_batch_reference_is_the_plain_batch_of_half_the_images() -> None:
    ms = {timing.Variant("none", b): float(b) + 4.0 for b in timing.PLAIN_SIZES}  # A = 4 ms, 1 ms a row
    wall = timing.SamplerWall("dpmpp_2m", 20, 20, ms, {}, {}, 4.0, 1.0)
    assert bench.half_batch_lines([wall])[-1] == "- dpmpp_2m: 0.667, outside 0.5 + 0.1."
    ms = {timing.Variant("none", b): float(b) + 0.5 for b in timing.PLAIN_SIZES}
    wall = timing.SamplerWall("euler_ancestral", 20, 20, ms, {}, {}, 0.5, 1.0)
    assert bench.half_batch_lines([wall])[-1] == "- euler_ancestral: 0.529, within 0.5 + 0.1."


def test_the_default_hyperbatch_is_compared_part_by_part_with_the_half_batch() -> None:
    """Hyper 7 ms against a half batch of 6 ms, plain 10 ms: +0.1, of which the splits +0.05."""
    ms = {timing.Variant("none", 8): 10.0, timing.Variant("none", 4): 6.0, timing.Variant("front", 8): 7.0}
    parts = {
        timing.Variant("none", 4): timing.Parts(denoiser=3.5, splits=0.0, solver=2.0, outside=0.5),
        timing.Variant("front", 8): timing.Parts(denoiser=3.7, splits=0.5, solver=2.3, outside=0.5),
    }
    wall = timing.SamplerWall("dpmpp_2m", 20, 20, ms, {}, {"front": 0.494}, 4.0, 1.0, ("front",), parts=parts)
    row = bench.against_half_batch([wall])[-1]
    assert row == "| dpmpp_2m | front | 0.494 | 0.700 | 0.600 | +0.100 | +0.020 | +0.030 | +0.050 | +0.000 |"
    assert bench.against_half_batch([timing.SamplerWall("dpmpp_2m", 20, 20, ms, {}, {}, 4.0, 1.0)]) == []


def test_the_timings_survive_the_json_a_child_process_hands_back() -> None:
    wall = timing.time_sampler("dpmpp_2m", 4, 1)
    assert set(wall.faults) == set(wall.ms) and all(f >= 0 for f in wall.faults.values())
    assert timing.walls_from_json(json.loads(json.dumps(timing.walls_to_json([wall])))) == [wall]


def test_the_steady_run_starts_its_child_with_the_allocator_variables(tmp_path) -> None:
    """The child is this bench; a stand-in script that writes its environment shows what it gets."""
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, sys\n"
        "out = sys.argv[sys.argv.index('--json-out') + 1]\n"
        "json.dump({'argv': sys.argv[1:-2], 'env': {k: os.environ.get(k) for k in %r}}, open(out, 'w'))\n"
        % sorted(wall_allocator.STEADY_MALLOC)
    )
    answer = wall_allocator.run_steady(script, ["--samplers", "dpmpp_2m"])
    assert answer == {"argv": ["--samplers", "dpmpp_2m"], "env": wall_allocator.STEADY_MALLOC}


def test_the_allocator_table_reads_a_half_batch_beyond_the_target_as_out_of_reach() -> None:
    rows = [
        wall_allocator.AllocatorRow("dpmpp_2m", "default", "front", 0.494, 9.4, 0.583, 0.774, (37.0, 1.0, 247.0)),
        wall_allocator.AllocatorRow("dpmpp_2m", "steady", "front", 0.494, 8.1, 0.638, 0.731, (0.0, 0.0, 0.0)),
        wall_allocator.AllocatorRow("euler_ancestral", "steady", "front", 0.494, 15.0, 0.560, 0.590, (0.0, 0.0, 2.0)),
    ]
    lines = wall_allocator.table(rows, 8, 0.1)
    assert "| dpmpp_2m | default | front | 0.494 | 9.4 | 37 / 1 / 247 | 0.583 | 0.774 | +0.191 | 0.594 | no |" in lines
    assert "| euler_ancestral | steady | front | 0.494 | 15.0 | 0 / 0 / 2 | 0.560 | 0.590 | +0.030 | 0.594 | yes |" in lines
    verdicts = [line for line in lines if line.startswith("- ")]
    assert verdicts[0].startswith("- dpmpp_2m: the plain batch of 4 costs 0.638 of the batch of 8, already beyond")
    assert "out of its reach" in verdicts[0] and "adds +0.093" in verdicts[0]
    assert "within 0.5 + 0.1" in verdicts[1] and "out of its reach" not in verdicts[1]


def test_the_report_names_why_there_is_no_steady_run() -> None:
    assert bench.allocator_section([], "the C library is musl") == ["", "No steady-allocator run: the C library is musl."]


def test_the_report_shows_both_allocators_side_by_side(capsys) -> None:
    assert bench.main(["--samplers", "dpmpp_2m", "dpmpp_sde", "--steps", "4", "--repeats", "1",
                       "--cold-repeats", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.split("The allocator's part")[1].splitlines() if line.startswith("| dpmpp")]
    # DPM++ SDE, whose tree queries dominate its batches, is not timed again.
    assert [row.split(" | ")[1] for row in rows] == ["default", "steady"]
    assert all(row.startswith("| dpmpp_2m | ") for row in rows)
    assert "- dpmpp_2m: the plain batch of 4 costs " in out
