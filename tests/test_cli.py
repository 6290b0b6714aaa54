"""The command line: demo writes a run and a report, resume continues one, report rebuilds one."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib_pinning.cli import build_parser, main
from lib_pinning.store import RunStore

TINY = ["--batch-size", "3", "--steps", "6", "--generations", "2", "--cma-lambda", "3", "--granularity", "phrase"]


def test_demo_prints_the_pinned_prompt_and_ends_with_the_report(tmp_path, capsys):
    assert main(["demo", "--runs-dir", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("report:") and out[-1].endswith("index.html")
    report = Path(out[-1].split(":", 1)[1].strip())
    assert report.is_file()
    assert any(line.startswith("best prompt:") for line in out)
    info = RunStore.open(report.parent).read_run()
    assert info["status"] == "finished" and info["generations_done"] == 2
    assert info["options"]["granularity"] == "phrase" and info["generator"]["settings"]["steps"] == 6


def test_resume_and_report_commands(tmp_path, capsys):
    from lib_pinning.generator import ToyGenerator, ToySettings
    from lib_pinning.options import PinningOptions
    from lib_pinning.run import PinningRun, derive_seeds

    run = PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=6)), prompt="red circle, blue square", negative_prompt="",
        seeds=derive_seeds(1, 3), options=PinningOptions(generations=2, cma_lambda=3, granularity="phrase", cli_log=False),
        runs_dir=tmp_path,
    )
    checks = iter(range(100))
    stopped = run.execute(cancel=lambda: next(checks) >= 3)  # stops inside generation 1
    assert stopped.status == "interrupted"

    assert main(["resume", str(stopped.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "status:        finished" in out and "7 batches, 2 generations" in out
    (stopped.run_dir / "index.html").unlink()
    assert main(["report", str(stopped.run_dir)]) == 0
    assert (stopped.run_dir / "index.html").is_file()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--runs-dir", str(tmp_path), "--initial-std", "9"])
    assert exit_info.value.code == 2
    assert "Initial std (initial_std): 9.0 is not a number in [0.001, 2]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["resume", str(tmp_path / "nope")])
    assert "not a pinning run directory" in capsys.readouterr().err


def test_every_option_has_a_flag():
    from lib_pinning.generator import DemoPrompt, ToySettings
    from lib_pinning.options import PinningOptions

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    flags = {opt for action in demo._actions for opt in action.option_strings}
    for model in (PinningOptions, ToySettings, DemoPrompt):
        for spec in model.specs():
            assert "--" + spec.key.replace("_", "-") in flags
