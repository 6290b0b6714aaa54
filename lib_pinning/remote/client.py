"""One WebUI / Forge server over its HTTP API (`--api`, optionally `--api-auth user:password`).

Errors are sorted by whom they blame, because the pool acts on that:
- `ServerUnavailable`: the server (connection refused or dropped, a timeout, HTTP 5xx, an answer
  that is not the batch asked for). The pool moves the batch to another server.
- `AuthFailed`: HTTP 401/403; the credentials are wrong for this server.
- `RequestRejected`: any other HTTP 4xx (e.g. 422, a field the WebUI refuses); every server would
  refuse it alike, so the batch fails at once.
- `BatchStopped`: no failure: the user stopped the batch on that member (the local WebUI's Interrupt
  or Skip, lib_pinning.webui.servers). The pool ends the call as a cancel does.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import torch

from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.remote.payload import (
    Img2ImgImages, MalformedResponse, RemoteSettings, build_payload, parse_response, priming_payload, seed_runs,
)

log = logging.getLogger(__name__)


class RemoteError(Exception):
    """A server failed, or (BatchStopped) stopped a batch on request; the message names it."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server


class ServerUnavailable(RemoteError):
    pass


class AuthFailed(RemoteError):
    pass


class RequestRejected(RemoteError):
    pass


class BatchStopped(RemoteError):
    """The user stopped the batch on this member while it made it (the WebUI's Interrupt or Skip):
    the run is being stopped, so the batch is not moved to another server and the member is not
    counted as failing (lib_pinning.remote.pool)."""


@dataclass(frozen=True)
class ServerConfig:
    """How to reach one server. timeout: seconds a batch may take; connect_timeout: to connect."""

    url: str
    auth: tuple[str, str] | None = None
    verify: bool = True
    timeout: float = 600.0
    connect_timeout: float = 10.0

    @property
    def name(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True)
class Checkpoint:
    """The model a server has loaded: `identity` is what must be equal across servers (the short
    hash, sha256[:10], else the title)."""

    title: str
    identity: str


_SHORT_HASH = re.compile(r"\[([0-9a-fA-F]{8,10})\]\s*$")


class WebUIClient:
    """Thread-safe: one httpx connection pool, shared by the pool's workers for this server."""

    def __init__(self, config: ServerConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        # The seed our last request left the server's global torch generator at (its last seed;
        # None: unknown), which img2img's VAE encode draws from (see payload.priming_payload).
        self._seeded: int | None = None
        self._http = httpx.Client(
            base_url=config.name,
            auth=httpx.BasicAuth(*config.auth) if config.auth else None,
            verify=config.verify,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=transport,
        )

    def close(self) -> None:
        try:
            self._http.close()
        except RuntimeError as e:
            # httpcore before 1.0 refuses to close a pool with a request still out (a cancelled
            # batch, whose answer the pool drops anyway); newer versions close it and the request fails.
            log.debug("%s closed with a request in flight: %s", self.name, e)

    # plumbing -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json: Any = None, timeout: float | None = None) -> Any:
        try:
            response = self._http.request(
                method, path, json=json, timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TimeoutException as e:
            raise ServerUnavailable(self.name, f"{method} {path} timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise ServerUnavailable(self.name, f"{method} {path}: {type(e).__name__}: {e}") from e
        if response.status_code in (401, 403):
            raise AuthFailed(self.name, f"HTTP {response.status_code}: wrong or missing --api-auth credentials")
        if response.status_code == 404:
            raise RequestRejected(self.name, f"{path} not found (is the WebUI started with --api?)")
        if response.status_code >= 500:
            raise ServerUnavailable(self.name, f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        if response.status_code >= 400:
            raise RequestRejected(self.name, f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        try:
            return response.json()
        except ValueError as e:
            raise ServerUnavailable(self.name, f"{method} {path}: the answer is not JSON") from e

    # what the pool checks -------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        options = self._call("GET", "/sdapi/v1/options", timeout=self.config.connect_timeout * 3)
        if not isinstance(options, dict) or not options.get("sd_model_checkpoint"):
            raise ServerUnavailable(self.name, "/sdapi/v1/options has no sd_model_checkpoint")
        return self.find_checkpoint(str(options["sd_model_checkpoint"]))

    def find_checkpoint(self, title: str) -> Checkpoint:
        """The checkpoint called `title` (a title, a model name or a short hash) in /sdapi/v1/sd-models."""
        models = self._call("GET", "/sdapi/v1/sd-models", timeout=self.config.connect_timeout * 3)
        for item in models if isinstance(models, list) else []:
            if not isinstance(item, dict):
                continue
            if title in (item.get("title"), item.get("model_name"), item.get("hash")):
                # The short hash is sha256[:10]; a server that has not computed the full hash yet
                # still knows it, so it is what every server can be compared by.
                sha256 = str(item.get("sha256") or "")
                identity = sha256[:10] or item.get("hash") or _short_hash(item.get("title", "")) or title
                return Checkpoint(str(item.get("title") or title), str(identity).lower())
        identity = _short_hash(title)
        if identity is None:
            raise RequestRejected(self.name, f"checkpoint {title!r} is not in /sdapi/v1/sd-models")
        return Checkpoint(title, identity.lower())

    def samplers(self) -> set[str]:
        items = self._call("GET", "/sdapi/v1/samplers", timeout=self.config.connect_timeout * 3)
        names: set[str] = set()
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                names.add(str(item.get("name")))
                names.update(str(a) for a in item.get("aliases") or [])
        return names

    def schedulers(self) -> set[str] | None:
        """Schedule type names and labels, or None for a WebUI before 1.9 (no such endpoint)."""
        try:
            items = self._call("GET", "/sdapi/v1/schedulers", timeout=self.config.connect_timeout * 3)
        except RequestRejected:
            return None
        names: set[str] = set()
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                names.update(str(item.get(k)) for k in ("name", "label") if item.get(k))
                names.update(str(a) for a in item.get("aliases") or [])
        return names

    def interrupt(self) -> None:
        """Ask the server to stop its current job (best effort: errors are logged, not raised)."""
        try:
            self._call("POST", "/sdapi/v1/interrupt", timeout=self.config.connect_timeout)
        except RemoteError as e:
            log.warning("could not interrupt %s", e)

    # generation ------------------------------------------------------------------------------------

    def generate(self, settings: RemoteSettings, request: GenerationRequest,
                 images: Img2ImgImages | None = None) -> torch.Tensor:
        """The images of `request`, row i from seed i: one API call per run of consecutive seeds
        (img2img: each with the init images of its positions in the batch)."""
        endpoint = f"/sdapi/v1/{settings.mode}"
        if images is not None and not images.fits(len(request.seeds)):
            raise RequestRejected(self.name, f"{len(images.init_images)} init images for a batch of "
                                  f"{len(request.seeds)} seeds (give one, or one per image)")
        parts = []
        offset = 0
        last = int(request.seeds[-1])
        try:
            if settings.mode == "img2img" and self._seeded != last:
                self._call("POST", "/sdapi/v1/txt2img", json=priming_payload(settings, last))
                self._seeded = last
            for first, count in seed_runs(request.seeds):
                payload = build_payload(settings, request.prompt, request.negative_prompt, first, count, images, offset)
                offset += count
                body = self._call("POST", endpoint, json=payload)
                self._seeded = first + count - 1
                try:
                    parts.append(parse_response(body, first, count, settings.output_size()))
                except MalformedResponse as e:
                    raise ServerUnavailable(self.name, f"{endpoint}: {e}") from e
        except BaseException:
            self._seeded = None  # a request that failed or was cut short may have left anything
            raise
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def generate_batch(self, settings: RemoteSettings, request: GenerationRequest,
                       images: Img2ImgImages | None = None) -> Batch:
        """The pool's call: the batch of `request`, its `timings["request"]` the seconds it took."""
        started = time.perf_counter()
        pixels = self.generate(settings, request, images)
        return Batch(images=pixels, seeds=tuple(request.seeds), timings={"request": time.perf_counter() - started})


def _short_hash(title: str) -> str | None:
    match = _SHORT_HASH.search(title or "")
    return match.group(1) if match else None


def _detail(response: httpx.Response) -> str:
    """The WebUI's error text (its API middleware answers {"error", "detail", ...})."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("errors") or body.get("error") or body)[:300]
    return str(body)[:300]
