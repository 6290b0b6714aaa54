"""benchmarks/bench_analysis.py: the section's table from the measured runs (no demo is run here)."""

from __future__ import annotations

from benchmarks import bench_analysis as bench


def run(wall: float, analysis: float | None = None, helpers: int = 0, answered: bool = False,
        others: float = 0.0) -> bench.DemoRun:
    timings = {} if analysis is None else {"analysis (all)": analysis}
    return bench.DemoRun(wall=wall, cpu=wall, run_seconds=5.0, batches=55, embedding="principal axes",
                         timings=timings, helpers=helpers, answered=answered, load=0.5, others=others)


def test_the_section_counts_the_helpers_answers_and_the_analysis_share_of_each_run():
    rounds = [
        {"without": run(10.0), "with": run(10.4, analysis=0.2, helpers=1, answered=True)},
        {"without": run(12.0), "with": run(12.0, analysis=0.6, helpers=1, answered=False, others=0.9)},
    ]
    text = bench.section(rounds, ["without", "with"], cores=2)
    (row,) = [line for line in text.splitlines() if line.startswith("| with the analyses (as shipped)")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "1.020"  # the paired ratio: median of 1.04 and 1.00
    assert cells[6] == "1.040 (1)"  # over the quiet round only: the second shared the machine
    assert cells[8] == "0.45 cores (up to 0.90)"
    assert cells[-1] == "1 of 2 runs (started in 2)"
    # Each run's analysis step against its own wall time, split by the helper's answer: 0.2/10.4
    # (answered), 0.6/12.0 (not).
    assert "with the analyses (as shipped), helper answered (1 runs): median 1.9% (from 1.9% to 1.9%)" in text
    assert "with the analyses (as shipped), not (1 runs): median 5.0%" in text
    assert "| analysis (all) | 0.200 s | 0.600 s |" in text
    assert "the demos ran on 2" in text


def test_waiting_for_a_quiet_second_ends_at_the_first_or_at_the_limit(monkeypatch):
    readings = iter([0.0, 1.5, 1.5, 1.6])  # a second with 1.5 cores of others, then one with 0.1
    monkeypatch.setattr(bench, "_machine_busy", lambda: next(readings))
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    assert bench.wait_quiet(60.0) is True
    monkeypatch.setattr(bench, "_machine_busy", lambda: next(busy))
    busy = iter(range(0, 1000, 2))  # always two cores busy
    clock = iter(range(100))
    monkeypatch.setattr(bench.time, "monotonic", lambda: float(next(clock)))
    assert bench.wait_quiet(5.0) is False
