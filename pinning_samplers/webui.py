"""Registration of the hyperbatch samplers with the Stable Diffusion WebUI (AUTOMATIC1111 1.6+, Forge).

The WebUI lists samplers in `modules.sd_samplers.all_samplers` as
`SamplerData(name, constructor, aliases, options)`; `constructor(sd_model)` returns the sampler
object a generation uses. `register()` adds one entry per WebUI name of every
`samplers.SAMPLERS` entry, the way the WebUI's own k-diffusion samplers are built
(modules/sd_samplers_kdiffusion.py: `KDiffusionSampler(funcname_or_callable, sd_model)`; a
callable is accepted since 1.6.0): appended to `all_samplers` in place (it is also
`samplers` and `samplers_for_img2img`), added to `all_samplers_map`, then `set_samplers()`
rebuilds the lowercase name/alias map and `get_sampler_and_scheduler`'s cache (1.9+) is cleared.
Entries are marked with the option {"hyperbatch": True}; registering again (the WebUI re-executes
extension scripts on "Reload UI") replaces them in place instead of adding duplicates.

Names. From 1.9 (detected by `modules.sd_schedulers` being importable, not by a version string)
the noise schedule is the separate "Schedule type" and a sampler name carries none: one entry
per sampler, e.g. "DPM++ 2M - Hyperbatch" with options {"scheduler": "karras", ...}, so
"Automatic" picks the same default as the plain sampler. Before 1.9 (1.6-1.8) a name selects the
schedule, as the WebUI's own list did ("DPM++ 2M" and "DPM++ 2M Karras"): the plain name without
a `scheduler` option (the model's own discretisation), a "Karras" variant, and an "Exponential"
variant for samplers whose default schedule is exponential, e.g. "DPM++ 2M Karras - Hyperbatch".

Sampling. The entry's sampler is a KDiffusionSampler subclass whose solver is the hyperbatch
function, seen by the WebUI with that function's own signature, so the WebUI passes exactly what
it passes the plain sampler (sigmas, eta, s_noise, solver_type, a per-seed Brownian noise_sampler
for `brownian_noise` samplers). Noise that the WebUI does not provide comes from the batch's seeds:
the WebUI redirects `torch.randn_like` to its per-seed generators (`p.rng`) only inside
k-diffusion's module, so a sampler without a WebUI noise_sampler (Euler a) gets one drawing from
`p.rng.next()`, one row per seed, exactly the draws the plain sampler's redirected randn_like
would make; if the WebUI declines to build Brownian noise (the "Do not make DPM++ SDE
deterministic" setting) one Brownian tree per seed is built here. Images are a pure function of
the seeds either way.

Per-pass decisions (the WebUI's CFG denoiser takes its batch size from the conds, which the
hyperbatch cuts to the active rows; other per-image state must follow or be refused):
- img2img / inpainting: works. The CFG denoiser blends with `init_latent` (one row per image)
  after every step; it is cut to the active rows for each model call, like the conds.
- A batch that does not start from one shared image (the hires-fix pass, which refines B
  distinct first-pass images; img2img with several init images; "latent noise" inpainting, whose
  init latents differ per seed): a hyperbatch would start every image from image 0, so these run
  as a plain batch (growth "none", exactly the plain solver), with an INFO log line.
- Refiner: refused (HyperbatchUnsupportedError naming the setting). The refiner switch makes the
  CFG denoiser replace the conds with full-batch conds of the refiner model in the middle of
  sampling, which neither matches the active rows nor reaches a hyperbatch's resized arguments.

`p.hyperbatch_growth` (a schedule name or a GrowthPlan), when a caller sets it, chooses the
growth; otherwise the sampler's own default (`SamplerInfo.default_growth`, with its
`default_split_rho`: chosen per sampler by the fidelity measure, see `sampling`). Every pass a
hyperbatch sampler runs is recorded in `p.hyperbatch_passes` (a `SampledPass`: the plan it
actually sampled, plain when it fell back, and the denoiser rows it actually evaluated), so
callers report what happened, not what was planned.

Nothing here imports the WebUI at module import; `register()` imports `modules.*` when called,
which only works inside the WebUI (or tests/webui_stub).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from .plan import GrowthPlan, growth_levels, resolve_plan
from .noise import SeededBrownianNoise, split_noise_rows
from .sampling import SAMPLERS, SamplerInfo

logger = logging.getLogger(__name__)

NAME_SUFFIX = " - Hyperbatch"
"""Every hyperbatch sampler name ends with this (SamplerInfo.label does)."""

MARKER_OPTION = "hyperbatch"
"""The SamplerData option that marks this extension's entries (value True)."""

GROWTH_ATTRIBUTE = "hyperbatch_growth"
"""Attribute of a processing object `p` that overrides the growth schedule for its generation."""

PASSES_ATTRIBUTE = "hyperbatch_passes"
"""Attribute of `p`: the list of `SampledPass`es its hyperbatch sampling passes appended."""

_PRE_1_9_SCHEDULE_LABELS = {"karras": "Karras", "exponential": "Exponential"}

OptionValue = str | bool | int | float


@dataclass(frozen=True)
class SampledPass:
    """What one sampling pass of a hyperbatch sampler did.

    plan: the growth plan it sampled (plain when the pass fell back to a plain batch);
    model_rows: denoiser rows it evaluated, every model call counted (DPM++ SDE's second call per
    step included); plain_reason: why it fell back, or None.
    """

    plan: GrowthPlan
    model_rows: int
    plain_reason: str | None = None


def sampled_passes(p: Any) -> list[SampledPass]:
    """The passes recorded on `p` so far (an empty list when none ran)."""
    passes = getattr(p, PASSES_ATTRIBUTE, None)
    return list(passes) if isinstance(passes, list) else []


def _record_pass(p: Any, sampled: SampledPass) -> None:
    passes = getattr(p, PASSES_ATTRIBUTE, None)
    if not isinstance(passes, list):
        passes = []
        setattr(p, PASSES_ATTRIBUTE, passes)
    passes.append(sampled)


class HyperbatchUnsupportedError(RuntimeError):
    """A generation setting that a hyperbatch sampler cannot honour; the message names it."""


@dataclass(frozen=True)
class WebUISampler:
    """One name under which a hyperbatch sampler is offered in the WebUI."""

    name: str
    info: SamplerInfo
    aliases: tuple[str, ...]
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.options.items():
            if not isinstance(value, (str, bool, int, float)):
                raise TypeError(f"WebUI sampler option {key!r} must be str/bool/int/float (the API serialises it), got {value!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


def _require_webui_1_6() -> None:
    """Refuse WebUIs older than 1.6.0, detected by `modules.rng` (added in 1.6.0).

    Before 1.6 KDiffusionSampler accepted only k-diffusion function names, not callables, and
    there were no per-seed generators (`p.rng`) to draw a batch's noise from.
    """
    try:
        import modules.rng  # noqa: F401
    except ImportError as e:
        raise HyperbatchUnsupportedError("the hyperbatch samplers need Stable Diffusion WebUI 1.6.0 or later") from e


def separate_schedule_available() -> bool:
    """True on WebUI 1.9+ (and Forge), where "Schedule type" is chosen apart from the sampler.

    Detected by the feature itself, `modules.sd_schedulers` (added in 1.9.0).
    """
    try:
        import modules.sd_schedulers  # noqa: F401
    except ImportError:
        return False
    return True


def _base_label(info: SamplerInfo) -> str:
    label = info.label
    return label[: -len(NAME_SUFFIX)] if label.endswith(NAME_SUFFIX) else label


def _variant_alias(alias: str, tag: str) -> str:
    suffix = "_hyperbatch"
    if alias.endswith(suffix):
        return f"{alias[: -len(suffix)]}_{tag}{suffix}"
    return f"{alias}_{tag}"


def webui_samplers(infos: Iterable[SamplerInfo] | None = None, *, separate_schedule: bool) -> list[WebUISampler]:
    """The WebUI entries for `infos` (default: every hyperbatch sampler); see the module docstring."""
    entries = []
    for info in SAMPLERS.values() if infos is None else infos:
        options: dict[str, OptionValue] = {**info.webui_options, MARKER_OPTION: True}
        if separate_schedule:
            entries.append(WebUISampler(info.label, info, tuple(info.aliases), options))
            continue
        default = options.pop("scheduler", None)
        entries.append(WebUISampler(f"{_base_label(info)}{NAME_SUFFIX}", info, tuple(info.aliases), options))
        if default is None:
            continue
        variants = ["karras"] + (["exponential"] if default == "exponential" else [])
        for scheduler in variants:
            tag = "ka" if scheduler == "karras" else "exp"
            entries.append(WebUISampler(
                f"{_base_label(info)} {_PRE_1_9_SCHEDULE_LABELS[scheduler]}{NAME_SUFFIX}",
                info,
                tuple(_variant_alias(alias, tag) for alias in info.aliases),
                {**options, "scheduler": scheduler},
            ))
    return entries


def _is_ours(data: Any) -> bool:
    options = getattr(data, "options", None) or {}
    return bool(options.get(MARKER_OPTION, False))


def register(infos: Iterable[SamplerInfo] | None = None) -> list[str]:
    """Add (or replace) the hyperbatch samplers in the running WebUI; returns their names.

    Idempotent: entries already registered by this extension are replaced where they stand, and
    any of ours that this call does not produce are removed, so the list never holds duplicates.
    """
    _require_webui_1_6()
    from modules import sd_samplers, sd_samplers_common

    entries = webui_samplers(infos, separate_schedule=separate_schedule_available())
    datas = [
        sd_samplers_common.SamplerData(entry.name, _constructor(entry.info), list(entry.aliases), dict(entry.options))
        for entry in entries
    ]
    _replace_entries(sd_samplers, datas)
    names = [data.name for data in datas]
    logger.info("hyperbatch samplers registered: %s", ", ".join(names))
    return names


def unregister() -> list[str]:
    """Remove this extension's samplers from the running WebUI; returns the removed names."""
    from modules import sd_samplers

    removed = [data.name for data in sd_samplers.all_samplers if _is_ours(data)]
    _replace_entries(sd_samplers, [])
    return removed


def _replace_entries(sd_samplers: Any, datas: list[Any]) -> None:
    """Put `datas` into the WebUI's registry in place of every entry of ours (or of the same name)."""
    all_samplers = sd_samplers.all_samplers
    all_samplers_map = sd_samplers.all_samplers_map
    new_by_name = {data.name: data for data in datas}
    kept = []
    for data in all_samplers:
        if data.name in new_by_name:
            kept.append(new_by_name.pop(data.name))
        elif not _is_ours(data):
            kept.append(data)
        else:
            all_samplers_map.pop(data.name, None)
    kept.extend(data for data in datas if data.name in new_by_name)
    all_samplers[:] = kept
    for data in datas:
        all_samplers_map[data.name] = data
    sd_samplers.set_samplers()
    cached = getattr(sd_samplers, "get_sampler_and_scheduler", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()


def _constructor(info: SamplerInfo) -> Callable[[Any], Any]:
    def construct(sd_model: Any) -> Any:
        from modules import sd_samplers_kdiffusion

        return _sampler_class(sd_samplers_kdiffusion.KDiffusionSampler)(info, sd_model)

    return construct


def _refiner_may_switch(p: Any) -> bool:
    """Whether the WebUI's apply_refiner (sd_samplers_common.py) could switch models in this pass."""
    info = getattr(p, "refiner_checkpoint_info", None)
    if info is None:
        return False
    switch_at = getattr(p, "refiner_switch_at", None)
    if switch_at is not None and switch_at >= 1.0:
        return False
    from modules import shared

    if shared.sd_model is not None and getattr(shared.sd_model, "sd_checkpoint_info", None) == info:
        return False
    if getattr(p, "enable_hr", False):
        refiner_pass = getattr(shared.opts, "hires_fix_refiner_pass", "second pass")
        if refiner_pass == "first pass" and p.is_hr_pass:
            return False
        if refiner_pass == "second pass" and not p.is_hr_pass:
            return False
    return True


def _check_supported(p: Any, sampler_name: str) -> None:
    if _refiner_may_switch(p):
        raise HyperbatchUnsupportedError(
            f"{sampler_name} cannot be used with the Refiner: the refiner switch replaces the "
            f"conditioning with full-batch conditioning mid-sampling. Turn the Refiner off "
            f"(or set 'Switch at' to 1), or choose a sampler without '{NAME_SUFFIX.strip(' -')}'."
        )


SHARED_LATENT_TOLERANCE = 0.02
"""Rows of an init latent that differ by at most this fraction of its spread count as one image.

The WebUI encodes each row's copy of the init image on its own and samples the VAE's posterior
for each (modules/sd_samplers_common.py images_tensor_to_samples, "Full" encoding): one init
image gives rows that differ by the posterior's std, about 1e-3 of the latent's spread for SD's
VAE, never exactly equal rows. Distinct init images or per-seed latent noise differ by far more
(the order of the spread itself)."""


def _plain_reason(p: Any, x: torch.Tensor) -> str | None:
    """Why an img2img-style pass must sample a plain batch, or None when a hyperbatch fits."""
    if getattr(p, "is_hr_pass", False):
        return "the hires-fix pass refines distinct first-pass images"
    if x.shape[0] > 1:
        first = x[:1].float()
        spread = float(first.std()) if first.numel() > 1 else 0.0
        largest = float((x.float() - first).abs().max())
        if largest > SHARED_LATENT_TOLERANCE * max(spread, 1e-6):
            return "the batch's init latents differ (several init images, or per-seed latent noise)"
    return None


def _ancestor_rows(batch_size: int, rows: int) -> list[int]:
    """For each image, its row when only `rows` rows were active (rows are stable: r >= n copies r - n)."""
    levels = [size for size in growth_levels(batch_size) if size >= rows]
    result = []
    for image in range(batch_size):
        row = image
        for size in reversed(levels[:-1]):
            if row >= size:
                row -= size
        result.append(row)
    return result


class _SeedNoise:
    """Noise sampler drawing the WebUI's per-seed noise: `p.rng.next()`, one row per image."""

    def __init__(self, image_rng: Any) -> None:
        self.image_rng = image_rng

    def __call__(self, sigma: Any = None, sigma_next: Any = None) -> torch.Tensor:
        return self.image_rng.next()


class _WithSplitNoise:
    """A noise sampler plus `split_noise` from the batch's seeds (`noise.split_noise_rows`), so a
    split neither queries the WebUI's Brownian trees nor advances its per-seed generators."""

    def __init__(self, noise_sampler: Any, seeds: Sequence[int], shape: Sequence[int]) -> None:
        self.noise_sampler = noise_sampler
        self.seeds = tuple(int(s) for s in seeds)
        self.shape = tuple(shape)
        draw_rows = getattr(noise_sampler, "draw_rows", None)
        if draw_rows is not None:
            self.draw_rows = draw_rows

    def __call__(self, sigma: Any, sigma_next: Any) -> torch.Tensor:
        return self.noise_sampler(sigma, sigma_next)

    def split_noise(self, step: int, start: int, stop: int) -> torch.Tensor:
        return split_noise_rows(self.seeds[start:stop], self.shape, step)


class _ActiveRowsDenoiser:
    """The WebUI's CFG denoiser with its per-image `init_latent` cut to the active rows per call.

    The conds arrive already cut (the hyperbatch resizes its extra_args); the inpainting blend
    inside the denoiser uses `init_latent` (one row per image), which must match them.
    """

    def __init__(self, denoiser: Any, batch_size: int) -> None:
        self.denoiser = denoiser
        self.batch_size = batch_size
        self.rows_evaluated = 0
        init_latent = getattr(denoiser, "init_latent", None)
        self.init_latent = init_latent if isinstance(init_latent, torch.Tensor) and init_latent.ndim >= 1 and init_latent.shape[0] == batch_size else None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.init_latent is not None:
            self.denoiser.init_latent = self.init_latent[: x.shape[0]]
        self.rows_evaluated += x.shape[0]
        return self.denoiser(x, sigma, **kwargs)

    def restore(self) -> None:
        if self.init_latent is not None:
            self.denoiser.init_latent = self.init_latent


@functools.lru_cache(maxsize=None)
def _sampler_class(base: type) -> type:
    """The hyperbatch sampler class for the WebUI's KDiffusionSampler `base` (one per WebUI load)."""

    class HyperbatchKDiffusionSampler(base):  # type: ignore[misc, valid-type]
        """A KDiffusionSampler whose solver is a hyperbatch sampler (see pinning_samplers/webui.py)."""

        def __init__(self, info: SamplerInfo, sd_model: Any, options: dict[str, Any] | None = None) -> None:
            self.hyperbatch_info = info
            self.hyperbatch_plain_reason: str | None = None
            super().__init__(_solver_entry(self, info), sd_model, options)
            self.extra_params = list(info.extra_params)

        def sample(self, p: Any, x: torch.Tensor, conditioning: Any, unconditional_conditioning: Any,
                   steps: int | None = None, image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
            _check_supported(p, self.config.name if self.config is not None else self.hyperbatch_info.label)
            self.hyperbatch_plain_reason = None
            return super().sample(p, x, conditioning, unconditional_conditioning, steps=steps,
                                  image_conditioning=image_conditioning)

        def sample_img2img(self, p: Any, x: torch.Tensor, noise: torch.Tensor, conditioning: Any,
                           unconditional_conditioning: Any, steps: int | None = None,
                           image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
            _check_supported(p, self.config.name if self.config is not None else self.hyperbatch_info.label)
            self.hyperbatch_plain_reason = _plain_reason(p, x)
            if self.hyperbatch_plain_reason is not None:
                logger.info("hyperbatch: sampling a plain batch: %s", self.hyperbatch_plain_reason)
            return super().sample_img2img(p, x, noise, conditioning, unconditional_conditioning, steps=steps,
                                          image_conditioning=image_conditioning)

        def hyperbatch_growth(self, p: Any) -> GrowthPlan | str:
            """The growth schedule of this pass."""
            if self.hyperbatch_plain_reason is not None:
                return "none"
            return getattr(p, GROWTH_ATTRIBUTE, None) or self.hyperbatch_info.default_growth

        def hyperbatch_noise(self, x: torch.Tensor, sigmas: torch.Tensor) -> Any:
            """Per-seed noise for a solver the WebUI gave no noise_sampler."""
            p = self.p
            if self.hyperbatch_info.webui_options.get("brownian_noise"):
                seeds = p.all_seeds[p.iteration * p.batch_size:(p.iteration + 1) * p.batch_size]
                return SeededBrownianNoise.from_sigmas(seeds, x, sigmas)
            return _SeedNoise(p.rng)

        def run_hyperbatch(self, model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
                           callback: Any = None, disable: bool | None = None, noise_sampler: Any = None,
                           **solver_kwargs: Any) -> torch.Tensor:
            """What the WebUI's `self.func(model_wrap_cfg, x, ...)` call runs."""
            from modules import sd_samplers_common

            if noise_sampler is None:
                noise_sampler = self.hyperbatch_noise(x, sigmas)
            seeds = list(getattr(self.p, "all_seeds", None) or [])
            first = getattr(self.p, "iteration", 0) * getattr(self.p, "batch_size", x.shape[0])
            batch_seeds = seeds[first:first + x.shape[0]]
            if len(batch_seeds) == x.shape[0] and not hasattr(noise_sampler, "split_noise"):
                noise_sampler = _WithSplitNoise(noise_sampler, batch_seeds, x.shape[1:])
            rows = _ActiveRowsDenoiser(model, x.shape[0])
            # Resolved here, not inside the solver, so the pass records the plan it really sampled.
            steps = len(sigmas) - 1
            plan = resolve_plan(self.hyperbatch_growth(self.p), x.shape[0], steps) if steps > 0 else None
            try:
                result = self.hyperbatch_info.function(
                    rows, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                    noise_sampler=noise_sampler, growth=plan if plan is not None else "none", **solver_kwargs,
                )
                if plan is not None:
                    _record_pass(self.p, SampledPass(plan, rows.rows_evaluated, self.hyperbatch_plain_reason))
                return result
            except sd_samplers_common.InterruptedException:
                # The WebUI returns `last_latent` on interrupt/skip; it holds the active rows only.
                # Give every image its ancestor's row so the batch still has one latent per seed.
                last = self.last_latent
                if isinstance(last, torch.Tensor) and 0 < last.shape[0] < x.shape[0]:
                    self.last_latent = last[_ancestor_rows(x.shape[0], last.shape[0])]
                raise
            finally:
                rows.restore()

    return HyperbatchKDiffusionSampler


def _solver_entry(sampler: Any, info: SamplerInfo) -> Callable[..., torch.Tensor]:
    """The callable handed to KDiffusionSampler: bound to `sampler`, with `info.function`'s signature.

    The WebUI inspects the solver's signature to decide which keyword arguments to pass
    (sigmas, eta, s_noise, ...); functools.wraps makes inspect.signature report the hyperbatch
    function's own parameters.
    """

    @functools.wraps(info.function)
    def solver(model: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sampler.run_hyperbatch(model, x, *args, **kwargs)

    return solver
