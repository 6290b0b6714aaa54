"""The report under faults: a failed drawing is retried, a failed refresh is not silent, and live
updates keep to their share of the run's time (measured on a simulated clock)."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace


from lib_pinning.report import Reporter, layout, media, plots
from lib_pinning.report import reporter as reporter_module
from tests.report_synthetic import SyntheticRun

LAMBDA = 3


def test_an_artifact_whose_drawing_failed_is_drawn_by_the_next_update(tmp_path: Path, monkeypatch) -> None:
    run = SyntheticRun(tmp_path / "00000-retry", lambda_=LAMBDA, batch=2, size=8, generations=2)
    run.baseline()
    run.generation(1)
    original = media.batch_gif
    monkeypatch.setattr(media, "batch_gif", lambda paths: (_ for _ in ()).throw(OSError(errno.ENOSPC, "disk full")))
    reporter = Reporter(budget=None)
    reporter.update(run.store)
    gif = run.store.individual_dir(1, 0) / layout.INDIVIDUAL_GIF
    assert not gif.exists()
    assert reporter.failures == 1, "after a full disk the update draws nothing more"
    assert reporter.pending > 1 + LAMBDA - 1, "the failed item and the rest wait"

    monkeypatch.setattr(media, "batch_gif", original)  # room again
    run.generation(2)
    reporter.update(run.store)
    assert gif.is_file() and reporter.pending == 0
    reporter.update(run.store, final=True)
    assert reporter.pending == 0


def test_a_generation_plot_that_failed_is_retried_with_its_data(tmp_path: Path, monkeypatch) -> None:
    run = SyntheticRun(tmp_path / "00001-retry", lambda_=LAMBDA, batch=2, size=8, generations=1)
    run.baseline()
    run.generation(1)
    reporter = Reporter(budget=None)
    original = plots.GenerationLossPlot.render
    calls = {"n": 0}

    def flaky(self, pairs, losses, title):
        calls["n"] += 1
        if calls["n"] <= 2:  # the baseline's and generation 1's first attempts
            raise RuntimeError("a plotting error")
        return original(self, pairs, losses, title)

    monkeypatch.setattr(plots.GenerationLossPlot, "render", flaky)
    reporter.update(run.store)
    plot = run.store.generation_dir(1) / layout.GENERATION_LOSS_PLOT
    assert not plot.exists() and reporter.pending == 2
    run.finish("finished")
    reporter.update(run.store, final=True)
    assert plot.is_file() and reporter.pending == 0


class _Clock:
    """A simulated perf_counter: it moves only when the test says time passed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_updates_spend_about_a_tenth_of_the_runs_time(tmp_path: Path, monkeypatch) -> None:
    """Each generation takes 1 s of (simulated) generating; drawing everything it adds would cost
    0.5 s, five times the budget. The live updates must then spend at most 10% of the generating
    time (plus one item: an update that runs always draws one) and use most of that share, while
    the final update completes the report."""
    clock = _Clock()
    monkeypatch.setattr(reporter_module, "time", SimpleNamespace(perf_counter=clock))
    item_cost = 0.1
    for name in ("_individual_artifacts", "_generation_artifacts", "_run_plots"):
        original = getattr(Reporter, name)

        def costly(self, *args, _original=original):
            clock.now += item_cost
            return _original(self, *args)

        monkeypatch.setattr(Reporter, name, costly)

    generations = 25
    run = SyntheticRun(tmp_path / "00002-budget", lambda_=LAMBDA, batch=2, size=8, generations=generations)
    reporter = Reporter()  # the default budget
    run.baseline()
    generating = 0.0
    for generation in range(1, generations + 1):
        run.generation(generation)
        clock.now += 1.0  # the generation's batches
        generating += 1.0
        reporter.update(run.store)
    assert reporter.skipped > 0 and reporter.pending > 0, "the work outgrows the budget"
    assert reporter.spent <= 0.1 * generating + item_cost + 1e-9
    assert reporter.spent >= 0.05 * generating, "the share is used, not wasted"

    run.finish("finished")
    reporter.update(run.store, final=True)
    assert reporter.pending == 0


def test_a_failing_final_refresh_is_in_the_result_and_the_webui_lines(tmp_path: Path) -> None:
    from lib_pinning.webui.result import report_lines
    from tests.test_run import start

    class Broken:
        def update(self, store, final=False):
            raise OSError(errno.ENOSPC, "No space left on device")

    result = start(tmp_path, generations=1).execute(reporter=Broken())
    assert result.status == "finished" and "No space left" in result.report_error
    (line,) = report_lines(result)
    assert "could not be written" in line and "python -m lib_pinning report" in line and str(result.run_dir) in line

    fine = start(tmp_path, generations=1).execute()
    assert fine.report_error is None and report_lines(fine) == []


def test_records_of_the_wrong_shape_are_skipped_not_a_traceback(tmp_path: Path, caplog) -> None:
    run = SyntheticRun(tmp_path / "00009-shapes", lambda_=2, batch=2, size=8)
    run.baseline()
    for generation in (1, 2):
        run.generation(generation)
    (run.store.root / "gen-001/ind-001/batch_stats.json").write_text("[]")
    (run.store.root / "gen-002/generation.json").write_text('["not", "a", "summary"]')
    with caplog.at_level("WARNING"):
        Reporter(budget=None).update(run.store, final=True)
    assert (run.store.root / "index.html").is_file()
    assert "gen-001/ind-001/batch_stats.json" in caplog.text and "gen-002/generation.json" in caplog.text
