"""The script's "Also generate on the extra servers" (lib_pinning.webui.servers) in the WebUI
stand-in, with fake API servers (lib_pinning.remote.fake) on 127.0.0.1: the setting, the payload
made from p, the refusals before any work, a run whose individuals are spread over this WebUI
and two servers giving the records of the same run on this WebUI alone, and the run's sensitivity
sweep on them: the sweep of this WebUI alone, fail-over, progress, Interrupt / Skip / Stop generating.

The fake servers answer with the stand-in's own images: those of a first, local-only run, looked
up by (prompt, negative prompt, seeds), as servers with the same checkpoint would make them.
Runs in both environments (.venv and .venv-gradio).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning import sweep_stage
from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.options_model import PinningInputError
from lib_pinning.remote.fake import FakeWebUI, Faults, ToyImages
from lib_pinning.store import IndividualRecord, RunStore
from lib_pinning.webui import servers, settings
from lib_pinning.webui import script as glue
from lib_pinning.webui.generator import WebUIGenerator
from tests.test_webui_script import (
    PROMPT, SMALL_RUN, BatchWatcher, RecordingReporter, Trigger, make_p, run_dir_of, run_script, ui_values,
)


@pytest.fixture
def reporter(monkeypatch: pytest.MonkeyPatch) -> RecordingReporter:
    recording = RecordingReporter()
    monkeypatch.setattr(glue, "_reporter", lambda notes: recording)
    return recording


class RunImages:
    """The `images` of a FakeWebUI that answers with the batches a finished run saved."""

    def __init__(self, store: RunStore) -> None:
        self.batches: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
        for record in store.iter_individuals():
            folder = store.individual_dir(record.generation, record.index)
            encoded = [base64.b64encode((folder / name).read_bytes()).decode("ascii") for name in record.images]
            self.batches[(record.prompt, record.negative_prompt, tuple(record.seeds))] = encoded
        self.size = (64, 64)

    def png_base64(self, prompt: str, negative: str, seeds: tuple[int, ...]) -> list[str]:
        return self.batches[(prompt, negative, seeds)]


def checkpoint_title(webui: Any) -> str:
    return str(webui.shared.sd_model.sd_checkpoint_info.title)


def summary(store: RunStore) -> list[tuple[Any, ...]]:
    """What must not depend on who generated a batch: weights, seeds, fitness, the images' bytes."""
    def image_hashes(record: IndividualRecord) -> list[str]:
        folder = store.individual_dir(record.generation, record.index)
        return [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in record.images]

    return [(r.key, r.weights, r.seeds, r.fitness, r.status, image_hashes(r)) for r in store.iter_individuals()]


def start_with_servers(webui: Any, *fakes: FakeWebUI) -> None:
    webui.load_scripts()
    webui.start()
    webui.shared.opts.prompt_pinning_servers = "\n".join(f.url for f in fakes)


# the setting and the payload -------------------------------------------------------------------------------


def test_the_setting_lists_servers_with_their_credentials() -> None:
    configs = servers.parse_servers(" http://gpu1:7860 \n\nhttps://me:p%40ss@gpu2:7861/sub, gpu3:7862")
    assert [c.url for c in configs] == ["http://gpu1:7860", "https://gpu2:7861/sub", "http://gpu3:7862"]
    assert [c.auth for c in configs] == [None, ("me", "p@ss"), None]
    with pytest.raises(PinningInputError, match="ftp://gpu4"):
        servers.parse_servers("ftp://gpu4")


def test_the_setting_is_registered_as_a_text_box(webui: Any) -> None:
    webui.load_scripts()
    webui.start()
    label = webui.shared.opts.data_labels["prompt_pinning_servers"]
    assert label.section == settings.SECTION and label.default == ""
    assert label.component_args == {"lines": 3}


def test_the_payload_carries_ps_settings(webui: Any) -> None:
    p = make_p(webui, cfg_scale=5.5, width=64, height=64, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=3,
               denoising_strength=0.4, override_settings={"CLIP_stop_at_last_layers": 2})
    remote = servers.remote_settings(p)
    assert (remote.sampler_name, remote.steps, remote.cfg_scale, remote.width, remote.height) == (
        "Euler a", 6, 5.5, 64, 64)
    assert (remote.enable_hr, remote.hr_scale, remote.hr_second_pass_steps, remote.denoising_strength) == (
        True, 1.5, 3, 0.4)
    assert remote.overrides() == {"CLIP_stop_at_last_layers": 2}


@pytest.mark.parametrize(("changes", "named"), [
    ({"styles": ["a style"]}, "styles"),
    ({"subseed_strength": 0.3}, "variation seeds"),
    ({"enable_hr": True, "hr_resize_x": 128, "hr_resize_y": 128}, "Resize width/height"),
])
def test_settings_the_payload_cannot_carry_are_refused(webui: Any, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(PinningInputError, match=named):
        servers.remote_settings(make_p(webui, **changes))


def gradient() -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    return Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8))


def square_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (40, 40, 56, 56))
    return mask


def inpaint_p(webui: Any, **kwargs: Any) -> Any:
    """An inpainting p as the img2img tab's "Inpaint upload" makes it (modules/img2img.py)."""
    fields = dict(prompt=PROMPT, negative_prompt="", seed=5, batch_size=4, steps=6, sampler_name="Euler a",
                  init_images=[gradient()], mask=square_mask(), mask_blur=4, inpainting_fill=1,
                  inpaint_full_res=False, inpaint_full_res_padding=32, inpainting_mask_invert=0,
                  denoising_strength=0.6, resize_mode=0)
    if webui.version >= (1, 9, 0):
        fields["scheduler"] = "Automatic"
    fields.update(kwargs)
    return webui.img2img(**fields)


def pixels(data: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image)


def test_an_inpainting_payload_carries_ps_images_and_fields(webui: Any) -> None:
    webui.load_scripts()
    webui.shared.opts.img2img_background_color = "#102030"
    p = inpaint_p(webui, mask_blur=None, mask_blur_x=3, mask_blur_y=5, inpainting_fill=2, inpaint_full_res=True,
                  inpaint_full_res_padding=8, inpainting_mask_invert=1, resize_mode=1, initial_noise_multiplier=0.9,
                  override_settings={"img2img_fix_steps": True})
    remote = servers.remote_settings(p, webui.shared.opts)
    assert (remote.mode, remote.denoising_strength, remote.resize_mode, remote.initial_noise_multiplier) == (
        "img2img", 0.6, 1, 0.9)
    assert (remote.mask_blur_x, remote.mask_blur_y, remote.inpainting_fill, remote.inpaint_full_res,
            remote.inpaint_full_res_padding, remote.inpainting_mask_invert) == (3, 5, 2, True, 8, 1)
    overrides = remote.overrides()
    assert overrides["img2img_background_color"] == "#102030"  # this WebUI's, not the server's
    assert overrides["img2img_fix_steps"] is True  # the generation's own override wins
    assert set(servers.IMG2IMG_SETTINGS) <= set(overrides)
    images = servers.remote_images(p)
    assert images is not None and len(images.init_images) == 1 and images.mask is not None
    assert np.array_equal(pixels(images.init_images[0]), np.asarray(gradient()))
    assert np.array_equal(pixels(images.mask), np.asarray(square_mask()))  # p.image_mask: the WebUI moved it there


def test_img2img_noise_multiplier_is_this_webuis_setting(webui: Any) -> None:
    webui.load_scripts()
    webui.shared.opts.initial_noise_multiplier = 0.8
    assert servers.remote_settings(inpaint_p(webui), webui.shared.opts).initial_noise_multiplier == 0.8


@pytest.mark.parametrize(("changes", "named"), [
    ({"init_images": [gradient(), gradient()]}, "2 init images for a batch of 4"),
    ({"init_images": [None]}, "img2img without an init image"),
    ({"latent_mask": square_mask()}, "latent mask"),
])
def test_img2img_the_payload_cannot_carry_is_refused(webui: Any, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(PinningInputError, match=named):
        servers.remote_settings(inpaint_p(webui, **changes))


def test_one_init_image_per_image_travels(webui: Any) -> None:
    """As batch img2img makes p (modules/img2img.py process_batch: [img] * batch_size)."""
    p = inpaint_p(webui, init_images=[gradient()] * 4, mask=None)
    assert servers.remote_settings(p).mode == "img2img"
    images = servers.remote_images(p)
    assert images is not None and len(images.init_images) == 4 and images.mask is None


# runs ---------------------------------------------------------------------------------------------------------


def test_a_run_on_this_webui_and_two_servers_gives_the_records_of_this_webui_alone(
        webui: Any, reporter: RecordingReporter) -> None:
    webui.load_scripts()
    webui.start()
    alone = RunStore.open(run_dir_of(run_script(webui, ui_values(**SMALL_RUN))))
    images = RunImages(alone)
    faults = Faults(checkpoint=checkpoint_title(webui), latency=0.2)
    with FakeWebUI(images, faults) as a, FakeWebUI(images, Faults(**vars(faults))) as b:  # type: ignore[arg-type]
        webui.shared.opts.prompt_pinning_servers = f"{a.url}\n{b.url}"
        processed = run_script(webui, ui_values(**SMALL_RUN, extra_servers=True))
        pooled = RunStore.open(run_dir_of(processed))
        served = len(a.calls.generations) + len(b.calls.generations)
    assert summary(pooled) == summary(alone)
    assert len(summary(pooled)) == 7
    records = list(pooled.iter_individuals())
    made_here = [r for r in records if "webui" in r.timings]  # WebUIGenerator's timing; a server's has none
    assert made_here and served > 0
    assert len(made_here) < len(records)
    assert pooled.read_run()["generator"]["servers"] == [a.url, b.url]
    payload = a.calls.generations[0] if a.calls.generations else b.calls.generations[0]
    assert (payload["steps"], payload["sampler_name"], payload["batch_size"], payload["seed"]) == (
        6, "Euler a", 4, records[0].seeds[0])


@pytest.mark.parametrize("per_image", [False, True], ids=["inpaint", "batch-img2img"])
def test_an_img2img_run_on_this_webui_and_two_servers_gives_the_records_of_this_webui_alone(
        webui: Any, reporter: RecordingReporter, per_image: bool) -> None:
    """Inpainting from the tab; and p as batch img2img makes it for each image of the folder (one
    init image per image of the batch, modules/img2img.py process_batch), without a mask."""
    changes: dict[str, Any] = {"init_images": [gradient()] * 4, "mask": None} if per_image else {}
    webui.load_scripts()
    webui.start()
    alone = RunStore.open(run_dir_of(run_script(webui, ui_values(**SMALL_RUN), inpaint_p(webui, **changes),
                                                tab="img2img")))
    images = RunImages(alone)
    faults = Faults(checkpoint=checkpoint_title(webui), latency=0.2)
    with FakeWebUI(images, faults) as a, FakeWebUI(images, Faults(**vars(faults))) as b:  # type: ignore[arg-type]
        webui.shared.opts.prompt_pinning_servers = f"{a.url}\n{b.url}"
        processed = run_script(webui, ui_values(**SMALL_RUN, extra_servers=True), inpaint_p(webui, **changes),
                               tab="img2img")
        pooled = RunStore.open(run_dir_of(processed))
        sent = [p for p in a.calls.generations + b.calls.generations if "init_images" in p]
        encode_seeds = a.calls.encode_seeds + b.calls.encode_seeds
    assert summary(pooled) == summary(alone)
    assert encode_seeds and set(encode_seeds) == {records_seeds(pooled)[-1]}  # primed: see the next test
    records = list(pooled.iter_individuals())
    made_here = [r for r in records if "webui" in r.timings]
    assert sent and made_here and len(made_here) < len(records)
    assert pooled.read_run()["generator"]["mode"] == "img2img"
    payload = sent[0]
    assert (payload["denoising_strength"], payload["batch_size"], len(payload["init_images"])) == (
        0.6, 4, 4 if per_image else 1)
    assert np.array_equal(pixels(payload["init_images"][0]), np.asarray(gradient()))
    if per_image:
        assert "mask" not in payload
    else:
        assert (payload["mask_blur_x"], payload["inpainting_fill"], payload["inpaint_full_res"]) == (4, 1, False)
        assert np.array_equal(pixels(payload["mask"]), np.asarray(square_mask()))
        assert len({p["mask"] for p in sent}) == 1  # encoded once, the same for every request


def records_seeds(store: RunStore) -> list[int]:
    return list(next(iter(store.iter_individuals())).seeds)


def test_an_img2img_batch_does_not_depend_on_what_the_webui_made_before(webui: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """img2img's VAE encode draws from torch's global generator before the batch's noise seeds it:
    WebUIGenerator seeds it as a batch of the run's seeds leaves it, so the run's first batch is
    like the others whatever came before (the servers are primed to the same state). The stand-in's
    posterior std is raised so that its draw shows in 8-bit pixels."""
    webui.load_scripts()
    monkeypatch.setattr(webui.module("sd_models"), "POSTERIOR_STD", 0.2)
    generator = WebUIGenerator(inpaint_p(webui, mask=None, batch_size=2), processing=webui.processing,
                               shared=webui.shared, sd_samplers=webui.module("sd_samplers"))
    request = GenerationRequest(PROMPT, "", (5, 6))
    batches = []
    for before in (11, 12):
        torch.manual_seed(before)  # what another generation left
        batches.append(generator.generate(request).images)
    assert torch.equal(batches[0], batches[1])


def test_interrupt_reaches_a_servers_batch_in_flight(webui: Any, reporter: RecordingReporter) -> None:
    webui.load_scripts()
    webui.start()
    state = webui.shared.state
    with FakeWebUI(ToyImages(), Faults(checkpoint=checkpoint_title(webui), latency=30.0)) as slow:
        webui.shared.opts.prompt_pinning_servers = slow.url

        def interrupt_once_the_server_works() -> None:
            deadline = time.monotonic() + 20
            while not slow.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            state.interrupt()

        watcher = threading.Thread(target=interrupt_once_the_server_works, daemon=True)
        watcher.start()
        started = time.monotonic()
        processed = run_script(webui, ui_values(**SMALL_RUN, extra_servers=True))
        watcher.join()
        assert time.monotonic() - started < 10.0  # not the server's 30 s
        assert slow.calls.interrupts >= 1
    assert RunStore.open(run_dir_of(processed)).read_run()["status"] == "interrupted"


def test_stop_generating_lets_a_servers_search_batch_finish_and_keeps_it(
        webui: Any, reporter: RecordingReporter) -> None:
    """Stop generating while a server makes a search batch: as here, the batch under way is finished
    and kept, the run stops after it (records equal to this WebUI's alone up to there), and the
    server is not interrupted; Interrupt and Skip cut it (test_interrupt_reaches_...)."""
    webui.load_scripts()
    webui.start()
    alone = RunStore.open(run_dir_of(run_script(webui, ui_values(**SMALL_RUN))))
    baseline = alone.read_individual(0, 0)
    assert baseline is not None
    state = webui.shared.state
    pressed: list[str] = []

    def press_during_the_first_search_batch(server: WatchedWebUI, payload: dict[str, Any]) -> float | None:
        if pressed or payload["prompt"] == baseline.prompt:
            return None
        pressed.append(payload["prompt"])
        state.stop_generating()
        return 1.0

    with WatchedWebUI(RunImages(alone), Faults(checkpoint=checkpoint_title(webui), latency=0.05),
                      press_during_the_first_search_batch) as server:
        webui.shared.opts.prompt_pinning_servers = server.url
        processed = run_script(webui, ui_values(**SMALL_RUN, extra_servers=True))
        interrupts = server.calls.interrupts
    store = RunStore.open(run_dir_of(processed))
    records = list(store.iter_individuals())
    assert len(pressed) == 1 and interrupts == 0
    # Kept: the server's batch, and the one this WebUI was making meanwhile if it came after.
    assert pressed[0] in [r.prompt for r in records[-2:]] and all(r.status == "ok" for r in records)
    assert 2 <= len(records) < 7 and summary(store) == summary(alone)[:len(records)]
    assert store.read_run()["status"] == "interrupted"
    assert "Stopped by Stop generating" in processed.comments


def test_another_checkpoint_on_a_server_is_refused_before_any_work(webui: Any, reporter: RecordingReporter) -> None:
    with FakeWebUI(None, Faults()) as other:  # type: ignore[arg-type]  # the fake's own checkpoint
        start_with_servers(webui, other)
        p = make_p(webui)
        with pytest.raises(PinningInputError, match="different checkpoints") as refused:
            run_script(webui, ui_values(**SMALL_RUN, extra_servers=True), p)
        assert other.calls.generations == []
    assert checkpoint_title(webui) in str(refused.value) and "toy-v1.safetensors" in str(refused.value)
    assert not (Path(p.outpath_samples) / "prompt_pins").exists()  # no run folder was made


def test_a_server_without_the_sampler_is_refused(webui: Any, reporter: RecordingReporter) -> None:
    with FakeWebUI(None, Faults(samplers=("Euler",))) as fake:  # type: ignore[arg-type]
        start_with_servers(webui, fake)
        fake.faults.checkpoint = checkpoint_title(webui)
        with pytest.raises(PinningInputError, match="has no sampler 'Euler a'"):
            run_script(webui, ui_values(**SMALL_RUN, extra_servers=True))


def test_the_option_without_servers_says_where_to_list_them(webui: Any, reporter: RecordingReporter) -> None:
    webui.load_scripts()
    webui.start()
    with pytest.raises(PinningInputError, match="Extra servers"):
        run_script(webui, ui_values(**SMALL_RUN, extra_servers=True))


# the sensitivity sweep with extra servers ------------------------------------------------------------------
#
# The sweep (lib_pinning.sweep_stage, lib_pinning.analysis.sweep) asks the run's generator for one
# batch at a time; with extra servers that is the pool, so each sweep batch goes to whichever
# member takes it. Its batches are no run records, so the servers answer from `CapturedImages`:
# the batches this WebUI made in a first, local-only run of the same settings. Where a test needs
# the servers to make the sweep's batches, this WebUI is made slower than them (they duplicate its
# batch and answer first) or fails the sweep's batches (they are moved to a server).

SWEEP_RUN = {**SMALL_RUN, "sweep_batches": 4}
"""The search of SMALL_RUN (7 batches), then a sweep of 4 batches (both phrases up and down)."""
SEARCH_BATCHES = 1 + 2 * 3


def encode_batch(images: torch.Tensor) -> list[str]:
    """A batch's images as the API answers them: 8-bit PNG, base64 (lossless for the WebUI's images)."""
    pixels = images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    encoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


class CapturedImages:
    """The `images` of a FakeWebUI answering each request with the batch this WebUI made for it in
    an earlier run (`capture`), as a server with the same checkpoint would. A request it has no
    batch for is noted in `missing` and fails (the fake then drops the connection)."""

    def __init__(self) -> None:
        self.batches: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
        self.missing: list[tuple[str, str, tuple[int, ...]]] = []
        self.size = (64, 64)

    def capture(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """From now on, remember every batch this WebUI's WebUIGenerator makes."""
        original = WebUIGenerator.generate

        def generate(generator: WebUIGenerator, request: GenerationRequest) -> Batch:
            batch = original(generator, request)
            key = (request.prompt, request.negative_prompt, tuple(int(s) for s in request.seeds))
            self.batches.setdefault(key, encode_batch(batch.images))
            return batch

        monkeypatch.setattr(WebUIGenerator, "generate", generate)

    def png_base64(self, prompt: str, negative: str, seeds: tuple[int, ...]) -> list[str]:
        key = (prompt, negative, tuple(seeds))
        if key not in self.batches:
            self.missing.append(key)
            raise KeyError(key)
        return self.batches[key]


@dataclass(frozen=True)
class SweptBatch:
    """One batch as the sweep received it: its request, each image's digest in order, who made it."""

    request: tuple[str, str, tuple[int, ...]]
    images: tuple[str, ...]
    made_here: bool  # by this WebUI (WebUIGenerator's timing), not by a server


class SweepSpy:
    """Records each batch the sweep receives from the run's generator, and how many it asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked = 0  # generate calls of the current run's sweep so far (0: the sweep has not begun)
        self.batches: list[SweptBatch] = []
        original = sweep_stage._SweepGenerator.generate
        spy = self

        def generate(wrapped: Any, request: GenerationRequest) -> Batch:
            spy.asked += 1
            batch = original(wrapped, request)
            pixels = batch.images.clamp(0, 1).mul(255).round().to(torch.uint8)
            spy.batches.append(SweptBatch(
                (request.prompt, request.negative_prompt, tuple(int(s) for s in request.seeds)),
                tuple(hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in pixels),
                "webui" in batch.timings,
            ))
            return batch

        monkeypatch.setattr(sweep_stage._SweepGenerator, "generate", generate)

    def take(self) -> list[SweptBatch]:
        """This run's batches; the next run starts afresh."""
        batches, self.batches, self.asked = self.batches, [], 0
        return batches


class LocalWebUI:
    """This WebUI's process_images, slowed down (`delay` seconds per batch) or failing the first
    `failures` batches of the sweep as the WebUI fails a batch (an exception out of process_images,
    before its job is counted), so that the pool moves them to a server."""

    def __init__(self, webui: Any, monkeypatch: pytest.MonkeyPatch, spy: SweepSpy, *, delay: float = 0.0,
                 failures: float = 0) -> None:
        self.spy, self.delay, self.failures = spy, delay, failures
        self.failed: list[tuple[str, int]] = []  # (prompt, first seed) of each sweep batch failed here
        self.active = 0
        self._lock = threading.Lock()
        self._original = webui.processing.process_images
        monkeypatch.setattr(webui.processing, "process_images", self)

    def __call__(self, p: Any) -> Any:
        with self._lock:
            self.active += 1
        try:
            time.sleep(self.delay)
            if self.spy.asked and len(self.failed) < self.failures:
                self.failed.append((p.prompt, int(p.seed[0])))
                raise RuntimeError("CUDA out of memory (simulated)")
            return self._original(p)
        finally:
            with self._lock:
                self.active -= 1

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until no batch runs here: a duplicate that lost to a server's answer finishes in the
        background (lib_pinning.remote.pool), and must not outlive the test's WebUI."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.active, "this WebUI is still generating"


class WatchedWebUI(FakeWebUI):
    """A fake server that calls `on_batch(server, payload)` as each generation request starts (after
    the fake's queue lock, where an Interrupt could already reach it); a number it returns is the
    request's latency instead of the faults'."""

    def __init__(self, images: Any, faults: Faults,
                 on_batch: Callable[[WatchedWebUI, dict[str, Any]], float | None]) -> None:
        super().__init__(images, faults)
        self.on_batch = on_batch
        self._request = threading.local()

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._request.payload = payload
        return super().generate(payload)

    def latency(self) -> float:
        latency = self.on_batch(self, self._request.payload)
        return super().latency() if latency is None else latency


def swept(run_dir: Path) -> dict[str, Any] | None:
    """The sweep influence.json holds (None: none)."""
    return json.loads((run_dir / "influence.json").read_text()).get("sweep")


def sweep_outcome(store: RunStore) -> dict[str, Any]:
    """run.json's `sweep` without its seconds."""
    return {k: v for k, v in store.read_run()["sweep"].items() if k != "seconds"}


def sent_to_servers(fakes: Sequence[FakeWebUI], prompt: str, seed: int) -> list[dict[str, Any]]:
    return [payload for fake in fakes for payload in fake.calls.generations
            if payload["prompt"] == prompt and payload["seed"] == seed]


def test_a_sweep_on_this_webui_and_two_servers_gives_the_sweep_of_this_webui_alone(
        webui: Any, reporter: RecordingReporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seeds, same images, same sweep: also image by image within each batch (a per-image
    interval is blind to a batch whose images all came back in another order)."""
    webui.load_scripts()
    webui.start()
    images = CapturedImages()
    images.capture(monkeypatch)
    spy = SweepSpy(monkeypatch)
    alone = run_dir_of(run_script(webui, ui_values(**SWEEP_RUN)))
    alone_batches = spy.take()
    # This WebUI 0.3 s slower per batch than the servers: they duplicate its sweep batch and answer first.
    local = LocalWebUI(webui, monkeypatch, spy, delay=0.3)
    faults = Faults(checkpoint=checkpoint_title(webui), latency=0.02)
    with FakeWebUI(images, faults) as a, FakeWebUI(images, Faults(**vars(faults))) as b:  # type: ignore[arg-type]
        webui.shared.opts.prompt_pinning_servers = f"{a.url}\n{b.url}"
        pooled = run_dir_of(run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True)))
        local.wait_idle()
    pooled_batches = spy.take()
    assert images.missing == []
    assert summary(RunStore.open(pooled)) == summary(RunStore.open(alone))
    assert sweep_outcome(RunStore.open(pooled)) == sweep_outcome(RunStore.open(alone))
    assert sweep_outcome(RunStore.open(pooled))["status"] == "done"
    assert swept(pooled) == swept(alone) is not None
    assert [(s.request, s.images) for s in pooled_batches] == [(s.request, s.images) for s in alone_batches]
    assert len(pooled_batches) == 4
    assert any(not s.made_here for s in pooled_batches)  # the servers made sweep batches


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_a_sweep_batch_this_webui_fails_is_made_on_a_server(webui: Any, reporter: RecordingReporter,
                                                             monkeypatch: pytest.MonkeyPatch, tab: str) -> None:
    """Fail-over during the sweep: the batch goes to a server, the sweep is the one of this WebUI
    alone and spends no extra batch; img2img's goes with its init image and mask."""
    def p() -> Any:
        return make_p(webui) if tab == "txt2img" else inpaint_p(webui)

    webui.load_scripts()
    webui.start()
    images = CapturedImages()
    images.capture(monkeypatch)
    spy = SweepSpy(monkeypatch)
    alone = run_dir_of(run_script(webui, ui_values(**SWEEP_RUN), p(), tab=tab))
    alone_batches = spy.take()
    # Servers slower than this WebUI, so that it takes the sweep's first batch itself; it fails that one.
    local = LocalWebUI(webui, monkeypatch, spy, failures=1)
    faults = Faults(checkpoint=checkpoint_title(webui), latency=0.3)
    with FakeWebUI(images, faults) as a, FakeWebUI(images, Faults(**vars(faults))) as b:  # type: ignore[arg-type]
        webui.shared.opts.prompt_pinning_servers = f"{a.url}\n{b.url}"
        pooled = run_dir_of(run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True), p(), tab=tab))
        local.wait_idle()
    pooled_batches = spy.take()
    assert images.missing == []
    assert len(local.failed) == 1
    sent = sent_to_servers([a, b], *local.failed[0])
    assert sent  # the failed batch went to a server
    if tab == "img2img":
        assert all("init_images" in payload and "mask" in payload for payload in sent)
    outcome = sweep_outcome(RunStore.open(pooled))
    assert (outcome["status"], outcome["batches"]) == ("done", 4)
    assert outcome == sweep_outcome(RunStore.open(alone))
    assert swept(pooled) == swept(alone) is not None
    assert [(s.request, s.images) for s in pooled_batches] == [(s.request, s.images) for s in alone_batches]


def test_the_progress_counts_the_sweep_batches_a_server_makes(webui: Any, reporter: RecordingReporter,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """While the server makes sweep batch k of 4, the WebUI shows job k of 4, the console's total
    bar sized for 4 batches and "sensitivity sweep, batch k+1/4", as it does when this WebUI makes
    it (test_webui_script); a batch moved to the server after this WebUI failed it counts once."""
    webui.load_scripts()
    webui.start()
    spy = SweepSpy(monkeypatch)
    LocalWebUI(webui, monkeypatch, spy, failures=math.inf)  # every sweep batch ends up on the server
    state, total_tqdm = webui.shared.state, webui.shared.total_tqdm
    seen: list[tuple[int, int, Any, str]] = []

    def watch(server: WatchedWebUI, payload: dict[str, Any]) -> None:
        if spy.asked:
            seen.append((state.job_no, state.job_count, total_tqdm.total, str(state.textinfo).split(", best")[0]))

    # One server: with two, one could duplicate the other's batch (lib_pinning.remote.pool's hedging).
    with WatchedWebUI(ToyImages(), Faults(checkpoint=checkpoint_title(webui), latency=0.05), watch) as server:
        webui.shared.opts.prompt_pinning_servers = server.url
        store = RunStore.open(run_dir_of(run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True))))
    assert (store.read_run()["sweep"]["status"], store.read_run()["sweep"]["batches"]) == ("done", 4)
    assert seen == [(k, 4, 6 * 4, f"Pinning: sensitivity sweep, batch {k + 1}/4") for k in range(4)]


def test_the_consoles_total_bar_counts_the_batches_a_server_makes(webui: Any, reporter: RecordingReporter,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch made by the server (this WebUI fails each before sampling, so its samplers never
    advance the console's "Total progress" bar): the bar still ends the search at its individuals'
    steps, then restarts over the sweep and ends at its batches' steps, as a run made here does."""
    webui.load_scripts()
    webui.start()
    images = CapturedImages()
    images.capture(monkeypatch)
    alone = RunStore.open(run_dir_of(run_script(webui, ui_values(**SWEEP_RUN))))
    total_tqdm = webui.shared.total_tqdm
    bars: list[tuple[int, Any]] = []  # (count, total) of each bar as it is closed
    clear = total_tqdm.clear

    def record_and_clear() -> None:
        bars.append((total_tqdm.count, total_tqdm.total))
        clear()

    monkeypatch.setattr(total_tqdm, "clear", record_and_clear)
    failed: list[str] = []

    def fail(p: Any) -> Any:
        failed.append(p.prompt)
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(webui.processing, "process_images", fail)
    with FakeWebUI(images, Faults(checkpoint=checkpoint_title(webui), latency=0.01)) as server:
        webui.shared.opts.prompt_pinning_servers = server.url
        pooled = RunStore.open(run_dir_of(run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True))))
        served = len(server.calls.generations)
    info = pooled.read_run()
    assert (info["status"], info["evaluations"], info["sweep"]["batches"]) == ("finished", SEARCH_BATCHES, 4)
    assert summary(pooled) == summary(alone) and not images.missing
    assert failed and served == info["batches"] + 4
    assert bars == [(6 * SEARCH_BATCHES, 6 * SEARCH_BATCHES), (6 * 4, 6 * 4)]


@pytest.mark.parametrize(("action", "kept"), [("interrupt", 1), ("skip", 1), ("stop_generating", 2)])
def test_a_stop_during_a_servers_sweep_batch_ends_the_sweep_as_it_does_here(
        webui: Any, reporter: RecordingReporter, monkeypatch: pytest.MonkeyPatch, action: str, kept: int) -> None:
    """Interrupt or Skip while a server makes the sweep's second batch: that batch is dropped (the
    server is told to stop, the run does not wait for it), the sweep with it, and the search, its
    records, influence.json and the final report are this WebUI's alone. Stop generating lets the
    batch finish (the server is not interrupted) and the sweep stops after it, as here."""
    trigger = Trigger(webui, SEARCH_BATCHES + 1, action)  # the sweep's second batch, made here (loads the scripts)
    webui.start()
    images = CapturedImages()
    images.capture(monkeypatch)
    spy = SweepSpy(monkeypatch)
    alone = run_script(webui, ui_values(**SWEEP_RUN))
    trigger.batch = -1
    spy.take()
    state = webui.shared.state
    pressed: list[tuple[float, tuple[str, str, tuple[int, ...]]]] = []

    def press_during_the_second(server: WatchedWebUI, payload: dict[str, Any]) -> float | None:
        if spy.asked != 2:
            return None
        seeds = tuple(range(payload["seed"], payload["seed"] + payload["batch_size"]))
        pressed.append((time.monotonic(), (payload["prompt"], payload.get("negative_prompt", ""), seeds)))
        getattr(state, action)()
        return 1.0 if action == "stop_generating" else 30.0  # an interrupted batch is cut short

    LocalWebUI(webui, monkeypatch, spy, failures=math.inf)  # every sweep batch ends up on the server
    # One server, so that no other duplicates its batch (lib_pinning.remote.pool's hedging).
    with WatchedWebUI(images, Faults(checkpoint=checkpoint_title(webui), latency=0.05),
                      press_during_the_second) as server:
        webui.shared.opts.prompt_pinning_servers = server.url
        pooled = run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True))
        ended = time.monotonic()
        interrupts = server.calls.interrupts
    assert len(pressed) == 1  # one server request for the second batch: it was not moved elsewhere
    # Cut short here, that batch was never finished: the server has none to answer it with (nor
    # needs one, its answer is dropped).
    assert images.missing == ([] if action == "stop_generating" else [pressed[0][1]])
    store, here = RunStore.open(run_dir_of(pooled)), RunStore.open(run_dir_of(alone))
    outcome = sweep_outcome(store)
    assert (outcome["status"], outcome["batches"]) == ("interrupted", kept)
    assert outcome == sweep_outcome(here)
    assert store.read_run()["status"] == here.read_run()["status"] == "finished"
    assert summary(store) == summary(here)  # nothing the search made is lost
    assert json.loads((store.root / "influence.json").read_text()) == json.loads(
        (here.root / "influence.json").read_text())  # the run's own influence, no partial sweep
    assert swept(store.root) is None
    assert reporter.calls[-1] is True
    assert outcome["message"] in pooled.comments and "from the run's own evaluations" in pooled.comments
    assert (pooled.prompt, len(pooled.images)) == (alone.prompt, 8)
    if action == "stop_generating":
        assert interrupts == 0
    else:
        assert interrupts >= 1 and ended - pressed[0][0] < 15.0  # not the batch's 30 s


class PoolLog(logging.Handler):
    """The warnings of lib_pinning.remote.pool (a member marked down names itself first). On its
    own logger: during a run the script's console logging stops lib_pinning's records from
    propagating to the root, where caplog listens."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def pool_log() -> Iterator[PoolLog]:
    handler = PoolLog()
    logger = logging.getLogger("lib_pinning.remote.pool")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("when", ["mid-batch", "as-it-ends"])
@pytest.mark.parametrize("action", ["interrupt", "skip"])
def test_a_stop_during_this_webuis_sweep_batch_is_not_a_failure_to_retry_on_a_server(
        webui: Any, reporter: RecordingReporter, monkeypatch: pytest.MonkeyPatch, pool_log: PoolLog,
        action: str, when: str) -> None:
    """Interrupt or Skip while this WebUI makes a batch ends the sweep there, as without servers:
    the batch cut short is the user's doing, not this WebUI failing, so it is neither moved to a
    server nor is this WebUI taken out of the pool. Pressed mid-batch, the pool's own cancel
    usually sees the flag before the batch returns; pressed as the batch ends (after its last
    sampling step, WebUIGenerator drops it all the same), the batch's RunStopped comes first."""
    spy = SweepSpy(monkeypatch)
    pressed = threading.Event()

    def press() -> None:
        if spy.asked == 2 and not pressed.is_set():
            pressed.set()
            getattr(state, action)()

    class PressDuringTheSecond(BatchWatcher):
        def on_step(self, index: int, call: int) -> None:
            if call == 2 and when == "mid-batch":
                press()

    PressDuringTheSecond(webui)  # loads the scripts
    webui.start()
    state = webui.shared.state
    process_images = webui.processing.process_images

    def press_as_it_ends(p: Any) -> Any:
        processed = process_images(p)
        if when == "as-it-ends":
            press()
        return processed

    monkeypatch.setattr(webui.processing, "process_images", press_as_it_ends)
    after_the_press: list[dict[str, Any]] = []

    def watch(server: WatchedWebUI, payload: dict[str, Any]) -> None:
        if pressed.is_set():
            after_the_press.append(payload)

    # Servers slower than this WebUI: it makes the sweep's batches (it takes them, or duplicates theirs).
    faults = Faults(checkpoint=checkpoint_title(webui), latency=0.5)
    with WatchedWebUI(ToyImages(), faults, watch) as a, WatchedWebUI(ToyImages(), Faults(**vars(faults)), watch) as b:
        webui.shared.opts.prompt_pinning_servers = f"{a.url}\n{b.url}"
        store = RunStore.open(run_dir_of(run_script(webui, ui_values(**SWEEP_RUN, extra_servers=True))))
    assert pressed.is_set()
    outcome = sweep_outcome(store)
    assert (outcome["status"], outcome["batches"]) == ("interrupted", 1)
    assert store.read_run()["status"] == "finished"
    assert swept(store.root) is None
    assert after_the_press == []  # the batch cut short here was not sent to a server
    marked_down = [message for message in pool_log.messages if message.startswith(servers.LOCAL_NAME)]
    assert marked_down == []

