"""Stand-in for modules/processing.py (v1.10.1 82a973c0; 1.8 differences noted): a whole generation.

`process_images(p)` runs what the WebUI runs, in the same order: settings overrides, seeds
(`all_seeds` = seed + i unless variation seeds), prompts (styles, list prompts), per batch
(`n_iter` times): per-seed noise (`p.rng`, an ImageRNG), conds with prompt editing and AND
(`setup_conds`, cached like the WebUI's), `p.sample(...)` through the sampler of
`sd_samplers.create_sampler(p.sampler_name, ...)` and the CFG denoiser, decoding, saving (only
when `p.save_samples()`), infotexts, then a grid; it returns a `Processed`. Interrupt and skip
are honoured as in the WebUI (the CFG denoiser raises InterruptedException between steps,
`state.interrupted`/`stopping_generation` stop the batch loop).

Toy-model specifics: latents are the toy's pixels, so opt_C = 3 and opt_f = 1 (the WebUI's are
4 and 8) and p.width = p.height = 64. Not mirrored (they raise or are skipped, as documented on
each): extra networks (<lora:...> stays in the prompt), face restoration, color correction,
token merging, textual inversion, inpainting models' image conditioning (the toy is not one),
hires fix with image upscalers (only latent upscaling) or a first-pass image, saving the init
image. Inpainting is mirrored as v1.10.1 runs it for a non-inpainting model: mask blur (cv2's
Gaussian in numpy, default 4), "whole picture" and "only masked" (inpaint_full_res: the crop
region of modules/masking.py with its padding, the crop enlarged to the processing size, the
result pasted back into the full picture by apply_overlay/uncrop), and every "Masked content"
mode (masking.fill for all but "original").
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

import modules
from modules import devices, images, infotext_utils, masking, paths, prompt_parser, rng, scripts, sd_models, sd_samplers
from modules import sd_samplers_common, shared
from modules.rng import slerp  # noqa: F401 - the WebUI re-exports it here
from modules.sd_samplers_common import approximation_indexes, decode_first_stage, images_tensor_to_samples
from modules.shared import cmd_opts, opts, state

opt_C = 3
"""modules/processing.py:L39 `opt_C = 4` (SD's latent channels); the toy's latents are RGB pixels."""
opt_f = 1
"""modules/processing.py:L40 `opt_f = 8` (the VAE's downscale); the toy's latents are full size."""

_HAS_SCHEDULER = modules.version_at_least(1, 9)


def gaussian_blur_1d(mask: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """modules/processing.py:L1621-L1631 `if self.mask_blur_x > 0:`: cv2.GaussianBlur of a uint8
    mask along one axis with the WebUI's kernel of 2 * int(2.5 * sigma + 0.5) + 1 taps (mask blur
    4: 21 taps, reaching 10 pixels past the mask's edge), cv2's default border (reflect-101),
    rounded back to uint8."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    taps = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    pad = [(0, 0), (0, 0)]
    pad[axis] = (size // 2, size // 2)
    padded = np.pad(mask.astype(np.float64), pad, mode="reflect")
    out = np.zeros(mask.shape, dtype=np.float64)
    for i, weight in enumerate(taps):
        out += weight * (padded[i:i + mask.shape[0], :] if axis == 0 else padded[:, i:i + mask.shape[1]])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def uncrop(image: Image.Image, dest_size: tuple[int, int], paste_loc: tuple[int, int, int, int]) -> Image.Image:
    """modules/processing.py:L65: "only masked": the generated crop, resized back (crop and resize)
    to its region (x, y, w, h), on a transparent picture of the full size."""
    x, y, w, h = paste_loc
    base_image = Image.new("RGBA", dest_size)
    base_image.paste(images.resize_image(1, image, w, h), (x, y))
    return base_image


def apply_overlay(image: Image.Image, paste_loc: Any, overlay: Image.Image | None) -> tuple[Image.Image, Image.Image]:
    """modules/processing.py:L75: composite the inpainting overlay (original outside the mask);
    with "only masked" the crop is pasted back first (uncrop)."""
    if overlay is None:
        return image, image.copy()
    if paste_loc is not None:
        image = uncrop(image, (overlay.width, overlay.height), paste_loc)
    original_denoised_image = image.copy()
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB"), original_denoised_image


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:
    """modules/processing.py:L90: an L mask from the alpha channel of RGBA, else the luminance."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        if round:
            image = image.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
        else:
            image = image.split()[-1].convert("L")
    else:
        image = image.convert("L")
    return image


def txt2img_image_conditioning(sd_model: Any, x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """modules/processing.py:L100: the dummy [B, 5, 1, 1] zeros of a non-inpainting model."""
    return x.new_zeros(x.shape[0], 5, 1, 1, dtype=x.dtype, device=x.device)


@dataclass(repr=False)
class StableDiffusionProcessing:
    """modules/processing.py:L137: the parameters and state of one generation job.

    Same fields and defaults as the WebUI; `scheduler` (and Txt2Img's `hr_scheduler`) exist only
    with the 1.9+ flavour, as in the real 1.8 there is no such attribute.
    """

    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    prompt_for_display: str = None
    negative_prompt: str = ""
    styles: list[str] = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    if _HAS_SCHEDULER:
        scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] = None
    overlay_images: list = None
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    ddim_discretize: str = None
    s_min_uncond: float = None
    s_churn: float = None
    s_tmax: float = None
    s_tmin: float = None
    s_noise: float = None
    override_settings: dict[str, Any] = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image: Image.Image = None

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)

    cached_uc = [None, None]
    cached_c = [None, None]

    comments: dict = None
    sampler: Any = field(default=None, init=False)
    is_using_inpainting_conditioning: bool = field(default=False, init=False)
    paste_to: tuple | None = field(default=None, init=False)

    is_hr_pass: bool = field(default=False, init=False)

    c: tuple = field(default=None, init=False)
    uc: tuple = field(default=None, init=False)

    rng: rng.ImageRNG | None = field(default=None, init=False)
    step_multiplier: int = field(default=1, init=False)
    color_corrections: list = field(default=None, init=False)

    all_prompts: list = field(default=None, init=False)
    all_negative_prompts: list = field(default=None, init=False)
    all_seeds: list = field(default=None, init=False)
    all_subseeds: list = field(default=None, init=False)
    iteration: int = field(default=0, init=False)
    main_prompt: str = field(default=None, init=False)
    main_negative_prompt: str = field(default=None, init=False)

    prompts: list = field(default=None, init=False)
    negative_prompts: list = field(default=None, init=False)
    seeds: list = field(default=None, init=False)
    subseeds: list = field(default=None, init=False)
    extra_network_data: dict = field(default=None, init=False)

    user: str = field(default=None, init=False)

    sd_model_name: str = field(default=None, init=False)
    sd_model_hash: str = field(default=None, init=False)
    sd_vae_name: str = field(default=None, init=False)
    sd_vae_hash: str = field(default=None, init=False)

    is_api: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        """modules/processing.py:L228."""
        if self.sampler_index is not None:
            print("sampler_index argument for StableDiffusionProcessing does not do anything; use sampler_name", file=sys.stderr)
        self.comments = {}
        if self.styles is None:
            self.styles = []
        self.sampler_noise_scheduler_override = None
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args = self.script_args or {}
        self.refiner_checkpoint_info = None
        if not self.seed_enable_extras:
            self.subseed = -1
            self.subseed_strength = 0
            self.seed_resize_from_h = 0
            self.seed_resize_from_w = 0
        self.cached_uc = StableDiffusionProcessing.cached_uc
        self.cached_c = StableDiffusionProcessing.cached_c

    def fill_fields_from_opts(self) -> None:
        """modules/processing.py:L254: unset sampler parameters take the settings' values."""
        self.s_min_uncond = self.s_min_uncond if self.s_min_uncond is not None else opts.s_min_uncond
        self.s_churn = self.s_churn if self.s_churn is not None else opts.s_churn
        self.s_tmin = self.s_tmin if self.s_tmin is not None else opts.s_tmin
        self.s_tmax = (self.s_tmax if self.s_tmax is not None else opts.s_tmax) or float("inf")
        self.s_noise = self.s_noise if self.s_noise is not None else opts.s_noise

    @property
    def sd_model(self) -> Any:
        """modules/processing.py:L262: always the loaded model."""
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value: Any) -> None:
        pass

    @property
    def scripts(self) -> Any:
        """modules/processing.py:L270: the ScriptRunner whose always-on hooks run (None: no scripts)."""
        return self.scripts_value

    @scripts.setter
    def scripts(self, value: Any) -> None:
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self) -> Any:
        """modules/processing.py:L281."""
        return self.script_args_value

    @script_args.setter
    def script_args(self, value: Any) -> None:
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self) -> None:
        """modules/processing.py:L291."""
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text: str) -> None:
        """modules/processing.py:L296."""
        self.comments[text] = 1

    def txt2img_image_conditioning(self, x: torch.Tensor, width: int | None = None, height: int | None = None) -> torch.Tensor:
        """modules/processing.py:L299."""
        self.is_using_inpainting_conditioning = self.sd_model.model.conditioning_key in {"hybrid", "concat"}
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    def img2img_image_conditioning(self, source_image: torch.Tensor, latent_image: torch.Tensor, image_mask: Any = None,
                                   round_image_mask: bool = True) -> torch.Tensor:
        """modules/processing.py:L375: for a non-inpainting model, [B, 5, 1, 1] zeros."""
        return latent_image.new_zeros(latent_image.shape[0], 5, 1, 1)

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """modules/processing.py:L398."""

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> torch.Tensor:
        """modules/processing.py:L401."""
        raise NotImplementedError()

    def close(self) -> None:
        """modules/processing.py:L404."""
        self.sampler = None
        self.c = None
        self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """modules/processing.py:L412."""
        if for_hr:
            return self.token_merging_ratio_hr or opts.token_merging_ratio_hr or self.token_merging_ratio or opts.token_merging_ratio
        return self.token_merging_ratio or opts.token_merging_ratio

    def setup_prompts(self) -> None:
        """modules/processing.py:L418: all_prompts / all_negative_prompts, styles applied."""
        if isinstance(self.prompt, list):
            self.all_prompts = self.prompt
        elif isinstance(self.negative_prompt, list):
            self.all_prompts = [self.prompt] * len(self.negative_prompt)
        else:
            self.all_prompts = self.batch_size * self.n_iter * [self.prompt]
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = self.negative_prompt
        else:
            self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise RuntimeError(f"Received a different number of prompts ({len(self.all_prompts)}) and negative prompts ({len(self.all_negative_prompts)})")
        self.all_prompts = [shared.prompt_styles.apply_styles_to_prompt(x, self.styles) for x in self.all_prompts]
        self.all_negative_prompts = [shared.prompt_styles.apply_negative_styles_to_prompt(x, self.styles) for x in self.all_negative_prompts]
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def cached_params(self, required_prompts: Any, steps: int, extra_network_data: Any, hires_steps: int | None = None,
                      use_old_scheduling: bool = False) -> tuple[Any, ...]:
        """modules/processing.py:L440: what invalidates the cond cache."""
        return (
            required_prompts,
            steps,
            hires_steps,
            use_old_scheduling,
            opts.CLIP_stop_at_last_layers,
            shared.sd_model.sd_checkpoint_info,
            extra_network_data,
            opts.sdxl_crop_left,
            opts.sdxl_crop_top,
            self.width,
            self.height,
            opts.fp8_storage,
            opts.cache_fp16_weight,
            opts.emphasis,
        )

    def get_conds_with_caching(self, function: Any, required_prompts: Any, steps: int, caches: list[list[Any]],
                               extra_network_data: Any, hires_steps: int | None = None) -> Any:
        """modules/processing.py:L460: function(sd_model, prompts, steps, ...) through the cond cache."""
        if shared.opts.use_old_scheduling:
            old_schedules = prompt_parser.get_learned_conditioning_prompt_schedules(required_prompts, steps, hires_steps, False)
            new_schedules = prompt_parser.get_learned_conditioning_prompt_schedules(required_prompts, steps, hires_steps, True)
            if old_schedules != new_schedules:
                self.extra_generation_params["Old prompt editing timelines"] = True
        cached_params = self.cached_params(required_prompts, steps, extra_network_data, hires_steps, shared.opts.use_old_scheduling)
        for cache in caches:
            if cache[0] is not None and cached_params == cache[0]:
                return cache[1]
        cache = caches[0]
        with devices.autocast():
            cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, shared.opts.use_old_scheduling)
        cache[0] = cached_params
        return cache[1]

    def setup_conds(self) -> None:
        """modules/processing.py:L493: self.uc (negative schedules) and self.c (multicond)."""
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negative_prompts = prompt_parser.SdConditioning(self.negative_prompts, width=self.width, height=self.height, is_negative_prompt=True)
        sampler_config = sd_samplers.find_sampler_config(self.sampler_name)
        total_steps = sampler_config.total_steps(self.steps) if sampler_config else self.steps
        self.step_multiplier = total_steps // self.steps
        self.firstpass_steps = total_steps
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative_prompts, total_steps, [self.cached_uc], self.extra_network_data)
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts, total_steps, [self.cached_c], self.extra_network_data)

    def get_conds(self) -> tuple[Any, Any]:
        """modules/processing.py:L505."""
        return self.c, self.uc

    def parse_extra_network_prompts(self) -> None:
        """modules/processing.py:L508: extra networks are not mirrored; prompts stay as written."""
        self.extra_network_data = {}

    def save_samples(self) -> bool:
        """modules/processing.py:L511: whether generated images are written to disk."""
        return opts.samples_save and not self.do_not_save_samples and (opts.save_incomplete_images or not state.interrupted and not state.skipped)


class Processed:
    """modules/processing.py:L516: the result of process_images."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list[Image.Image], seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts: list[str] | None = None, all_negative_prompts: list[str] | None = None,
                 all_seeds: list[int] | None = None, all_subseeds: list[int] | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str = "") -> None:
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = opts.face_restoration_model if p.restore_faces else None
        self.sd_model_name = p.sd_model_name
        self.sd_model_hash = p.sd_model_hash
        self.sd_vae_name = p.sd_vae_name
        self.sd_vae_hash = p.sd_vae_hash
        self.seed_resize_from_w = p.seed_resize_from_w
        self.seed_resize_from_h = p.seed_resize_from_h
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = state.job_timestamp
        self.clip_skip = opts.CLIP_stop_at_last_layers
        self.token_merging_ratio = p.token_merging_ratio
        self.token_merging_ratio_hr = p.token_merging_ratio_hr
        self.eta = p.eta
        self.ddim_discretize = p.ddim_discretize
        self.s_churn = p.s_churn
        self.s_tmin = p.s_tmin
        self.s_tmax = p.s_tmax
        self.s_noise = p.s_noise
        self.s_min_uncond = p.s_min_uncond
        self.sampler_noise_scheduler_override = p.sampler_noise_scheduler_override
        self.prompt = self.prompt if not isinstance(self.prompt, list) else self.prompt[0]
        self.negative_prompt = self.negative_prompt if not isinstance(self.negative_prompt, list) else self.negative_prompt[0]
        self.seed = int(self.seed if not isinstance(self.seed, list) else self.seed[0]) if self.seed is not None else -1
        self.subseed = int(self.subseed if not isinstance(self.subseed, list) else self.subseed[0]) if self.subseed is not None else -1
        self.is_using_inpainting_conditioning = p.is_using_inpainting_conditioning
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.version = program_version()

    def js(self) -> str:
        """modules/processing.py:L571: the JSON the UI receives as generation info."""
        obj = {
            "prompt": self.all_prompts[0],
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0],
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": self.subseed,
            "all_subseeds": self.all_subseeds,
            "subseed_strength": self.subseed_strength,
            "width": self.width,
            "height": self.height,
            "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "restore_faces": self.restore_faces,
            "face_restoration_model": self.face_restoration_model,
            "sd_model_name": self.sd_model_name,
            "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name,
            "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w,
            "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
            "styles": self.styles,
            "job_timestamp": self.job_timestamp,
            "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning,
            "version": self.version,
        }
        return json.dumps(obj, default=lambda o: None)

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        """modules/processing.py:L609."""
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               position_in_batch=index % self.batch_size, iteration=index // self.batch_size)

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """modules/processing.py:L612."""
        return self.token_merging_ratio_hr if for_hr else self.token_merging_ratio


def create_random_tensors(shape: Any, seeds: list[int], subseeds: list[int] | None = None, subseed_strength: float = 0.0,
                          seed_resize_from_h: int = 0, seed_resize_from_w: int = 0, p: Any = None) -> torch.Tensor:
    """modules/processing.py:L616: one noise row per seed."""
    g = rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=subseed_strength,
                     seed_resize_from_h=seed_resize_from_h, seed_resize_from_w=seed_resize_from_w)
    return g.next()


class DecodedSamples(list):
    """modules/processing.py:L621: decoded images, so process_images does not decode again."""

    already_decoded = True


def decode_latent_batch(model: Any, batch: torch.Tensor, target_device: Any = None, check_for_nans: bool = False) -> DecodedSamples:
    """modules/processing.py:L625: decode one latent at a time (the VAE NaN autofix is not mirrored)."""
    samples = DecodedSamples()
    if check_for_nans:
        devices.test_for_nans(batch, "unet")
    for i in range(batch.shape[0]):
        sample = decode_first_stage(model, batch[i:i + 1])[0]
        if check_for_nans:
            devices.test_for_nans(sample, "vae")
        if target_device is not None:
            sample = sample.to(target_device)
        samples.append(sample)
    return samples


def get_fixed_seed(seed: Any) -> int:
    """modules/processing.py:L675: -1 (or empty / invalid) means a random seed."""
    if seed == "" or seed is None:
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except Exception:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return seed


def fix_seed(p: StableDiffusionProcessing) -> None:
    """modules/processing.py:L690: replace random (-1) seeds by concrete ones."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def program_version() -> str | None:
    """modules/processing.py:L695: the WebUI's git tag (here: the mirrored version, e.g. "v1.10.1")."""
    return "v" + ".".join(str(x) for x in modules.WEBUI_VERSION)


def create_infotext(p: StableDiffusionProcessing, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int],
                    comments: Any = None, iteration: int = 0, position_in_batch: int = 0, use_main_prompt: bool = False,
                    index: int | None = None, all_negative_prompts: list[str] | None = None) -> str:
    """modules/processing.py:L705: the "parameters" text of one image.

    "Prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: ..., Schedule type: ..., CFG scale: ...,
    Seed: ..., Size: WxH, Model hash: ..., Model: ..., <extra_generation_params>, Version: ...".
    The "Schedule type" entry exists from 1.9 (from p.scheduler).
    """
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    clip_skip = getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers)
    enable_hr = getattr(p, "enable_hr", False)
    token_merging_ratio = p.get_token_merging_ratio()
    token_merging_ratio_hr = p.get_token_merging_ratio(for_hr=True)
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    uses_ensd = opts.eta_noise_seed_delta != 0
    if uses_ensd:
        uses_ensd = sd_samplers_common.is_sampler_using_eta_noise_seed_delta(p)
    generation_params: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
    }
    if _HAS_SCHEDULER:
        generation_params["Schedule type"] = p.scheduler
    generation_params.update({
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Face restoration": opts.face_restoration_model if p.restore_faces else None,
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash if opts.add_model_hash_to_info else None,
        "Model": p.sd_model_name if opts.add_model_name_to_info else None,
        "VAE hash": p.sd_vae_hash if opts.add_vae_hash_to_info else None,
        "VAE": p.sd_vae_name if opts.add_vae_name_to_info else None,
        "Variation seed": (None if p.subseed_strength == 0 else (p.all_subseeds[0] if use_main_prompt else all_subseeds[index])),
        "Variation seed strength": (None if p.subseed_strength == 0 else p.subseed_strength),
        "Seed resize from": (None if p.seed_resize_from_w <= 0 or p.seed_resize_from_h <= 0 else f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"),
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        "Conditional mask weight": getattr(p, "inpainting_mask_weight", shared.opts.inpainting_mask_weight) if p.is_using_inpainting_conditioning else None,
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "ENSD": opts.eta_noise_seed_delta if uses_ensd else None,
        "Token merging ratio": None if token_merging_ratio == 0 else token_merging_ratio,
        "Token merging ratio hr": None if not enable_hr or token_merging_ratio_hr == 0 else token_merging_ratio_hr,
        "Init image hash": getattr(p, "init_img_hash", None),
        "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
        "Tiling": "True" if p.tiling else None,
        **p.extra_generation_params,
        "Version": program_version() if opts.add_version_to_infotext else None,
        "User": p.user if opts.add_user_name_to_info else None,
    })
    for key, value in generation_params.items():
        try:
            if isinstance(value, list):
                generation_params[key] = value[index]
            elif callable(value):
                generation_params[key] = value(**locals())
        except Exception:
            from modules import errors

            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            generation_params[key] = None
    generation_params_text = ", ".join([k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in generation_params.items() if v is not None])
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_prompt_text}\n{generation_params_text}".strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    """modules/processing.py:L819: apply override_settings, run process_images_inner, restore settings."""
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored_opts = {k: opts.data[k] if k in opts.data else opts.get_default(k) for k in p.override_settings.keys() if k in opts.data}
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get("sd_model_checkpoint")) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()
        sd_models.apply_token_merging(p.sd_model, p.get_token_merging_ratio())
        if _HAS_SCHEDULER:
            sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        res = process_images_inner(p)
    finally:
        sd_models.apply_token_merging(p.sd_model, 0)
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """modules/processing.py:L863: the batch loop shared by txt2img and img2img."""
    if isinstance(p.prompt, list):
        assert len(p.prompt) > 0
    else:
        assert p.prompt is not None
    devices.torch_gc()
    seed = get_fixed_seed(p.seed)
    subseed = get_fixed_seed(p.subseed)
    if p.restore_faces is None:
        p.restore_faces = opts.face_restoration
    if p.tiling is None:
        p.tiling = opts.tiling
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        p.refiner_checkpoint_info = sd_models.get_closet_checkpoint_match(p.refiner_checkpoint)
        if p.refiner_checkpoint_info is None:
            raise Exception(f"Could not find checkpoint with name {p.refiner_checkpoint}")
    p.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = shared.sd_model.sd_model_hash
    p.sd_vae_name = None
    p.sd_vae_hash = None
    p.fill_fields_from_opts()
    p.setup_prompts()
    if isinstance(seed, list):
        p.all_seeds = seed
    else:
        p.all_seeds = [int(seed) + (x if p.subseed_strength == 0 else 0) for x in range(len(p.all_prompts))]
    if isinstance(subseed, list):
        p.all_subseeds = subseed
    else:
        p.all_subseeds = [int(subseed) + x for x in range(len(p.all_prompts))]
    if p.scripts is not None:
        p.scripts.process(p)

    infotexts: list[str] = []
    output_images: list[Image.Image] = []
    with torch.no_grad(), p.sd_model.ema_scope():
        with devices.autocast():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        if state.job_count == -1:
            state.job_count = p.n_iter

        for n in range(p.n_iter):
            p.iteration = n
            if state.skipped:
                state.skipped = False
            if state.interrupted or (modules.version_at_least(1, 8) and state.stopping_generation):
                break
            sd_models.reload_model_weights()

            p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
            p.negative_prompts = p.all_negative_prompts[n * p.batch_size:(n + 1) * p.batch_size]
            p.seeds = p.all_seeds[n * p.batch_size:(n + 1) * p.batch_size]
            p.subseeds = p.all_subseeds[n * p.batch_size:(n + 1) * p.batch_size]

            latent_channels = getattr(shared.sd_model, "latent_channels", opt_C)
            p.rng = rng.ImageRNG((latent_channels, p.height // opt_f, p.width // opt_f), p.seeds, subseeds=p.subseeds,
                                 subseed_strength=p.subseed_strength, seed_resize_from_h=p.seed_resize_from_h,
                                 seed_resize_from_w=p.seed_resize_from_w)
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            if len(p.prompts) == 0:
                break
            p.parse_extra_network_prompts()
            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            p.setup_conds()

            if n == 0 and not cmd_opts.no_prompt_history:
                with open(os.path.join(paths.data_path, "params.txt"), "w", encoding="utf8") as file:
                    processed = Processed(p, [])
                    file.write(processed.infotext(p, 0))
            if p.n_iter > 1:
                shared.state.job = f"Batch {n + 1} out of {p.n_iter}"

            with devices.autocast():
                samples_ddim = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                                        subseed_strength=p.subseed_strength, prompts=p.prompts)
            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples_ddim)
                p.scripts.post_sample(p, ps)
                samples_ddim = ps.samples
            if getattr(samples_ddim, "already_decoded", False):
                x_samples_ddim = samples_ddim
            else:
                devices.test_for_nans(samples_ddim, "unet")
                if opts.sd_vae_decode_method != "Full":
                    p.extra_generation_params["VAE Decoder"] = opts.sd_vae_decode_method
                x_samples_ddim = decode_latent_batch(p.sd_model, samples_ddim, target_device=devices.cpu, check_for_nans=True)
            x_samples_ddim = torch.stack(x_samples_ddim).float()
            x_samples_ddim = torch.clamp((x_samples_ddim + 1.0) / 2.0, min=0.0, max=1.0)
            del samples_ddim
            state.nextjob()

            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples_ddim, batch_number=n)
                p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
                p.negative_prompts = p.all_negative_prompts[n * p.batch_size:(n + 1) * p.batch_size]
                batch_params = scripts.PostprocessBatchListArgs(list(x_samples_ddim))
                p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
                x_samples_ddim = batch_params.images

            def infotext(index: int = 0, use_main_prompt: bool = False) -> str:
                return create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt, index=index,
                                       all_negative_prompts=p.negative_prompts)

            save_samples = p.save_samples()
            for i, x_sample in enumerate(x_samples_ddim):
                p.batch_index = i
                x_sample = 255.0 * np.moveaxis(x_sample.cpu().numpy(), 0, 2)
                x_sample = x_sample.astype(np.uint8)
                image = Image.fromarray(x_sample)
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                mask_for_overlay = getattr(p, "mask_for_overlay", None)
                if not shared.opts.overlay_inpaint:
                    overlay_image = None
                elif getattr(p, "overlay_images", None) is not None and i < len(p.overlay_images):
                    overlay_image = p.overlay_images[i]
                else:
                    overlay_image = None
                image, original_denoised_image = apply_overlay(image, p.paste_to, overlay_image)
                if save_samples:
                    images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], opts.samples_format, info=infotext(i), p=p)
                text = infotext(i)
                infotexts.append(text)
                if opts.enable_pnginfo:
                    image.info["parameters"] = text
                output_images.append(image)
                if mask_for_overlay is not None:
                    # after each image its mask and/or the generated pixels under the mask (saving
                    # them is not mirrored): modules/processing.py:L1093-L1106 `mask_for_overlay`
                    if opts.return_mask:
                        output_images.append(mask_for_overlay.convert("RGB"))
                    if opts.return_mask_composite:
                        region = images.resize_image(2, mask_for_overlay, image.width, image.height).convert("L")
                        output_images.append(Image.composite(original_denoised_image.convert("RGBA").convert("RGBa"),
                                                             Image.new("RGBa", image.size), region).convert("RGBA"))
            del x_samples_ddim

        if not infotexts:
            infotexts.append(Processed(p, []).infotext(p, 0))
        p.color_corrections = None
        index_of_first_image = 0
        unwanted_grid_because_of_img_count = len(output_images) < 2 and opts.grid_only_if_multiple
        if (opts.return_grid or opts.grid_save) and not p.do_not_save_grid and not unwanted_grid_because_of_img_count:
            grid = images.image_grid(output_images, p.batch_size)
            if opts.return_grid:
                text = infotext(use_main_prompt=True)
                infotexts.insert(0, text)
                if opts.enable_pnginfo:
                    grid.info["parameters"] = text
                output_images.insert(0, grid)
                index_of_first_image = 1
            if opts.grid_save:
                images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format,
                                  info=infotext(use_main_prompt=True), short_filename=True, p=p, grid=True)

    res = Processed(
        p,
        images_list=output_images,
        seed=p.all_seeds[0],
        info=infotexts[0],
        subseed=p.all_subseeds[0],
        index_of_first_image=index_of_first_image,
        infotexts=infotexts,
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """modules/processing.py:L1166: txt2img, with the hires fix (latent upscalers only here)."""

    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str = None
    hr_sampler_name: str = None
    if _HAS_SCHEDULER:
        hr_scheduler: str = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str = None

    cached_hr_uc = [None, None]
    cached_hr_c = [None, None]

    hr_checkpoint_info: dict = field(default=None, init=False)
    hr_upscale_to_x: int = field(default=0, init=False)
    hr_upscale_to_y: int = field(default=0, init=False)
    truncate_x: int = field(default=0, init=False)
    truncate_y: int = field(default=0, init=False)
    applied_old_hires_behavior_to: tuple = field(default=None, init=False)
    latent_scale_mode: dict = field(default=None, init=False)
    hr_c: tuple | None = field(default=None, init=False)
    hr_uc: tuple | None = field(default=None, init=False)
    all_hr_prompts: list = field(default=None, init=False)
    all_hr_negative_prompts: list = field(default=None, init=False)
    hr_prompts: list = field(default=None, init=False)
    hr_negative_prompts: list = field(default=None, init=False)
    hr_extra_network_data: list = field(default=None, init=False)

    def __post_init__(self) -> None:
        """modules/processing.py:L1201."""
        super().__post_init__()
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            self.hr_upscale_to_x = self.width
            self.hr_upscale_to_y = self.height
            self.width = self.firstphase_width
            self.height = self.firstphase_height
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def calculate_target_resolution(self) -> None:
        """modules/processing.py:L1213 (the "use old hires fix width/height" setting is not mirrored)."""
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
            return
        self.extra_generation_params["Hires resize"] = f"{self.hr_resize_x}x{self.hr_resize_y}"
        if self.hr_resize_y == 0:
            self.hr_upscale_to_x = self.hr_resize_x
            self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
        elif self.hr_resize_x == 0:
            self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
            self.hr_upscale_to_y = self.hr_resize_y
        else:
            target_w = self.hr_resize_x
            target_h = self.hr_resize_y
            src_ratio = self.width / self.height
            dst_ratio = self.hr_resize_x / self.hr_resize_y
            if src_ratio < dst_ratio:
                self.hr_upscale_to_x = self.hr_resize_x
                self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
            else:
                self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
                self.hr_upscale_to_y = self.hr_resize_y
            self.truncate_x = (self.hr_upscale_to_x - target_w) // opt_f
            self.truncate_y = (self.hr_upscale_to_y - target_h) // opt_f

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """modules/processing.py:L1252."""
        if not self.enable_hr:
            return
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        if self.hr_checkpoint_name and self.hr_checkpoint_name != "Use same checkpoint":
            self.hr_checkpoint_info = sd_models.get_closet_checkpoint_match(self.hr_checkpoint_name)
            if self.hr_checkpoint_info is None:
                raise Exception(f"Could not find checkpoint with name {self.hr_checkpoint_name}")
            self.extra_generation_params["Hires checkpoint"] = self.hr_checkpoint_info.short_title
        if self.hr_sampler_name is not None and self.hr_sampler_name != self.sampler_name:
            self.extra_generation_params["Hires sampler"] = self.hr_sampler_name

        def get_hr_prompt(p: Any, index: int, prompt_text: str, **kwargs: Any) -> str | None:
            hr_prompt = p.all_hr_prompts[index]
            return hr_prompt if hr_prompt != prompt_text else None

        def get_hr_negative_prompt(p: Any, index: int, negative_prompt: str, **kwargs: Any) -> str | None:
            hr_negative_prompt = p.all_hr_negative_prompts[index]
            return hr_negative_prompt if hr_negative_prompt != negative_prompt else None

        self.extra_generation_params["Hires prompt"] = get_hr_prompt
        self.extra_generation_params["Hires negative prompt"] = get_hr_negative_prompt
        if _HAS_SCHEDULER:
            self.extra_generation_params["Hires schedule type"] = None
            if self.hr_scheduler is None:
                self.hr_scheduler = self.scheduler
        self.latent_scale_mode = shared.latent_upscale_modes.get(self.hr_upscaler, None) if self.hr_upscaler is not None else shared.latent_upscale_modes.get(shared.latent_upscale_default_mode, "nearest")
        if self.enable_hr and self.latent_scale_mode is None:
            if not any(x.name == self.hr_upscaler for x in shared.sd_upscalers):
                raise Exception(f"could not find upscaler named {self.hr_upscaler}")
        self.calculate_target_resolution()
        if not state.processing_has_refined_job_count:
            if state.job_count == -1:
                state.job_count = self.n_iter
            total_steps = (self.steps + (self.hr_second_pass_steps or self.steps)) * state.job_count
            shared.total_tqdm.updateTotal(total_steps)
            state.job_count = state.job_count * 2
            state.processing_has_refined_job_count = True
        if self.hr_second_pass_steps:
            self.extra_generation_params["Hires steps"] = self.hr_second_pass_steps
        if self.hr_upscaler is not None:
            self.extra_generation_params["Hires upscaler"] = self.hr_upscaler

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> Any:
        """modules/processing.py:L1307: sample from p.rng's noise; then the hires pass if enabled."""
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        if self.firstpass_image is not None and self.enable_hr:
            raise NotImplementedError("hires fix from a first-pass image is not mirrored by the stand-in")
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=self.txt2img_image_conditioning(x))
        del x
        if not self.enable_hr:
            return samples
        with sd_models.SkipWritingToConfig():
            sd_models.reload_model_weights(info=self.hr_checkpoint_info)
        return self.sample_hr_pass(samples, None, seeds, subseeds, subseed_strength, prompts)

    def sample_hr_pass(self, samples: torch.Tensor, decoded_samples: Any, seeds: list[int], subseeds: list[int],
                       subseed_strength: float, prompts: list[str]) -> Any:
        """modules/processing.py:L1364: upscale the latents and denoise them again (img2img)."""
        if shared.state.interrupted:
            return samples
        self.is_hr_pass = True
        target_width = self.hr_upscale_to_x
        target_height = self.hr_upscale_to_y
        img2img_sampler_name = self.hr_sampler_name or self.sampler_name
        self.sampler = sd_samplers.create_sampler(img2img_sampler_name, self.sd_model)
        samples = torch.nn.functional.interpolate(samples, size=(target_height // opt_f, target_width // opt_f),
                                                  mode=self.latent_scale_mode["mode"], antialias=self.latent_scale_mode["antialias"])
        if getattr(self, "inpainting_mask_weight", shared.opts.inpainting_mask_weight) < 1.0:
            image_conditioning = self.img2img_image_conditioning(decode_first_stage(self.sd_model, samples), samples)
        else:
            image_conditioning = self.txt2img_image_conditioning(samples)
        shared.state.nextjob()
        samples = samples[:, :, self.truncate_y // 2:samples.shape[2] - (self.truncate_y + 1) // 2,
                          self.truncate_x // 2:samples.shape[3] - (self.truncate_x + 1) // 2]
        self.rng = rng.ImageRNG(samples.shape[1:], self.seeds, subseeds=self.subseeds, subseed_strength=self.subseed_strength,
                                seed_resize_from_h=self.seed_resize_from_h, seed_resize_from_w=self.seed_resize_from_w)
        noise = self.rng.next()
        with devices.autocast():
            self.calculate_hr_conds()
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc, steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=image_conditioning)
        self.sampler = None
        decoded_samples = decode_latent_batch(self.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
        self.is_hr_pass = False
        return decoded_samples

    def close(self) -> None:
        """modules/processing.py:L1466."""
        super().close()
        self.hr_c = None
        self.hr_uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
            StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]

    def setup_prompts(self) -> None:
        """modules/processing.py:L1474."""
        super().setup_prompts()
        if not self.enable_hr:
            return
        if self.hr_prompt == "":
            self.hr_prompt = self.prompt
        if self.hr_negative_prompt == "":
            self.hr_negative_prompt = self.negative_prompt
        if isinstance(self.hr_prompt, list):
            self.all_hr_prompts = self.hr_prompt
        else:
            self.all_hr_prompts = self.batch_size * self.n_iter * [self.hr_prompt]
        if isinstance(self.hr_negative_prompt, list):
            self.all_hr_negative_prompts = self.hr_negative_prompt
        else:
            self.all_hr_negative_prompts = self.batch_size * self.n_iter * [self.hr_negative_prompt]
        self.all_hr_prompts = [shared.prompt_styles.apply_styles_to_prompt(x, self.styles) for x in self.all_hr_prompts]
        self.all_hr_negative_prompts = [shared.prompt_styles.apply_negative_styles_to_prompt(x, self.styles) for x in self.all_hr_negative_prompts]

    def calculate_hr_conds(self) -> None:
        """modules/processing.py:L1499."""
        if self.hr_c is not None:
            return
        hr_prompts = prompt_parser.SdConditioning(self.hr_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y)
        hr_negative_prompts = prompt_parser.SdConditioning(self.hr_negative_prompts, width=self.hr_upscale_to_x,
                                                           height=self.hr_upscale_to_y, is_negative_prompt=True)
        sampler_config = sd_samplers.find_sampler_config(self.hr_sampler_name or self.sampler_name)
        steps = self.hr_second_pass_steps or self.steps
        total_steps = sampler_config.total_steps(steps) if sampler_config else steps
        self.hr_uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, hr_negative_prompts, self.firstpass_steps,
                                                 [self.cached_hr_uc, self.cached_uc], self.hr_extra_network_data, total_steps)
        self.hr_c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, hr_prompts, self.firstpass_steps,
                                                [self.cached_hr_c, self.cached_c], self.hr_extra_network_data, total_steps)

    def setup_conds(self) -> None:
        """modules/processing.py:L1513."""
        if self.is_hr_pass:
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_uc = None
        self.hr_c = None
        if self.enable_hr and self.hr_checkpoint_info is None and shared.opts.hires_fix_use_firstpass_conds:
            self.calculate_hr_conds()

    def get_conds(self) -> tuple[Any, Any]:
        """modules/processing.py:L1538."""
        if self.is_hr_pass:
            return self.hr_c, self.hr_uc
        return super().get_conds()

    def parse_extra_network_prompts(self) -> None:
        """modules/processing.py:L1544 (extra networks are not mirrored)."""
        super().parse_extra_network_prompts()
        if self.enable_hr:
            self.hr_prompts = self.all_hr_prompts[self.iteration * self.batch_size:(self.iteration + 1) * self.batch_size]
            self.hr_negative_prompts = self.all_hr_negative_prompts[self.iteration * self.batch_size:(self.iteration + 1) * self.batch_size]
            self.hr_extra_network_data = {}


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """modules/processing.py:L1557: img2img and inpainting (a subset: see the module docstring)."""

    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = None
    latent_mask: Image.Image = None
    force_task_id: str = None

    image_mask: Any = field(default=None, init=False)
    nmask: torch.Tensor = field(default=None, init=False)
    image_conditioning: torch.Tensor = field(default=None, init=False)
    init_img_hash: str = field(default=None, init=False)
    mask_for_overlay: Image.Image = field(default=None, init=False)
    init_latent: torch.Tensor = field(default=None, init=False)

    def __post_init__(self) -> None:
        """modules/processing.py:L1583."""
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None
        self.initial_noise_multiplier = opts.initial_noise_multiplier if self.initial_noise_multiplier is None else self.initial_noise_multiplier

    @property
    def mask_blur(self) -> int | None:
        """modules/processing.py:L1591."""
        if self.mask_blur_x == self.mask_blur_y:
            return self.mask_blur_x
        return None

    @mask_blur.setter
    def mask_blur(self, value: Any) -> None:
        if isinstance(value, int):
            self.mask_blur_x = value
            self.mask_blur_y = value

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """modules/processing.py:L1602: encode the init images; set up the inpainting mask."""
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = self.image_cfg_scale if shared.sd_model.cond_stage_key == "edit" else None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        crop_region = None
        image_mask = self.image_mask
        if image_mask is not None:
            image_mask = create_binary_mask(image_mask, round=self.mask_round)
            if self.inpainting_mask_invert:
                image_mask = ImageOps.invert(image_mask)
                self.extra_generation_params["Mask mode"] = "Inpaint not masked"
            if self.mask_blur_x > 0:
                image_mask = Image.fromarray(gaussian_blur_1d(np.array(image_mask), self.mask_blur_x, axis=1))
            if self.mask_blur_y > 0:
                image_mask = Image.fromarray(gaussian_blur_1d(np.array(image_mask), self.mask_blur_y, axis=0))
            if self.mask_blur_x > 0 or self.mask_blur_y > 0:
                self.extra_generation_params["Mask blur"] = self.mask_blur
            if self.inpaint_full_res:
                # "Only masked": the blurred mask's bounding box (+ padding), widened to the
                # processing size's aspect ratio, is cut out and generated at width x height.
                self.mask_for_overlay = image_mask
                mask = image_mask.convert("L")
                crop_region = masking.get_crop_region_v2(mask, self.inpaint_full_res_padding)
                if crop_region:
                    crop_region = masking.expand_crop_region(crop_region, self.width, self.height, mask.width, mask.height)
                    x1, y1, x2, y2 = crop_region
                    mask = mask.crop(crop_region)
                    image_mask = images.resize_image(2, mask, self.width, self.height)
                    self.paste_to = (x1, y1, x2 - x1, y2 - y1)
                    self.extra_generation_params["Inpaint area"] = "Only masked"
                    self.extra_generation_params["Masked area padding"] = self.inpaint_full_res_padding
                else:
                    # An all-black mask: plain img2img. The WebUI puts the message in
                    # model_hijack.comments, which process_images copies into p.comments.
                    crop_region = None
                    image_mask = None
                    self.mask_for_overlay = None
                    self.inpaint_full_res = False
                    message = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'
                    self.comment(message)
                    logging.info(message)
            else:
                image_mask = images.resize_image(self.resize_mode, image_mask, self.width, self.height)
                np_mask = np.array(image_mask)
                np_mask = np.clip((np_mask.astype(np.float32)) * 2, 0, 255).astype(np.uint8)
                self.mask_for_overlay = Image.fromarray(np_mask)
            self.overlay_images = []
        latent_mask = self.latent_mask if self.latent_mask is not None else image_mask
        imgs = []
        for img in self.init_images:
            image = images.flatten(img, opts.img2img_background_color)
            if crop_region is None and self.resize_mode != 3:
                image = images.resize_image(self.resize_mode, image, self.width, self.height)
            if image_mask is not None:
                if self.mask_for_overlay.size != (image.width, image.height):
                    self.mask_for_overlay = images.resize_image(self.resize_mode, self.mask_for_overlay, image.width, image.height)
                image_masked = Image.new("RGBa", (image.width, image.height))
                image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(self.mask_for_overlay.convert("L")))
                self.overlay_images.append(image_masked.convert("RGBA"))
            if crop_region is not None:
                image = image.crop(crop_region)
                image = images.resize_image(2, image, self.width, self.height)
            if image_mask is not None and self.inpainting_fill != 1:
                image = masking.fill(image, latent_mask)
                if self.inpainting_fill == 0:
                    self.extra_generation_params["Masked content"] = "fill"
            image = np.array(image).astype(np.float32) / 255.0
            image = np.moveaxis(image, 2, 0)
            imgs.append(image)
        if len(imgs) == 1:
            batch_images = np.expand_dims(imgs[0], axis=0).repeat(self.batch_size, axis=0)
            if self.overlay_images is not None:
                self.overlay_images = self.overlay_images * self.batch_size
        elif len(imgs) <= self.batch_size:
            self.batch_size = len(imgs)
            batch_images = np.array(imgs)
        else:
            raise RuntimeError(f"bad number of images passed: {len(imgs)}; expecting {self.batch_size} or less")
        image = torch.from_numpy(batch_images)
        image = image.to(shared.device, dtype=devices.dtype_vae)
        self.init_latent = images_tensor_to_samples(image, approximation_indexes.get(opts.sd_vae_encode_method), self.sd_model)
        if self.resize_mode == 3:
            self.init_latent = torch.nn.functional.interpolate(self.init_latent, size=(self.height // opt_f, self.width // opt_f), mode="bilinear")
        if image_mask is not None:
            init_mask = latent_mask
            latmask = init_mask.convert("RGB").resize((self.init_latent.shape[3], self.init_latent.shape[2]))
            latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
            latmask = latmask[0]
            if self.mask_round:
                latmask = np.around(latmask)
            latmask = np.tile(latmask[None], (self.init_latent.shape[1], 1, 1))
            self.mask = torch.asarray(1.0 - latmask).to(shared.device).type(devices.dtype)
            self.nmask = torch.asarray(latmask).to(shared.device).type(devices.dtype)
            if self.inpainting_fill == 2:
                self.init_latent = self.init_latent * self.mask + create_random_tensors(self.init_latent.shape[1:], all_seeds[0:self.init_latent.shape[0]]) * self.nmask
                self.extra_generation_params["Masked content"] = "latent noise"
            elif self.inpainting_fill == 3:
                self.init_latent = self.init_latent * self.mask
                self.extra_generation_params["Masked content"] = "latent nothing"
        self.image_conditioning = self.img2img_image_conditioning(image * 2 - 1, self.init_latent, image_mask, self.mask_round)

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> torch.Tensor:
        """modules/processing.py:L1759: denoise init_latent + noise; re-blend the unmasked area."""
        x = self.rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            x *= self.initial_noise_multiplier
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, self.init_latent, x, conditioning, unconditional_conditioning,
                                              image_conditioning=self.image_conditioning)
        if self.mask is not None:
            blended_samples = samples * self.nmask + self.init_latent * self.mask
            if self.scripts is not None:
                mba = scripts.MaskBlendArgs(samples, self.nmask, self.init_latent, self.mask, blended_samples)
                self.scripts.on_mask_blend(self, mba)
                blended_samples = mba.blended_latent
            samples = blended_samples
        del x
        return samples

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """modules/processing.py:L1791."""
        return self.token_merging_ratio or ("token_merging_ratio" in self.override_settings and opts.token_merging_ratio) or opts.token_merging_ratio_img2img or opts.token_merging_ratio

