"""Locating and downloading WD14 taggers: the WebUI's tagger folders, our folder, verified and
resumable downloads from a server on 127.0.0.1, the offline and unpinned refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
from pathlib import Path

import pytest

from lib_pinning.objectives.tagger_models import (
    MODEL_FILE,
    TAGGERS,
    TAGS_FILE,
    TaggerNotFoundError,
    TaggerSpec,
    locate_tagger,
    webui_tagger_dirs,
)
from lib_pinning.objectives.weights import WeightsHashError, WeightsUnavailableError
from tests.file_server import ServedFiles, closed_port, serve_files

MODEL = bytes(range(256)) * 64  # 16 KiB stands in for model.onnx
TAGS = b"tag_id,name,category,count\n1,smile,0,10\n"
NAME = "wd-vit-tagger-v3"
UNPINNED = "wd-v1-4-moat-tagger-v2"  # no public listing of the v1.4 files' hashes was found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(name: str = NAME) -> ServedFiles:
    root = f"/SmilingWolf/{name}/resolve/main"
    return ServedFiles({f"{root}/{MODEL_FILE}": MODEL, f"{root}/{TAGS_FILE}": TAGS})


def pinned(model_sha: str = sha(MODEL), tags_sha: str = sha(TAGS)) -> dict[str, TaggerSpec]:
    return {NAME: TaggerSpec(NAME, f"SmilingWolf/{NAME}", model_sha, tags_sha, source="the test")}


def test_download_with_good_hashes_lands_in_our_folder_once(tmp_path):
    files = served()
    with serve_files(files) as url:
        found = locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned())
        assert found.model == tmp_path / "taggers" / NAME / MODEL_FILE
        assert found.model.read_bytes() == MODEL and found.tags.read_bytes() == TAGS
        assert len(files.requests) == 2
        again = locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned())
        assert again == found and len(files.requests) == 2


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path):
    with serve_files(served()) as url:
        with pytest.raises(WeightsHashError, match="SHA-256"):
            locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned("0" * 64))
    folder = tmp_path / "taggers" / NAME
    assert not (folder / MODEL_FILE).exists() and not (folder / (MODEL_FILE + ".part")).exists()


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path):
    files = served()
    files.truncate_at = 5000  # the first response of each file drops after 5000 bytes
    with serve_files(files) as url:
        path = f"/SmilingWolf/{NAME}/resolve/main/{MODEL_FILE}"
        with pytest.raises(WeightsUnavailableError, match="resume"):
            locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned())
        part = tmp_path / "taggers" / NAME / (MODEL_FILE + ".part")
        assert part.stat().st_size == 5000
        files.truncate_at = None
        found = locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned())
        assert (path, "bytes=5000-") in files.requests
        assert found.model.read_bytes() == MODEL and not part.exists()


def test_offline_message_names_the_file_the_url_and_the_folder(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(WeightsUnavailableError) as caught:
        locate_tagger(NAME, tmp_path, search_dirs=[], base_url=url, catalogue=pinned())
    message = str(caught.value)
    assert MODEL_FILE in message and url in message and str(tmp_path / "taggers" / NAME) in message


def test_unpinned_models_are_not_downloaded_and_the_refusal_says_where_to_put_them(tmp_path):
    files = served(UNPINNED)
    with serve_files(files) as url:
        with pytest.raises(TaggerNotFoundError) as caught:
            locate_tagger(UNPINNED, tmp_path, search_dirs=[], base_url=url)
        assert files.requests == []
    message = str(caught.value)
    assert "no SHA-256 is pinned" in message and str(tmp_path / "taggers" / UNPINNED) in message
    assert f"{url}/SmilingWolf/{UNPINNED}/resolve/main/{MODEL_FILE}" in message


def test_the_v3_models_are_pinned_at_a_revision_with_their_sizes_and_their_source():
    v3 = [spec for name, spec in TAGGERS.items() if name.endswith("-v3")]
    assert {s.name for s in v3} >= {"wd-vit-tagger-v3", "wd-swinv2-tagger-v3", "wd-eva02-large-tagger-v3"}
    for spec in v3:
        model, tags = spec.files()
        assert re.fullmatch(r"[0-9a-f]{40}", spec.revision), spec.name
        assert model.url == f"https://huggingface.co/SmilingWolf/{spec.name}/resolve/{spec.revision}/{MODEL_FILE}"
        assert re.fullmatch(r"[0-9a-f]{64}", model.sha256 or "") and re.fullmatch(r"[0-9a-f]{64}", tags.sha256 or "")
        assert model.size and tags.size == 308_468 and spec.revision in spec.source
    vit = TAGGERS["wd-vit-tagger-v3"]
    assert (vit.revision[:8], vit.model_size) == ("7f6b584d", 378_536_310)
    assert all(spec.model_sha256 is None for name, spec in TAGGERS.items() if name.startswith("wd-v1-4-"))


def test_a_pinned_tagger_is_downloaded_from_its_revision_and_a_file_off_the_pin_is_refused(tmp_path):
    spec = dataclasses.replace(
        TAGGERS[NAME], model_sha256=sha(MODEL), tags_sha256=sha(TAGS), model_size=len(MODEL), tags_size=len(TAGS),
    )
    root = f"/SmilingWolf/{NAME}/resolve/{spec.revision}"
    files = ServedFiles({f"{root}/{MODEL_FILE}": MODEL, f"{root}/{TAGS_FILE}": TAGS})
    with serve_files(files) as url:
        found = locate_tagger(NAME, tmp_path / "a", search_dirs=[], base_url=url, catalogue={NAME: spec})
        assert found.model.read_bytes() == MODEL
        assert [path for path, _ in files.requests] == [f"{root}/{MODEL_FILE}", f"{root}/{TAGS_FILE}"]
        # A model.onnx placed by hand under a pinned name must be the pinned file: nothing is fetched.
        write_tagger(tmp_path / "b" / "taggers" / NAME, model=MODEL[::-1])
        with pytest.raises(WeightsHashError, match="SHA-256"):
            locate_tagger(NAME, tmp_path / "b", search_dirs=[], base_url=url, catalogue={NAME: spec})
        assert len(files.requests) == 2


def write_tagger(folder: Path, model: bytes = MODEL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(model)
    (folder / TAGS_FILE).write_bytes(TAGS)
    return folder


def test_files_placed_by_hand_are_trusted_once_and_a_change_is_refused(tmp_path):
    folder = write_tagger(tmp_path / "taggers" / UNPINNED)
    files = locate_tagger(UNPINNED, tmp_path, search_dirs=[])
    assert files.model == folder / MODEL_FILE
    (folder / MODEL_FILE).write_bytes(MODEL[::-1])
    with pytest.raises(WeightsHashError, match="recorded on first use"):
        locate_tagger(UNPINNED, tmp_path, search_dirs=[])


def test_the_webui_tagger_extensions_folders_come_first(tmp_path):
    ours = write_tagger(tmp_path / "ours" / "taggers" / NAME)
    onnx_root = tmp_path / "TaggerOnnx"
    write_tagger(onnx_root / NAME)
    found = locate_tagger(NAME, tmp_path / "ours", search_dirs=[onnx_root])
    assert found.model == onnx_root / NAME / MODEL_FILE and found.model != ours / MODEL_FILE
    # The extension's Hugging Face cache: models--<org>--<repo>/snapshots/<revision>/.
    cache = tmp_path / "interrogators"
    snapshot = write_tagger(cache / f"models--SmilingWolf--{NAME}" / "snapshots" / "abc123")
    assert locate_tagger(NAME, None, search_dirs=[cache]).model == snapshot / MODEL_FILE


def test_webui_tagger_dirs_read_the_running_webui_only(monkeypatch, tmp_path):
    monkeypatch.delitem(__import__("sys").modules, "modules.paths", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "modules.shared", raising=False)
    assert webui_tagger_dirs() == []
    paths = types.SimpleNamespace(models_path=str(tmp_path / "models"))
    shared = types.SimpleNamespace(
        cmd_opts=types.SimpleNamespace(onnxtagger_path=str(tmp_path / "onnx")),
        opts=types.SimpleNamespace(tagger_hf_cache_dir=str(tmp_path / "hf")),
    )
    monkeypatch.setitem(__import__("sys").modules, "modules.paths", paths)
    monkeypatch.setitem(__import__("sys").modules, "modules.shared", shared)
    assert webui_tagger_dirs() == [
        tmp_path / "onnx", tmp_path / "hf", tmp_path / "models" / "TaggerOnnx", tmp_path / "models" / "interrogators",
    ]


def test_a_folder_as_the_model_name_and_unknown_names(tmp_path):
    folder = write_tagger(tmp_path / "my-finetune")
    assert locate_tagger(str(folder), tmp_path, search_dirs=[]).model == folder / MODEL_FILE
    (folder / TAGS_FILE).unlink()
    with pytest.raises(TaggerNotFoundError, match="exactly one .onnx model and selected_tags.csv"):
        locate_tagger(str(folder), tmp_path, search_dirs=[])
    with pytest.raises(TaggerNotFoundError, match="Unknown tagger 'wd-nonsense'.*wd-eva02-large-tagger-v3"):
        locate_tagger("wd-nonsense", tmp_path, search_dirs=[])
