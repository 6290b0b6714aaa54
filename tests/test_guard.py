"""The degenerate-image guard on realistic images: broken ones are caught, valid low-variety ones pass."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lib_pinning import guard
from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.options import PinningOptions
from lib_pinning.evaluation import quantize
from lib_pinning.webui.generator import WebUIGenerator

SIZE = 256


def _noise(seed: int, size: int = SIZE, octaves: int = 5) -> torch.Tensor:
    """Fractal value noise [size, size] in about [-1, 1]: the texture of grass, clouds, rock."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(size, size)
    for octave in range(octaves):
        cells = 4 * 2**octave
        grid = torch.rand(1, 1, cells, cells, generator=g) * 2 - 1
        out += torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0, 0] / 2**octave
    return out / 2


def landscape(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A natural-looking scene [3, H, W] in [0, 1]: sky gradient with clouds, a sun, textured hills."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    sky = torch.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.9 - 0.1 * y]) + 0.08 * _noise(seed, size)
    sun = ((x - 0.7) ** 2 + (y - 0.25) ** 2).sqrt() < 0.07
    sky = torch.where(sun, torch.tensor([1.0, 0.95, 0.75]).view(3, 1, 1), sky)
    ridge = 0.6 + 0.08 * torch.sin(x * 7 + seed) + 0.05 * _noise(seed + 1, size)[0:1].expand(size, -1)
    grass = torch.stack([0.25 + 0.1 * y, 0.45 + 0.1 * y, 0.15 + 0.05 * y]) + 0.12 * _noise(seed + 2, size)
    image = torch.where((y > ridge).unsqueeze(0), grass, sky)
    return image.clamp(0, 1)


def fry(image: torch.Tensor, amount: float = 1.0) -> torch.Tensor:
    """Over-emphasis burn as SD shows it: detail melts (blur), the picture drifts toward the
    emphasised concept's colour, colours over-saturate and contrast clips."""
    x = image.unsqueeze(0)
    sigma = max(16.0 * amount, 0.5)
    radius = int(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel, groups=3)
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.transpose(-1, -2), groups=3
    )
    y = torch.linspace(0, 1, x.shape[-2]).view(1, 1, -1, 1)
    concept = torch.cat([torch.ones_like(y), 0.35 * y, 0.6 - 0.4 * y], dim=1).expand_as(x)  # orange to magenta
    x = torch.lerp(x, concept, 0.7 * amount)
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = luma + (1 + 3 * amount) * (x - luma)  # saturation
    x = 0.5 + (1 + 1.5 * amount) * (x - 0.5)  # contrast
    return x[0].clamp(0, 1)


def night(size: int = SIZE) -> torch.Tensor:
    """A dark night scene: a dim sky, a few stars, a moon, a faint horizon."""
    g = torch.Generator().manual_seed(7)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([0.02 + 0.02 * y, 0.03 + 0.02 * y, 0.06 + 0.03 * y]).clone()
    stars = torch.rand(size, size, generator=g) > 0.998
    image[:, stars] = 0.7
    moon = ((x - 0.3) ** 2 + (y - 0.3) ** 2).sqrt() < 0.05
    image[:, moon] = torch.tensor([0.85, 0.85, 0.75]).view(3, 1)
    image[:, y > 0.8] = 0.015
    return image + 0.01 * _noise(3, size)


def inspect(*images: torch.Tensor, **kwargs) -> guard.GuardVerdict:
    return guard.inspect(quantize(torch.stack(images)), **kwargs)


# degenerate images ---------------------------------------------------------------------------------


def test_black_and_near_black_are_flagged():
    black = torch.zeros(3, SIZE, SIZE)
    # A dead decoder's near-black: dark noise up to 6/255 (under the 8/255 default).
    near = (torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 6 / 255)
    verdict = inspect(black, near)
    assert all(guard.BLACK in r for r in verdict.reasons)
    assert verdict.share_degenerate == 1.0


def test_nan_images_are_nonfinite_and_judged_as_the_black_they_decode_to():
    images = torch.stack([landscape(0), landscape(1)])
    images[1, :, :10, :10] = math.nan
    verdict = guard.inspect(images)
    assert verdict.reasons[0] == ()
    assert guard.NONFINITE in verdict.reasons[1]
    clean, flags = guard.sanitize(images)
    assert flags == (False, True) and torch.isfinite(clean).all()
    # A backend's own flag counts even when its decoder already turned NaN into black pixels.
    black = torch.zeros(2, 3, 64, 64)
    verdict = guard.inspect(black, nonfinite=(True, False))
    assert verdict.reasons[0] == (guard.NONFINITE, guard.BLACK, guard.FLAT)
    assert verdict.reasons[1] == (guard.BLACK, guard.FLAT)


def test_flat_images_are_flagged():
    grey = torch.full((3, SIZE, SIZE), 0.5) + torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) / 255
    colour = torch.tensor([0.8, 0.3, 0.2]).view(3, 1, 1).expand(3, SIZE, SIZE)
    verdict = inspect(grey, colour)
    assert all(guard.FLAT in r for r in verdict.reasons)


def test_fried_landscapes_are_flagged():
    fried = [fry(landscape(seed), amount) for seed in range(3) for amount in (0.8, 1.0)]
    verdict = inspect(*fried)
    assert all(guard.FRIED in r for r in verdict.reasons), verdict.stats


def test_the_toy_models_fried_batch_is_flagged():
    from lib_pinning.generator import ToyGenerator, ToySettings

    batch = ToyGenerator(ToySettings(steps=8)).generate(GenerationRequest("a red circle, (blue:2.4) square", "", (1, 2, 3)))
    assert all(r == (guard.FRIED,) for r in guard.inspect(batch.images, batch.nonfinite).reasons)


# valid low-variety images: never flagged ------------------------------------------------------------


def test_a_natural_image_and_a_mildly_burnt_one_pass():
    verdict = inspect(landscape(0), fry(landscape(0), amount=0.15))
    assert verdict.reasons == ((), ())


def test_a_pinned_batch_of_near_identical_clean_images_passes():
    base = landscape(4)
    g = torch.Generator().manual_seed(5)
    batch = [(base + torch.randn(base.shape, generator=g) * 0.01).clamp(0, 1) for _ in range(8)]
    verdict = inspect(*batch)
    assert verdict.share_degenerate == 0.0


def test_smooth_gradients_pass():
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    grey = (0.3 + 0.4 * x).expand(3, -1, -1)
    subtle_sky = torch.stack([0.55 + 0.06 * y, 0.65 + 0.06 * y, 0.85 + 0.05 * y])
    # A vivid sunset: saturated, smooth, but not clipped into a colour field.
    sunset = torch.stack([0.98 - 0.2 * y, 0.55 - 0.45 * y, 0.1 + 0.4 * y])
    verdict = inspect(grey, subtle_sky, sunset)
    assert verdict.reasons == ((), (), ()), verdict.stats


def test_a_dark_night_scene_with_some_detail_passes():
    verdict = inspect(night())
    assert verdict.reasons == ((),), verdict.stats


def test_a_flat_minimalist_image_with_an_edge_passes():
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    paper = torch.full((3, SIZE, SIZE), 0.94)
    line = paper.clone()
    line[:, (y - 0.6).abs() < 0.004] = 0.1  # one thin horizon line
    # A saturated poster: flat red with one white stripe (saturated and clipped, but it has an edge).
    poster = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, SIZE, SIZE).clone()
    poster[:, (x - 0.5).abs() < 0.01] = 1.0
    verdict = inspect(line, poster)
    assert verdict.reasons == ((), ()), verdict.stats


def test_the_toy_models_clean_prototypes_pass():
    from lib_pinning.toy import ToyModel, to_images

    verdict = guard.inspect(to_images(ToyModel().prototypes))
    assert verdict.share_degenerate == 0.0


# thresholds, penalty, JSON ---------------------------------------------------------------------------


def test_thresholds_come_from_the_options_and_zero_disables_a_check():
    options = PinningOptions(guard_black_level=0.0, guard_flat_std=0.0, guard_fried_detail=0.0)
    thresholds = guard.GuardThresholds.from_options(options)
    assert thresholds == guard.GuardThresholds(0.0, 0.0, 0.8, 0.0)
    verdict = inspect(torch.zeros(3, SIZE, SIZE), fry(landscape(0)), thresholds=thresholds)
    assert verdict.reasons == ((), ())
    assert guard.GuardThresholds.from_options(PinningOptions()) == guard.GuardThresholds()


def test_penalty_ranks_any_degenerate_batch_below_any_clean_one_and_prefers_fewer_broken_images():
    assert guard.penalty(0.0) == 0.0
    worst_clean = 10.0  # far past the natural range of every objective
    assert 0.0 + guard.penalty(1 / 64) > worst_clean
    assert guard.penalty(0.25) < guard.penalty(0.5) < guard.penalty(1.0)


def test_verdict_json_holds_reasons_share_and_stats():
    verdict = inspect(torch.zeros(3, 64, 64), landscape(0, 64))
    data = verdict.to_json(penalised=True)
    assert data["reasons"] == [["black", "flat"], []]
    assert data["share_degenerate"] == 0.5 and data["penalised"] is True
    assert set(data["stats"][0]) == {"level", "std", "saturation", "clipped", "detail"}
    assert verdict.reason_counts() == {"black": 1, "flat": 1}
    assert guard.describe(verdict.reason_counts(), 2) == "black 1/2, flat 1/2"


# every backend: the WebUI's NansException becomes a NaN batch ----------------------------------------


class NansException(Exception):
    """Named as modules.devices.NansException."""


def _webui_generator(error: Exception) -> WebUIGenerator:
    def process_images(p):
        raise error

    p = SimpleNamespace(
        steps=4, width=64, height=48, prompt="", negative_prompt="", seed=1, batch_size=2, n_iter=1,
        do_not_save_samples=False, extra_generation_params={}, override_settings={}, styles=[], sampler_name="Euler a",
    )
    state = SimpleNamespace(interrupted=False, skipped=False)
    return WebUIGenerator(p, processing=SimpleNamespace(process_images=process_images), shared=SimpleNamespace(state=state))


def test_webui_nans_exception_gives_a_black_nonfinite_batch():
    generator = _webui_generator(NansException("A tensor with NaNs was produced in Unet."))
    batch = generator.generate(GenerationRequest("a", "", (1, 2)))
    assert isinstance(batch, Batch) and batch.nonfinite == (True, True)
    assert tuple(batch.images.shape) == (2, 3, 48, 64) and float(batch.images.max()) == 0.0
    assert all(guard.NONFINITE in r for r in guard.inspect(batch.images, batch.nonfinite).reasons)


def test_webui_other_errors_still_raise():
    generator = _webui_generator(MemoryError("out of memory"))
    with pytest.raises(MemoryError):
        generator.generate(GenerationRequest("a", "", (1, 2)))


# the report: a badge per row, a status filter, a run-level alert ---------------------------------------


def test_report_shows_degenerate_batches(tmp_path):
    import json
    import re

    from lib_pinning.generator import ToyGenerator, ToySettings
    from lib_pinning.report import rebuild
    from lib_pinning.run import PinningRun, derive_seeds

    options = PinningOptions(
        cli_log=False, guard=False, flip_loss="variety", weight_max=5.0, stop_early=False, generations=3,
        cma_lambda=6, initial_std=0.5,
    )
    result = PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, blue (square:2.2)", negative_prompt="",
        seeds=derive_seeds(1, 3), options=options, runs_dir=tmp_path,
    ).execute()
    page = rebuild(result.run_dir).read_text()
    rows = json.loads(re.search(r'<script type="application/json" id="report-rows">(.*?)</script>', page, re.S).group(1))
    flagged = [row for row in rows if row.get("dn")]
    assert flagged and all(row["dg"] and row["dx"] is False for row in flagged)
    assert '<option value="degenerate">degenerate</option>' in page
    assert 'id="degenerate-count"' in page
    assert 'id="degenerate-alert"' in page and "guard was off" in page
    assert 'id="best-degenerate"' in page  # the old behaviour pinned a degenerate batch


# the schedule guard and prompt styles --------------------------------------------------------------


def _styled_generator(styles: dict[str, tuple[str, str]]) -> WebUIGenerator:
    database = SimpleNamespace(styles={name: SimpleNamespace(prompt=pos, negative_prompt=neg)
                                       for name, (pos, neg) in styles.items()})
    p = SimpleNamespace(
        steps=4, width=64, height=48, prompt="", negative_prompt="", seed=1, batch_size=2, n_iter=1,
        do_not_save_samples=False, extra_generation_params={}, override_settings={}, styles=list(styles),
        sampler_name="Euler a",
    )
    shared = SimpleNamespace(state=SimpleNamespace(interrupted=False, skipped=False), prompt_styles=database)
    return WebUIGenerator(p, processing=SimpleNamespace(process_images=None), shared=shared)


def test_a_style_with_prompt_editing_gets_the_prompt_without_the_schedule_guard():
    from lib_pinning.prompt import SCHEDULE_GUARD

    request = GenerationRequest(SCHEDULE_GUARD + "(red:1.2) circle", SCHEDULE_GUARD + "(blurry:0.8)", (1, 2))
    edited = _styled_generator({"season": ("[summer:winter:0.5]", "")})._copy(request)
    assert (edited.prompt, edited.negative_prompt) == ("(red:1.2) circle", "(blurry:0.8)")
    plain = _styled_generator({"photo": ("photo, 35mm", "cartoon")})._copy(request)
    assert (plain.prompt, plain.negative_prompt) == (request.prompt, request.negative_prompt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_nonfinite_rows_flags_exactly_the_rows_isfinite_flags(dtype):
    """The one-pass check agrees with isfinite().all() per row, including a row of the dtype's
    largest finite values, whose sum overflows in the dtype itself (but not in float64)."""
    values = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(3)).to(dtype)
    values[1, 0, 0, 0] = float("nan")
    values[2, 2, 3, 3] = float("inf")
    values[3, 0, 0, 0], values[3, 0, 0, 1] = float("inf"), float("-inf")
    values[4] = torch.finfo(dtype).max
    expected = ~torch.isfinite(values).flatten(1).all(dim=1)
    assert guard.nonfinite_rows(values).tolist() == expected.tolist() == [False, True, True, True, False, False]
