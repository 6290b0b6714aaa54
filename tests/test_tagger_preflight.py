"""A tagger run's input is answered before anything is generated (no run folder), and the toy
model brings its own tagger for any tagger name, as it brings its own CLIP."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from lib_pinning.cli import main  # noqa: E402
from lib_pinning.generator import ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.objectives.tagger import check_tagger_input, tagger_files  # noqa: E402
from lib_pinning.objectives.tagger_toy import TOY_FOLDER, TOY_TAGGER_SIZE, build_toy_tagger  # noqa: E402
from lib_pinning.objectives.tagger_runtime import TaggerSession  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.options_model import OptionError, PinningInputError  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402

FAST = ToySettings(steps=6, cfg_scale=1.5)


def options(tmp_path: Path, **changes) -> PinningOptions:
    return PinningOptions(**{"tagger_tags": "red", "models_dir": str(tmp_path / "models"), "cli_log": False, **changes})


def test_the_toy_builds_its_tagger_once_for_any_name_and_a_folder_is_used_as_given(tmp_path):
    generator = ToyGenerator(FAST)
    files = tagger_files(options(tmp_path, tagger_model="wd-eva02-large-tagger-v3"), generator)
    assert files.model == tmp_path / "models" / "taggers" / TOY_FOLDER / "model.onnx"
    assert TaggerSession(files.model, files.tags).size == TOY_TAGGER_SIZE  # a WD14 model's input size
    stamp = files.model.stat().st_mtime_ns
    again = tagger_files(options(tmp_path, tagger_model="wd-vit-tagger-v3"), generator)
    assert again.model == files.model and again.model.stat().st_mtime_ns == stamp  # not rebuilt
    own = build_toy_tagger(tmp_path / "mine", size=32)
    assert tagger_files(options(tmp_path, tagger_model=str(own)), generator).model == own / "model.onnx"


def test_a_tag_the_tagger_does_not_know_is_named_with_the_nearest(tmp_path):
    with pytest.raises(PinningInputError, match=r"'rde' is not one of the tagger's .* did you mean red"):
        check_tagger_input(options(tmp_path, tagger_tags="rde"), ToyGenerator(FAST))
    check_tagger_input(options(tmp_path, tagger_tags="red", tagger_negative_tags="dark"), ToyGenerator(FAST))


def test_a_missing_tagger_or_onnxruntime_names_the_tagger_option(tmp_path, monkeypatch):
    with pytest.raises(OptionError, match=r"Tagger.*must hold exactly one \.onnx model") as missing:
        check_tagger_input(options(tmp_path, tagger_model=str(tmp_path / "nowhere") + "/"), ToyGenerator(FAST))
    assert missing.value.key == "tagger_model"
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(OptionError, match="needs onnxruntime: pip install onnxruntime") as no_runtime:
        check_tagger_input(options(tmp_path), ToyGenerator(FAST))
    assert no_runtime.value.key == "tagger_model"


def test_bad_tagger_input_leaves_no_run_folder(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(PinningInputError, match="rde"):
        PinningRun.start(generator=ToyGenerator(FAST), prompt="red circle", negative_prompt="",
                         seeds=derive_seeds(1, 2), options=options(tmp_path, tagger_tags="rde"), runs_dir=runs)
    assert not runs.exists() or not any(runs.iterdir())


def test_the_demo_refuses_an_unknown_booru_tag_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"),
              "--tagger-tags", "red, rde"])
    assert exit_.value.code == 2
    assert "Booru tag 'rde'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
