"""`WebUIGenerator`: the engine's Generator protocol on top of the WebUI's `process_images`.

One `process_images` call per individual, on a copy of the user's processing object `p` whose
prompts are the individual's and whose seeds are the run's fixed seeds (`batch_size` = the number
of seeds, `n_iter` = 1). Not one call per generation with a list of lambda prompts, because:

- the batch is the unit the user sized for their memory (Batch size); lambda x batch rows at once
  would not fit, and the WebUI would split them into batches of its own anyway;
- a hyperbatch sampler grows one batch from one starting latent; rows with different prompts in
  one batch would share early steps across individuals, which is not what a batch of one prompt
  is scored for;
- Interrupt / Skip / "stop generating" act per `process_images` call (the WebUI checks them between
  batches, modules/processing.py:L935-L939 in v1.10.1), so a per-individual call is what lets the
  run stop after the current individual, and an error (out of memory, an extension failing) costs
  one individual, which the engine records, instead of a whole generation;
- the Generator protocol the engine drives is per individual.

The cost is one cond computation and one sampler construction per individual, small next to
sampling; the WebUI's cond cache still serves repeated prompts (the baseline, re-evaluations).

Everything else about the generation is the user's: sampler, schedule, steps, CFG, size, hires
fix, styles, always-on scripts (ControlNet and the like run for every individual), override
settings. The copy gets `do_not_save_samples` (unless "keep intermediate images" is on and the
caller allowed saving) and `do_not_save_grid`, so the WebUI writes nothing per individual: the run
directory holds every batch. The user's settings are never changed.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Mapping

import torch

from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.prompt import SCHEDULE_GUARD
from lib_pinning.evaluation import RunStopped
from lib_pinning.store import pil_to_tensor

log = logging.getLogger(__name__)

NANS_EXCEPTION = "NansException"
"""modules.devices.NansException (v1.10.1 devices.py:L238; Forge the same): the UNet or VAE produced
NaN and the NaN check (on unless --disable-nan-check) raised. Matched by name, so this module needs
no WebUI import."""

TOKENIZER_PATHS: tuple[tuple[str, ...], ...] = (
    ("cond_stage_model", "tokenizer"),  # A1111 SD 1.x: FrozenCLIPEmbedderWithCustomWords (sd_hijack_clip.py:L319)
    ("cond_stage_model", "wrapped", "tokenizer"),  # the unhijacked FrozenCLIPEmbedder
    ("conditioner", "embedders", "0", "tokenizer"),  # A1111 SDXL: the CLIP-L embedder
    ("conditioner", "embedders", "0", "wrapped", "tokenizer"),
    ("text_processing_engine", "tokenizer"),  # Forge SD 1.x / 2.x (backend/diffusion_engine/sd15.py:L39)
    ("text_processing_engine_l", "tokenizer"),  # Forge SDXL / SD3 / Flux CLIP-L
)
"""Where the loaded model keeps its CLIP tokenizer. SD 2.x in A1111 uses open_clip's module-level
tokenizer (no attribute), for which the engine's default (open_clip's SimpleTokenizer, the same
vocabulary) is exact."""


def model_tokenizer(sd_model: Any) -> Any | None:
    """The loaded checkpoint's CLIP tokenizer, or None (the engine then loads its default)."""
    for path in TOKENIZER_PATHS:
        obj = sd_model
        for name in path:
            if obj is None:
                break
            if name.isdigit():
                try:
                    obj = obj[int(name)]
                except (TypeError, IndexError, KeyError):
                    obj = None
            else:
                obj = getattr(obj, name, None)
        if obj is not None and (callable(obj) or hasattr(obj, "encode")):
            return obj
    return None



def checkpoint_of(shared: Any) -> tuple[str | None, str | None]:
    """(name, short hash) of the checkpoint the run's generations use, for run.json.

    A1111 loads the checkpoint at start and keeps `shared.sd_model.sd_checkpoint_info` current.
    Forge loads it lazily at the start of process_images, from
    `sd_models.model_data.forge_loading_parameters` (modules/sd_models.py forge_model_reload in
    dfdcbab6): before the first generation `shared.sd_model` is a FakeInitialModel without
    checkpoint info (every Forge run's report said "model: auto"), and after a checkpoint change
    in the UI it is still the previous model. So Forge's loading parameters come first.
    """
    info = None
    try:
        from modules import sd_models

        params = getattr(getattr(sd_models, "model_data", None), "forge_loading_parameters", None)
        info = params.get("checkpoint_info") if isinstance(params, Mapping) else None
    except Exception:  # not Forge, or a stand-in without sd_models
        info = None
    if info is not None:
        short = getattr(info, "shorthash", None)
        if short is None and callable(getattr(info, "calculate_shorthash", None)):
            try:  # Forge's load computes (and caches) it anyway, sd_models.load_model
                short = info.calculate_shorthash()
            except Exception as e:
                log.debug("no checkpoint hash: %s", e)
        return getattr(info, "name_for_extra", None) or getattr(info, "title", None), short
    model = getattr(shared, "sd_model", None)
    info = getattr(model, "sd_checkpoint_info", None)
    return getattr(info, "name_for_extra", None) or getattr(info, "title", None), getattr(model, "sd_model_hash", None)


def steps_per_individual(p: Any) -> int:
    """Sampling steps one individual's batch takes, as the console's total bar counts them.

    txt2img: steps, plus the hires pass's (modules/processing.py:L1294-L1296 in v1.10.1);
    img2img: the steps the denoising strength leaves (t_enc + 1 of setup_img2img_steps,
    modules/sd_samplers_common.py:L22, which sample_img2img runs).
    """
    if getattr(p, "init_images", None) is not None:
        try:
            from modules import sd_samplers_common

            _, t_enc = sd_samplers_common.setup_img2img_steps(p)
            return int(t_enc) + 1
        except (ImportError, AttributeError):
            return int(p.steps)
    steps = int(p.steps)
    if getattr(p, "enable_hr", False):
        steps += int(getattr(p, "hr_second_pass_steps", 0) or p.steps)
    return steps


SAME_SAMPLER = "Use same sampler"
"""The hires sampler choice that keeps the first pass's sampler (v1.10.1 ui.py; None via the API)."""


def sampling_passes(p: Any) -> list[tuple[str, int]]:
    """(sampler name, steps run) of each sampling pass one batch of p takes.

    txt2img: the first pass's p.steps, then, with the hires fix, the hires pass's
    hr_second_pass_steps (or p.steps), which it runs in full (setup_img2img_steps with explicit
    steps, modules/sd_samplers_common.py:L22); img2img: the steps its denoising strength leaves.
    """
    sampler = str(getattr(p, "sampler_name", None) or "")
    if getattr(p, "init_images", None) is not None:
        return [(sampler, steps_per_individual(p))]
    passes = [(sampler, int(p.steps))]
    if getattr(p, "enable_hr", False):
        hr_sampler = getattr(p, "hr_sampler_name", None)
        hr_sampler = sampler if hr_sampler in (None, "", SAME_SAMPLER) else str(hr_sampler)
        passes.append((hr_sampler, int(getattr(p, "hr_second_pass_steps", 0) or p.steps)))
    return passes


def plain_pass_rows(batch_size: int, steps: int, second_order: bool) -> int:
    """Denoiser rows of a plain sampler's pass: every image at every model call.

    A second-order sampler (the WebUI's `second_order` option: DPM++ SDE, Heun, DPM2) calls the
    model twice per step except in the last one, which k-diffusion takes as one Euler step.
    """
    calls = 2 * steps - 1 if second_order and steps > 0 else steps
    return batch_size * calls


def jobs_per_individual(p: Any) -> int:
    """WebUI jobs (`state.nextjob()` calls) per process_images of one batch: 2 with the hires fix."""
    return 2 if getattr(p, "enable_hr", False) and getattr(p, "init_images", None) is None else 1


def seed_vae_encode(rng: Any, seeds: tuple[int, ...]) -> None:
    """Leave torch's global generator as a batch of `seeds` leaves it, before an img2img batch.

    img2img encodes its init images by sampling the VAE's posterior from the global generator
    (ldm's DiagonalGaussianDistribution.sample, in p.init, before the batch's noise is drawn), so the
    encode depends on what the previous request left there. A batch's noise seeds it for each image
    in turn and nothing draws from it after, so within a run every batch but the first starts where
    the last seed left it; doing that for every batch makes the first one alike too, whatever the
    WebUI made before (the extra servers' first batch is primed to the same state:
    lib_pinning.remote.payload.priming_payload). The WebUI's own `rng.randn` with a per-seed
    generator does the seeding, on one value: the rule differs between WebUIs (v1.10.1 seeds the
    global generator with the seed, Forge with (seed + 100000) % 65536) and this way follows it."""
    last = int(seeds[-1])
    rng.randn(last, (1,), generator=rng.create_generator(last))


class WebUIGenerator:
    """Generates an individual's batch with the WebUI (see the module docstring).

    p: the user's processing object (never modified); processing, shared, sd_samplers: the WebUI's
    modules (passed in so this class is importable without the WebUI); keep_intermediate: the
    "keep intermediate images" setting; device: where the engine scores batches (its CLIP models
    and FLIP), the WebUI's own device (modules/devices.py `device`, set at startup by
    modules/shared_init.py:L27 in v1.10.1; Forge's devices.py:L52).
    """

    def __init__(self, p: Any, *, processing: Any, shared: Any, sd_samplers: Any = None,
                 keep_intermediate: bool = False, device: Any = "cpu") -> None:
        self.p = p
        self.device = device if device is not None else "cpu"
        self.processing = processing
        self.shared = shared
        self.sd_samplers = sd_samplers
        self.keep_intermediate = keep_intermediate
        self.extra_generation_params: dict[str, Any] = {}
        self.infotexts: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
        self.comments: dict[str, int] = {}
        self.steps = int(p.steps)
        """Sampling steps (the objective's planned hyperbatch tree for plain samplers reads it)."""
        self._last_size: tuple[int, int] | None = None

    # the Generator protocol ------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> Batch:
        seeds = tuple(int(s) for s in request.seeds)
        pc = self._copy(request)
        if getattr(pc, "init_images", None) is not None:
            seed_vae_encode(self.processing.rng, seeds)
        started = time.perf_counter()
        try:
            processed = self.processing.process_images(pc)
        except Exception as e:
            if type(e).__name__ != NANS_EXCEPTION:
                raise
            return self._nan_batch(pc, seeds, e, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        state = self.shared.state
        if state.interrupted or state.skipped:
            # The sampler stopped mid-way (the CFG denoiser raises on these flags,
            # modules/sd_samplers_cfg_denoiser.py:L157) and returned a half-denoised batch, or
            # the flag arrived just after: either way this batch is not the individual's.
            raise RunStopped("the WebUI was interrupted during this individual")
        images, infotexts = self._batch_images(processed, pc, len(seeds))
        if len(images) < len(seeds) and getattr(state, "stopping_generation", False):
            raise RunStopped("'stop generating' arrived before this individual's batch started")
        if len(images) != len(seeds):
            raise RuntimeError(
                f"the WebUI returned {len(images)} images for a batch of {len(seeds)} seeds "
                f"(an extension changing the batch size?)"
            )
        self.infotexts[(request.prompt, request.negative_prompt, seeds)] = infotexts
        self.comments.update(dict.fromkeys(getattr(pc, "comments", None) or {}, 1))
        plan, model_rows = self._sampled(pc, len(seeds))
        tensors = torch.stack([pil_to_tensor(im) for im in images])
        self._last_size = (int(tensors.shape[-2]), int(tensors.shape[-1]))
        return Batch(
            images=tensors,
            seeds=seeds,
            growth=plan,
            model_rows=model_rows,
            timings={"webui": seconds},
        )

    def describe(self) -> dict[str, object]:
        p = self.p
        keys = ("sampler_name", "scheduler", "steps", "cfg_scale", "width", "height", "subseed",
                "subseed_strength", "denoising_strength", "enable_hr", "hr_scale", "hr_upscaler",
                "hr_second_pass_steps", "styles", "restore_faces", "tiling", "clip_skip")
        settings = {k: _jsonable(getattr(p, k)) for k in keys if hasattr(p, k)}
        model, model_hash = checkpoint_of(self.shared)
        return {
            "backend": "webui",
            "mode": "img2img" if getattr(p, "init_images", None) is not None else "txt2img",
            "settings": settings,
            "model": model,
            "model_hash": model_hash,
            "override_settings": {k: _jsonable(v) for k, v in (getattr(p, "override_settings", None) or {}).items()},
        }

    # helpers -------------------------------------------------------------------------------------------

    def _nan_batch(self, pc: Any, seeds: tuple[int, ...], error: Exception, seconds: float) -> Batch:
        """The batch a NansException stood for: NaN latents, i.e. the black images the WebUI shows
        with --disable-nan-check, flagged non-finite. Raising instead would count the individual as
        failed, and three in a row would end the run, though NaN is what these weights do to the
        model: the degenerate-image guard penalises the batch so that the search moves away."""
        log.warning("the WebUI found NaNs in an individual's batch; recorded as a NaN (black) batch: %s", error)
        height, width = self._output_size()
        plan, model_rows = self._sampled(pc, len(seeds))
        return Batch(
            images=torch.zeros(len(seeds), 3, height, width),
            seeds=seeds,
            growth=plan,
            model_rows=model_rows,
            timings={"webui": seconds},
            nonfinite=(True,) * len(seeds),
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images a batch returns, known before generating (the preflight
        checks target images against it before the baseline batch)."""
        return self._output_size()

    def _output_size(self) -> tuple[int, int]:
        """(height, width) of the images a batch of p returns: the last batch's, else what p will
        make. With the hires fix (txt2img) the WebUI's own `calculate_target_resolution` on a copy
        of p gives the second pass's size, which its latent truncation (resize to a different
        aspect ratio) then crops in whole latent pixels of 8 image pixels."""
        if self._last_size is not None:
            return self._last_size
        p = self.p
        planner = getattr(p, "calculate_target_resolution", None)
        if not getattr(p, "enable_hr", False) or getattr(p, "init_images", None) is not None or planner is None:
            return int(p.height), int(p.width)
        planned = copy.copy(p)
        planned.extra_generation_params = dict(getattr(p, "extra_generation_params", {}) or {})
        planned.calculate_target_resolution()
        f = int(getattr(self.processing, "opt_f", 8))  # image pixels per latent pixel
        return (
            (int(planned.hr_upscale_to_y) // f - int(getattr(planned, "truncate_y", 0))) * f,
            (int(planned.hr_upscale_to_x) // f - int(getattr(planned, "truncate_x", 0))) * f,
        )

    def infotexts_for(self, prompt: str, negative_prompt: str, seeds: tuple[int, ...]) -> list[str] | None:
        """The WebUI's infotexts of an individual generated by this generator (None if it was not)."""
        return self.infotexts.get((prompt, negative_prompt, tuple(int(s) for s in seeds)))

    def _copy(self, request: GenerationRequest) -> Any:
        """A copy of p for one individual; p itself is never changed."""
        p = self.p
        pc = copy.copy(p)
        pc.prompt, pc.negative_prompt = request.prompt, request.negative_prompt
        if _styles_need_schedules(self.shared, p.styles or []):
            # The guard makes the WebUI read a part as plain text; a style joins the same part, so its
            # prompt editing or alternation would be lost. Those styles pay the full parse instead.
            pc.prompt = request.prompt.replace(SCHEDULE_GUARD, "")
            pc.negative_prompt = request.negative_prompt.replace(SCHEDULE_GUARD, "")
        # A list seed gives each image exactly the run's seed (modules/processing.py:L901-L904 in v1.10.1).
        pc.seed = [int(s) for s in request.seeds]
        pc.batch_size = len(request.seeds)
        pc.n_iter = 1
        pc.do_not_save_samples = bool(p.do_not_save_samples) or not self.keep_intermediate
        pc.do_not_save_grid = True
        pc.extra_generation_params = {**(p.extra_generation_params or {}), **self.extra_generation_params}
        pc.override_settings = dict(p.override_settings or {})  # process_images pops from it
        pc.comments = {}
        pc.hyperbatch_passes = []  # filled by the hyperbatch samplers (pinning_samplers.webui.SampledPass)
        pc.styles = list(p.styles or [])
        # An empty hires prompt follows the prompt (setup_prompts); one equal to the user's prompt
        # was meant to follow it too.
        if hasattr(p, "hr_prompt") and p.hr_prompt in ("", p.prompt):
            pc.hr_prompt = ""
        if hasattr(p, "hr_negative_prompt") and p.hr_negative_prompt in ("", p.negative_prompt):
            pc.hr_negative_prompt = ""
        return pc

    def _batch_images(self, processed: Any, pc: Any, count: int) -> tuple[list[Any], list[str]]:
        """The batch's images and infotexts out of a Processed.

        The grid is off (do_not_save_grid), so images start at index_of_first_image; inpainting adds
        the mask and/or the masked composite after each image when "return_mask" /
        "return_mask_composite" are on (modules/processing.py:L1094-L1106 in v1.10.1); extensions
        may append images after the batch (ControlNet's detected maps), which are ignored.
        """
        opts = self.shared.opts
        has_mask = getattr(pc, "mask_for_overlay", None) is not None
        stride = 1 + int(has_mask and bool(getattr(opts, "return_mask", False))) \
            + int(has_mask and bool(getattr(opts, "return_mask_composite", False)))
        first = int(getattr(processed, "index_of_first_image", 0) or 0)
        images = list(processed.images[first::stride])[:count]
        infotexts = list(getattr(processed, "infotexts", None) or [])[first:first + count]
        return images, infotexts

    def _sampled(self, pc: Any, batch_size: int) -> tuple[Any, int]:
        """(split tree, denoiser rows) of the batch `pc` just produced: what the samplers did.

        A hyperbatch sampler records each pass it ran on pc (its real plan, plain when it fell back
        to a plain batch for distinct init latents or too few steps, and every row it evaluated); the
        tree is the recorded non-plain plan, None when every pass was plain. Passes run by other
        samplers are counted from their steps (`plain_pass_rows`).
        """
        from pinning_samplers.webui import MARKER_OPTION, sampled_passes

        recorded = sampled_passes(pc)
        plan = next((sampled.plan for sampled in recorded if not sampled.plan.is_plain), None)
        rows = sum(sampled.model_rows for sampled in recorded)
        for sampler_name, steps in sampling_passes(self.p):
            config = self.sd_samplers.find_sampler_config(sampler_name) if self.sd_samplers is not None else None
            options = getattr(config, "options", None) or {}
            if not options.get(MARKER_OPTION):
                rows += plain_pass_rows(batch_size, steps, bool(options.get("second_order")))
        return plan, rows


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _styles_need_schedules(shared: Any, names: list[str]) -> bool:
    """Whether a selected style holds "[": prompt editing or alternation, which the WebUI's
    schedule parser must see (modules/styles.py applies styles inside process_images)."""
    database = getattr(getattr(shared, "prompt_styles", None), "styles", {}) or {}
    for name in names:
        style = database.get(name)
        if style is not None and "[" in f"{style.prompt or ''}{style.negative_prompt or ''}":
            return True
    return False
