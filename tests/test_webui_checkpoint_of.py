"""Which checkpoint run.json names (lib_pinning.webui.generator.checkpoint_of).

Found in the real Forge: it loads the checkpoint at the first process_images, so a run started
before any generation recorded model None ("model: auto" in the report), and a run after a
checkpoint change in the UI would have named the previous model. The shapes here are Forge's
(modules/sd_models.py: model_data.forge_loading_parameters["checkpoint_info"]) and A1111's
(shared.sd_model.sd_checkpoint_info, sd_model_hash).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from lib_pinning.webui.generator import checkpoint_of


@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    package = types.ModuleType("modules")
    package.__path__ = []  # a package, so `from modules import sd_models` looks up the attribute
    sd_models = types.ModuleType("modules.sd_models")
    package.sd_models = sd_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modules", package)
    monkeypatch.setitem(sys.modules, "modules.sd_models", sd_models)
    yield sd_models


def info(name: str, shorthash: str | None) -> SimpleNamespace:
    return SimpleNamespace(name_for_extra=name, title=f"{name}.safetensors [{shorthash}]", shorthash=shorthash)


def test_forge_names_the_checkpoint_it_will_load(fake_modules: types.ModuleType) -> None:
    fake_modules.model_data = SimpleNamespace(  # type: ignore[attr-defined]
        forge_loading_parameters={"checkpoint_info": info("chosen", "abc1234567")}, sd_model=None)
    fake_initial_model = SimpleNamespace(cond_stage_model=None)  # no sd_checkpoint_info before the first load
    assert checkpoint_of(SimpleNamespace(sd_model=fake_initial_model)) == ("chosen", "abc1234567")

    previous = SimpleNamespace(sd_checkpoint_info=info("previous", "0000000000"), sd_model_hash="0000000000")
    assert checkpoint_of(SimpleNamespace(sd_model=previous)) == ("chosen", "abc1234567")

    # before Forge's first load the short hash is not computed yet; it is what the load computes
    lazy = info("lazy", None)
    lazy.calculate_shorthash = lambda: "fedcba9876"
    fake_modules.model_data.forge_loading_parameters = {"checkpoint_info": lazy}  # type: ignore[attr-defined]
    assert checkpoint_of(SimpleNamespace(sd_model=fake_initial_model)) == ("lazy", "fedcba9876")


def test_a1111_names_the_loaded_model(fake_modules: types.ModuleType) -> None:
    loaded = SimpleNamespace(sd_checkpoint_info=info("loaded", "1111111111"), sd_model_hash="1111111111")
    assert checkpoint_of(SimpleNamespace(sd_model=loaded)) == ("loaded", "1111111111")


def test_no_webui_modules_and_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modules", None)  # `from modules import ...` raises ImportError
    assert checkpoint_of(SimpleNamespace(sd_model=None)) == (None, None)
