"""A fake WebUI API server on 127.0.0.1, for the tests and the benchmark of lib_pinning.remote.

It answers the endpoints the remote generator uses with the real API's JSON shapes (images as
base64 PNG, `info` as a JSON string with `all_seeds` and `index_of_first_image`), generating each
batch with the toy model from (prompt, negative prompt, seeds), so its batches equal the local toy
backend's. Like the WebUI it generates one batch at a time (its queue lock). Faults are switched on
per server: latency, HTTP 500, malformed JSON, dropped connections, basic auth, another checkpoint;
it answers over https when given a TLS context.

/img2img checks what the real handler (modules/api/api.py img2imgapi, v1.10.1 and Forge) and its
pydantic model check: no `init_images` is HTTP 404 "Init image not found", a field of the wrong type
422, an init image or mask that is not base64 image data 500 "Invalid encoded image"; several init
images make a batch of that many (more than batch_size: 500), as StableDiffusionProcessingImg2Img
.init does. The images answered still come from (prompt, negative prompt, seeds) only. It keeps the
seed the WebUI's global torch generator would hold (each batch's noise leaves it at the batch's
last seed) and records, for each img2img batch, the seed its VAE encode started from
(`Calls.encode_seeds`: None when no request had set it since the server started).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings

CHECKPOINT = "toy-v1.safetensors [0a1b2c3d4e]"
SHA256 = "0a1b2c3d4e" + "5f" * 27


class ToyImages:
    """The images of a request, made by the toy model and cached (several fake servers share one)."""

    def __init__(self, settings: ToySettings | None = None) -> None:
        self._generator = ToyGenerator(settings or ToySettings(steps=6))
        self._cache: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> tuple[int, int]:
        return self._generator.image_size

    def png_base64(self, prompt: str, negative: str, seeds: tuple[int, ...]) -> list[str]:
        key = (prompt, negative, seeds)
        with self._lock:
            if key not in self._cache:
                images = self._generator.generate(GenerationRequest(prompt, negative, seeds)).images
                pixels = images.clamp(0, 1).mul(255).round().to(dtype=torch.uint8)
                encoded = []
                for array in pixels.permute(0, 2, 3, 1).numpy():
                    buffer = io.BytesIO()
                    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
                    encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
                self._cache[key] = encoded
            return self._cache[key]


@dataclass
class Faults:
    """What the server does wrong; counters count down as generation requests arrive."""

    latency: float | Callable[[], float] = 0.0  # seconds per batch
    http_500: int = 0  # the next N generation requests answer HTTP 500
    malformed: int = 0  # the next N answer a body that is not JSON
    drop: bool = False  # every request's connection is closed without an answer
    # After N more generation requests, drop = True (once: the counter is then spent, so a test can
    # bring the server back by setting drop = False).
    drop_after: int | None = None
    auth: tuple[str, str] | None = None
    checkpoint: str = CHECKPOINT
    samplers: tuple[str, ...] = ("Euler a", "Euler", "DPM++ 2M")
    schedulers: tuple[str, ...] | None = ("automatic", "karras", "exponential")


@dataclass
class Calls:
    generations: list[dict[str, Any]] = field(default_factory=list)  # payloads answered with a batch
    interrupts: int = 0
    encode_seeds: list[int | None] = field(default_factory=list)  # per img2img batch, see the module doc


class FakeWebUI:
    """A fake server; use as a context manager, or start() / stop()."""

    def __init__(self, images: ToyImages, faults: Faults | None = None, tls: ssl.SSLContext | None = None) -> None:
        """tls: a server-side context (its certificate loaded) to answer over https."""
        self.images = images
        self.faults = faults or Faults()
        self.calls = Calls()
        self._queue_lock = threading.Lock()
        self._interrupted = threading.Event()
        self.global_seed: int | None = None  # the seed the global torch generator was last given
        self.in_flight = 0  # generation requests received and not yet answered (waiting included)
        self.max_in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # open keep-alive connections, closed by stop()
        self._connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeWebUI:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused from now on (also for a server never started)."""
        if self._thread is not None:  # shutdown() waits for serve_forever, so only once it runs
            self._server.shutdown()
            self._thread = None
        self._server.server_close()
        # A dead server also ends its clients' keep-alive connections; without this a client's
        # pooled connection would go on being answered by its handler thread.
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeWebUI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # what the handler calls ---------------------------------------------------------------------

    def latency(self) -> float:
        latency = self.faults.latency
        return float(latency()) if callable(latency) else float(latency)

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        first, count = int(payload["seed"]), int(payload.get("batch_size", 1))
        if len(payload.get("init_images") or ()) > 1:  # img2img pairs image i with init image i
            count = len(payload["init_images"])
        seeds = tuple(first + i for i in range(count))
        with self._in_flight_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._generate(payload, first, count, seeds)
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1

    def _generate(self, payload: dict[str, Any], first: int, count: int, seeds: tuple[int, ...]) -> dict[str, Any]:
        with self._queue_lock:
            self._interrupted.clear()
            deadline = time.monotonic() + self.latency()
            while time.monotonic() < deadline and not self._interrupted.is_set():
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            images = []
            if payload.get("send_images", True):
                images = self.images.png_base64(payload["prompt"], payload.get("negative_prompt", ""), seeds)
            if "init_images" in payload:  # img2img's VAE encode draws first, then the noise seeds
                self.calls.encode_seeds.append(self.global_seed)
            self.global_seed = seeds[-1]
            self.calls.generations.append(payload)
        height, width = self.images.size
        info = {
            "prompt": payload["prompt"], "all_prompts": [payload["prompt"]] * count,
            "negative_prompt": payload.get("negative_prompt", ""), "seed": first, "all_seeds": list(seeds),
            "subseed": payload.get("subseed", -1), "all_subseeds": [payload.get("subseed", -1) + i for i in range(count)],
            "subseed_strength": payload.get("subseed_strength", 0), "width": width, "height": height,
            "sampler_name": payload.get("sampler_name"), "steps": payload.get("steps"), "batch_size": count,
            "sd_model_name": self.faults.checkpoint.split(" [")[0], "index_of_first_image": 0,
            "infotexts": [""] * count, "version": "v1.10.1",
        }
        return {"images": images, "parameters": payload, "info": json.dumps(info)}

    def interrupt(self) -> None:
        self.calls.interrupts += 1
        self._interrupted.set()


# The img2img fields lib_pinning sends and the types the WebUI's API model gives them
# (modules/processing.py StableDiffusionProcessingImg2Img, through modules/api/models.py).
IMG2IMG_FIELDS: dict[str, tuple[type, ...]] = {
    "denoising_strength": (int, float), "resize_mode": (int,), "image_cfg_scale": (int, float),
    "mask_blur_x": (int,), "mask_blur_y": (int,), "mask_blur": (int,), "mask_round": (bool,),
    "inpainting_fill": (int,), "inpaint_full_res": (bool,), "inpaint_full_res_padding": (int,),
    "inpainting_mask_invert": (int,), "initial_noise_multiplier": (int, float), "include_init_images": (bool,),
}


def img2img_refusal(payload: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of the real API's answer to an img2img payload it refuses, else None."""
    init_images = payload.get("init_images")
    if init_images is None:
        return 404, {"detail": "Init image not found"}
    if not isinstance(init_images, list) or not all(isinstance(i, str) for i in init_images):
        return 422, {"detail": [{"loc": ["body", "init_images"], "msg": "value is not a valid list of strings"}]}
    mask = payload.get("mask")
    if mask is not None and not isinstance(mask, str):
        return 422, {"detail": [{"loc": ["body", "mask"], "msg": "str type expected"}]}
    for key, types in IMG2IMG_FIELDS.items():
        value = payload.get(key)
        if value is not None and not isinstance(value, types):
            return 422, {"detail": [{"loc": ["body", key], "msg": f"value is not a valid {types[-1].__name__}"}]}
    for encoded in [*init_images, *([mask] if mask else [])]:
        try:
            Image.open(io.BytesIO(base64.b64decode(encoded.split(",", 1)[-1], validate=True))).load()
        except (binascii.Error, OSError, ValueError):
            return 500, {"error": "HTTPException", "detail": "Invalid encoded image", "body": "", "errors": ""}
    if len(init_images) > max(1, int(payload.get("batch_size", 1))):
        return 500, {"error": "RuntimeError", "detail": "", "body": "",
                     "errors": f"bad number of images passed: {len(init_images)}; expecting "
                               f"{payload.get('batch_size', 1)} or less"}
    return None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on an answer (a cancel, the losing copy of a duplicated batch, a
        # stop) is what the tests do on purpose: no traceback for it on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(fake: FakeWebUI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # As uvicorn (asyncio) does: without it the body, written after the headers, waits
            # for the client's delayed ACK, about 40 ms per answer on loopback.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with fake._connections_lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._connections_lock:
                fake._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

        def _send(self, status: int, body: Any, raw: bytes | None = None, headers: dict[str, str] | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if fake.faults.auth is None:
                return True
            expected = base64.b64encode(":".join(fake.faults.auth).encode()).decode()
            return self.headers.get("Authorization", "") == f"Basic {expected}"

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _dropped(self) -> bool:
            if fake.faults.drop:
                self.close_connection = True
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self._dropped():
                return
            if not self._authorized():
                return self._send(401, {"detail": "Incorrect username or password"}, headers={"WWW-Authenticate": "Basic"})
            faults = fake.faults
            title = faults.checkpoint
            if self.path == "/sdapi/v1/options":
                return self._send(200, {"sd_model_checkpoint": title, "samples_format": "png"})
            if self.path == "/sdapi/v1/sd-models":
                name = title.split(" [")[0]
                short = title.split("[")[-1].rstrip("]") if "[" in title else None
                sha = SHA256 if title == CHECKPOINT else None
                return self._send(200, [{"title": title, "model_name": name.rsplit(".", 1)[0], "hash": short,
                                         "sha256": sha, "filename": f"/models/{name}", "config": None}])
            if self.path == "/sdapi/v1/samplers":
                return self._send(200, [{"name": n, "aliases": [], "options": {}} for n in faults.samplers])
            if self.path == "/sdapi/v1/schedulers" and faults.schedulers is not None:
                return self._send(200, [{"name": n, "label": n.title(), "aliases": None, "default_rho": -1.0,
                                         "need_inner_model": False} for n in faults.schedulers])
            self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                payload = self._body()
            except (ValueError, binascii.Error):
                return self._send(422, {"detail": "bad JSON"})
            if self._dropped():
                return
            if not self._authorized():
                return self._send(401, {"detail": "Incorrect username or password"}, headers={"WWW-Authenticate": "Basic"})
            if self.path == "/sdapi/v1/interrupt":
                fake.interrupt()
                return self._send(200, {})
            if self.path not in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
                return self._send(404, {"detail": "Not Found"})
            faults = fake.faults
            if faults.drop_after is not None:
                if faults.drop_after <= 0:
                    faults.drop, faults.drop_after = True, None
                    self.close_connection = True
                    return
                faults.drop_after -= 1
            if faults.http_500 > 0:
                faults.http_500 -= 1
                return self._send(500, {"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory"})
            if faults.malformed > 0:
                faults.malformed -= 1
                return self._send(200, None, raw=b"<html>502 Bad Gateway</html>")
            if not isinstance(payload.get("prompt"), str) or "seed" not in payload:
                return self._send(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]})
            if self.path == "/sdapi/v1/img2img":
                refused = img2img_refusal(payload)
                if refused is not None:
                    return self._send(*refused)
            self._send(200, fake.generate(payload))

    return Handler
