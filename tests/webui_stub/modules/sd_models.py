"""Stand-in for modules/sd_models.py (v1.10.1 82a973c0): checkpoints, and the loaded model.

The checkpoint registry (`CheckpointInfo`, `checkpoints_list`, `checkpoint_aliases`,
`get_closet_checkpoint_match`, `select_checkpoint`, `reload_model_weights`) follows the WebUI; a
"checkpoint" is a named toy model here, registered by `register_toy_checkpoint` (stand-in only),
not a file.

`ToySdModel` stands in for the loaded `WebuiSdModel` (modules/sd_models_types.py): the embedded
toy Gaussian-mixture model (lib_pinning.toy.ToyModel) dressed in the interface the WebUI's
processing and samplers call:

- `get_learned_conditioning(texts)` is the toy "text encoder": per prompt a [77 * chunks, K]
  tensor whose row 0 is `ToyModel.mixture_log_weights(prompt)` and whose other rows are zeros
  (K = 10 prototypes), stacked to [n, 77 * chunks, K] as SD 1.x returns [n, 77 * chunks, 768]:
  like the WebUI's CLIP wrapper (modules/sd_hijack_clip.py), a prompt of more than 75 tokens
  takes one more 77-row chunk per 75 tokens, so a long prompt with a short negative prompt gives
  cond and uncond of different lengths (the CFG denoiser's padding paths); tokens are counted
  as CLIP pre-tokens of the emphasis-free text, which is never more than the real BPE count.
  `cond_stage_model_empty_prompt` is the empty prompt's [1, 77, K] encoding (modules/sd_models.py:L869 `cond_stage_model_empty_prompt`
  sets it at load; the "Pad prompt/negative prompt" setting pads with it). With `is_sdxl` it returns
  what SDXL's conditioner returns: {"crossattn": [n, 77, K], "vector": [n, V]} (V = 4 here: the
  image size and two zeros, standing in for SDXL's size embedding).
- `create_denoiser()` gives the k-diffusion-style denoiser the WebUI's CFG denoiser wraps (the
  route v1.10.1's CFGDenoiserKDiffusion takes first, modules/sd_samplers_kdiffusion.py:L56 `create_denoiser`): it
  reads row 0 of each crossattn row back into [n, K] log weights and runs ToyModel with
  cond_scale 1 on the rows it is given (the CFG denoiser concatenates cond and uncond rows into
  one call and combines the outputs itself, exactly as with a UNet).
- The "latent" space is the toy's pixel space: [3, 64, 64] in [-1, 1]; `decode_first_stage` and
  `encode_first_stage` are identities (the WebUI's VAE maps [4, H/8, W/8] latents to [3, H, W]).
  Hence the stand-in's processing uses opt_C = 3 and opt_f = 1, and p.width = p.height must be 64.

A negative prompt encodes to its own mixture weights and drives the uncond branch, as in SD;
lib_pinning.generator.ToyGenerator instead subtracts the negative prompt inside the cond, so the
two agree only for an empty negative prompt (see tests/test_webui_stub.py).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from lib_pinning.toy import ToyConfig, ToyModel
from modules import devices, shared

TOKENS = 77
"""Rows of one prompt's text encoding (CLIP's context length)."""

VECTOR_SIZE = 4
"""Length of the stand-in's SDXL `vector` (SDXL's real one has 2816 entries)."""

POSTERIOR_STD = 1e-4
"""Std of the toy VAE posterior's sample, in latent (= pixel, [-1, 1]) units: SD's VAE samples
with about 1e-3 of the latent's spread; small enough here to move no pixel of an 8-bit image."""

SIGMA_TABLE_SIZE = 1000
"""Discrete timesteps of the toy's sigma table, as SD's 1000 training timesteps."""

checkpoints_list: dict[str, CheckpointInfo] = {}
"""modules/sd_models.py:L24: title -> CheckpointInfo."""

checkpoint_aliases: dict[str, CheckpointInfo] = {}
"""modules/sd_models.py:L25: every id (title, name, hash, ...) -> CheckpointInfo."""

re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")

model_data: dict[str, ToySdModel] = {}
"""Stand-in only: the models built so far, by checkpoint title (loading is instantaneous)."""


class CheckpointInfo:
    """modules/sd_models.py:L56: one checkpoint; here a name, a toy configuration and a flavour.

    The WebUI builds this from a file path and hashes the file; the stand-in derives a stable
    pseudo-hash from the name so infotexts carry a "Model hash" as they do in the WebUI.
    """

    def __init__(self, filename: str, config: ToyConfig | None = None, is_sdxl: bool = False) -> None:
        self.filename = filename
        name = filename
        self.is_safetensors = filename.lower().endswith(".safetensors")
        self.metadata: dict[str, Any] = {}
        self.name = name
        self.name_for_extra = name.rsplit(".", 1)[0].replace("/", "_")
        self.model_name = self.name_for_extra
        self.hash = _pseudo_hash(name)[:8]
        self.sha256 = _pseudo_hash(name)
        self.shorthash = self.sha256[0:10]
        self.title = f"{name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f"{name} [{self.hash}]",
                    self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]", f"{self.name_for_extra} [{self.shorthash}]"]
        self.toy_config = config or ToyConfig()
        self.is_sdxl = is_sdxl

    def register(self) -> None:
        """modules/sd_models.py:L102."""
        checkpoints_list[self.title] = self
        for id_ in self.ids:
            checkpoint_aliases[id_] = self


def _pseudo_hash(name: str) -> str:
    import hashlib

    return hashlib.sha256(f"toy-checkpoint/{name}".encode()).hexdigest()


def register_toy_checkpoint(name: str, config: ToyConfig | None = None, is_sdxl: bool = False) -> CheckpointInfo:
    """Stand-in only: add a toy "checkpoint" (the WebUI lists model files, modules/sd_models.py:L153 `def list_models`)."""
    info = CheckpointInfo(name, config, is_sdxl)
    info.register()
    return info


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """modules/sd_models.py:L183: the checkpoint with that id, else the shortest title containing it."""
    if not search_string:
        return None
    checkpoint_info = checkpoint_aliases.get(search_string, None)
    if checkpoint_info is not None:
        return checkpoint_info
    found = sorted([info for info in checkpoints_list.values() if search_string in info.title], key=lambda x: len(x.title))
    if found:
        return found[0]
    search_string_without_checksum = re.sub(re_strip_checksum, "", search_string)
    found = sorted([info for info in checkpoints_list.values() if search_string_without_checksum in info.title],
                   key=lambda x: len(x.title))
    if found:
        return found[0]
    return None


def select_checkpoint() -> CheckpointInfo:
    """modules/sd_models.py:L218: the checkpoint named by the sd_model_checkpoint setting, else the first."""
    checkpoint_info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint, None)
    if checkpoint_info is not None:
        return checkpoint_info
    if len(checkpoints_list) == 0:
        raise FileNotFoundError("No checkpoints found.")
    return next(iter(checkpoints_list.values()))


class SkipWritingToConfig:
    """modules/sd_models.py:L350: while active, loading a model does not change sd_model_checkpoint."""

    skip = False
    previous = None

    def __enter__(self) -> SkipWritingToConfig:
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        SkipWritingToConfig.skip = self.previous


def load_model(checkpoint_info: CheckpointInfo | None = None, already_loaded_state_dict: dict | None = None) -> ToySdModel:
    """modules/sd_models.py:L786 (load_model): make `checkpoint_info` (default: selected) the model.

    A toy checkpoint has no weights to read, so `already_loaded_state_dict` (the weights the WebUI
    read for it already, which it loads instead of the file) changes nothing here.
    """
    checkpoint_info = checkpoint_info or select_checkpoint()
    model = model_data.get(checkpoint_info.title)
    if model is None:
        model = ToySdModel(checkpoint_info)
        model_data[checkpoint_info.title] = model
    shared.sd_model = model
    if not SkipWritingToConfig.skip:
        shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    from modules import script_callbacks

    script_callbacks.model_loaded_callback(model)
    return model


def reload_model_weights(sd_model: Any = None, info: CheckpointInfo | None = None, forced_reload: bool = False) -> ToySdModel:
    """modules/sd_models.py:L940: switch to `info` (default: the selected checkpoint) if not loaded."""
    checkpoint_info = info or select_checkpoint()
    current = shared.sd_model
    if current is not None and current.sd_checkpoint_info == checkpoint_info and not forced_reload:
        return current
    return load_model(checkpoint_info)


def apply_token_merging(sd_model: Any, token_merging_ratio: float) -> None:
    """modules/sd_models.py:L1011: ToMe patches the UNet in the WebUI; the toy model has no attention."""


class ToyDenoiser:
    """Stand-in only: the k-diffusion denoiser of the toy model (the WebUI's CompVisDenoiser of a UNet).

    Mirrors k_diffusion.external.DiscreteSchedule: `sigmas` is an ascending table of the model's
    noise levels (sigmas[0] = sigma_min, sigmas[-1] = sigma_max: the WebUI reads the schedule's
    range from its ends), `get_sigmas(n)` the model's own discretisation (n levels evenly spaced
    in table index, log-interpolated, then 0), `sigma_to_t` / `t_to_sigma` the conversions the
    WebUI's "Uniform"/"Normal"/"Simple"/"DDIM" schedules use. The table is float64 (SD's is
    float32), so `.item()` of its ends gives the toy's exact sigma_min and sigma_max.
    """

    def __init__(self, sd_model: ToySdModel) -> None:
        self.inner_model = sd_model
        toy = sd_model.toy
        self.sigmas = torch.exp(torch.linspace(math.log(toy.sigma_min), math.log(toy.sigma_max), SIGMA_TABLE_SIZE,
                                               dtype=torch.float64))
        self.log_sigmas = self.sigmas.log()
        self.sigma_data = 1.0

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        if n is None:
            return torch.cat([self.sigmas.flip(0), self.sigmas.new_zeros([1])]).float()
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, dtype=torch.float64)
        return torch.cat([self.t_to_sigma(t), t.new_zeros([1])]).float()

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
        dists = log_sigma - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(log_sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(log_sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        """Denoised x for the conditioning dict the CFG denoiser builds.

        SD 1.x form: {"c_crossattn": [Tensor[n, 77, K]], "c_concat": [image_cond]}; SDXL form:
        {"crossattn": Tensor[n, 77, K], "vector": Tensor[n, V], "c_concat": [image_cond]}.
        image_cond means nothing to the toy and is ignored (as by a non-inpainting UNet).
        """
        if "c_crossattn" in cond:
            crossattn = cond["c_crossattn"][0]
        else:
            crossattn = cond["crossattn"]
        if crossattn.shape[0] != x.shape[0]:
            raise ValueError(f"{crossattn.shape[0]} cond rows for {x.shape[0]} latent rows")
        toy = self.inner_model.toy
        if tuple(x.shape[1:]) != toy.image_shape:
            raise ValueError(
                f"the stand-in's toy model denoises {toy.image_shape} latents, got {tuple(x.shape[1:])}: "
                f"set p.width = p.height = {toy.config.image_size}"
            )
        return toy(x, sigma, cond=crossattn[:, 0, :], cond_scale=1.0)


PRETOKEN = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")
"""CLIP's pre-token split (letters, one digit, punctuation) without the `regex` module's classes."""


def token_chunks(text: str) -> int:
    """77-row chunks of a prompt's encoding: one per 75 tokens, at least one, BREAK starting a new
    one (modules/sd_hijack_clip.py:L81 `def tokenize_line`; stand-in only as a function)."""
    from modules import prompt_parser

    chunks, count = 1, 0
    for piece, _ in prompt_parser.parse_prompt_attention(text):
        if piece == "BREAK":
            chunks, count = chunks + 1, 0
            continue
        count += len(PRETOKEN.findall(piece))
        while count > 75:
            chunks, count = chunks + 1, count - 75
    return chunks


class ToySdModel:
    """The stand-in's loaded checkpoint (the WebUI's WebuiSdModel); see the module docstring."""

    def __init__(self, checkpoint_info: CheckpointInfo) -> None:
        self.sd_checkpoint_info = checkpoint_info
        self.sd_model_checkpoint = checkpoint_info.filename
        self.sd_model_hash = checkpoint_info.hash
        self.toy = ToyModel(checkpoint_info.toy_config)
        self.is_sdxl = checkpoint_info.is_sdxl
        self.is_sdxl_inpaint = False
        self.is_sd1 = not self.is_sdxl
        self.is_sd2 = False
        self.is_sd3 = False
        self.latent_channels = self.toy.image_shape[0]
        self.parameterization = "eps"
        self.cond_stage_key = "txt"
        self.model = SimpleNamespace(conditioning_key="crossattn")
        self.first_stage_model = SimpleNamespace(dtype=devices.dtype_vae)

    @property
    def cond_stage_model_empty_prompt(self) -> torch.Tensor:
        """The empty prompt's crossattn rows (modules/sd_models.py get_empty_cond)."""
        empty = self.get_learned_conditioning([""])
        return empty["crossattn"] if isinstance(empty, dict) else empty

    def get_learned_conditioning(self, texts: Sequence[str]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The toy text encoder: [n, 77 * chunks, K] (SD 1.x) or {"crossattn", "vector"} (SDXL)."""
        k = self.toy.num_prototypes
        chunks = max([token_chunks(text) for text in texts] or [1])
        crossattn = torch.zeros(len(texts), TOKENS * chunks, k, dtype=devices.dtype)
        for i, text in enumerate(texts):
            crossattn[i, 0] = self.toy.mixture_log_weights(text).to(devices.dtype)
        if not self.is_sdxl:
            return crossattn
        width = float(getattr(texts, "width", None) or 0)
        height = float(getattr(texts, "height", None) or 0)
        vector = torch.tensor([[width, height, 0.0, 0.0]] * len(texts), dtype=devices.dtype)
        return {"crossattn": crossattn, "vector": vector}

    def create_denoiser(self) -> ToyDenoiser:
        """The k-diffusion denoiser wrapper (the WebUI's sd_models_xl/CompVisDenoiser route)."""
        return ToyDenoiser(self)

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]: the identity, the toy's latents are pixels."""
        return z

    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the VAE's distribution; the identity here."""
        return x

    def get_first_stage_encoding(self, encoder_posterior: torch.Tensor) -> torch.Tensor:
        """The latent of an encoding: the VAE posterior's sample times its scale factor
        (repositories/stable-diffusion-stability-ai ldm/models/diffusion/ddpm.py, which the WebUI
        calls through modules/sd_samplers_common.py:L87 `def images_tensor_to_samples` once per image). The toy's posterior has
        the identity as its mean and a std of POSTERIOR_STD, drawn like the real one from the
        global torch RNG: one init image repeated over a batch gives rows that differ slightly,
        as measured in the real v1.10.1 (tests/integration)."""
        noise = torch.randn(encoder_posterior.shape).to(encoder_posterior.device, encoder_posterior.dtype)
        return encoder_posterior + POSTERIOR_STD * noise

    @contextlib.contextmanager
    def ema_scope(self) -> Iterator[None]:
        """The WebUI enters the model's EMA scope around sampling; the toy has no EMA weights."""
        yield
