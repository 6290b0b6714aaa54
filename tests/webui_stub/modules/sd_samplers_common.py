"""Stand-in for modules/sd_samplers_common.py (v1.10.1 82a973c0): what every sampler shares.

`SamplerData` is the registry entry the WebUI lists (name, constructor, aliases, options);
`Sampler` the base class of the k-diffusion sampler (progress callback, launch, the `initialize`
that builds the solver's keyword arguments, the per-seed Brownian noise); `TorchHijack` the
redirection of k-diffusion's `torch.randn_like` to the batch's per-seed generators (`p.rng`);
`apply_refiner` the mid-sampling model switch. All as in the WebUI; live previews, TAESD/approx
decoding and the VAE NaN autofix are omitted (the toy's decoder is exact and cheap).
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from typing import Any

import numpy as np
import torch
from PIL import Image

import k_diffusion.sampling
from modules import devices, images, sd_models, sd_samplers, shared
from modules.shared import opts, state

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    """modules/sd_samplers_common.py:L14: a registered sampler (v1.6.0+; the same tuple since 1.0).

    constructor(sd_model) -> Sampler; aliases: names accepted for it (API, X/Y/Z plot);
    options: {"scheduler", "second_order", "brownian_noise", "uses_ensd", "solver_type",
    "discard_next_to_last_sigma", ...}, str/bool/number values (the API serialises them).
    """

    def total_steps(self, steps: int) -> int:
        """modules/sd_samplers_common.py:L15: model calls per step count (x2 for second-order)."""
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    """modules/sd_samplers_common.py:L22: (schedule length, steps actually run) for img2img."""
    if opts.img2img_fix_steps or steps is not None:
        requested_steps = steps or p.steps
        steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def samples_to_images_tensor(sample: torch.Tensor, approximation: int | None = None, model: Any = None) -> torch.Tensor:
    """modules/sd_samplers_common.py:L37: latents -> images in [-1, 1] (the model's full decoder)."""
    if model is None:
        model = shared.sd_model
    with torch.no_grad():
        return model.decode_first_stage(sample.to(model.first_stage_model.dtype))


def single_sample_to_image(sample: torch.Tensor, approximation: int | None = None) -> Image.Image:
    """modules/sd_samplers_common.py:L63."""
    x_sample = samples_to_images_tensor(sample.unsqueeze(0), approximation)[0] * 0.5 + 0.5
    x_sample = torch.clamp(x_sample, min=0.0, max=1.0)
    x_sample = 255.0 * np.moveaxis(x_sample.cpu().numpy(), 0, 2)
    return Image.fromarray(x_sample.astype(np.uint8))


def decode_first_stage(model: Any, x: torch.Tensor) -> torch.Tensor:
    """modules/sd_samplers_common.py:L73."""
    x = x.to(devices.dtype_vae)
    approx_index = approximation_indexes.get(opts.sd_vae_decode_method, 0)
    return samples_to_images_tensor(x, approx_index, model)


def sample_to_image(samples: torch.Tensor, index: int = 0, approximation: int | None = None) -> Image.Image:
    """modules/sd_samplers_common.py:L79."""
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples: torch.Tensor, approximation: int | None = None) -> Image.Image:
    """modules/sd_samplers_common.py:L83."""
    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def images_tensor_to_samples(image: torch.Tensor, approximation: int | None = None, model: Any = None) -> torch.Tensor:
    """modules/sd_samplers_common.py:L87: images in [0, 1] -> latents (one image at a time)."""
    if model is None:
        model = shared.sd_model
    image = image.to(devices.device, dtype=devices.dtype_vae)
    image = image * 2 - 1
    if len(image) > 1:
        return torch.stack([model.get_first_stage_encoding(model.encode_first_stage(torch.unsqueeze(img, 0)))[0]
                            for img in image])
    return model.get_first_stage_encoding(model.encode_first_stage(image))


def store_latent(decoded: torch.Tensor) -> None:
    """modules/sd_samplers_common.py:L115: keep the live-preview latent (no preview is rendered)."""
    state.current_latent = decoded


def is_sampler_using_eta_noise_seed_delta(p: Any) -> bool:
    """modules/sd_samplers_common.py:L123: whether the infotext should carry "ENSD"."""
    sampler_config = sd_samplers.find_sampler_config(p.sampler_name)
    eta = p.eta
    if eta is None and p.sampler is not None:
        eta = p.sampler.eta
    if eta is None and sampler_config is not None:
        eta = 0 if sampler_config.options.get("default_eta_is_0", False) else 1.0
    if eta == 0:
        return False
    return sampler_config.options.get("uses_ensd", False)


class InterruptedException(BaseException):
    """modules/sd_samplers_common.py:L142: raised inside sampling to stop it (interrupt, skip)."""


def replace_torchsde_browinan() -> None:
    """modules/sd_samplers_common.py:L146: torchsde draws its Brownian increments with randn_local.

    The WebUI does this at import and never undoes it; tests/webui_env.py restores torchsde's own
    function when a test's stand-in is torn down. On the CPU in float32 the values are the same.
    """
    import torchsde._brownian.brownian_interval

    def torchsde_randn(size: Any, dtype: torch.dtype, device: Any, seed: int) -> torch.Tensor:
        return devices.randn_local(seed, size).to(device=device, dtype=dtype)

    torchsde._brownian.brownian_interval._randn = torchsde_randn


replace_torchsde_browinan()


def apply_refiner(cfg_denoiser: Any, sigma: torch.Tensor | None = None) -> bool:
    """modules/sd_samplers_common.py:L158: switch to the refiner checkpoint once its time has come.

    Reloads the model, recomputes the conds for it (`p.setup_conds()`) and makes the CFG denoiser
    use them (`update_inner_model()` writes them into the sampler's extra args); returns True
    when it switched. v1.8.0 takes no `sigma` and always switches by sampling steps.
    """
    if opts.refiner_switch_by_sample_steps or sigma is None:
        completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
    else:
        try:
            timestep = torch.argmin(torch.abs(cfg_denoiser.inner_model.sigmas.to(sigma.device) - torch.max(sigma)))
        except AttributeError:
            timestep = torch.max(sigma).to(dtype=int)
        completed_ratio = (999 - timestep) / 1000
    refiner_switch_at = cfg_denoiser.p.refiner_switch_at
    refiner_checkpoint_info = cfg_denoiser.p.refiner_checkpoint_info
    if refiner_switch_at is not None and completed_ratio < refiner_switch_at:
        return False
    if refiner_checkpoint_info is None or shared.sd_model.sd_checkpoint_info == refiner_checkpoint_info:
        return False
    if getattr(cfg_denoiser.p, "enable_hr", False):
        is_second_pass = cfg_denoiser.p.is_hr_pass
        if opts.hires_fix_refiner_pass == "first pass" and is_second_pass:
            return False
        if opts.hires_fix_refiner_pass == "second pass" and not is_second_pass:
            return False
        if opts.hires_fix_refiner_pass != "second pass":
            cfg_denoiser.p.extra_generation_params["Hires refiner"] = opts.hires_fix_refiner_pass
    cfg_denoiser.p.extra_generation_params["Refiner"] = refiner_checkpoint_info.short_title
    cfg_denoiser.p.extra_generation_params["Refiner switch at"] = refiner_switch_at
    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=refiner_checkpoint_info)
    devices.torch_gc()
    cfg_denoiser.p.setup_conds()
    cfg_denoiser.update_inner_model()
    return True


class TorchHijack:
    """modules/sd_samplers_common.py:L205: k-diffusion's `torch`, with randn_like -> p.rng.next().

    Installed as `k_diffusion.sampling.torch` by `Sampler.initialize`, so every
    `torch.randn_like(x)` inside k-diffusion's samplers (Euler a's ancestral noise, ...) draws
    the next per-seed noise, B rows, whatever x is.
    """

    def __init__(self, p: Any) -> None:
        self.rng = p.rng

    def __getattr__(self, item: str) -> Any:
        if item == "randn_like":
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.rng.next()


class Sampler:
    """modules/sd_samplers_common.py:L229: base of the WebUI's samplers."""

    def __init__(self, funcname: Any) -> None:
        self.funcname = funcname
        self.func = funcname
        self.extra_params: list[str] = []
        self.sampler_noises = None
        self.stop_at: int | None = None
        self.eta: float | None = None
        self.config: SamplerData | None = None
        self.last_latent: torch.Tensor | None = None
        self.s_min_uncond: float | None = None
        self.s_churn = 0.0
        self.s_tmin = 0.0
        self.s_tmax = float("inf")
        self.s_noise = 1.0
        self.eta_option_field = "eta_ancestral"
        self.eta_infotext_field = "Eta"
        self.eta_default = 1.0
        self.conditioning_key = getattr(shared.sd_model.model, "conditioning_key", "crossattn")
        self.p: Any = None
        self.model_wrap_cfg: Any = None
        self.sampler_extra_args: dict[str, Any] | None = None
        self.options: dict[str, Any] = {}

    def callback_state(self, d: dict[str, Any]) -> None:
        """modules/sd_samplers_common.py:L256: the solver's per-step callback (progress)."""
        step = d["i"]
        if self.stop_at is not None and step > self.stop_at:
            raise InterruptedException
        state.sampling_step = step
        shared.total_tqdm.update()

    def launch_sampling(self, steps: int, func: Any) -> torch.Tensor:
        """modules/sd_samplers_common.py:L265: run `func`; on interrupt return the last latent."""
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except RecursionError:
            return self.last_latent
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p: Any) -> int:
        """modules/sd_samplers_common.py:L283."""
        return p.steps

    def initialize(self, p: Any) -> dict[str, Any]:
        """modules/sd_samplers_common.py:L286: bind p, hijack k-diffusion's torch, build solver kwargs.

        Only keyword arguments the solver's signature names are passed: the sampler's
        `extra_params` found on p (s_churn, s_tmin, s_tmax, s_noise) and `eta`; settings that
        differ from the defaults override them and are written to the infotext.
        """
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = p.mask if hasattr(p, "mask") else None
        self.model_wrap_cfg.nmask = p.nmask if hasattr(p, "nmask") else None
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)
        k_diffusion.sampling.torch = TorchHijack(p)
        extra_params_kwargs: dict[str, Any] = {}
        for param_name in self.extra_params:
            if hasattr(p, param_name) and param_name in inspect.signature(self.func).parameters:
                extra_params_kwargs[param_name] = getattr(p, param_name)
        if "eta" in inspect.signature(self.func).parameters:
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            extra_params_kwargs["eta"] = self.eta
        if len(self.extra_params) > 0:
            s_churn = getattr(opts, "s_churn", p.s_churn)
            s_tmin = getattr(opts, "s_tmin", p.s_tmin)
            s_tmax = getattr(opts, "s_tmax", p.s_tmax) or self.s_tmax
            s_noise = getattr(opts, "s_noise", p.s_noise)
            if "s_churn" in extra_params_kwargs and s_churn != self.s_churn:
                extra_params_kwargs["s_churn"] = s_churn
                p.s_churn = s_churn
                p.extra_generation_params["Sigma churn"] = s_churn
            if "s_tmin" in extra_params_kwargs and s_tmin != self.s_tmin:
                extra_params_kwargs["s_tmin"] = s_tmin
                p.s_tmin = s_tmin
                p.extra_generation_params["Sigma tmin"] = s_tmin
            if "s_tmax" in extra_params_kwargs and s_tmax != self.s_tmax:
                extra_params_kwargs["s_tmax"] = s_tmax
                p.s_tmax = s_tmax
                p.extra_generation_params["Sigma tmax"] = s_tmax
            if "s_noise" in extra_params_kwargs and s_noise != self.s_noise:
                extra_params_kwargs["s_noise"] = s_noise
                p.s_noise = s_noise
                p.extra_generation_params["Sigma noise"] = s_noise
        return extra_params_kwargs

    def create_noise_sampler(self, x: torch.Tensor, sigmas: torch.Tensor, p: Any) -> Any:
        """modules/sd_samplers_common.py:L334: one Brownian tree per image seed of this batch."""
        if shared.opts.no_dpmpp_sde_batch_determinism:
            return None
        from k_diffusion.sampling import BrownianTreeNoiseSampler

        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        current_iter_seeds = p.all_seeds[p.iteration * p.batch_size:(p.iteration + 1) * p.batch_size]
        return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=current_iter_seeds)

    def sample(self, p: Any, x: torch.Tensor, conditioning: Any, unconditional_conditioning: Any, steps: int | None = None,
               image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """modules/sd_samplers_common.py:L344."""
        raise NotImplementedError()

    def sample_img2img(self, p: Any, x: torch.Tensor, noise: torch.Tensor, conditioning: Any, unconditional_conditioning: Any,
                       steps: int | None = None, image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """modules/sd_samplers_common.py:L347."""
        raise NotImplementedError()

    def add_infotext(self, p: Any) -> None:
        """modules/sd_samplers_common.py:L350."""
        if self.model_wrap_cfg.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        if self.model_wrap_cfg.padded_cond_uncond_v0:
            p.extra_generation_params["Pad conds v0"] = True
