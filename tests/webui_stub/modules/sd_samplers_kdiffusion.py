"""Stand-in for modules/sd_samplers_kdiffusion.py (v1.10.1 82a973c0; 1.6-1.8 as noted): k-diffusion samplers.

`KDiffusionSampler(funcname, sd_model, options=None)` accepts a k-diffusion function name or a
callable (since 1.6.0) and runs it as the WebUI does: sigmas from the schedule, x scaled by
sigmas[0], `initialize(p)` for the solver's keyword arguments (only those its signature names:
`sigmas`, `n`, `sigma_min`/`sigma_max`, `eta`, extra params), a per-seed Brownian
`noise_sampler` when the sampler's options say `brownian_noise`, `solver_type="heun"` when they
say so, and extra_args = {cond, image_cond, uncond, cond_scale, s_min_uncond}; the model it passes
is the CFG denoiser. The solvers are k-diffusion's own (the `k_diffusion` stand-in package runs
the installed k-diffusion's sampling.py).

Version differences mirrored (modules.WEBUI_VERSION):
- 1.9+: `samplers_k_diffusion` names carry no scheduler ("DPM++ 2M" with {'scheduler': 'karras'});
  `get_sigmas` takes p.scheduler ("Automatic" = the sampler's `scheduler` option) from
  modules/sd_schedulers.py.
- 1.6-1.8 (v1.8.0 modules/sd_samplers_kdiffusion.py:L11-L39, L91-L139): "Karras"/"Exponential"
  variants are separate names, the `k_sched_type` setting overrides every sampler's schedule,
  otherwise the `scheduler` option ('karras' / 'exponential') or the model's own discretisation.
Not mirrored: the "Restart" sampler (sd_samplers_extra.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

import k_diffusion.sampling
import modules
from modules import devices, sd_samplers_cfg_denoiser, sd_samplers_common, shared
from modules.script_callbacks import ExtraNoiseParams, extra_noise_callback
from modules.sd_samplers_cfg_denoiser import CFGDenoiser  # noqa: F401 - the WebUI re-exports it here
from modules.shared import opts

if modules.version_at_least(1, 9):
    from modules import sd_schedulers

    samplers_k_diffusion: list[tuple[str, Any, list[str], dict[str, Any]]] = [
        ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], {"scheduler": "karras"}),
        ("DPM++ SDE", "sample_dpmpp_sde", ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
        ("DPM++ 2M SDE", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde"], {"scheduler": "exponential", "brownian_noise": True}),
        ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun"], {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
        ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", ["k_dpmpp_2s_a"], {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
        ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde"], {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}),
        ("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
        ("Euler", "sample_euler", ["k_euler"], {}),
        ("LMS", "sample_lms", ["k_lms"], {}),
        ("Heun", "sample_heun", ["k_heun"], {"second_order": True}),
        ("DPM2", "sample_dpm_2", ["k_dpm_2"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
        ("DPM2 a", "sample_dpm_2_ancestral", ["k_dpm_2_a"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
        ("DPM fast", "sample_dpm_fast", ["k_dpm_fast"], {"uses_ensd": True}),
        ("DPM adaptive", "sample_dpm_adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
    ]
    """modules/sd_samplers_kdiffusion.py:L11 (label, funcname, aliases, options)."""
else:
    sd_schedulers = None
    samplers_k_diffusion = [
        ("DPM++ 2M Karras", "sample_dpmpp_2m", ["k_dpmpp_2m_ka"], {"scheduler": "karras"}),
        ("DPM++ SDE Karras", "sample_dpmpp_sde", ["k_dpmpp_sde_ka"], {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
        ("DPM++ 2M SDE Exponential", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_exp"], {"scheduler": "exponential", "brownian_noise": True}),
        ("DPM++ 2M SDE Karras", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_ka"], {"scheduler": "karras", "brownian_noise": True}),
        ("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
        ("Euler", "sample_euler", ["k_euler"], {}),
        ("LMS", "sample_lms", ["k_lms"], {}),
        ("Heun", "sample_heun", ["k_heun"], {"second_order": True}),
        ("DPM2", "sample_dpm_2", ["k_dpm_2"], {"discard_next_to_last_sigma": True, "second_order": True}),
        ("DPM2 a", "sample_dpm_2_ancestral", ["k_dpm_2_a"], {"discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
        ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", ["k_dpmpp_2s_a"], {"uses_ensd": True, "second_order": True}),
        ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], {}),
        ("DPM++ SDE", "sample_dpmpp_sde", ["k_dpmpp_sde"], {"second_order": True, "brownian_noise": True}),
        ("DPM++ 2M SDE", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_ka"], {"brownian_noise": True}),
        ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun"], {"brownian_noise": True, "solver_type": "heun"}),
        ("DPM++ 2M SDE Heun Karras", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun_ka"], {"scheduler": "karras", "brownian_noise": True, "solver_type": "heun"}),
        ("DPM++ 2M SDE Heun Exponential", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun_exp"], {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
        ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde"], {"discard_next_to_last_sigma": True, "brownian_noise": True}),
        ("DPM++ 3M SDE Karras", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde_ka"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "brownian_noise": True}),
        ("DPM++ 3M SDE Exponential", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde_exp"], {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}),
        ("DPM fast", "sample_dpm_fast", ["k_dpm_fast"], {"uses_ensd": True}),
        ("DPM adaptive", "sample_dpm_adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
        ("LMS Karras", "sample_lms", ["k_lms_ka"], {"scheduler": "karras"}),
        ("DPM2 Karras", "sample_dpm_2", ["k_dpm_2_ka"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
        ("DPM2 a Karras", "sample_dpm_2_ancestral", ["k_dpm_2_a_ka"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
        ("DPM++ 2S a Karras", "sample_dpmpp_2s_ancestral", ["k_dpmpp_2s_a_ka"], {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    ]
    """v1.8.0 modules/sd_samplers_kdiffusion.py:L11."""

samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
    if callable(funcname) or hasattr(k_diffusion.sampling, funcname)
]
"""modules/sd_samplers_kdiffusion.py:L30."""

sampler_extra_params = {
    "sample_euler": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_heun": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_2": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_fast": ["s_noise"],
    "sample_dpm_2_ancestral": ["s_noise"],
    "sample_dpmpp_2s_ancestral": ["s_noise"],
    "sample_dpmpp_sde": ["s_noise"],
    "sample_dpmpp_2m_sde": ["s_noise"],
    "sample_dpmpp_3m_sde": ["s_noise"],
}
"""modules/sd_samplers_kdiffusion.py:L36: settings forwarded to a solver, keyed by funcname."""

k_diffusion_samplers_map = {x.name: x for x in samplers_data_k_diffusion}
"""modules/sd_samplers_kdiffusion.py:L48."""

if sd_schedulers is not None:
    k_diffusion_scheduler: dict[str, Any] = {x.name: x.function for x in sd_schedulers.schedulers}
    """modules/sd_samplers_kdiffusion.py:L49."""
else:
    k_diffusion_scheduler = {
        "Automatic": None,
        "karras": k_diffusion.sampling.get_sigmas_karras,
        "exponential": k_diffusion.sampling.get_sigmas_exponential,
        "polyexponential": k_diffusion.sampling.get_sigmas_polyexponential,
    }
    """v1.8.0 modules/sd_samplers_kdiffusion.py:L61."""


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    """modules/sd_samplers_kdiffusion.py:L52: the CFG denoiser around the model's k-diffusion wrapper.

    v1.10.1 asks the model for `create_denoiser()` first (L56); the toy model provides one. 1.8
    always builds k_diffusion.external.CompVis(V)Denoiser, which the stand-in cannot (no
    k_diffusion.external), so both flavours take the create_denoiser route.
    """

    @property
    def inner_model(self) -> Any:
        if self.model_wrap is None:
            self.model_wrap = shared.sd_model.create_denoiser()
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    """modules/sd_samplers_kdiffusion.py:L67: a k-diffusion solver (a function name or a callable)."""

    def __init__(self, funcname: Any, sd_model: Any, options: dict[str, Any] | None = None) -> None:
        super().__init__(funcname)
        self.extra_params = sampler_extra_params.get(funcname, [])
        self.options = options or {}
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, self.funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p: Any, steps: int) -> torch.Tensor:
        """modules/sd_samplers_kdiffusion.py:L79 (1.9+) / v1.8.0 L91 (1.6-1.8): the noise schedule."""
        discard_next_to_last_sigma = self.config is not None and self.config.options.get("discard_next_to_last_sigma", False)
        if opts.always_discard_next_to_last_sigma and not discard_next_to_last_sigma:
            discard_next_to_last_sigma = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard_next_to_last_sigma else 0
        if sd_schedulers is not None:
            sigmas = self._get_sigmas_scheduler(p, steps)
        else:
            sigmas = self._get_sigmas_v18(p, steps)
        if discard_next_to_last_sigma:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def _get_sigmas_scheduler(self, p: Any, steps: int) -> torch.Tensor:
        """modules/sd_samplers_kdiffusion.py:L87-L127 `scheduler_name =` (1.9+)."""
        scheduler_name = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if scheduler_name == "Automatic":
            scheduler_name = self.config.options.get("scheduler", None)
        scheduler = sd_schedulers.schedulers_map.get(scheduler_name)
        m_sigma_min, m_sigma_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        sigma_min, sigma_max = (0.1, 10) if opts.use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)
        if p.sampler_noise_scheduler_override:
            return p.sampler_noise_scheduler_override(steps)
        if scheduler is None or scheduler.function is None:
            return self.model_wrap.get_sigmas(steps)
        sigmas_kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        if scheduler.label != "Automatic" and not p.is_hr_pass:
            p.extra_generation_params["Schedule type"] = scheduler.label
        elif scheduler.label != p.extra_generation_params.get("Schedule type"):
            p.extra_generation_params["Hires schedule type"] = scheduler.label
        if opts.sigma_min != 0 and opts.sigma_min != m_sigma_min:
            sigmas_kwargs["sigma_min"] = opts.sigma_min
            p.extra_generation_params["Schedule min sigma"] = opts.sigma_min
        if opts.sigma_max != 0 and opts.sigma_max != m_sigma_max:
            sigmas_kwargs["sigma_max"] = opts.sigma_max
            p.extra_generation_params["Schedule max sigma"] = opts.sigma_max
        if scheduler.default_rho != -1 and opts.rho != 0 and opts.rho != scheduler.default_rho:
            sigmas_kwargs["rho"] = opts.rho
            p.extra_generation_params["Schedule rho"] = opts.rho
        if scheduler.need_inner_model:
            sigmas_kwargs["inner_model"] = self.model_wrap
        if scheduler.label == "Beta":
            p.extra_generation_params["Beta schedule alpha"] = opts.beta_dist_alpha
            p.extra_generation_params["Beta schedule beta"] = opts.beta_dist_beta
        return scheduler.function(n=steps, **sigmas_kwargs, device=devices.cpu)

    def _get_sigmas_v18(self, p: Any, steps: int) -> torch.Tensor:
        """v1.8.0 modules/sd_samplers_kdiffusion.py:L99-L134 (1.6-1.8)."""
        if p.sampler_noise_scheduler_override:
            return p.sampler_noise_scheduler_override(steps)
        if opts.k_sched_type != "Automatic":
            m_sigma_min, m_sigma_max = (self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item())
            sigma_min, sigma_max = (0.1, 10) if opts.use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)
            sigmas_kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max}
            sigmas_func = k_diffusion_scheduler[opts.k_sched_type]
            p.extra_generation_params["Schedule type"] = opts.k_sched_type
            if opts.sigma_min != m_sigma_min and opts.sigma_min != 0:
                sigmas_kwargs["sigma_min"] = opts.sigma_min
                p.extra_generation_params["Schedule min sigma"] = opts.sigma_min
            if opts.sigma_max != m_sigma_max and opts.sigma_max != 0:
                sigmas_kwargs["sigma_max"] = opts.sigma_max
                p.extra_generation_params["Schedule max sigma"] = opts.sigma_max
            default_rho = 1.0 if opts.k_sched_type == "polyexponential" else 7.0
            if opts.k_sched_type != "exponential" and opts.rho != 0 and opts.rho != default_rho:
                sigmas_kwargs["rho"] = opts.rho
                p.extra_generation_params["Schedule rho"] = opts.rho
            return sigmas_func(n=steps, **sigmas_kwargs, device=devices.cpu)
        if self.config is not None and self.config.options.get("scheduler", None) == "karras":
            sigma_min, sigma_max = (0.1, 10) if opts.use_old_karras_scheduler_sigmas else (
                self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item())
            return k_diffusion.sampling.get_sigmas_karras(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, device=devices.cpu)
        if self.config is not None and self.config.options.get("scheduler", None) == "exponential":
            m_sigma_min, m_sigma_max = (self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item())
            return k_diffusion.sampling.get_sigmas_exponential(n=steps, sigma_min=m_sigma_min, sigma_max=m_sigma_max, device=devices.cpu)
        return self.model_wrap.get_sigmas(steps)

    def sample_img2img(self, p: Any, x: torch.Tensor, noise: torch.Tensor, conditioning: Any, unconditional_conditioning: Any,
                       steps: int | None = None, image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """modules/sd_samplers_kdiffusion.py:L134: denoise x + noise * sigma from part-way down."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        if hasattr(shared.sd_model, "add_noise_to_latent"):  # SD3's flow models (L140); not the toy
            xi = shared.sd_model.add_noise_to_latent(x, noise, sigma_sched[0])
        else:
            xi = x + noise * sigma_sched[0]
        if opts.img2img_extra_noise > 0:
            p.extra_generation_params["Extra noise"] = opts.img2img_extra_noise
            extra_noise_params = ExtraNoiseParams(noise, x, xi)
            extra_noise_callback(extra_noise_params)
            noise = extra_noise_params.noise
            xi += noise * opts.img2img_extra_noise
        extra_params_kwargs = self.initialize(p)
        parameters = inspect.signature(self.func).parameters
        if "sigma_min" in parameters:
            extra_params_kwargs["sigma_min"] = sigma_sched[-2]
        if "sigma_max" in parameters:
            extra_params_kwargs["sigma_max"] = sigma_sched[0]
        if "n" in parameters:
            extra_params_kwargs["n"] = len(sigma_sched) - 1
        if "sigma_sched" in parameters:
            extra_params_kwargs["sigma_sched"] = sigma_sched
        if "sigmas" in parameters:
            extra_params_kwargs["sigmas"] = sigma_sched
        if self.config.options.get("brownian_noise", False):
            noise_sampler = self.create_noise_sampler(x, sigmas, p)
            extra_params_kwargs["noise_sampler"] = noise_sampler
        if self.config.options.get("solver_type", None) == "heun":
            extra_params_kwargs["solver_type"] = "heun"
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {
            "cond": conditioning,
            "image_cond": image_conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "s_min_uncond": self.s_min_uncond,
        }
        samples = self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args,
                                                                    disable=False, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples

    def sample(self, p: Any, x: torch.Tensor, conditioning: Any, unconditional_conditioning: Any, steps: int | None = None,
               image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """modules/sd_samplers_kdiffusion.py:L190: txt2img sampling from unit noise x."""
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        if opts.sgm_noise_multiplier:
            p.extra_generation_params["SGM noise multiplier"] = True
            x = x * torch.sqrt(1.0 + sigmas[0] ** 2.0)
        else:
            x = x * sigmas[0]
        extra_params_kwargs = self.initialize(p)
        parameters = inspect.signature(self.func).parameters
        if "n" in parameters:
            extra_params_kwargs["n"] = steps
        if "sigma_min" in parameters:
            extra_params_kwargs["sigma_min"] = self.model_wrap.sigmas[0].item()
            extra_params_kwargs["sigma_max"] = self.model_wrap.sigmas[-1].item()
        if "sigmas" in parameters:
            extra_params_kwargs["sigmas"] = sigmas
        if self.config.options.get("brownian_noise", False):
            noise_sampler = self.create_noise_sampler(x, sigmas, p)
            extra_params_kwargs["noise_sampler"] = noise_sampler
        if self.config.options.get("solver_type", None) == "heun":
            extra_params_kwargs["solver_type"] = "heun"
        self.last_latent = x
        self.sampler_extra_args = {
            "cond": conditioning,
            "image_cond": image_conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "s_min_uncond": self.s_min_uncond,
        }
        samples = self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=self.sampler_extra_args,
                                                                disable=False, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples
