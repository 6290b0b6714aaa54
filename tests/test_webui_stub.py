"""The WebUI stand-in (tests/webui_stub) behaves like the WebUI where this extension depends on it.

These tests pin the stand-in's own faithfulness: prompt editing against the WebUI's doctests,
the runtime shapes of the conds, the k-diffusion calling convention, seeds and noise, progress,
interrupts, saving, infotexts, settings, callbacks and the version flavours. They also check that
a generation through the stand-in equals lib_pinning.generator.ToyGenerator's for the same
sampler, seeds and cfg: both run the same toy model with the same per-seed noise, the WebUI
path through WebUI-shaped conds, k-diffusion's own solvers and the CFG denoiser.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from pinning_samplers.noise import SeededBrownianNoise, SeededNoise
from tests.webui_env import STUB_DIR, TOY_REFINER_CHECKPOINT, webui_stub

PROMPT = "a red circle, soft light"


def _pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).astype(np.int16)


def _generate(webui: Any, **kwargs: Any) -> Any:
    p = webui.txt2img(**kwargs)
    return webui.processing.process_images(p)


# -- prompt editing ---------------------------------------------------------------------------------

# The examples of the WebUI's own doctest of get_learned_conditioning_prompt_schedules
# (modules/prompt_parser.py:L28-L64, v1.10.1), minus the one it marks "not handling this right now".
SCHEDULE_CASES = [
    ("test", 10, None, [[10, "test"]]),
    ("a [b:3]", 10, None, [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", 10, None, [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", 10, None, [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", 10, None, [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", 10, None, [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", 10, None, [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", 10, None, [[10, "a [unbalanced"]]),
    ("a [b:.5] c", 10, None, [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", 10, None, [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", 10, None, [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", 10, None, [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", 10, None, [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
    ("a [b:.5] c", 10, 10, [[10, "a b c"]]),
    ("a [b:1.5] c", 10, 10, [[5, "a  c"], [10, "a b c"]]),
]


@pytest.mark.parametrize(("prompt", "steps", "hires_steps", "expected"), SCHEDULE_CASES)
def test_prompt_schedules_match_the_webui_doctests(webui: Any, prompt: str, steps: int, hires_steps: int | None,
                                                   expected: list[list[Any]]) -> None:
    prompt_parser = webui.module("prompt_parser")
    assert prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps)[0] == expected


def test_a_top_level_bar_is_a_parse_error_and_leaves_the_prompt_unscheduled(webui: Any) -> None:
    prompt_parser = webui.module("prompt_parser")
    assert prompt_parser.get_learned_conditioning_prompt_schedules(["a | [b:3]"], 10) == [[[10, "a | [b:3]"]]]


@pytest.mark.parametrize("webui", ["1.10", "1.10-sdxl"], indirect=True)
def test_cond_structures_have_the_runtime_shapes_of_the_webui(webui: Any) -> None:
    """DESIGN.md "Observed at run time in v1.10.1": `[a:b:2] AND c :0.5`, batch 2."""
    prompt_parser = webui.module("prompt_parser")
    model = webui.shared.sd_model
    c = prompt_parser.get_multicond_learned_conditioning(model, ["[red:blue:2] circle AND square :0.5"] * 2, 4)
    assert isinstance(c, prompt_parser.MulticondLearnedConditioning) and c.shape == (2,)
    assert len(c.batch) == 2 and all(len(row) == 2 for row in c.batch)
    first, second = c.batch[0]
    assert [s.end_at_step for s in first.schedules] == [2, 4] and first.weight == 1.0
    assert [s.end_at_step for s in second.schedules] == [4] and second.weight == 0.5
    uc = prompt_parser.get_learned_conditioning(model, ["", ""], 4)
    assert len(uc) == 2 and isinstance(uc[0][0], prompt_parser.ScheduledPromptConditioning)
    k = model.toy.num_prototypes
    cond = first.schedules[0].cond
    if model.is_sdxl:
        assert set(cond) == {"crossattn", "vector"}
        assert cond["crossattn"].shape == (77, k) and cond["vector"].ndim == 1
        crossattn = cond["crossattn"]
    else:
        assert isinstance(cond, torch.Tensor) and cond.shape == (77, k)
        crossattn = cond
    expected = model.toy.mixture_log_weights("red circle").float()
    assert torch.allclose(crossattn[0], expected) and not crossattn[1:].any()
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(c, 3)
    assert conds_list == [[(0, 1.0), (1, 0.5)], [(2, 1.0), (3, 0.5)]]
    rows = tensor["crossattn"] if model.is_sdxl else tensor
    assert rows.shape == (4, 77, k)
    assert torch.allclose(rows[0, 0], model.toy.mixture_log_weights("blue circle").float())


def test_parse_prompt_attention_follows_the_webui_doctest(webui: Any) -> None:
    parse = webui.module("prompt_parser").parse_prompt_attention
    assert parse("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")[1] == ["house", pytest.approx(1.573)]
    assert parse("a BREAK b") == [["a", 1.0], ["BREAK", -1], ["b", 1.0]]


# -- generations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "webui_sampler", "scheduler"), [
    ("euler_ancestral", "Euler a", "Karras"),
    ("dpmpp_2m", "DPM++ 2M", "Karras"),
    ("dpmpp_2m_sde", "DPM++ 2M SDE", "Exponential"),
])
def test_process_images_equals_the_toy_generator(webui: Any, sampler: str, webui_sampler: str, scheduler: str) -> None:
    """Same model, seeds, noise streams and schedule: the images agree to one level of 255."""
    seeds = (11, 12, 13, 14)
    gen = ToyGenerator(ToySettings(sampler=sampler, growth="none", scheduler=scheduler.lower(), steps=10, cfg_scale=2.0))
    ref = gen.generate(GenerationRequest(PROMPT, "", seeds))
    expected = (ref.images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8).astype(np.int16)
    res = _generate(webui, prompt=PROMPT, seed=seeds[0], batch_size=len(seeds), sampler_name=webui_sampler,
                    scheduler=scheduler, cfg_scale=2.0, steps=10)
    diff = np.abs(_pixels(res.images) - expected)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


def test_negative_prompt_drives_the_uncond_branch(webui: Any) -> None:
    """As in SD, the negative prompt only acts through CFG: at cfg 1 it changes nothing.

    (ToyGenerator instead subtracts it inside the cond, so the two agree only without one.)
    """
    kwargs = dict(prompt=PROMPT, seed=3, batch_size=2, sampler_name="Euler a", steps=8)
    plain = _pixels(_generate(webui, cfg_scale=1.0, **kwargs).images)
    assert np.array_equal(plain, _pixels(_generate(webui, cfg_scale=1.0, negative_prompt="red", **kwargs).images))
    assert not np.array_equal(_pixels(_generate(webui, cfg_scale=3.0, **kwargs).images),
                              _pixels(_generate(webui, cfg_scale=3.0, negative_prompt="red", **kwargs).images))


def test_an_image_depends_only_on_its_own_seed(webui: Any) -> None:
    batch = _pixels(_generate(webui, prompt=PROMPT, seed=40, batch_size=3, sampler_name="Euler a", steps=8).images)
    torch.manual_seed(1234)
    single = _pixels(_generate(webui, prompt=PROMPT, seed=42, batch_size=1, sampler_name="Euler a", steps=8).images)
    assert np.abs(batch[2] - single[0]).max() <= 1


def test_processed_looks_like_the_webuis(webui: Any) -> None:
    res = _generate(webui, prompt=["red circle", "blue square"] * 2, seed=7, batch_size=2, n_iter=2,
                    sampler_name="Euler a", steps=6, do_not_save_grid=False)
    assert res.all_seeds == [7, 8, 9, 10]
    assert res.all_prompts == ["red circle", "blue square", "red circle", "blue square"]
    assert len(res.images) == 5 and res.index_of_first_image == 1  # grid first, as with return_grid
    assert len(res.infotexts) == 5 and res.images[1].info["parameters"] == res.infotexts[1]
    infotext_utils = webui.module("infotext_utils")
    params = infotext_utils.parse_generation_parameters(res.infotexts[4])
    assert params["Prompt"] == "blue square" and params["Seed"] == "10" and params["Sampler"] == "Euler a"
    assert params["Size-1"] == "64" and params["Steps"] == "6" and params["Schedule type"] == "Automatic"
    js = json.loads(res.js())
    assert js["all_seeds"] == [7, 8, 9, 10] and js["sampler_name"] == "Euler a" and js["infotexts"] == res.infotexts
    assert js["version"] == "v1.10.1"


def test_the_sampler_gets_webui_shaped_arguments_and_only_the_kwargs_it_names(webui: Any) -> None:
    kdiffusion = webui.module("sd_samplers_kdiffusion")
    common = webui.module("sd_samplers_common")
    prompt_parser = webui.module("prompt_parser")
    seen: dict[str, Any] = {}

    def solver(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Any = None, callback: Any = None,
               disable: Any = None, eta: float = 1.0) -> torch.Tensor:
        seen.update(extra_args=dict(extra_args), x=x.shape, sigmas=sigmas, eta=eta, callback=callback, disable=disable)
        return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)

    data = common.SamplerData("Probe", lambda model: kdiffusion.KDiffusionSampler(solver, model), [], {"scheduler": "karras"})
    webui.sd_samplers.all_samplers.append(data)
    webui.sd_samplers.all_samplers_map["Probe"] = data
    webui.sd_samplers.set_samplers()
    _generate(webui, prompt="[red:blue:2] circle AND square :0.5", seed=1, batch_size=3, sampler_name="Probe", steps=5)
    args = seen["extra_args"]
    assert set(args) == {"cond", "image_cond", "uncond", "cond_scale", "s_min_uncond"}
    assert isinstance(args["cond"], prompt_parser.MulticondLearnedConditioning) and args["cond"].shape == (3,)
    assert len(args["uncond"]) == 3 and args["image_cond"].shape == (3, 5, 1, 1)
    assert seen["x"] == (3, 3, 64, 64) and seen["eta"] == 1.0 and seen["disable"] is False
    assert len(seen["sigmas"]) == 6 and float(seen["sigmas"][-1]) == 0.0


def test_brownian_noise_is_one_tree_per_seed(webui: Any) -> None:
    """create_noise_sampler (k-diffusion's BrownianTreeNoiseSampler over the batch's seeds, with the
    WebUI's torchsde hook) equals pinning_samplers.noise.SeededBrownianNoise."""
    p = webui.txt2img(seed=5, batch_size=3)
    p.all_seeds, p.iteration = [5, 6, 7], 0
    sampler = webui.sd_samplers.create_sampler("DPM++ 2M SDE", webui.shared.sd_model)
    x = torch.zeros(3, 3, 8, 8)
    sigmas = torch.tensor([10.0, 2.0, 0.5, 0.0])
    webui_noise = sampler.create_noise_sampler(x, sigmas, p)
    ours = SeededBrownianNoise.from_sigmas([5, 6, 7], x, sigmas)
    for a, b in ((10.0, 2.0), (2.0, 0.5)):
        assert torch.allclose(webui_noise(torch.tensor(a), torch.tensor(b)), ours(torch.tensor(a), torch.tensor(b)))


def test_image_rng_is_one_generator_per_seed_with_ensd(webui: Any) -> None:
    rng = webui.module("rng")
    webui.shared.opts.eta_noise_seed_delta = 31337
    image_rng = rng.ImageRNG((3, 8, 8), [1, 2])
    ours = SeededNoise([1, 2], (3, 8, 8), seed_delta=31337)
    for _ in range(3):
        assert torch.equal(image_rng.next(), ours.next())


def test_interrupt_stops_between_steps_and_skip_skips_one_batch(webui: Any) -> None:
    callbacks = webui.module("script_callbacks")
    state = webui.shared.state
    calls: list[int] = []

    def on_denoiser(params: Any) -> None:
        calls.append(params.sampling_step)
        if len(calls) == 3:
            state.interrupt()

    callbacks.on_cfg_denoiser(on_denoiser)
    res = _generate(webui, prompt=PROMPT, seed=1, batch_size=2, n_iter=3, sampler_name="Euler a", steps=8)
    assert len(calls) == 3 and len(res.images) == 2  # the interrupted batch's last latents; no further batch
    state.interrupted = False
    calls.clear()

    def skip_first_batch(params: Any) -> None:
        calls.append(params.sampling_step)
        if len(calls) == 2:
            state.skip()

    callbacks.remove_callbacks_for_function(on_denoiser)
    callbacks.on_cfg_denoiser(skip_first_batch)
    res = _generate(webui, prompt=PROMPT, seed=1, batch_size=2, n_iter=2, sampler_name="Euler a", steps=8)
    assert len(calls) == 2 + 8 and len(res.images) == 4


def test_images_are_saved_only_when_the_webui_would(webui: Any, tmp_path: Any) -> None:
    out = tmp_path / "samples"
    _generate(webui, prompt=PROMPT, seed=1, batch_size=2, steps=4, sampler_name="Euler a", outpath_samples=str(out))
    assert not out.exists()
    res = _generate(webui, prompt=PROMPT, seed=1, batch_size=2, steps=4, sampler_name="Euler a", outpath_samples=str(out),
                    do_not_save_samples=False)
    files = sorted(str(f) for f in out.rglob("*.png"))
    assert len(files) == 2 and files[0].endswith("-1.png")
    assert Image.open(files[0]).info["parameters"] == res.infotexts[0]


def test_progress_and_state_bookkeeping(webui: Any) -> None:
    shared = webui.shared
    shared.state.begin(job="txt2img")
    shared.state.job_count = 2
    shared.total_tqdm.updateTotal(2 * 5)
    _generate(webui, prompt=PROMPT, seed=1, batch_size=1, n_iter=2, sampler_name="Euler a", steps=5)
    assert shared.state.job_no == 2 and shared.total_tqdm.count == 10 and shared.total_tqdm.total == 10
    shared.total_tqdm.clear()
    shared.state.end()
    assert shared.state.job_count == 0 and shared.total_tqdm.count == 0


def test_settings_and_callbacks_follow_the_webui_lifecycle(webui: Any) -> None:
    shared = webui.shared
    callbacks = webui.module("script_callbacks")
    events: list[str] = []
    changed: list[Any] = []

    def add_settings() -> None:
        events.append("ui_settings")
        shared.opts.add_option("probe_option", shared.OptionInfo(3, "Probe", section=("probe", "Probe")))
        shared.opts.onchange("probe_option", lambda: changed.append(shared.opts.probe_option), call=False)

    callbacks.on_ui_settings(add_settings)
    callbacks.on_before_ui(lambda: events.append("before_ui"))
    callbacks.on_app_started(lambda demo, app: events.append(f"app_started demo={demo is not None} app={app}"))
    webui.start(nowebui=True, app="api")
    assert events == ["before_ui", "app_started demo=False app=api"]
    with pytest.raises(AttributeError):
        _ = shared.opts.probe_option
    webui.start(app="app")
    assert events[2:] == ["before_ui", "ui_settings", "app_started demo=True app=app"]
    assert shared.opts.probe_option == 3
    assert shared.opts.set("probe_option", 5) and changed == [5]
    assert not shared.opts.set("probe_option", 5)


def test_hires_fix_img2img_and_refiner_run_with_plain_samplers(webui: Any) -> None:
    res = _generate(webui, prompt=PROMPT, seed=2, batch_size=2, steps=6, sampler_name="Euler a", enable_hr=True,
                    hr_scale=1.0, hr_second_pass_steps=4, denoising_strength=0.5)
    assert len(res.images) == 2 and "Hires upscale: 1.0" in res.infotexts[0]
    refined = _generate(webui, prompt=PROMPT, seed=2, batch_size=2, steps=6, sampler_name="Euler a",
                        refiner_checkpoint=TOY_REFINER_CHECKPOINT, refiner_switch_at=0.5)
    assert "Refiner: toy-refiner" in refined.infotexts[0]
    p = webui.img2img(prompt=PROMPT, seed=2, batch_size=2, sampler_name="Euler a", init_images=[res.images[0]],
                      denoising_strength=0.6)
    assert len(webui.processing.process_images(p).images) == 2


def test_version_flavours_differ_where_the_webui_does(tmp_path: Any) -> None:
    with webui_stub("1.8", data_dir=tmp_path / "a") as old:
        with pytest.raises(ModuleNotFoundError):
            old.module("sd_schedulers")
        assert not hasattr(old.sd_samplers, "get_sampler_and_scheduler")
        assert "DPM++ 2M Karras" in old.sd_samplers.all_samplers_map
        assert not hasattr(old.txt2img(), "scheduler")
        assert old.shared.opts.k_sched_type == "Automatic"
        res = _generate(old, prompt=PROMPT, seed=1, steps=4, sampler_name="DPM++ 2M Karras")
        assert "Schedule type" not in res.infotexts[0]
    with webui_stub("1.10", data_dir=tmp_path / "b") as new:
        assert new.module("sd_schedulers").schedulers_map["Karras"].name == "karras"
        assert "DPM++ 2M Karras" not in new.sd_samplers.all_samplers_map
        assert new.sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None) == ("DPM++ 2M", "Automatic")
        assert new.txt2img().scheduler is None
        import modules.generation_parameters_copypaste as old_name

        assert old_name is new.module("infotext_utils")


def test_the_stand_in_is_removed_after_each_use(tmp_path: Any) -> None:
    import torchsde._brownian.brownian_interval as brownian_interval

    original = brownian_interval._randn
    with webui_stub(data_dir=tmp_path) as stub:
        assert brownian_interval._randn is not original
        assert stub.module("shared").sd_model is not None
    assert brownian_interval._randn is original
    assert not any(name == "modules" or name.startswith(("modules.", "k_diffusion")) for name in sys.modules)
    assert str(STUB_DIR) not in sys.path


def test_kdiffusion_stand_in_runs_the_installed_sampling_module(webui: Any) -> None:
    import k_diffusion.sampling as sampling
    from k_diffusion import installed_package_dir

    assert inspect.signature(sampling.sample_euler_ancestral).parameters.keys() >= {"model", "x", "sigmas", "noise_sampler"}
    source = inspect.getsourcefile(sampling.get_sigmas_karras)
    assert source == str(installed_package_dir() / "sampling.py")


def test_scripts_load_like_extension_scripts(webui: Any, tmp_path: Any) -> None:
    """load_scripts: extension dir on sys.path and as basedir() only while its file runs; Script
    subclasses sorted into selectable / always-on by show(); run() gets its slice of the args."""
    ext = tmp_path / "probe-extension"
    (ext / "scripts").mkdir(parents=True)
    (ext / "probe_helper.py").write_text("VALUE = 42\n")
    (ext / "scripts" / "probe.py").write_text(
        "from modules import scripts\n"
        "import probe_helper\n"
        "LOADED_FROM = scripts.basedir()\n"
        "class Probe(scripts.Script):\n"
        "    def title(self):\n"
        "        return 'Probe'\n"
        "    def run(self, p, *args):\n"
        "        return ('ran', args, probe_helper.VALUE)\n"
        "class Always(scripts.Script):\n"
        "    def title(self):\n"
        "        return 'Always'\n"
        "    def show(self, is_img2img):\n"
        "        return scripts.AlwaysVisible\n"
        "    def process(self, p, *args):\n"
        "        p.extra_generation_params['Always'] = 'on'\n"
    )
    webui.module("paths").extension_dirs = [str(ext)]
    (module,) = webui.load_scripts()
    scripts = webui.module("scripts")
    assert module.LOADED_FROM == str(ext) and scripts.basedir() != str(ext) and str(ext) not in sys.path
    runner = scripts.scripts_txt2img
    assert [s.title() for s in runner.selectable_scripts] == ["Probe"]
    assert [s.title() for s in runner.alwayson_scripts] == ["Always"]
    probe = runner.selectable_scripts[0]
    probe.args_from, probe.args_to = 1, 3
    assert runner.run(webui.txt2img(), 1, "a", "b", "c") == ("ran", ("a", "b"), 42)
    p = webui.txt2img(prompt=PROMPT, seed=1, steps=3, sampler_name="Euler a")
    p.scripts = runner
    p.script_args = [0]
    runner.alwayson_scripts[0].args_from = runner.alwayson_scripts[0].args_to = 1
    assert "Always: on" in webui.processing.process_images(p).infotexts[0]


def test_mask_blur_matches_the_webuis_opencv_blur(webui: Any) -> None:
    """cv2.GaussianBlur(mask, (21, 1), 4) as v1.10.1 calls it for mask blur 4, measured with the
    WebUI's opencv on a mask white from column 32 (tests/integration runs the real one)."""
    measured = [0, 0, 0, 0, 1, 3, 7, 12, 21, 32, 48, 67, 90, 115, 140, 165, 188, 207, 223, 234, 243, 248, 252, 254,
                255, 255, 255, 255]
    processing = webui.module("processing")
    mask = np.zeros((3, 64), np.uint8)
    mask[:, 32:] = 255
    blurred = processing.gaussian_blur_1d(mask, 4, axis=1)
    assert np.abs(blurred[0, 18:46].astype(int) - measured).max() <= 1
    assert np.array_equal(processing.gaussian_blur_1d(mask.T.copy(), 4, axis=0), blurred.T)


# -- inpainting -------------------------------------------------------------------------------------


def _gradient(size: int = 64) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    return Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8))


def _square_mask(box: tuple[int, int, int, int] = (40, 40, 55, 55)) -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (box[0], box[1], box[2] + 1, box[3] + 1))
    return mask


def _inpaint(webui: Any, **kwargs: Any) -> tuple[Any, Any]:
    fields = dict(prompt=PROMPT, seed=4, batch_size=2, sampler_name="Euler a", steps=8, init_images=[_gradient()],
                  mask=_square_mask(), denoising_strength=0.9)
    fields.update(kwargs)
    p = webui.img2img(**fields)
    return p, webui.processing.process_images(p)


def test_only_masked_inpainting_generates_the_crop_and_pastes_it_back(webui: Any) -> None:
    """v1.10.1 with mask blur 4 and padding 4 on a 16-pixel square at (40, 40): the blurred mask's
    box (30, 30)-(64, 64) grows by the padding to (26, 26)-(64, 64), already square, so that 38-pixel
    region is generated at 64 x 64 and pasted back; outside it the picture is the init image."""
    p, res = _inpaint(webui, inpaint_full_res=True, inpaint_full_res_padding=4, inpainting_fill=1)
    assert p.paste_to == (26, 26, 38, 38)
    assert p.init_latent.shape == (2, 3, 64, 64)
    # the crop, enlarged: the init latent's top-left pixel is the init image's pixel (26, 26)
    assert np.abs(p.init_latent[0, :, 0, 0].numpy() - (np.asarray(_gradient())[26, 26] / 127.5 - 1)).max() < 0.05
    params = webui.module("infotext_utils").parse_generation_parameters(res.infotexts[0])
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "4"
    assert params["Mask blur"] == "4"
    init = np.asarray(_gradient()).astype(int)
    outside = np.ones((64, 64), bool)
    outside[26:, 26:] = False
    for image in res.images:
        pixels = np.asarray(image).astype(int)
        assert image.size == (64, 64) and np.array_equal(pixels[outside], init[outside])
        assert np.abs(pixels[44:52, 44:52] - init[44:52, 44:52]).max() > 10
    assert np.abs(_pixels(res.images)[0] - _pixels(res.images)[1])[44:52, 44:52].max() > 0


def test_only_masked_with_a_blank_mask_is_plain_img2img(webui: Any) -> None:
    p, res = _inpaint(webui, inpaint_full_res=True, mask=Image.new("L", (64, 64), 0), inpainting_fill=1)
    assert p.paste_to is None and p.mask is None and p.inpaint_full_res is False
    assert "Inpaint Only mask" in res.comments and "Inpaint area" not in res.infotexts[0]


@pytest.mark.parametrize(("fill", "label"), [(0, "fill"), (2, "latent noise"), (3, "latent nothing")])
def test_every_masked_content_mode_runs_as_in_the_webui(webui: Any, fill: int, label: str) -> None:
    """The API's defaults are "only masked" and "fill" (the dataclass's); the WebUI pre-fills the
    masked area (masking.fill) for every mode but "original", before encoding: so even where the
    latent mask keeps the init latent (the blurred mask's faint edge, rounded to "keep") it is not
    the original picture's. (The VAE posterior is drawn from the global RNG: seeded alike.)"""
    torch.manual_seed(0)
    p, res = _inpaint(webui, inpaint_full_res=True, inpaint_full_res_padding=0, inpainting_fill=fill)
    assert f"Masked content: {label}" in res.infotexts[0] and len(res.images) == 2
    torch.manual_seed(0)
    original, _ = _inpaint(webui, inpaint_full_res=True, inpaint_full_res_padding=0, inpainting_fill=1)
    kept = p.mask.bool()
    assert (p.init_latent - original.init_latent).abs()[:, kept].max() > 0.01


def test_return_mask_and_composite_follow_each_image(webui: Any) -> None:
    webui.shared.opts.return_mask = True
    webui.shared.opts.return_mask_composite = True
    _, res = _inpaint(webui, inpaint_full_res=True, inpaint_full_res_padding=4, inpainting_fill=1)
    assert len(res.images) == 6 and [im.mode for im in res.images[:3]] == ["RGB", "RGB", "RGBA"]
    composite = np.asarray(res.images[2])
    assert composite[0, 0, 3] == 0 and composite[48, 48, 3] > 200  # the blurred mask as alpha


def test_only_masked_inpainting_with_a_hyperbatch_sampler(webui: Any) -> None:
    """The crop's one init latent grows a hyperbatch; the paste-back keeps the rest exact."""
    webui.load_scripts()
    p, res = _inpaint(webui, inpaint_full_res=True, inpaint_full_res_padding=4, inpainting_fill=1, batch_size=4,
                      sampler_name="DPM++ 2M - Hyperbatch", steps=10)
    assert len(res.images) == 4 and len({im.tobytes() for im in res.images}) == 4
    assert "DPM++ 2M - Hyperbatch" in res.infotexts[0]
    init = np.asarray(_gradient()).astype(int)
    for image in res.images:
        assert np.array_equal(np.asarray(image).astype(int)[:26], init[:26])


def test_the_live_preview_stores_the_prediction_its_setting_names(webui: Any) -> None:
    """modules/sd_samplers_cfg_denoiser.py:L297-L304: "Prompt" (the cond prediction, the default),
    "Negative prompt" (the uncond prediction) or "Combined" (the CFG result)."""
    stored = {}
    for subject in ("Prompt", "Negative prompt", "Combined"):
        webui.shared.opts.live_preview_content = subject
        p = webui.txt2img(prompt=PROMPT, negative_prompt="blue square", seed=8, batch_size=2, steps=1,
                          sampler_name="Euler", cfg_scale=4.0)
        webui.processing.process_images(p)
        stored[subject] = webui.shared.state.current_latent.clone()
    assert not torch.equal(stored["Prompt"], stored["Negative prompt"])
    assert not torch.equal(stored["Prompt"], stored["Combined"])
    assert not torch.equal(stored["Negative prompt"], stored["Combined"])
