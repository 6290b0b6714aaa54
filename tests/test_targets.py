"""Target images and masks from files, and the masked target-distance objective (objectives.targets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib_pinning.generator import Batch
from lib_pinning.objectives.flip import pair_flip, prepare
from lib_pinning.objectives.pinning import PinningObjective
from lib_pinning.objectives.targets import MaskedTargetObjective, TargetError, load_targets


def smooth(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 8, w // 8, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def rgb_file(path: Path, h: int, w: int, seed: int) -> tuple[Path, np.ndarray]:
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return write_png(path, array), array


def half_mask(h: int, w: int, keep: str) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    if keep == "left":
        mask[:, : w // 2] = 255
    else:
        mask[:, w // 2 :] = 255
    return mask


# ---- loading ----------------------------------------------------------------------------------------


def test_load_targets_and_masks(tmp_path) -> None:
    a, array_a = rgb_file(tmp_path / "a.png", 16, 24, 0)
    b, array_b = rgb_file(tmp_path / "b.jpg", 16, 24, 1)
    mask = write_png(tmp_path / "m.png", half_mask(16, 24, "left"))
    images, masks = load_targets([a, b], [mask, None], size=(16, 24))
    assert images.shape == (2, 3, 16, 24) and images.dtype == torch.float32
    torch.testing.assert_close(images[0], torch.from_numpy(array_a).permute(2, 0, 1).float() / 255)
    assert masks is not None and masks.shape == (2, 16, 24)
    assert float(masks[0, :, :12].min()) == 1.0 and float(masks[0, :, 12:].max()) == 0.0
    assert float(masks[1].min()) == 1.0  # no mask: everything counts


def test_without_masks(tmp_path) -> None:
    a, _ = rgb_file(tmp_path / "a.png", 8, 8, 0)
    images, masks = load_targets([a])
    assert images.shape == (1, 3, 8, 8) and masks is None
    assert load_targets([a], [""])[1] is None


def test_grey_levels_are_weights_and_colour_masks_are_converted(tmp_path) -> None:
    a, _ = rgb_file(tmp_path / "a.png", 4, 4, 0)
    grey = np.full((4, 4, 3), 128, dtype=np.uint8)
    _, masks = load_targets([a], [write_png(tmp_path / "grey.png", grey)])
    assert masks is not None
    torch.testing.assert_close(masks, torch.full((1, 4, 4), 128 / 255))


def test_size_mismatch_is_refused_naming_both_sizes(tmp_path) -> None:
    portrait, _ = rgb_file(tmp_path / "portrait.png", 24, 16, 0)  # 16 wide, 24 high
    with pytest.raises(TargetError) as info:
        load_targets([portrait], size=(16, 16))
    message = str(info.value)
    assert "portrait.png" in message and "16x24" in message and "16x16" in message


def test_targets_must_share_a_size(tmp_path) -> None:
    a, _ = rgb_file(tmp_path / "a.png", 8, 8, 0)
    b, _ = rgb_file(tmp_path / "b.png", 8, 12, 1)
    with pytest.raises(TargetError, match="b.png is 12x8"):
        load_targets([a, b])


def test_mask_size_mismatch(tmp_path) -> None:
    a, _ = rgb_file(tmp_path / "a.png", 8, 8, 0)
    mask = write_png(tmp_path / "m.png", half_mask(8, 10, "left"))
    with pytest.raises(TargetError, match="m.png is 10x8.*a.png is 8x8"):
        load_targets([a], [mask])


def test_unreadable_and_missing_files(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(TargetError, match="target image .*broken.png is not an image file"):
        load_targets([broken])
    with pytest.raises(TargetError, match="missing.png does not exist"):
        load_targets([tmp_path / "missing.png"])
    a, _ = rgb_file(tmp_path / "a.png", 8, 8, 0)
    with pytest.raises(TargetError, match="target mask .*broken.png is not an image file"):
        load_targets([a], [broken])
    with pytest.raises(TargetError, match="is a folder, not an image file"):
        load_targets([tmp_path])


def test_mask_count_and_black_masks(tmp_path) -> None:
    a, _ = rgb_file(tmp_path / "a.png", 8, 8, 0)
    black = write_png(tmp_path / "black.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(TargetError, match="1 target images but 2 masks"):
        load_targets([a], [black, black])
    with pytest.raises(TargetError, match="entirely black"):
        load_targets([a], [black])
    with pytest.raises(TargetError, match="no target images"):
        load_targets([])


# ---- the objective -----------------------------------------------------------------------------------

H = W = 64


def target_and_candidate() -> tuple[torch.Tensor, torch.Tensor]:
    """A target and a copy that differs only in columns 48..63: inside the right half, and farther
    from the left half (16 px) than FLIP's filters reach at the default observer (10 px)."""
    target = smooth(1, H, W, seed=0)
    candidate = target.clone()
    candidate[:, :, :, 48:] = 1.0 - candidate[:, :, :, 48:]
    return target, candidate


def test_difference_under_the_masked_out_half_scores_zero() -> None:
    target, candidate = target_and_candidate()
    left = torch.zeros(1, H, W)
    left[:, :, : W // 2] = 1.0
    masked = MaskedTargetObjective(target, left).score_images(candidate)
    assert masked.value == pytest.approx(0.0, abs=1e-7)
    unmasked = MaskedTargetObjective(target).score_images(candidate)
    assert unmasked.value > 0.05
    right = 1.0 - left
    assert MaskedTargetObjective(target, right).score_images(candidate).value > unmasked.value


def test_mask_averages_the_error_map() -> None:
    target, candidate = target_and_candidate()
    candidate = candidate.clone()
    candidate[:, :, 10:20, 5:15] = 0.0  # some difference in the left half as well
    mask = torch.zeros(1, H, W)
    mask[:, :, : W // 2] = 1.0
    mask[:, 40:, :] = 0.25  # soft weights count proportionally
    _, maps = pair_flip(prepare(target), prepare(candidate), [(0, 0)], error_maps=True)
    expected = float((maps[0].double() * mask[0]).sum() / mask[0].sum())
    evaluation = MaskedTargetObjective(target, mask).score_images(candidate)
    assert evaluation.value == pytest.approx(expected, rel=1e-5)  # one pair: std 0
    assert evaluation.pair_values == pytest.approx([expected], rel=1e-5)


def test_all_white_mask_equals_no_mask_and_pinning_target_distance() -> None:
    targets = smooth(2, H, W, seed=1)
    images = smooth(3, H, W, seed=2).clamp(0, 1)
    white = MaskedTargetObjective(targets, torch.ones(2, H, W)).score(Batch(images, seeds=(1, 2, 3)))
    plain = MaskedTargetObjective(targets).score_images(images)
    reference = PinningObjective(targets, "target_distance").score_images(images)
    assert white.value == pytest.approx(plain.value, rel=1e-6)
    assert plain.value == pytest.approx(reference.value, rel=1e-6)
    assert sorted(plain.pairs) == sorted(reference.pairs)
    assert len(plain.per_image["target_distance"]) == 3


def test_per_target_masks() -> None:
    """Each target is compared under its own mask."""
    target, candidate = target_and_candidate()
    left = torch.zeros(H, W)
    left[:, : W // 2] = 1.0
    objective = MaskedTargetObjective(torch.cat([target, target]), torch.stack([left, 1.0 - left]))
    values = objective.pair_values(candidate)
    assert values.shape == (2, 1)
    assert float(values[0, 0]) == pytest.approx(0.0, abs=1e-7) and float(values[1, 0]) > 0.05


def test_batch_of_another_size_is_refused() -> None:
    objective = MaskedTargetObjective(smooth(1, H, W, seed=0))
    with pytest.raises(ValueError, match="64x32 .* 64x64"):
        objective.score_images(smooth(1, 32, 64, seed=1))
    with pytest.raises(ValueError, match="masks must be"):
        MaskedTargetObjective(smooth(1, H, W, seed=0), torch.ones(1, H, W - 1))


# ---- every PIL mode read at its own scale (issue 11) ------------------------------------------------


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path) -> None:
    """convert("RGB") clips I;16 at 255, which read a mid-grey 16-bit PNG as white."""
    from PIL import Image

    levels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    images, _ = load_targets([path])
    expected = torch.from_numpy(levels / 65535.0).float()
    torch.testing.assert_close(images[0, 0], expected)
    torch.testing.assert_close(images[0, 2], expected)
    assert float(images.mean()) * 255 == pytest.approx(levels.mean() / 257, abs=0.01)
    _, masks = load_targets([path], [path])
    torch.testing.assert_close(masks[0], expected)


def test_32_bit_integer_and_float_images(tmp_path) -> None:
    from PIL import Image

    ints = np.full((8, 8), 32768, dtype=np.int32)
    Image.fromarray(ints, mode="I").save(tmp_path / "i.tif")
    floats = np.full((8, 8), 51.0, dtype=np.float32)  # Pillow's "F" convention: the 0..255 scale
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    (i_image, f_image), _ = load_targets([tmp_path / "i.tif", tmp_path / "f.tif"])
    torch.testing.assert_close(i_image, torch.full((3, 8, 8), 32768 / 65535))
    torch.testing.assert_close(f_image, torch.full((3, 8, 8), 0.2))


def test_alpha_palette_and_cmyk_images(tmp_path) -> None:
    from PIL import Image

    Image.new("LA", (4, 4), (100, 0)).save(tmp_path / "la.png")
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([200, 10, 20, 0, 0, 0, 5, 5, 5] + [0, 0, 0] * 253)
    palette.save(tmp_path / "p.png", transparency=b"\x00\x80\xff")  # per-entry alpha (tRNS bytes)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Palette images with Transparency" warning either
        (la, p, cmyk), _ = load_targets([tmp_path / "la.png", tmp_path / "p.png", tmp_path / "cmyk.jpg"])
    torch.testing.assert_close(la, torch.full((3, 4, 4), 100 / 255))  # alpha dropped, grey kept
    assert p[:, 0, 0].mul(255).round().tolist() == [200.0, 10.0, 20.0]
    assert float(cmyk[0].mean()) > 0.9 and float(cmyk[1].mean()) < 0.1 and float(cmyk[2].mean()) < 0.1


def test_animated_image_uses_its_first_frame_with_a_warning(tmp_path, caplog) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="lib_pinning.objectives.targets"):
        images, _ = load_targets([tmp_path / "anim.gif"])
    assert float(images[0, 0].mean()) > 0.9 and float(images[0, 2].mean()) < 0.1
    assert "has 2 frames; its first frame is used" in caplog.text


def test_size_is_refused_from_the_header_before_decoding(tmp_path) -> None:
    """An 8000x8000 file is refused for its size, not decoded first (it holds little beyond its header)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path = tmp_path / "huge.png"
    idat = zlib.compress(b"\0" * 1000)  # the start of the pixel data, then the file ends
    data = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + data)
    with pytest.raises(TargetError, match="huge.png is 8000x8000 .* but the images are 64x64"):
        load_targets([path], size=(64, 64))


def test_truncated_file_is_refused_even_where_truncated_images_are_allowed(tmp_path, monkeypatch) -> None:
    from PIL import ImageFile

    good, _ = rgb_file(tmp_path / "good.png", 32, 32, 0)
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # the WebUI sets it
    with pytest.raises(TargetError, match="cut.png is damaged or truncated"):
        load_targets([cut])
