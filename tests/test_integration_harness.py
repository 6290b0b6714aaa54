"""The real-WebUI harness's own logic (tests/integration/harness.py), without starting a WebUI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration import harness

REPO = Path(__file__).resolve().parents[1]


def run_entry_point(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PINNING_")}
    clean.update(PINNING_WEBUI_TARBALLS=str(tmp_path), PINNING_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "tests.integration"], cwd=REPO, env=clean, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)


def test_without_a_webui_tree_the_integration_tests_skip_with_one_line(tmp_path: Path) -> None:
    result = run_entry_point(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("integration tests skipped: ") and "a1111-v1.10.1.tar.gz" in lines[0]


def test_ci_fails_when_the_integration_tests_would_skip(tmp_path: Path) -> None:
    result = run_entry_point(tmp_path, PINNING_REQUIRE_WEBUI="1")
    assert result.returncode == 1
    assert "PINNING_REQUIRE_WEBUI=1" in result.stderr


def test_the_extension_copy_is_what_a_clone_holds(tmp_path: Path) -> None:
    harness.copy_extension(tmp_path / "ext")
    for relative in ("install.py", "preload.py", "scripts/prompt_pinning.py", "scripts/hyperbatch_samplers.py",
                     "lib_pinning/webui/script.py", "pinning_samplers/webui.py", "javascript/prompt_pinning_hints.js"):
        assert (tmp_path / "ext" / relative).is_file(), relative
    assert not (tmp_path / "ext" / "tests").exists()
    assert not list((tmp_path / "ext").rglob("__pycache__"))


def test_a_venv_key_depends_on_the_recipe_and_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "webui"
    checkout.mkdir()
    (checkout / "launch.py").write_text("")
    (checkout / "requirements_versions.txt").write_text("gradio==3.41.2\n")
    monkeypatch.setenv("PINNING_TEST_CHECKOUT", str(checkout))

    def recipe_a(ctx: harness.VenvContext) -> None:
        ctx.pip("install", "a")

    def recipe_b(ctx: harness.VenvContext) -> None:
        ctx.pip("install", "b")

    first = harness.WebUI(name="w", tarball="none.tar.gz", env_var="PINNING_TEST_CHECKOUT", venv_recipe=recipe_a)
    key = first.key()
    assert first.key() == key
    assert harness.WebUI(name="w", tarball="none.tar.gz", env_var="PINNING_TEST_CHECKOUT",
                         venv_recipe=recipe_b).key() != key
    (checkout / "requirements_versions.txt").write_text("gradio==4.40.0\n")
    assert first.key() != key
    monkeypatch.setenv("PINNING_TEST_CHECKOUT", str(tmp_path / "missing"))
    with pytest.raises(harness.Unavailable, match="not a WebUI checkout"):
        first.source()


class FakeServer:
    """What reload_ui talks to: /config and /run/predict."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.posted: list[tuple[str, Any]] = []

    def get(self, path: str) -> harness.Response:
        assert path == "/config"
        return harness.Response(200, json.dumps(self.config))

    def post(self, path: str, body: Any) -> harness.Response:
        self.posted.append((path, body))
        return harness.Response(200, "{}")


@pytest.mark.parametrize("targets", [[7], [[7, "click"]]], ids=["gradio-3.41", "gradio-4"])
def test_reload_ui_presses_the_settings_button_through_gradio(targets: list[Any]) -> None:
    config = {"components": [{"id": 3, "props": {"elem_id": "other"}},
                             {"id": 7, "props": {"elem_id": "settings_restart_gradio"}}],
              "dependencies": [{"targets": [3]}, {"targets": targets}]}
    server = FakeServer(config)
    harness.reload_ui(server)  # type: ignore[arg-type]
    assert server.posted == [("/run/predict", {"fn_index": 1, "data": [], "session_hash": "pinning-tests"})]
    with pytest.raises(AssertionError, match="no Reload UI button"):
        harness.reload_ui(FakeServer({"components": [], "dependencies": []}))  # type: ignore[arg-type]


def test_the_tiny_text_encoders_vocabulary_is_clips(tmp_path: Path) -> None:
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch (the clip extra) is not installed")
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    try:
        import tiny_checkpoints
    finally:
        sys.path.remove(str(REPO / "tests" / "integration"))
    tiny_checkpoints.write_clip_tokenizer_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert len(vocab) == 49408
    assert (vocab["a</w>"], vocab["red</w>"], vocab[",</w>"], vocab["<|endoftext|>"]) == (320, 736, 267, 49407)
    assert len((tmp_path / "merges.txt").read_text().splitlines()) == 1 + 49152 - 256 - 2
