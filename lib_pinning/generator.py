"""The Generator protocol (what the pinning loop needs from an image backend) and the toy backend.

A backend turns (prompt, negative prompt, seeds) into a batch of images. Everything else about
generation (sampler, steps, size, cfg) is the backend's own configuration, fixed for a run: inside
the WebUI it comes from the user's `p`, for the toy model from `ToySettings`. The loop only varies
the prompts, and it always passes the same seeds (common random numbers), so fitness differences
between individuals come from the prompts and not from the noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, runtime_checkable

import torch

from lib_pinning import guard
from lib_pinning.options_model import OptionsModel, option
from lib_pinning.toy import ToyConfig, ToyModel, to_images
from lib_pinning.toy_clip import ToyClip
from pinning_samplers import SAMPLERS, GrowthPlan, SeededBrownianNoise, SeededNoise, plan_growth
from pinning_samplers.schedules import get_sigmas_exponential, get_sigmas_karras


@dataclass(frozen=True)
class GenerationRequest:
    """One individual's generation: the rendered prompts and the run's fixed seeds."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]


@dataclass
class Batch:
    """A generated batch.

    images: float32 [B, 3, H, W] in [0, 1] on the CPU, row i generated from seeds[i].
    growth: the hyperbatch split tree (which image shares which steps), None for a plain sampler.
    model_rows: denoiser rows evaluated (a batch of n rows at one model call counts n): the cost
        measure hyperbatch sampling reduces.
    timings: seconds per phase, e.g. {"sample": 0.12, "decode": 0.01}.
    nonfinite: per image, whether the backend saw non-finite latents or pixels for it (the image is
        then what the decoder made of them, usually black); None when the backend cannot tell
        (the WebUI hands over 8-bit images). The degenerate-image guard (lib_pinning.guard) reads it.
    """

    images: torch.Tensor
    seeds: tuple[int, ...]
    growth: GrowthPlan | None = None
    model_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    nonfinite: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Batch.images must be [B, 3, H, W], got {tuple(self.images.shape)}")
        if self.images.shape[0] != len(self.seeds):
            raise ValueError(
                f"Batch has {self.images.shape[0]} images but {len(self.seeds)} seeds"
            )
        if self.nonfinite is not None and len(self.nonfinite) != len(self.seeds):
            raise ValueError(f"Batch has {len(self.seeds)} images but {len(self.nonfinite)} non-finite flags")

    def __len__(self) -> int:
        return self.images.shape[0]


@runtime_checkable
class Generator(Protocol):
    """An image backend. Implementations: ToyGenerator (here), WebUIGenerator (scripts/)."""

    def generate(self, request: GenerationRequest) -> Batch:
        """Generate one image per seed; must be deterministic in (prompts, seeds)."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-serialisable settings that produced the images (stored in run.json)."""
        ...


# -- the embedded toy backend --------------------------------------------------------------------


@dataclass(frozen=True)
class ToySettings(OptionsModel):
    """How the toy backend samples (the WebUI takes these from the user's txt2img settings)."""

    sampler: Literal["euler_ancestral", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde"] = option(
        "euler_ancestral",
        label="Sampler",
        help="k-diffusion sampler run on the toy model.",
        infotext=None,
    )
    growth: Literal["none", "front", "front-early", "even", "late"] = option(
        "none",
        label="Hyperbatch",
        help="none: a plain batch; front / front-early / even / late: a hyperbatch that starts from one "
        "latent and splits it during sampling (front splits while the composition is open and ranks "
        "prompts closest to plain batches; front-early, DPM++ 2M SDE's default, splits a little "
        "earlier; even and late share more steps: cheaper, less variety).",
        infotext=None,
    )
    scheduler: Literal["karras", "exponential"] = option(
        "karras", label="Schedule type", help="Noise schedule of the sampler.", infotext=None
    )
    steps: int = option(20, label="Steps", help="Sampling steps.", infotext=None, minimum=1, maximum=150)
    cfg_scale: float = option(
        1.5,
        label="CFG scale",
        help="Classifier-free guidance against the unconditional (uniform) mixture.",
        infotext=None,
        minimum=0.0,
        maximum=30.0,
        step=0.5,
    )


@dataclass(frozen=True)
class DemoPrompt(OptionsModel):
    """What the demo generates: the prompt, the negative prompt and the batch's seeds."""

    prompt: str = option(
        "red circle, blue square, soft light",
        label="Prompt",
        help="Prompt in WebUI emphasis syntax; the toy model knows the shapes circle, square, triangle, "
        "ring, cross and the colours red, blue, green, yellow, purple (other words act as noise).",
        infotext=None,
    )
    negative_prompt: str = option(
        "blurry", label="Negative prompt", help="Negative prompt in WebUI emphasis syntax.", infotext=None
    )
    seed: int = option(1, label="Seed", help="Seed of the first image; image i uses seed + i.", infotext=None, minimum=0, maximum=2**32 - 1)
    batch_size: int = option(8, label="Batch size", help="Images per individual.", infotext=None, minimum=1, maximum=64)


class ToyGenerator:
    """Generator backed by the embedded Gaussian-mixture model (lib_pinning.toy) and our samplers.

    Noise follows the WebUI: one CPU generator per image seed gives the initial latent and the
    ancestral noise; the SDE samplers get one Brownian tree per seed. A batch is therefore a pure
    function of (prompts, seeds, settings), whatever else ran before.
    """

    def __init__(self, settings: ToySettings | None = None, config: ToyConfig | None = None) -> None:
        self.settings = settings or ToySettings()
        self.model = ToyModel(config)
        self.sampler = SAMPLERS[self.settings.sampler]

    @property
    def steps(self) -> int:
        return self.settings.steps

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image it generates (known before generating: the preflight
        checks target images against it)."""
        return tuple(self.model.image_shape[1:])  # type: ignore[return-value]

    def sigmas(self) -> torch.Tensor:
        schedule = get_sigmas_karras if self.settings.scheduler == "karras" else get_sigmas_exponential
        return schedule(self.settings.steps, self.model.sigma_min, self.model.sigma_max)

    def clip_encoder(self, model_name: str) -> ToyClip:
        """The toy's own tiny CLIP for any model name: a real CLIP knows nothing of toy images."""
        return ToyClip(self.model)

    def tagger_files(self, model_name: str, models_dir: str | None = None) -> Any:
        """The toy's own WD14-shaped tagger (lib_pinning.objectives.tagger_toy) for any tagger name,
        as `clip_encoder` does for CLIP; None for a folder path, which is used as given."""
        from lib_pinning.objectives.tagger_toy import toy_tagger_files

        return toy_tagger_files(model_name, models_dir)

    def growth_plan(self, batch_size: int) -> GrowthPlan:
        return plan_growth(batch_size, self.settings.steps, self.settings.growth)

    @staticmethod
    def _initial_latents(noise: SeededNoise, sigmas: torch.Tensor, plan: GrowthPlan) -> torch.Tensor:
        """B rows of initial latents; a hyperbatch starts from its first `plan.sizes[0]` rows only,
        so only those are drawn (the other seeds' generators owe the draw, `SeededNoise.first`)
        and the rest are zeros the sampler never reads."""
        batch_size = len(noise.seeds)
        start = plan.sizes[0]
        if start == batch_size:
            return noise.first() * sigmas[0]
        x = torch.zeros((batch_size, *noise.shape), dtype=noise.dtype, device=noise.device)
        x[:start] = noise.first(start) * sigmas[0]
        return x

    def generate(self, request: GenerationRequest) -> Batch:
        started = time.perf_counter()
        seeds = tuple(int(s) for s in request.seeds)
        sigmas = self.sigmas()
        plan = self.growth_plan(len(seeds))
        noise = SeededNoise(seeds, self.model.image_shape)
        x = self._initial_latents(noise, sigmas, plan)
        if self.sampler.webui_options.get("brownian_noise"):
            # As in the WebUI (pinning_samplers/webui.py): SDE noise and DPM++ 2M's split refresh come
            # from one Brownian tree per seed, so a toy batch equals the WebUI path's batch.
            noise_sampler: Any = SeededBrownianNoise.from_sigmas(seeds, x, sigmas)
        else:
            noise_sampler = noise
        extra_args = self.model.extra_args(
            [request.prompt] * len(seeds), request.negative_prompt, cond_scale=self.settings.cfg_scale
        )
        rows_before = self.model.rows_evaluated
        latents = self.sampler.function(
            self.model, x, sigmas, extra_args=extra_args, disable=True, noise_sampler=noise_sampler, growth=plan
        )
        # Over-emphasis frying and NaN latents (toy_failures.FailureModes; off with ToyConfig(failure_modes=False)).
        latents = self.model.failure_modes(request.prompt, request.negative_prompt).apply(latents, seeds)
        nonfinite = tuple(bool(v) for v in guard.nonfinite_rows(latents))
        return Batch(
            images=to_images(latents),
            seeds=seeds,
            growth=None if plan.is_plain else plan,
            model_rows=self.model.rows_evaluated - rows_before,
            timings={"sample": time.perf_counter() - started},
            nonfinite=nonfinite,
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": "toy", "settings": self.settings.to_json(), "model": self.model.config.to_json()}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> ToyGenerator:
        if description.get("backend") != "toy":
            raise ValueError(f"this run was generated by the {description.get('backend')!r} backend, not the toy model")
        return cls(ToySettings.from_json(description["settings"]), ToyConfig(**description["model"]))
