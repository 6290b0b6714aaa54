"""Hyperbatch samplers inside the WebUI: registration (samplers/webui.py, scripts/hyperbatch_samplers.py)
and sampling through the WebUI's own machinery, on the stand-in of tests/webui_stub.

Registration is checked where users and tools look for samplers: `sd_samplers.all_samplers`,
`all_samplers_map`, `samplers` / `samplers_for_img2img`, the lowercase `samplers_map`, the UI's
`visible_sampler_names()`, `/sdapi/v1/samplers` (modules/api/api.py:L693 lists all_samplers as
name/aliases/options), the X/Y/Z plot's choices (scripts/xyz_grid.py:L249-L251:
`[x.name for x in sd_samplers.samplers if x.name not in opts.hide_samplers]`, validated through
`samplers_map`, L72) and restoring a generation from its infotext.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from pinning_samplers import SAMPLERS, webui as hb_webui
from pinning_samplers.plan import DEFAULT_SCHEDULE, plan_growth
from tests.webui_env import TOY_REFINER_CHECKPOINT

NAMES_1_9 = [
    "Euler a - Hyperbatch",
    "DPM++ 2M - Hyperbatch",
    "DPM++ SDE - Hyperbatch",
    "DPM++ 2M SDE - Hyperbatch",
    "DPM++ 2M SDE Heun - Hyperbatch",
]
NAMES_1_8 = [
    "Euler a - Hyperbatch",
    "DPM++ 2M - Hyperbatch",
    "DPM++ 2M Karras - Hyperbatch",
    "DPM++ SDE - Hyperbatch",
    "DPM++ SDE Karras - Hyperbatch",
    "DPM++ 2M SDE - Hyperbatch",
    "DPM++ 2M SDE Karras - Hyperbatch",
    "DPM++ 2M SDE Exponential - Hyperbatch",
    "DPM++ 2M SDE Heun - Hyperbatch",
    "DPM++ 2M SDE Heun Karras - Hyperbatch",
    "DPM++ 2M SDE Heun Exponential - Hyperbatch",
]
PROMPT = "a red circle, soft light"


def _ours(webui: Any) -> list[str]:
    return [s.name for s in webui.sd_samplers.all_samplers if s.options.get(hb_webui.MARKER_OPTION)]


def _pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).astype(np.int16)


def _generate(webui: Any, **kwargs: Any) -> Any:
    return webui.processing.process_images(webui.txt2img(**kwargs))


class RowRecorder:
    """Records, for every CFG-denoiser call, the latent rows and the cond/uncond rows it saw."""

    def __init__(self, webui: Any) -> None:
        self.calls: list[dict[str, int]] = []
        webui.module("script_callbacks").on_cfg_denoiser(self)

    def __call__(self, params: Any) -> None:
        text_cond = params.text_cond["crossattn"] if isinstance(params.text_cond, dict) else params.text_cond
        text_uncond = params.text_uncond["crossattn"] if isinstance(params.text_uncond, dict) else params.text_uncond
        init_latent = params.denoiser.init_latent
        self.calls.append({
            "x_in": params.x.shape[0],
            "cond": text_cond.shape[0],
            "uncond": text_uncond.shape[0],
            "image_cond": params.image_cond.shape[0],
            "init_latent": -1 if init_latent is None else init_latent.shape[0],
        })

    @property
    def images_per_call(self) -> list[int]:
        return [c["uncond"] for c in self.calls]


# -- registration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("webui", "names"), [("1.10", NAMES_1_9), ("1.8", NAMES_1_8)], indirect=["webui"])
def test_loading_the_script_registers_every_sampler_once(webui: Any, names: list[str]) -> None:
    builtin = [s.name for s in webui.sd_samplers.all_samplers]
    loaded = webui.load_scripts()
    assert [m.__name__ for m in loaded] == ["hyperbatch_samplers.py", "prompt_pinning.py"]
    sd_samplers = webui.sd_samplers
    assert _ours(webui) == names
    assert [s.name for s in sd_samplers.all_samplers] == builtin + names
    assert sd_samplers.samplers is sd_samplers.all_samplers and sd_samplers.samplers_for_img2img is sd_samplers.all_samplers
    for name in names:
        data = sd_samplers.all_samplers_map[name]
        assert sd_samplers.find_sampler_config(name) is data
        assert sd_samplers.samplers_map[name.lower()] == name
        assert all(sd_samplers.samplers_map[alias.lower()] == name for alias in data.aliases)
        assert name in sd_samplers.visible_sampler_names()


@pytest.mark.parametrize("webui", ["1.10", "1.8"], indirect=True)
def test_reload_ui_and_repeated_registration_never_duplicate(webui: Any) -> None:
    webui.load_scripts()
    names = [s.name for s in webui.sd_samplers.all_samplers]
    before = webui.sd_samplers.all_samplers_map["Euler a - Hyperbatch"]
    webui.reload_ui()
    webui.reload_ui()
    hb_webui.register()
    hb_webui.register()
    assert [s.name for s in webui.sd_samplers.all_samplers] == names and len(set(names)) == len(names)
    assert set(webui.sd_samplers.all_samplers_map) == set(names)
    assert webui.sd_samplers.all_samplers_map["Euler a - Hyperbatch"] is not before  # replaced, not kept
    ours = _ours(webui)
    assert hb_webui.unregister() == ours
    assert not _ours(webui) and "euler a - hyperbatch" not in webui.sd_samplers.samplers_map
    assert not set(ours) & set(webui.sd_samplers.all_samplers_map)


def test_script_unloading_removes_the_samplers(webui: Any) -> None:
    webui.load_scripts()
    webui.module("script_callbacks").script_unloaded_callback()
    assert not _ours(webui)
    webui.load_scripts()
    assert _ours(webui) == NAMES_1_9


@pytest.mark.parametrize("webui", ["1.10", "1.8"], indirect=True)
def test_api_listing_and_xyz_plot_see_the_samplers(webui: Any) -> None:
    webui.load_scripts()
    sd_samplers = webui.sd_samplers
    opts = webui.shared.opts
    listing = [{"name": s[0], "aliases": s[2], "options": s[3]} for s in sd_samplers.all_samplers]
    ours = [entry for entry in json.loads(json.dumps(listing)) if entry["options"].get("hyperbatch")]
    assert [entry["name"] for entry in ours] == _ours(webui)
    for entry in ours:
        assert all(isinstance(v, (str, bool, int, float)) for v in entry["options"].values())
    txt2img_choices = [x.name for x in sd_samplers.samplers if x.name not in opts.hide_samplers]
    img2img_choices = [x.name for x in sd_samplers.samplers_for_img2img if x.name not in opts.hide_samplers]
    assert set(_ours(webui)) <= set(txt2img_choices) and set(_ours(webui)) <= set(img2img_choices)
    assert all(name.lower() in sd_samplers.samplers_map for name in _ours(webui))
    opts.hide_samplers = ["Euler a - Hyperbatch"]
    sd_samplers.set_samplers()
    assert "Euler a - Hyperbatch" not in sd_samplers.visible_sampler_names()


def test_options_carry_the_default_schedule_on_1_9(webui: Any) -> None:
    webui.load_scripts()
    config = webui.sd_samplers.all_samplers_map
    for info in SAMPLERS.values():
        options = config[info.label].options
        assert {k: v for k, v in options.items() if k != "hyperbatch"} == dict(info.webui_options)


def test_names_resolve_through_the_cached_sampler_and_scheduler_lookup(webui: Any) -> None:
    sd_samplers = webui.sd_samplers
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M - Hyperbatch", "Automatic") == ("DPM++ 2M", "Automatic")
    webui.load_scripts()
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M - Hyperbatch", "Automatic") == ("DPM++ 2M - Hyperbatch", "Automatic")
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M - Hyperbatch", "Karras") == ("DPM++ 2M - Hyperbatch", "Automatic")
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M - Hyperbatch", "Exponential") == ("DPM++ 2M - Hyperbatch", "Exponential")


@pytest.mark.parametrize(("webui", "name", "scheduler"), [
    ("1.10", "DPM++ 2M SDE - Hyperbatch", None),
    ("1.10", "DPM++ 2M - Hyperbatch", "Exponential"),
    ("1.8", "DPM++ 2M SDE Karras - Hyperbatch", None),
], indirect=["webui"])
def test_a_generation_restores_from_its_infotext(webui: Any, name: str, scheduler: str | None) -> None:
    webui.load_scripts()
    kwargs = {"scheduler": scheduler} if scheduler else {}
    res = _generate(webui, prompt=PROMPT, seed=3, batch_size=2, steps=6, sampler_name=name, **kwargs)
    infotext_utils = webui.module("infotext_utils")
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert params["Sampler"] == name
    if webui.version >= (1, 9, 0):
        sd_samplers = webui.sd_samplers
        fields = [infotext_utils.PasteField("sampler", sd_samplers.get_sampler_from_infotext, api="sampler_name"),
                  infotext_utils.PasteField("scheduler", sd_samplers.get_scheduler_from_infotext, api="scheduler")]
        assert infotext_utils.paste_values(fields, res.infotexts[0]) == [name, scheduler or "Automatic"]
    else:
        assert infotext_utils.paste_values([("sampler", "Sampler")], res.infotexts[0]) == [name]
        assert name in webui.sd_samplers.visible_sampler_names()


def test_the_webui_sees_the_solvers_own_signature_and_passes_its_kwargs(webui: Any) -> None:
    webui.load_scripts()
    model = webui.shared.sd_model
    for info in SAMPLERS.values():
        sampler = webui.sd_samplers.create_sampler(info.label, model)
        assert inspect.signature(sampler.func) == inspect.signature(info.function)
        assert sampler.extra_params == list(info.extra_params)
        assert sampler.config.name == info.label
        p = webui.txt2img()
        p.fill_fields_from_opts()
        p.rng = None
        kwargs = sampler.initialize(p)
        params = inspect.signature(info.function).parameters
        assert ("eta" in kwargs) == ("eta" in params)
        assert ("s_noise" in kwargs) == ("s_noise" in info.extra_params)


# -- sampling through the WebUI ---------------------------------------------------------------------


@pytest.mark.parametrize(("key", "name", "scheduler"), [
    ("euler_ancestral", "Euler a - Hyperbatch", "karras"),
    ("dpmpp_2m", "DPM++ 2M - Hyperbatch", "karras"),
    ("dpmpp_sde", "DPM++ SDE - Hyperbatch", "karras"),
    ("dpmpp_2m_sde", "DPM++ 2M SDE - Hyperbatch", "exponential"),
])
def test_hyperbatch_through_the_webui_equals_the_toy_generator(webui: Any, key: str, name: str, scheduler: str) -> None:
    """Same growth plan, same per-seed noise: the WebUI path gives the toy generator's images."""
    webui.load_scripts()
    seeds = (21, 22, 23, 24)
    gen = ToyGenerator(ToySettings(sampler=key, growth=SAMPLERS[key].default_growth, scheduler=scheduler, steps=10, cfg_scale=2.0))
    ref = gen.generate(GenerationRequest(PROMPT, "", seeds))
    expected = (ref.images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8).astype(np.int16)
    rows = RowRecorder(webui)
    res = _generate(webui, prompt=PROMPT, seed=seeds[0], batch_size=len(seeds), sampler_name=name, steps=10, cfg_scale=2.0,
                    scheduler=scheduler.capitalize())
    assert np.abs(_pixels(res.images) - expected).max() <= 1
    plan = plan_growth(len(seeds), 10, SAMPLERS[key].default_growth)
    assert rows.images_per_call[0] == 1 and max(rows.images_per_call) == len(seeds)
    assert sum(rows.images_per_call) == plan.model_rows(SAMPLERS[key].evals(10))


@pytest.mark.parametrize("webui", ["1.10", "1.10-sdxl", "1.8-sdxl"], indirect=True)
@pytest.mark.parametrize("batch_size", range(1, 10))
def test_hyperbatch_with_webui_conds_returns_one_image_per_seed(webui: Any, batch_size: int) -> None:
    """AND and prompt editing (two composables, one of them with two schedules), one prompt per
    image, SD 1.x tensors or SDXL dicts: B images, conds cut to the active rows at every call, and
    the same seeds give the same images whatever ran before."""
    webui.load_scripts()
    prompts = [f"[red:blue:3] circle AND {shape} :0.5" for shape in ("square", "ring", "cross")] * 3
    kwargs = dict(prompt=prompts[:batch_size], seed=100, batch_size=batch_size, sampler_name="Euler a - Hyperbatch",
                  steps=8, cfg_scale=2.5)
    rows = RowRecorder(webui)
    first = _generate(webui, **kwargs)
    assert len(first.images) == batch_size and first.all_seeds == list(range(100, 100 + batch_size))
    for call in rows.calls:
        assert call["cond"] == 2 * call["uncond"]  # two AND-parts per image
        assert call["x_in"] == call["cond"] + call["uncond"] == call["image_cond"]
    assert rows.images_per_call[0] == 1 and rows.images_per_call[-1] == batch_size
    torch.manual_seed(batch_size)
    _generate(webui, prompt=PROMPT, seed=7, batch_size=2, sampler_name="Euler a", steps=4)
    again = _generate(webui, **kwargs)
    assert np.array_equal(_pixels(first.images), _pixels(again.images))


LONG_PROMPT = ", ".join(f"a {c} {s} on a white background with soft light"
                        for c in ("red", "blue", "green") for s in ("circle", "square", "star"))
"""More than 75 CLIP tokens: its cond has two 77-row chunks, a one-word negative prompt's one."""


@pytest.mark.parametrize("webui", ["1.10", "1.10-sdxl"], indirect=True)
@pytest.mark.parametrize("padding", ["none", "pad_cond_uncond", "pad_cond_uncond_v0"])
def test_a_long_prompt_with_a_short_negative_prompt_takes_the_webuis_padding_paths(webui: Any, padding: str) -> None:
    """Measured in the real v1.10.1 (tests/integration): cond [B, 154, C] and uncond [B, 77, C]
    are padded (either setting) or, by default, denoised in separate model calls."""
    webui.load_scripts()
    if padding != "none":
        webui.shared.opts.set(padding, True)
    kwargs = dict(prompt=LONG_PROMPT, negative_prompt="blurry", seed=3, batch_size=4,
                  sampler_name="DPM++ 2M - Hyperbatch", steps=6, cfg_scale=5.0)
    first = _generate(webui, **kwargs)
    assert len(first.images) == 4 and len({im.tobytes() for im in first.images}) == 4
    assert np.array_equal(_pixels(first.images), _pixels(_generate(webui, **kwargs).images))
    short = _generate(webui, **{**kwargs, "prompt": "a red circle"})
    assert not np.array_equal(_pixels(first.images), _pixels(short.images))


def test_image_zero_is_the_plain_samplers_image(webui: Any) -> None:
    """Row 0 is never refreshed or copied, and takes seed 0's noise: it is the plain sampler's image 0."""
    webui.load_scripts()
    kwargs = dict(prompt=PROMPT, seed=50, batch_size=4, steps=8, scheduler="Automatic")
    plain = _pixels(_generate(webui, sampler_name="Euler a", **kwargs).images)
    hyper = _pixels(_generate(webui, sampler_name="Euler a - Hyperbatch", **kwargs).images)
    assert np.abs(plain[0] - hyper[0]).max() <= 1
    assert np.abs(plain[1:] - hyper[1:]).max() > 10


def test_euler_a_noise_comes_from_the_seeds_and_honours_ensd(webui: Any) -> None:
    webui.load_scripts()
    kwargs = dict(prompt=PROMPT, seed=60, batch_size=3, steps=8, sampler_name="Euler a - Hyperbatch")
    torch.manual_seed(1)
    a = _pixels(_generate(webui, **kwargs).images)
    torch.manual_seed(2)
    b = _pixels(_generate(webui, **kwargs).images)
    assert np.array_equal(a, b)
    webui.shared.opts.eta_noise_seed_delta = 31337
    res = _generate(webui, **kwargs)
    assert not np.array_equal(a, _pixels(res.images)) and "ENSD: 31337" in res.infotexts[0]


def test_brownian_noise_is_seeded_even_when_the_webui_declines_to_build_it(webui: Any) -> None:
    webui.load_scripts()
    kwargs = dict(prompt=PROMPT, seed=70, batch_size=3, steps=8, sampler_name="DPM++ 2M SDE - Hyperbatch")
    a = _pixels(_generate(webui, **kwargs).images)
    webui.shared.opts.no_dpmpp_sde_batch_determinism = True
    torch.manual_seed(3)
    b = _pixels(_generate(webui, **kwargs).images)
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize(("name", "key", "scheduler"), [
    ("DPM++ 2M Karras - Hyperbatch", "dpmpp_2m", "karras"),
    ("DPM++ 2M SDE Exponential - Hyperbatch", "dpmpp_2m_sde", "exponential"),
])
@pytest.mark.parametrize("webui", ["1.8"], indirect=True)
def test_1_8_names_select_their_schedule(webui: Any, name: str, key: str, scheduler: str) -> None:
    webui.load_scripts()
    seeds = (31, 32, 33)
    gen = ToyGenerator(ToySettings(sampler=key, growth=SAMPLERS[key].default_growth, scheduler=scheduler, steps=8, cfg_scale=2.0))
    expected = (gen.generate(GenerationRequest(PROMPT, "", seeds)).images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    res = _generate(webui, prompt=PROMPT, seed=seeds[0], batch_size=3, sampler_name=name, steps=8, cfg_scale=2.0)
    assert np.abs(_pixels(res.images) - expected.astype(np.int16)).max() <= 1
    if "Karras" in name:
        # The plain name samples the model's own discretisation (for the toy, evenly spaced in
        # log sigma: the exponential schedule), so only the Karras variant must differ from it.
        plain = _generate(webui, prompt=PROMPT, seed=seeds[0], batch_size=3, sampler_name=name.replace(" Karras", ""),
                          steps=8, cfg_scale=2.0)
        # Beyond the 1-level rounding tolerance of the equality above. (Under "front" the early
        # splits leave both schedules' batches close in composition: 7 levels apart here.)
        assert np.abs(_pixels(plain.images) - _pixels(res.images)).max() > 3


def test_interrupted_hyperbatch_still_returns_one_image_per_seed(webui: Any) -> None:
    webui.load_scripts()
    state = webui.shared.state
    calls: list[int] = []

    def interrupt_after_growth(params: Any) -> None:
        calls.append(params.text_uncond.shape[0])
        if len(calls) == 5:
            state.interrupt()

    webui.module("script_callbacks").on_cfg_denoiser(interrupt_after_growth)
    res = _generate(webui, prompt=PROMPT, seed=80, batch_size=5, sampler_name="DPM++ 2M - Hyperbatch", steps=10)
    assert len(calls) == 5 and calls[-1] < 5
    assert len(res.images) == 5


# -- img2img, inpainting, hires fix, refiner ---------------------------------------------------------


def _init_image(seed: int = 0) -> Image.Image:
    gen = ToyGenerator(ToySettings(steps=8))
    image = gen.generate(GenerationRequest("a green triangle", "", (seed,))).images[0]
    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def test_img2img_from_one_init_image_grows_a_hyperbatch(webui: Any) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    p = webui.img2img(prompt=PROMPT, seed=90, batch_size=4, sampler_name="Euler a - Hyperbatch", steps=10,
                      init_images=[_init_image()], denoising_strength=0.75)
    res = webui.processing.process_images(p)
    assert len(res.images) == 4
    assert rows.images_per_call[0] == 1 and rows.images_per_call[-1] == 4


def test_inpainting_cuts_the_init_latent_to_the_active_rows(webui: Any) -> None:
    webui.load_scripts()
    init = _init_image()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    rows = RowRecorder(webui)
    p = webui.img2img(prompt=PROMPT, seed=91, batch_size=4, sampler_name="DPM++ 2M - Hyperbatch", steps=10,
                      init_images=[init], mask=mask, inpainting_fill=1, denoising_strength=0.9)
    res = webui.processing.process_images(p)
    assert len(res.images) == 4 and rows.images_per_call[0] == 1
    assert all(call["init_latent"] == call["uncond"] for call in rows.calls)
    far = Image.new("L", (64, 64), 0)
    far.paste(255, (16 - 11, 16 - 11, 48 + 11, 48 + 11))  # mask blur 4 reaches 10 pixels past the mask
    outside = np.asarray(far) == 0
    for image in res.images:
        assert np.abs(np.asarray(image).astype(int) - np.asarray(init).astype(int))[outside].max() <= 1
    inside = ~outside
    assert np.abs(_pixels(res.images)[0][inside] - _pixels(res.images)[1][inside]).max() > 0


def test_img2img_with_distinct_init_images_samples_a_plain_batch(webui: Any, caplog: pytest.LogCaptureFixture) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    p = webui.img2img(prompt=PROMPT, seed=92, batch_size=3, sampler_name="Euler a - Hyperbatch", steps=10,
                      init_images=[_init_image(1), _init_image(2), _init_image(3)], denoising_strength=0.75)
    with caplog.at_level(logging.INFO, logger="pinning_samplers.webui"):
        res = webui.processing.process_images(p)
    assert len(res.images) == 3 and set(rows.images_per_call) == {3}
    assert "plain batch" in caplog.text and "init latents differ" in caplog.text


def test_hires_fix_grows_the_first_pass_and_refines_every_image(webui: Any) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    res = _generate(webui, prompt=PROMPT, seed=93, batch_size=4, steps=8, sampler_name="Euler a - Hyperbatch",
                    enable_hr=True, hr_scale=1.0, hr_second_pass_steps=6, denoising_strength=0.5)
    assert len(res.images) == 4
    first_pass, second_pass = rows.images_per_call[:8], rows.images_per_call[8:]
    assert first_pass[0] == 1 and first_pass[-1] == 4
    assert second_pass and set(second_pass) == {4}


def test_refiner_is_refused_with_a_message_naming_the_setting(webui: Any) -> None:
    webui.load_scripts()
    with pytest.raises(hb_webui.HyperbatchUnsupportedError, match="Refiner"):
        _generate(webui, prompt=PROMPT, seed=94, batch_size=2, steps=6, sampler_name="DPM++ 2M - Hyperbatch",
                  refiner_checkpoint=TOY_REFINER_CHECKPOINT, refiner_switch_at=0.6)
    res = _generate(webui, prompt=PROMPT, seed=94, batch_size=2, steps=6, sampler_name="DPM++ 2M - Hyperbatch",
                    refiner_checkpoint=TOY_REFINER_CHECKPOINT, refiner_switch_at=1.0)
    assert len(res.images) == 2


def test_growth_can_be_chosen_per_generation(webui: Any) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    p = webui.txt2img(prompt=PROMPT, seed=95, batch_size=4, steps=10, sampler_name="Euler a - Hyperbatch")
    p.hyperbatch_growth = "none"
    webui.processing.process_images(p)
    assert set(rows.images_per_call) == {4}


def test_ancestor_rows_follow_the_stable_row_copies() -> None:
    plan = plan_growth(6, 12, "even")
    for level in plan.levels:
        expected = [plan.ancestors(i)[plan.levels.index(level)] for i in range(6)]
        assert hb_webui._ancestor_rows(6, level) == expected


def test_entries_reject_options_the_api_cannot_serialise() -> None:
    info = SAMPLERS["dpmpp_2m"]
    with pytest.raises(TypeError, match="serialises"):
        hb_webui.WebUISampler("x", info, (), {"scheduler": ["karras"]})


def test_webuis_before_1_6_are_refused_clearly(webui: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modules.rng", None)
    with pytest.raises(hb_webui.HyperbatchUnsupportedError, match="1.6.0"):
        hb_webui.register()


def test_only_a_pass_starting_from_one_shared_latent_grows() -> None:
    shared_start = torch.zeros(3, 3, 8, 8)
    assert hb_webui._plain_reason(SimpleNamespace(is_hr_pass=False), shared_start) is None
    assert "hires" in hb_webui._plain_reason(SimpleNamespace(is_hr_pass=True), shared_start)
    distinct = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 8, 8)
    assert "differ" in hb_webui._plain_reason(SimpleNamespace(is_hr_pass=False), distinct)


def test_pre_1_9_names_follow_the_webuis_own_variants() -> None:
    entries = {e.name: e for e in hb_webui.webui_samplers(separate_schedule=False)}
    assert "scheduler" not in entries["DPM++ 2M - Hyperbatch"].options
    assert entries["DPM++ 2M Karras - Hyperbatch"].options["scheduler"] == "karras"
    assert entries["DPM++ 2M Karras - Hyperbatch"].aliases == ("k_dpmpp_2m_ka_hyperbatch",)
    assert entries["DPM++ 2M SDE Exponential - Hyperbatch"].options["scheduler"] == "exponential"
    assert "DPM++ SDE Exponential - Hyperbatch" not in entries and "Euler a Karras - Hyperbatch" not in entries
    assert all(e.options["hyperbatch"] is True for e in entries.values())


# -- what WebUIGenerator records: the samplers' real passes -------------------------------------------


def _webui_generator(webui: Any, p: Any) -> Any:
    from lib_pinning.webui.generator import WebUIGenerator

    return WebUIGenerator(p, processing=webui.processing, shared=webui.module("shared"), sd_samplers=webui.sd_samplers)


def _inpainting_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


@pytest.mark.parametrize("case", ["distinct init images", "latent noise inpainting"])
def test_webui_generator_records_the_plain_batch_a_fallback_sampled(webui: Any, case: str) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    if case == "distinct init images":
        kwargs: dict[str, Any] = {"init_images": [_init_image(k) for k in range(4)]}
    else:
        kwargs = {"init_images": [_init_image()], "mask": _inpainting_mask(), "inpainting_fill": 2}
    p = webui.img2img(prompt=PROMPT, seed=1, batch_size=1, sampler_name="DPM++ 2M - Hyperbatch", steps=10,
                      denoising_strength=0.75, **kwargs)
    batch = _webui_generator(webui, p).generate(GenerationRequest(PROMPT, "", (11, 12, 13, 14)))
    assert set(rows.images_per_call) == {4}  # the sampler really ran a plain batch
    assert batch.growth is None
    assert batch.model_rows == sum(rows.images_per_call)


def test_webui_generator_records_the_tree_a_grown_img2img_batch_had(webui: Any) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    p = webui.img2img(prompt=PROMPT, seed=1, batch_size=1, sampler_name="DPM++ 2M - Hyperbatch", steps=10,
                      init_images=[_init_image()], denoising_strength=0.75)
    batch = _webui_generator(webui, p).generate(GenerationRequest(PROMPT, "", (11, 12, 13, 14)))
    plan = batch.growth
    assert plan is not None and [plan.first_eval_rows(step) for step in range(plan.steps)] == rows.images_per_call
    assert batch.model_rows == sum(rows.images_per_call)


@pytest.mark.parametrize(("sampler", "hr_sampler"), [
    ("DPM++ SDE - Hyperbatch", None),
    ("DPM++ SDE", None),
    ("Euler a - Hyperbatch", "DPM++ SDE"),
    ("DPM++ SDE", "DPM++ 2M - Hyperbatch"),
])
def test_webui_generator_counts_every_model_call_of_every_pass(webui: Any, sampler: str, hr_sampler: str | None) -> None:
    webui.load_scripts()
    rows = RowRecorder(webui)
    p = webui.txt2img(prompt=PROMPT, seed=1, batch_size=1, steps=10, sampler_name=sampler, enable_hr=True,
                      hr_scale=1.0, hr_second_pass_steps=6, denoising_strength=0.5, hr_sampler_name=hr_sampler)
    batch = _webui_generator(webui, p).generate(GenerationRequest(PROMPT, "", (11, 12, 13, 14)))
    assert batch.model_rows == sum(rows.images_per_call)
    assert (batch.growth is not None) == sampler.endswith("Hyperbatch")


def test_the_planned_tree_for_other_samplers_is_the_default_schedules() -> None:
    """'Hyperbatch weights for other samplers' weights a plain batch by the default schedule's tree."""
    from lib_pinning.generator import Batch
    from lib_pinning.objectives.compose import PlannedTreeWeighting
    from lib_pinning.objectives.pinning import LevelWeighting, PinningObjective

    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    objective = PinningObjective(None, "variety", level_weighting=LevelWeighting("Exponential", 0.5))
    value = PlannedTreeWeighting(objective, 10).score(Batch(images=images, seeds=(1, 2, 3, 4))).value
    planned = objective.score_images(images, depths=plan_growth(4, 10, DEFAULT_SCHEDULE).divergence_depth).value
    assert value == pytest.approx(planned)


# -- the package name ------------------------------------------------------------------------------------


def test_a_foreign_samplers_module_changes_nothing(webui: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another extension's top-level `samplers`, first on sys.path and already imported, must not
    stand in for ours when the WebUI executes our script files."""
    foreign = tmp_path / "other-extension" / "samplers"
    foreign.mkdir(parents=True)
    (foreign / "__init__.py").write_text("FOREIGN = True\n")
    (foreign / "webui.py").write_text("def register():\n    raise AssertionError('the foreign samplers ran')\n")
    # Not monkeypatch.syspath_prepend: an autouse fixture may have made monkeypatch before the
    # stand-in, and its undo would then put back a sys.path snapshot that holds the stand-in's
    # folder. The stand-in's exit restores sys.path as it found it, which drops this entry too.
    sys.path.insert(0, str(foreign.parent))
    monkeypatch.delitem(sys.modules, "samplers", raising=False)
    monkeypatch.delitem(sys.modules, "samplers.webui", raising=False)
    import samplers  # noqa: F401  (what another extension's script did before ours loads)

    assert getattr(sys.modules["samplers"], "FOREIGN", False)
    loaded = webui.load_scripts()
    assert [m.__name__ for m in loaded] == ["hyperbatch_samplers.py", "prompt_pinning.py"]
    assert _ours(webui) == NAMES_1_9
    assert "samplers.webui" not in sys.modules
