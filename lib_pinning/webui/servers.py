"""Extra servers next to the local WebUI: the script's "Also generate on the extra servers" option.

The setting `prompt_pinning_servers` lists WebUI / Forge servers started with `--api`, one URL a
line (credentials as `http://user:password@host:7860`). With the option on, the run's generator is
a lib_pinning.remote pool whose members are this WebUI (`LocalMember`: its `WebUIGenerator`, one
batch at a time) and one `WebUIClient` per listed server, so a generation's individuals are spread
over all of them and the records are those the local WebUI alone would write (the same seeds
everywhere, results in proposal order). The pool's start check covers the local member too: every
member must have the same checkpoint (short hash) and know the sampler and schedule type, else the
run is refused (PinningInputError) before anything is generated.

The servers get p's settings as the API payload (`remote_settings`). img2img travels too: p's init
image(s) and inpainting mask, encoded once per run as PNG from memory (`remote_images`), with
denoising strength, resize mode, mask blur, masked content, inpaint area and its padding, mask mode
and the noise multiplier; and this WebUI's img2img settings that change pixels (`IMG2IMG_SETTINGS`:
steps fix, colour correction, background colour, extra noise, inpainting conditioning mask
strength) join the override settings, so a server's own values cannot make its batches differ.
img2img's VAE encode draws from torch's global generator as the previous request left it: the local
WebUIGenerator seeds it as a batch of the run's seeds leaves it (`seed_vae_encode`), and each
server's client primes it with a one-step txt2img request before its first img2img batch
(lib_pinning.remote.payload.priming_payload), so the servers' batches are the local ones' bytes.
Batch img2img works too: the WebUI runs the script once per image of the folder, each a run of its
own with that image (and its mask). What the payload cannot carry is refused rather than silently
dropped: init images not one for the batch nor one per image, a latent mask of its own, styles,
variation seeds, a hires size or sampler of its own, restore faces, tiling. Each server's other
settings (Clip skip, eta...) are its own, as for `python -m lib_pinning pin`; give them in the
generation's override settings to pin them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from lib_pinning.evaluation import RunStopped
from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.options_model import PinningInputError
from lib_pinning.remote import (
    BatchStopped, Img2ImgImages, RemoteGenerator, RemoteSettings, RequestRejected, ServerConfig, ServerUnavailable,
    WebUIClient,
)
from lib_pinning.remote.client import Checkpoint
from lib_pinning.webui.generator import SAME_SAMPLER, WebUIGenerator, checkpoint_of

log = logging.getLogger(__name__)

LOCAL_NAME = "this WebUI"

IMG2IMG_SETTINGS = ("img2img_fix_steps", "img2img_color_correction", "img2img_background_color",
                    "img2img_extra_noise", "inpainting_mask_weight")
"""The WebUI settings (v1.10.1 and Forge modules/shared_options.py) that change an img2img batch's
pixels, sent with this WebUI's values as override settings of img2img requests."""


def parse_servers(text: str) -> list[ServerConfig]:
    """The servers of the setting: one URL a line (or separated by commas); `user:password@` in a
    URL becomes its basic-auth credentials and leaves the URL."""
    configs = []
    for item in str(text or "").replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PinningInputError(f"extra servers setting: {item!r} is not an http(s) URL")
        auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        configs.append(ServerConfig(urlunsplit((parts.scheme, host, parts.path, "", "")), auth=auth))
    return configs


def remote_settings(p: Any, opts: Any = None) -> RemoteSettings:
    """p's generation settings as the servers' payload; refuses what the payload cannot carry.
    opts: this WebUI's settings (shared.opts), whose IMG2IMG_SETTINGS an img2img payload pins."""
    img2img = getattr(p, "init_images", None) is not None
    refused = _img2img_refusals(p) if img2img else []
    if getattr(p, "styles", None):
        refused.append("styles (apply them to the prompt instead)")
    if float(getattr(p, "subseed_strength", 0) or 0) > 0:
        refused.append("variation seeds (Variation strength > 0)")
    if getattr(p, "restore_faces", False):
        refused.append("restore faces")
    if getattr(p, "tiling", False):
        refused.append("tiling")
    enable_hr = bool(getattr(p, "enable_hr", False)) and not img2img
    if enable_hr:
        if int(getattr(p, "hr_resize_x", 0) or 0) or int(getattr(p, "hr_resize_y", 0) or 0):
            refused.append("a hires fix with 'Resize width/height to' (use 'Upscale by')")
        if getattr(p, "hr_sampler_name", None) not in (None, "", SAME_SAMPLER, p.sampler_name):
            refused.append("a hires sampler of its own")
        if getattr(p, "hr_prompt", "") not in ("", p.prompt) or getattr(p, "hr_negative_prompt", "") not in (
                "", p.negative_prompt):
            refused.append("a hires prompt of its own")
    if refused:
        raise PinningInputError(
            "Prompt pinning on extra servers cannot send these settings to them: " + "; ".join(refused)
            + ". Turn them off, or turn off 'Also generate on the extra servers'."
        )
    overrides = dict(getattr(p, "override_settings", None) or {})
    common = dict(
        sampler_name=str(p.sampler_name), scheduler=str(getattr(p, "scheduler", None) or "Automatic"),
        steps=int(p.steps), cfg_scale=float(p.cfg_scale), width=int(p.width), height=int(p.height),
    )
    if img2img:
        overrides = {**_img2img_settings(opts), **overrides}
        return RemoteSettings(
            mode="img2img", **common, denoising_strength=float(p.denoising_strength),
            resize_mode=int(getattr(p, "resize_mode", 0) or 0),
            image_cfg_scale=_optional_float(getattr(p, "image_cfg_scale", None)),
            initial_noise_multiplier=_optional_float(getattr(p, "initial_noise_multiplier", None)),
            mask_blur_x=int(getattr(p, "mask_blur_x", 4)), mask_blur_y=int(getattr(p, "mask_blur_y", 4)),
            mask_round=bool(getattr(p, "mask_round", True)), inpainting_fill=int(getattr(p, "inpainting_fill", 0)),
            inpaint_full_res=bool(getattr(p, "inpaint_full_res", True)),
            inpaint_full_res_padding=int(getattr(p, "inpaint_full_res_padding", 0) or 0),
            inpainting_mask_invert=int(getattr(p, "inpainting_mask_invert", 0) or 0),
            override_settings=json.dumps(overrides) if overrides else "",
        )
    return RemoteSettings(
        mode="txt2img", **common,
        denoising_strength=float(getattr(p, "denoising_strength", None) or 0.75) if enable_hr else 0.75,
        enable_hr=enable_hr, hr_scale=float(getattr(p, "hr_scale", 2.0) or 2.0),
        hr_upscaler=str(getattr(p, "hr_upscaler", None) or "Latent"),
        hr_second_pass_steps=int(getattr(p, "hr_second_pass_steps", 0) or 0),
        override_settings=json.dumps(overrides) if overrides else "",
    )


def remote_images(p: Any) -> Img2ImgImages | None:
    """p's init images and inpainting mask as every img2img request carries them (None for
    txt2img), encoded here once for the run. The mask is p.image_mask: the WebUI moves the `mask`
    argument there (StableDiffusionProcessingImg2Img.__post_init__), and batch img2img sets it."""
    if getattr(p, "init_images", None) is None:
        return None
    return Img2ImgImages.from_images(list(p.init_images), getattr(p, "image_mask", None))


def _img2img_refusals(p: Any) -> list[str]:
    """What of an img2img p the payload cannot carry."""
    from PIL import Image

    init_images = list(p.init_images)
    refused = []
    if not init_images or not all(isinstance(i, Image.Image) for i in init_images):
        refused.append("img2img without an init image")
    elif len(init_images) not in (1, int(p.batch_size)):
        refused.append(f"{len(init_images)} init images for a batch of {p.batch_size} (give one, or one per image)")
    mask = getattr(p, "image_mask", None)
    if mask is not None and not isinstance(mask, Image.Image):
        refused.append("an inpainting mask that is not an image")
    if getattr(p, "latent_mask", None) is not None:
        refused.append("a latent mask of its own (latent_mask, set by a script)")
    return refused


def _img2img_settings(opts: Any) -> dict[str, Any]:
    """This WebUI's values of IMG2IMG_SETTINGS (those it has)."""
    data = getattr(opts, "data", None) or {}
    labels = getattr(opts, "data_labels", None) or {}
    found = {}
    for key in IMG2IMG_SETTINGS:
        if key in data:
            found[key] = data[key]
        elif key in labels:
            found[key] = labels[key].default
    return found


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class LocalMember:
    """The local WebUI as a member of the pool (the methods of a WebUIClient, see
    lib_pinning.remote.pool); its failures become RemoteErrors, which is all the pool handles: a
    batch the user stopped (Interrupt, Skip) a BatchStopped, anything else a ServerUnavailable."""

    max_slots = 1  # process_images makes one batch at a time
    name = LOCAL_NAME
    config = ServerConfig(LOCAL_NAME)

    def __init__(self, generator: WebUIGenerator, shared: Any, sd_samplers: Any, sd_models: Any = None,
                 sd_schedulers: Any = None) -> None:
        self.generator = generator
        self.shared = shared
        self.sd_samplers = sd_samplers
        self.sd_models = sd_models
        self.sd_schedulers = sd_schedulers

    def checkpoint(self) -> Checkpoint:
        info = getattr(getattr(self.shared, "sd_model", None), "sd_checkpoint_info", None)
        if info is not None:
            return _checkpoint(info)
        title, short = checkpoint_of(self.shared)  # Forge, before its first generation
        if not title:
            raise ServerUnavailable(self.name, "no checkpoint is loaded")
        return Checkpoint(str(title), str(short or title).lower())

    def find_checkpoint(self, title: str) -> Checkpoint:
        match = getattr(self.sd_models, "get_closet_checkpoint_match", None)
        info = match(title) if match is not None else None
        if info is None:
            raise RequestRejected(self.name, f"checkpoint {title!r} is not in this WebUI's list")
        return _checkpoint(info)

    def samplers(self) -> set[str]:
        names: set[str] = set()
        for data in getattr(self.sd_samplers, "all_samplers", None) or []:
            names.add(str(data.name))
            names.update(str(a) for a in data.aliases or [])
        return names

    def schedulers(self) -> set[str] | None:
        if self.sd_schedulers is None:  # before 1.9: no schedule types
            return None
        names: set[str] = set()
        for scheduler in self.sd_schedulers.schedulers:
            names.update(str(v) for v in (scheduler.name, scheduler.label) if v)
            names.update(str(a) for a in getattr(scheduler, "aliases", None) or [])
        return names

    def interrupt(self) -> None:
        """Nothing: the WebUI's own Interrupt already stops it, and a pool's cancel (another
        member's, or an abandoned call's) must not end the user's WebUI job; its batch in flight
        finishes and keeps its slot meanwhile."""

    def generate_batch(self, settings: RemoteSettings, request: GenerationRequest,
                       images: Img2ImgImages | None = None) -> Batch:
        started = time.perf_counter()
        try:
            batch = self.generator.generate(request)
        except RunStopped as e:
            # Interrupt or Skip cut the batch short (or Stop generating came before it began): the
            # user's stop, which the pool must not treat as this WebUI failing and retry elsewhere.
            raise BatchStopped(self.name, str(e) or "the batch was stopped") from e
        except Exception as e:  # out of memory, an extension failing: the pool moves the batch
            raise ServerUnavailable(self.name, f"{type(e).__name__}: {e}") from e
        return replace(batch, timings={**batch.timings, "request": time.perf_counter() - started})

    def close(self) -> None:
        pass


def _checkpoint(info: Any) -> Checkpoint:
    """A checkpoint's identity as the API reports it: sha256[:10] (the short hash) when known."""
    sha256 = str(getattr(info, "sha256", None) or "")
    identity = sha256[:10] or getattr(info, "shorthash", None) or getattr(info, "hash", None) or info.title
    return Checkpoint(str(info.title), str(identity).lower())


class WebUIPool(RemoteGenerator):
    """The run's generator with extra servers: the local WebUIGenerator and the servers, pooled.
    What the script and the result read of a WebUIGenerator (device, infotexts, comments, the
    infotext parameters) is the local one's."""

    def __init__(self, local: WebUIGenerator, member: LocalMember, servers: Sequence[ServerConfig],
                 settings: RemoteSettings, *, cancel: Callable[[], bool] | None = None,
                 images: Img2ImgImages | None = None) -> None:
        super().__init__(servers, settings, clients=[member, *(WebUIClient(c) for c in servers)], cancel=cancel,
                         images=images)
        self.local = local
        self.device = local.device

    @property
    def steps(self) -> int:
        return self.local.steps

    @property
    def extra_generation_params(self) -> dict[str, Any]:
        return self.local.extra_generation_params

    @extra_generation_params.setter
    def extra_generation_params(self, value: dict[str, Any]) -> None:
        self.local.extra_generation_params = value

    @property
    def comments(self) -> dict[str, int]:
        return self.local.comments

    def infotexts_for(self, prompt: str, negative_prompt: str, seeds: tuple[int, ...]) -> list[str] | None:
        return self.local.infotexts_for(prompt, negative_prompt, seeds)

    def describe(self) -> dict[str, Any]:
        return {**self.local.describe(), "servers": self.servers[1:]}


def pool_with_servers(local: WebUIGenerator, p: Any, servers_text: str, *, shared: Any, sd_samplers: Any,
                      sd_models: Any = None, sd_schedulers: Any = None) -> WebUIPool:
    """The checked pool of this WebUI and the servers of the setting; PinningInputError (before
    anything is generated) when there are none, or one cannot serve this generation."""
    servers = parse_servers(servers_text)
    if not servers:
        raise PinningInputError(
            "'Also generate on the extra servers' is on, but no server is listed in Settings -> Prompt pinning "
            "-> Extra servers"
        )
    state = shared.state
    pool = WebUIPool(
        local, LocalMember(local, shared, sd_samplers, sd_models, sd_schedulers), servers,
        remote_settings(p, getattr(shared, "opts", None)), images=remote_images(p),
        cancel=lambda: bool(getattr(state, "interrupted", False) or getattr(state, "skipped", False)),
    )
    try:
        found = pool.check()
    except PinningInputError:
        pool.close()
        raise
    log.info("pinning on %s", ", ".join(f"{name} ({c['checkpoint']})" for name, c in found.items()))
    return pool
