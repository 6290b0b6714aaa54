"""CLIP encoding (objectives.clip) and the verified weights downloader (objectives.weights)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib_pinning.objectives import clip as clip_mod
from lib_pinning.objectives import weights as weights_mod
from lib_pinning.objectives.clip import ClipEncoder, ClipWeights, load_clip, split_model_name
from lib_pinning.objectives.weights import (
    WeightsError,
    WeightsFile,
    WeightsHashError,
    WeightsUnavailableError,
    ensure_weights,
    read_record,
    record_path,
    verify_file,
)
from tests.clip_env import ensure_open_clip, tiny_model_name
from tests.file_server import ServedFiles, closed_port, serve_files

REPO = Path(__file__).resolve().parents[1]


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (low-frequency content, like real images)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def tiny() -> tuple[ClipEncoder, object]:
    """The tiny random CLIP through our loader, plus open_clip's own eval transform for it."""
    open_clip = ensure_open_clip()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    torch.manual_seed(0)
    encoder = load_clip(tiny_model_name(), None)
    transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(encoder.model)), is_train=False)
    return encoder, transform


# ---- import hygiene -------------------------------------------------------------------------------


def test_engine_imports_without_open_clip() -> None:
    code = (
        "import sys\n"
        "import lib_pinning.objectives.clip, lib_pinning.objectives.aesthetic\n"
        "import lib_pinning.objectives.tags, lib_pinning.objectives.targets\n"
        "assert 'open_clip' not in sys.modules and 'torchvision' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ---- preprocessing and encoding -------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(64, 64), (96, 128), (150, 100), (40, 50)])
def test_preprocess_matches_open_clip_on_tensors(tiny, hw) -> None:
    encoder, transform = tiny
    images = smooth_images(3, *hw, seed=hw[0])
    ours = encoder.preprocess(images)
    theirs = torch.stack([transform(img) for img in images])
    assert ours.shape == theirs.shape == (3, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_preprocess_matches_open_clip_pil_pipeline(tiny) -> None:
    """Against the transform users normally run (PIL in, 8-bit): equal up to PIL's 8-bit rounding."""
    from PIL import Image

    encoder, transform = tiny
    images = (smooth_images(2, 120, 90, seed=3) * 255).round() / 255
    ours = encoder.preprocess(images)
    pil = [Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for img in images]
    theirs = torch.stack([transform(p) for p in pil])
    diff = (ours - theirs).abs()
    # One 8-bit step is 1/255/std ~ 0.015 after normalisation; PIL rounds its resampled output.
    assert float(diff.max()) < 0.02
    assert float(diff.mean()) < 0.005


def test_encode_images_normalised_and_equal_to_model(tiny) -> None:
    encoder, transform = tiny
    images = smooth_images(4, 80, 80, seed=5)
    emb = encoder.encode_images(images)
    assert emb.shape == (4, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    with torch.no_grad():
        direct = encoder.model.encode_image(torch.stack([transform(i) for i in images]))
    torch.testing.assert_close(emb, torch.nn.functional.normalize(direct, dim=1), atol=1e-4, rtol=0)


def test_embedding_cache_by_content(tiny) -> None:
    encoder, _ = tiny
    encoder.clear_cache()
    images = smooth_images(3, 64, 64, seed=7)
    first = encoder.encode_images(images)
    assert (encoder.hits, encoder.misses) == (0, 3)
    # Same content in a new tensor (and a duplicate within the batch): no new encoding.
    again = encoder.encode_images(torch.cat([images.clone(), images[:1].clone()]))
    assert (encoder.hits, encoder.misses) == (4, 3)
    torch.testing.assert_close(again[:3], first, atol=0, rtol=0)
    torch.testing.assert_close(again[3], first[0], atol=0, rtol=0)
    changed = images.clone()
    changed[0, 0, 0, 0] += 1e-3
    encoder.encode_images(changed[:1])
    assert encoder.misses == 4


def test_embedding_cache_is_bounded() -> None:
    ensure_open_clip()
    encoder = load_clip(tiny_model_name(), None, cache_size=2)
    encoder.encode_images(smooth_images(5, 64, 64, seed=9))
    assert len(encoder._cache) == 2
    images = smooth_images(5, 64, 64, seed=9)
    encoder.encode_images(images[3:])  # the two most recent are kept
    assert encoder.hits == 2
    # A cached image next to more new ones than the cache holds: still answered (from this call).
    mixed = torch.cat([images[4:], smooth_images(3, 64, 64, seed=10)])
    emb = encoder.encode_images(mixed)
    assert emb.shape == (4, 32) and len(encoder._cache) == 2


def test_encode_text(tiny) -> None:
    encoder, _ = tiny
    emb = encoder.encode_text(["a red circle", "a blue square", "a red circle"])
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(emb[0], emb[2], atol=0, rtol=0)
    assert not torch.allclose(emb[0], emb[1])
    assert encoder.encode_text("a red circle").shape == (32,)


def test_rejects_bad_images(tiny) -> None:
    encoder, _ = tiny
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encoder.encode_images(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="floating point"):
        encoder.encode_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_unknown_weights_and_names() -> None:
    with pytest.raises(ValueError, match="ViT-L-14/openai"):
        load_clip("ViT-L-14", "no-such-tag-or-file")
    assert split_model_name("ViT-B-32/openai") == ("ViT-B-32", "openai")
    with pytest.raises(ValueError, match="architecture/tag"):
        split_model_name("ViT-B-32")


def test_registry_pins_safetensors_at_a_revision() -> None:
    for (name, tag), entry in clip_mod.CLIP_WEIGHTS.items():
        spec = entry.weights
        assert spec.filename.endswith(".safetensors"), "registry files must not be pickles"
        assert "/resolve/main/" not in spec.url and spec.sha256 and spec.source
    assert ("ViT-L-14", "openai") in clip_mod.CLIP_WEIGHTS and ("ViT-B-32", "openai") in clip_mod.CLIP_WEIGHTS


def test_load_from_local_checkpoint_file(tiny, tmp_path) -> None:
    from safetensors.torch import save_file

    encoder, _ = tiny
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(path))
    other = load_clip(tiny_model_name(), str(path))
    images = smooth_images(2, 64, 64, seed=11)
    torch.testing.assert_close(other.encode_images(images), encoder.encode_images(images), atol=1e-6, rtol=0)


def test_registry_entry_downloads_verifies_and_loads(tiny, tmp_path, monkeypatch) -> None:
    """A (name, tag) pair goes through our downloader into the models dir, then open_clip gets the path."""
    from safetensors.torch import save

    encoder, _ = tiny
    payload = save({k: v.contiguous() for k, v in encoder.model.state_dict().items()})
    files = ServedFiles({"/tiny.safetensors": payload})
    with serve_files(files) as base:
        spec = WeightsFile("tiny-test.safetensors", f"{base}/tiny.safetensors", hashlib.sha256(payload).hexdigest())
        monkeypatch.setitem(clip_mod.CLIP_WEIGHTS, (tiny_model_name(), "test"), ClipWeights(spec, quick_gelu=False))
        loaded = load_clip(tiny_model_name(), "test", models_dir=tmp_path)
    assert (tmp_path / "tiny-test.safetensors").read_bytes() == payload
    images = smooth_images(2, 64, 64, seed=13)
    torch.testing.assert_close(loaded.encode_images(images), encoder.encode_images(images), atol=1e-6, rtol=0)
    # Offline afterwards: the verified file is used, nothing is fetched.
    again = load_clip(tiny_model_name(), "test", models_dir=tmp_path, download=False)
    assert again.embed_dim == 32


# ---- the downloader -------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_correct_hash(tmp_path) -> None:
    files = ServedFiles({"/w.bin": PAYLOAD})
    with serve_files(files) as base:
        path = ensure_weights(WeightsFile("w.bin", f"{base}/w.bin", PAYLOAD_SHA, len(PAYLOAD)), tmp_path / "models")
    assert path == tmp_path / "models" / "w.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "models" / "w.bin.part").exists()
    record = read_record(path)
    assert record is not None and record["sha256"] == PAYLOAD_SHA and record["pinned"] is True


def test_download_with_wrong_hash_is_refused_and_cleaned_up(tmp_path) -> None:
    files = ServedFiles({"/w.bin": PAYLOAD})
    with serve_files(files) as base, pytest.raises(WeightsHashError, match="partial file was removed"):
        ensure_weights(WeightsFile("w.bin", f"{base}/w.bin", "0" * 64), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_refused_before_download(tmp_path) -> None:
    files = ServedFiles({"/w.bin": PAYLOAD})
    with serve_files(files) as base, pytest.raises(WeightsHashError, match="bytes"):
        ensure_weights(WeightsFile("w.bin", f"{base}/w.bin", PAYLOAD_SHA, len(PAYLOAD) + 1), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_file_url_and_directory(tmp_path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/w.bin"
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_weights(WeightsFile("w.bin", url, PAYLOAD_SHA), tmp_path / "models", timeout=5)
    message = str(info.value)
    assert "w.bin" in message and url in message and str(tmp_path / "models") in message
    assert PAYLOAD_SHA in message


def test_missing_file_without_downloads(tmp_path) -> None:
    with pytest.raises(WeightsUnavailableError, match="downloads are turned off"):
        ensure_weights(WeightsFile("w.bin", "https://example.invalid/w.bin"), tmp_path, download=False)


def test_http_error_is_unavailable(tmp_path) -> None:
    with serve_files(ServedFiles()) as base, pytest.raises(WeightsUnavailableError, match="HTTP 404"):
        ensure_weights(WeightsFile("w.bin", f"{base}/w.bin", PAYLOAD_SHA), tmp_path)


def test_interrupted_download_resumes(tmp_path) -> None:
    files = ServedFiles({"/w.bin": PAYLOAD})
    files.truncate_at = 300_000
    spec_dir = tmp_path / "models"
    with serve_files(files) as base:
        spec = WeightsFile("w.bin", f"{base}/w.bin", PAYLOAD_SHA)
        with pytest.raises(WeightsUnavailableError, match="run again to resume"):
            ensure_weights(spec, spec_dir, progress=False)
        assert (spec_dir / "w.bin.part").stat().st_size == 300_000
        assert not (spec_dir / "w.bin").exists()
        files.truncate_at = None
        path = ensure_weights(spec, spec_dir, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert files.requests[-1] == ("/w.bin", "bytes=300000-")


def test_resume_from_server_without_ranges_restarts(tmp_path) -> None:
    (tmp_path / "w.bin.part").write_bytes(b"garbage that is not the start of the file")
    files = ServedFiles({"/w.bin": PAYLOAD})
    files.ranges = False
    with serve_files(files) as base:
        path = ensure_weights(WeightsFile("w.bin", f"{base}/w.bin", PAYLOAD_SHA), tmp_path)
    assert path.read_bytes() == PAYLOAD


def test_trust_on_first_use_records_and_refuses_a_different_file(tmp_path) -> None:
    files = ServedFiles({"/w.bin": PAYLOAD})
    with serve_files(files) as base:
        spec = WeightsFile("w.bin", f"{base}/w.bin", sha256=None)
        path = ensure_weights(spec, tmp_path)
        record = json.loads(record_path(path).read_text())
        assert record["sha256"] == PAYLOAD_SHA and record["pinned"] is False
        # The file goes; the server now sends something else; the record holds.
        path.unlink()
        files.content["/w.bin"] = PAYLOAD[::-1]
        with pytest.raises(WeightsHashError, match="expected"):
            ensure_weights(spec, tmp_path)
    assert not path.exists() and not (tmp_path / "w.bin.part").exists()


def test_tampered_local_file_is_refused_but_kept(tmp_path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    spec = WeightsFile("w.bin", "https://example.invalid/w.bin", sha256=None)
    assert ensure_weights(spec, tmp_path, download=False) == path  # first use: recorded
    path.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(WeightsHashError, match="recorded on first use"):
        ensure_weights(spec, tmp_path, download=False)
    assert path.exists(), "a user's file is never deleted"
    pinned = WeightsFile("w.bin", "https://example.invalid/w.bin", sha256=PAYLOAD_SHA)
    with pytest.raises(WeightsHashError, match="pinned"):
        ensure_weights(pinned, tmp_path, download=False)


def test_verified_file_is_not_hashed_again(tmp_path, monkeypatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    calls = []
    real = weights_mod.sha256_of
    monkeypatch.setattr(weights_mod, "sha256_of", lambda p: calls.append(p) or real(p))
    assert verify_file(path, PAYLOAD_SHA) == PAYLOAD_SHA
    assert verify_file(path, PAYLOAD_SHA) == PAYLOAD_SHA
    assert len(calls) == 1
    path.write_bytes(PAYLOAD[::-1])  # changed size or mtime: hashed again, and refused
    with pytest.raises(WeightsHashError):
        verify_file(path, PAYLOAD_SHA)


def test_weights_file_validation() -> None:
    with pytest.raises(ValueError, match="bare file name"):
        WeightsFile("../x.bin", "https://example.invalid/x")
    with pytest.raises(ValueError, match="http"):
        WeightsFile("x.bin", "file:///etc/passwd")
    with pytest.raises(ValueError, match="64 hex"):
        WeightsFile("x.bin", "https://example.invalid/x", sha256="abc")


def test_unreadable_record_is_an_error(tmp_path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    record_path(path).write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable"):
        verify_file(path)
