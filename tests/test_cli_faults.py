"""The command line under Ctrl-C and broken run folders: one clear line, a telling exit status."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lib_pinning import cli
from lib_pinning.cli import EXIT_INTERRUPTED, main
from lib_pinning.generator import ToyGenerator
from lib_pinning.store import RunStore

TINY = ["--batch-size", "2", "--steps", "4", "--generations", "2", "--cma-lambda", "3", "--granularity", "phrase",
        "--stop-early", "false"]


def only_run(runs_dir: Path) -> RunStore:
    (root,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return RunStore.open(root)


def ctrl_c_on_calls(monkeypatch, calls: set[int]) -> None:
    """The toy generator receives a real SIGINT on the given (1-based) calls."""
    original = ToyGenerator.generate
    count = {"n": 0}

    def generate(self, request):
        count["n"] += 1
        if count["n"] in calls:
            signal.raise_signal(signal.SIGINT)
        return original(self, request)

    monkeypatch.setattr(ToyGenerator, "generate", generate)


def test_an_interrupted_run_exits_130(tmp_path, monkeypatch, capsys):
    ctrl_c_on_calls(monkeypatch, {3})
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == EXIT_INTERRUPTED == 130
    assert "status:        interrupted" in capsys.readouterr().out
    assert only_run(tmp_path).read_run()["status"] == "interrupted"


def test_ctrl_c_twice_during_the_baseline_is_one_line(tmp_path, monkeypatch, capsys):
    ctrl_c_on_calls(monkeypatch, {1})
    original = ToyGenerator.generate

    def second_ctrl_c(self, request):
        batch = original(self, request)
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, before the baseline is saved
        return batch

    monkeypatch.setattr(ToyGenerator, "generate", second_ctrl_c)
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == EXIT_INTERRUPTED
    assert "before the baseline batch was generated" in capsys.readouterr().err
    assert only_run(tmp_path).read_run()["status"] == "interrupted"


def test_ctrl_c_before_the_handler_is_installed_marks_the_run_interrupted(tmp_path, monkeypatch, capsys):
    def interrupted(self, event):
        raise KeyboardInterrupt  # at the run's first event, before execute() catches Ctrl-C

    monkeypatch.setattr(cli._Progress, "__call__", interrupted)
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    assert only_run(tmp_path).read_run()["status"] == "interrupted"


def test_ctrl_c_while_the_run_folder_is_created(tmp_path, monkeypatch):
    import lib_pinning.new_run as new_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(new_run, "PinningOptimizer", interrupted)
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == EXIT_INTERRUPTED
    assert only_run(tmp_path).read_run()["status"] == "interrupted"


def test_ctrl_c_during_the_final_report_still_prints_the_summary(tmp_path, monkeypatch, capsys):
    from lib_pinning.report import Reporter

    original = Reporter.update

    def update(self, store, final=False):
        if final:
            raise KeyboardInterrupt
        original(self, store, final)

    monkeypatch.setattr(Reporter, "update", update)
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == 0
    assert "status:        finished" in capsys.readouterr().out
    assert only_run(tmp_path).read_run()["status"] == "finished"


@pytest.mark.parametrize("content", ["[]", "{}", "[1, 2"])
@pytest.mark.parametrize("command", ["resume", "report"])
def test_a_malformed_run_json_is_exit_2(tmp_path, capsys, command, content):
    folder = tmp_path / "00000-broken"
    folder.mkdir()
    (folder / "run.json").write_text(content)
    if command == "report" and content == "{}":
        assert main([command, str(folder)]) == 0  # an empty record still gets a (thin) report
        return
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
