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
    """Every option but the ones the toy cannot serve (the aesthetic score) and the WebUI's alone
    (its extra servers) has a demo flag."""
    from lib_pinning.cli import TOY_UNSUPPORTED, WEBUI_ONLY
    from lib_pinning.generator import DemoPrompt, ToySettings
    from lib_pinning.options import PinningOptions

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    flags = {opt for action in demo._actions for opt in action.option_strings}
    for model in (PinningOptions, ToySettings, DemoPrompt):
        for spec in model.specs():
            flag = "--" + spec.key.replace("_", "-")
            assert (flag in flags) == (spec.key not in TOY_UNSUPPORTED + WEBUI_ONLY), flag


# ---- bad input: exit 2, one line naming the input and the fix, no run folder (issue 11) ------------

FAST = ["--batch-size", "2", "--steps", "2", "--generations", "1", "--cma-lambda", "2", "--granularity", "phrase"]


def refused(tmp_path: Path, capsys, *args: str, runs: Path | None = None) -> str:
    """Run the demo with `args`; assert exit 2, one stderr line and no run folder; return the line."""
    runs = runs if runs is not None else tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--runs-dir", str(runs), *FAST, *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert not runs.is_dir() or not any(runs.iterdir())
    return lines[0]


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(folder / "good.png")
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "dir.png").mkdir()
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    Image.new("L", (64, 64), 0).save(folder / "black.png")
    Image.new("L", (64, 64), 255).save(folder / "white.png")
    Image.new("L", (32, 32), 255).save(folder / "small-mask.png")
    return folder


@pytest.mark.parametrize("name, expected", [
    ("zero.png", "zero.png is an empty file"),
    ("text.png", "text.png is not an image file"),
    ("truncated.png", "truncated.png is damaged or truncated"),
    ("dir.png", "dir.png is a folder, not an image file"),
    ("tiny.png", "tiny.png is 1x1 (width x height) but the images are 64x64"),
    ("missing.png", "missing.png does not exist"),
])
def test_unusable_target_images(tmp_path, capsys, files, name, expected):
    assert expected in refused(tmp_path, capsys, "--target-images", str(files / name))


@pytest.mark.parametrize("masks, extra, expected", [
    (["black.png"], ["--flip-loss", "target_distance"], "black.png is entirely black"),
    (["small-mask.png"], ["--flip-loss", "target_distance"], "small-mask.png is 32x32"),
    (["white.png", "white.png"], ["--flip-loss", "target_distance"], "2 mask(s) for 1 target image(s)"),
    (["white.png"], ["--flip-loss", "variety"], "set Image loss (flip_loss) to 'target_distance'"),
])
def test_unusable_masks(tmp_path, capsys, files, masks, extra, expected):
    line = refused(
        tmp_path, capsys, "--target-images", str(files / "good.png"), "--target-masks", *[str(files / m) for m in masks],
        *extra,
    )
    assert expected in line


def test_masks_without_targets(tmp_path, capsys, files):
    line = refused(tmp_path, capsys, "--target-masks", str(files / "white.png"), "--flip-loss", "target_distance")
    assert "but no target images" in line


def test_loss_that_needs_two_images(tmp_path, capsys):
    line = refused(tmp_path, capsys, "--flip-loss", "variety", "--batch-size", "1")
    assert "'variety'" in line and "batch size to 2 or more" in line


def test_negative_tags_only(tmp_path, capsys):
    line = refused(tmp_path, capsys, "--tags", "(red:-2)", "--flip-weight", "0")
    assert "'red' (-2)" in line and "weight of 0 or less" in line


def test_the_demo_does_not_offer_the_aesthetic_score(tmp_path, capsys):
    help_text = build_parser()._subparsers._group_actions[0].choices["demo"].format_help()
    assert "--aesthetic-weight" not in help_text and "[any value" not in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--runs-dir", str(tmp_path / "runs"), "--aesthetic-weight", "1"])
    assert exit_info.value.code == 2 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--cma-ccov1", "1", "--cma-ccovmu", "1"], "ccov1 (cma_ccov1): ccov1 1 + ccovmu 1 keep 0 of the covariance"),
    (["--cma-ccov1", "1"], "ccovmu 0"),
    (["--cma-damps", "1e-9"], "damps (cma_damps): damps 1e-09 is below cs"),
])
def test_cma_parameters_that_break_together(tmp_path, capsys, args, expected):
    assert expected in refused(tmp_path, capsys, *args)


def test_runs_dir_that_is_a_file(tmp_path, capsys, files):
    line = refused(tmp_path, capsys, runs=files / "good.png")
    assert "is a file, not a folder" in line
    line = refused(tmp_path, capsys, runs=files / "good.png" / "sub")
    assert "good.png is a file, not a folder" in line


def test_runs_dir_that_is_not_writable(tmp_path, capsys, monkeypatch):
    """os.access stands in for a read-only folder: the tests may run as root, whom chmod does not stop."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    assert "is not writable: choose a folder you can write to" in refused(tmp_path, capsys, runs=locked)
    line = refused(tmp_path, capsys, runs=locked / "new")
    assert "cannot be created" in line and not (locked / "new").exists()


def test_boolean_values_are_explained(tmp_path, capsys):
    line = refused(tmp_path, capsys, "--guard", "maybe")
    assert "'maybe' is not true or false" in line


def test_an_option_alias_is_declared_once_and_accepted_by_every_command_that_offers_the_option():
    """--booru-tags (the name issue 13 uses) is --tagger-tags: declared once in the option's spec, it
    reaches demo and pin alike (both build their flags from the specs) and shows in --help."""
    from lib_pinning.options import PinningOptions

    spec = PinningOptions.spec("tagger_tags")
    assert spec.cli_aliases == ("booru_tags",)
    parser = build_parser()
    for argv in (["demo"], ["pin", "--server", "http://127.0.0.1:1"]):
        args = parser.parse_args([*argv, "--booru-tags", "red, circle", "--booru-negative-tags", "blue"])
        assert args.tagger_tags == "red, circle" and args.tagger_negative_tags == "blue"
        assert not hasattr(args, "booru_tags")
    demo = parser._subparsers._group_actions[0].choices["demo"]
    assert "--tagger-tags TAGGER_TAGS, --booru-tags TAGGER_TAGS" in demo.format_help()
    # The alias is a flag only: infotext and JSON keep the option's one key.
    options = PinningOptions(tagger_tags="red, circle")
    assert "tagger_tags" in options.to_json() and "booru_tags" not in options.to_json()
