"""Stand-in for modules/sd_samplers_cfg_denoiser.py (v1.10.1 82a973c0): classifier-free guidance.

The function every k-diffusion solver calls as `model(x, sigma, **extra_args)`. Its batch size
comes from `cond` (a MulticondLearnedConditioning), not from x: for each image i it stacks x[i]
once per AND-part of its prompt, appends all of x for the uncond rows, reconstructs the conds of
the current step (prompt editing), calls the inner model once on cond + uncond rows (or in
chunks when batch_cond_uncond is off), and combines
    denoised[i] = uncond_out[i] + sum_parts (cond_out[part] - uncond_out[i]) * weight * cond_scale.
image_cond rows are stacked the same way as x's. The inpainting blend with init_latent/mask, the
NGMS / skip-early-CFG uncond skipping, the refiner switch and the script callbacks follow the
WebUI. A prompt and negative prompt of different token lengths (77 rows per 75-token chunk,
e.g. a long prompt with a one-word negative prompt) take the WebUI's paths: padded with the
empty prompt's encoding ("Pad prompt/negative prompt") or the last row (its v0 variant), or, by
default (both settings off), one model call for the cond rows and one for the uncond rows; the
live preview stores the prediction the "Live preview subject" setting names. Not mirrored: the
InstructPix2Pix edit-model path (`is_edit_model`, cond_stage_key "edit") and unCLIP's
"crossattn-adm" conditioning (modules/sd_samplers_cfg_denoiser.py:L192 `crossattn-adm`): neither
model is one the toy stands in for.
"""

from __future__ import annotations

from typing import Any

import torch

import modules
from modules import prompt_parser, sd_samplers_common
from modules import shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.shared import state


def catenate_conds(conds: list[Any]) -> Any:
    """modules/sd_samplers_cfg_denoiser.py:L11: concatenate tensors, or dicts key by key (SDXL)."""
    if not isinstance(conds[0], dict):
        return torch.cat(conds)
    return {key: torch.cat([x[key] for x in conds]) for key in conds[0].keys()}


def subscript_cond(cond: Any, a: int, b: int) -> Any:
    """modules/sd_samplers_cfg_denoiser.py:L18."""
    if not isinstance(cond, dict):
        return cond[a:b]
    return {key: vec[a:b] for key, vec in cond.items()}


def pad_cond(tensor: Any, repeats: int, empty: torch.Tensor) -> Any:
    """modules/sd_samplers_cfg_denoiser.py:L25: append `repeats` copies of the empty prompt's rows."""
    if not isinstance(tensor, dict):
        return torch.cat([tensor, empty.repeat((tensor.shape[0], repeats, 1))], axis=1)
    tensor["crossattn"] = pad_cond(tensor["crossattn"], repeats, empty)
    return tensor


class CFGDenoiser(torch.nn.Module):
    """modules/sd_samplers_cfg_denoiser.py:L33."""

    def __init__(self, sampler: Any) -> None:
        super().__init__()
        self.model_wrap: Any = None
        self.mask: torch.Tensor | None = None
        self.nmask: torch.Tensor | None = None
        self.init_latent: torch.Tensor | None = None
        self.steps: int | None = None
        self.total_steps: int | None = None
        self.step = 0
        self.image_cfg_scale: float | None = None
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self.sampler = sampler
        self.p: Any = None
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond: torch.Tensor | None = None
        self.mask_before_denoising = False

    @property
    def inner_model(self) -> Any:
        """modules/sd_samplers_cfg_denoiser.py:L71: provided by the subclass."""
        raise NotImplementedError()

    def combine_denoised(self, x_out: torch.Tensor, conds_list: list[list[tuple[int, float]]], uncond: Any,
                         cond_scale: float) -> torch.Tensor:
        """modules/sd_samplers_cfg_denoiser.py:L74."""
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def get_pred_x0(self, x_in: torch.Tensor, x_out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """modules/sd_samplers_cfg_denoiser.py:L90."""
        return x_out

    def update_inner_model(self) -> None:
        """modules/sd_samplers_cfg_denoiser.py:L93: after a model switch, use the new model's conds.

        Writes the full-batch conds of `p.get_conds()` into the sampler's extra args, the dict a
        k-diffusion solver passes on every model call.
        """
        self.model_wrap = None
        c, uc = self.p.get_conds()
        self.sampler.sampler_extra_args["cond"] = c
        self.sampler.sampler_extra_args["uncond"] = uc

    def pad_cond_uncond(self, cond: Any, uncond: Any) -> tuple[Any, Any]:
        """modules/sd_samplers_cfg_denoiser.py:L100: pad the shorter with the empty prompt's encoding."""
        empty = shared.sd_model.cond_stage_model_empty_prompt
        num_repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
        if num_repeats < 0:
            cond = pad_cond(cond, -num_repeats, empty)
            self.padded_cond_uncond = True
        elif num_repeats > 0:
            uncond = pad_cond(uncond, num_repeats, empty)
            self.padded_cond_uncond = True
        return cond, uncond

    def pad_cond_uncond_v0(self, cond: Any, uncond: Any) -> tuple[Any, Any]:
        """modules/sd_samplers_cfg_denoiser.py:L113: repeat uncond's last row, or truncate it."""
        is_dict_cond = isinstance(uncond, dict)
        uncond_vec = uncond["crossattn"] if is_dict_cond else uncond
        if uncond_vec.shape[1] < cond.shape[1]:
            last_vector = uncond_vec[:, -1:]
            uncond_vec = torch.hstack([uncond_vec, last_vector.repeat([1, cond.shape[1] - uncond_vec.shape[1], 1])])
            self.padded_cond_uncond_v0 = True
        elif uncond_vec.shape[1] > cond.shape[1]:
            uncond_vec = uncond_vec[:, :cond.shape[1]]
            self.padded_cond_uncond_v0 = True
        if is_dict_cond:
            uncond["crossattn"] = uncond_vec
        else:
            uncond = uncond_vec
        return cond, uncond

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, uncond: Any, cond: Any, cond_scale: float,
                s_min_uncond: float, image_cond: torch.Tensor) -> torch.Tensor:
        """modules/sd_samplers_cfg_denoiser.py:L156."""
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException

        if sd_samplers_common.apply_refiner(self, sigma):
            cond = self.sampler.sampler_extra_args["cond"]
            uncond = self.sampler.sampler_extra_args["uncond"]

        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)

        def apply_blend(current_latent: torch.Tensor) -> torch.Tensor:
            blended_latent = current_latent * self.nmask + self.init_latent * self.mask
            if self.p.scripts is not None:
                from modules import scripts

                mba = scripts.MaskBlendArgs(current_latent, self.nmask, self.init_latent, self.mask, blended_latent,
                                            denoiser=self, sigma=sigma)
                self.p.scripts.on_mask_blend(self.p, mba)
                blended_latent = mba.blended_latent
            return blended_latent

        if self.mask_before_denoising and self.mask is not None:
            x = apply_blend(x)

        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]

        image_uncond = image_cond
        if isinstance(uncond, dict):
            def make_condition_dict(c_crossattn: Any, c_concat: torch.Tensor) -> dict[str, Any]:
                return {**c_crossattn, "c_concat": [c_concat]}
        else:
            def make_condition_dict(c_crossattn: Any, c_concat: torch.Tensor) -> dict[str, Any]:
                return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}

        x_in = torch.cat([torch.stack([x[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [x])
        sigma_in = torch.cat([torch.stack([sigma[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [sigma])
        image_cond_in = torch.cat([torch.stack([image_cond[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [image_uncond])

        denoiser_params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps,
                                            tensor, uncond, self)
        cfg_denoiser_callback(denoiser_params)
        x_in = denoiser_params.x
        image_cond_in = denoiser_params.image_cond
        sigma_in = denoiser_params.sigma
        tensor = denoiser_params.text_cond
        uncond = denoiser_params.text_uncond
        skip_uncond = False

        # "Ignore negative prompt during early sampling" is a 1.10 setting; 1.8 only has NGMS.
        skip_early_cond = shared.opts.skip_early_cond if modules.version_at_least(1, 10) else 0.0
        if skip_early_cond != 0.0 and self.step / self.total_steps <= skip_early_cond:
            skip_uncond = True
            self.p.extra_generation_params["Skip Early CFG"] = skip_early_cond
        elif (self.step % 2 or shared.opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond:
            skip_uncond = True
            self.p.extra_generation_params["NGMS"] = s_min_uncond
            if shared.opts.s_min_uncond_all:
                self.p.extra_generation_params["NGMS all steps"] = shared.opts.s_min_uncond_all

        if skip_uncond:
            x_in = x_in[:-batch_size]
            sigma_in = sigma_in[:-batch_size]

        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        if shared.opts.pad_cond_uncond_v0 and tensor.shape[1] != uncond.shape[1]:
            tensor, uncond = self.pad_cond_uncond_v0(tensor, uncond)
        elif shared.opts.pad_cond_uncond and tensor.shape[1] != uncond.shape[1]:
            tensor, uncond = self.pad_cond_uncond(tensor, uncond)

        if tensor.shape[1] == uncond.shape[1] or skip_uncond:
            cond_in = tensor if skip_uncond else catenate_conds([tensor, uncond])
            if shared.opts.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, cond=make_condition_dict(cond_in, image_cond_in))
            else:
                x_out = torch.zeros_like(x_in)
                for batch_offset in range(0, x_out.shape[0], batch_size):
                    a = batch_offset
                    b = a + batch_size
                    x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                                  cond=make_condition_dict(subscript_cond(cond_in, a, b), image_cond_in[a:b]))
        else:
            # modules/sd_samplers_cfg_denoiser.py:L256-L271 `else:`: cond rows and uncond rows in separate calls
            x_out = torch.zeros_like(x_in)
            batch_size = batch_size * 2 if shared.opts.batch_cond_uncond else batch_size
            for batch_offset in range(0, tensor.shape[0], batch_size):
                a = batch_offset
                b = min(a + batch_size, tensor.shape[0])
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                              cond=make_condition_dict(subscript_cond(tensor, a, b), image_cond_in[a:b]))
            if not skip_uncond:
                x_out[-uncond.shape[0]:] = self.inner_model(
                    x_in[-uncond.shape[0]:], sigma_in[-uncond.shape[0]:],
                    cond=make_condition_dict(uncond, image_cond_in[-uncond.shape[0]:]))

        denoised_image_indexes = [x[0][0] for x in conds_list]
        if skip_uncond:
            fake_uncond = torch.cat([x_out[i:i + 1] for i in denoised_image_indexes])
            x_out = torch.cat([x_out, fake_uncond])

        denoised_params = CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model)
        cfg_denoised_callback(denoised_params)

        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-uncond.shape[0]:])

        if skip_uncond:
            denoised = self.combine_denoised(x_out, conds_list, uncond, 1.0)
        else:
            denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale * self.cond_scale_miltiplier)

        if not self.mask_before_denoising and self.mask is not None:
            denoised = apply_blend(denoised)

        self.sampler.last_latent = self.get_pred_x0(torch.cat([x_in[i:i + 1] for i in denoised_image_indexes]),
                                                    torch.cat([x_out[i:i + 1] for i in denoised_image_indexes]), sigma)
        # the live preview shows the "Live preview subject" setting's prediction
        if shared.opts.live_preview_content == "Prompt":
            preview = self.sampler.last_latent
        elif shared.opts.live_preview_content == "Negative prompt":
            preview = self.get_pred_x0(x_in[-uncond.shape[0]:], x_out[-uncond.shape[0]:], sigma)
        else:
            preview = self.get_pred_x0(torch.cat([x_in[i:i + 1] for i in denoised_image_indexes]),
                                       torch.cat([denoised[i:i + 1] for i in denoised_image_indexes]), sigma)
        sd_samplers_common.store_latent(preview)

        after_cfg_callback_params = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after_cfg_callback_params)
        denoised = after_cfg_callback_params.x

        self.step += 1
        return denoised
