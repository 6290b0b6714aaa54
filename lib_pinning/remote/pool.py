"""`RemoteGenerator`: a Generator over one or more WebUI / Forge servers, evaluated in parallel.

- Before anything runs, `check()` asks every server for its loaded checkpoint, its samplers and
  schedule types, and refuses unless all have the same checkpoint (short hash) and know the sampler.
- `generate_many(requests)` is the pinning loop's hook (lib_pinning.run: one generation's batches at
  once). Batches wait in one queue in proposal order; each server has `slots` workers that take the
  next one, so a faster server takes more batches (throughput weighting by pulling). When the queue
  is empty, an idle server whose measured time per batch is well under a slower server's duplicates
  that server's batch (the first answer wins), so the slow server does not hold up the generation.
- Results are returned in proposal order, each exactly the batch of its request's seeds, so a run's
  records do not depend on which server answered or when.
- Fail-over: a server that refuses connections, drops one, times out, answers HTTP 5xx or with
  something that is not the batch asked for has its batch put back in the queue for another server
  and is itself retried after a growing pause (after re-checking its checkpoint). A batch fails only
  after `max_attempts` such failures, when the WebUI rejects the request itself (HTTP 4xx), or when
  no server has been reachable for `give_up_after` seconds.
- Members: each server is a `WebUIClient`, or anything with its methods (`name`, `checkpoint`,
  `find_checkpoint`, `samplers`, `schedulers`, `interrupt`, `generate_batch`, `close`, `config`)
  that raises only `RemoteError`s: lib_pinning.webui.servers pools the local WebUI with remote
  ones so. A member's `max_slots` caps its slots (the local WebUI makes one batch at a time).
- Cancel: `cancel()` (given to the call, else to the constructor) is polled while waiting; when it turns true, or a Ctrl-C lands in the wait,
  every server gets /sdapi/v1/interrupt and the batches not finished come back as None (or the
  KeyboardInterrupt goes on up). A member that raises `BatchStopped` (the local WebUI, whose own
  Interrupt or Skip cut its batch short) cancels the call the same way: the batch is the user's
  to stop, so it is not moved to another server and the member is not marked down.
- Drain: `drain()` (the WebUI's "Stop generating") turning true stops the call from starting
  batches; those in flight finish and are kept, the ones not started come back as None, and no
  server is interrupted. A member's `BatchStopped` while draining is a batch it did not start. A call
  returns as soon as its batches are settled: a request still out (a duplicate's losing copy, a
  cancelled batch) finishes in the background, its answer dropped, holding its server's slot
  meanwhile.

Threads, not asyncio: a WebUI generates one batch at a time, so a few requests are in flight per
server, and a thread per slot with httpx's blocking client keeps `generate_many` an ordinary call
for the run loop and for the WebUI, whose script runs in a thread of its own.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.options_model import PinningInputError
from lib_pinning.remote.client import (
    AuthFailed, BatchStopped, Checkpoint, RemoteError, RequestRejected, ServerConfig, ServerUnavailable,
    WebUIClient,
)
from lib_pinning.remote.payload import Img2ImgImages, RemoteSettings
from lib_pinning.evaluation import RunStopped

log = logging.getLogger(__name__)

# A duplicate of a slow server's batch is started only when the idle server is this much faster.
HEDGE_FACTOR = 1.5
# Smoothing of the measured seconds per batch (exponential moving average).
EWMA_ALPHA = 0.3
POLL_SECONDS = 0.05


def _img2img_images(settings: RemoteSettings, images: Img2ImgImages | None) -> Img2ImgImages | None:
    """What every img2img request carries, encoded once for the run (None for txt2img)."""
    if settings.mode != "img2img":
        if images is not None:
            raise PinningInputError("init images were given for txt2img requests")
        return None
    if images is not None:
        return images
    if not settings.init_image:
        raise PinningInputError("img2img needs an init image (--init-image PATH)")
    try:
        return Img2ImgImages.from_files(settings.init_image, settings.mask_image)
    except OSError as e:
        raise PinningInputError(f"cannot read the init image or mask: {e}") from e


class ServerCheckFailed(PinningInputError):
    """The servers cannot serve this run (unreachable, other checkpoints, unknown sampler)."""


@dataclass(eq=False)
class _Server:
    client: WebUIClient
    slots: int
    busy: int = 0
    seconds_per_batch: float | None = None
    batches: int = 0
    failures: int = 0  # consecutive
    down_until: float = 0.0
    needs_probe: bool = False
    retired: str | None = None  # why it takes no more batches (another checkpoint)

    @property
    def name(self) -> str:
        return self.client.name

    def usable(self, now: float) -> bool:
        return self.retired is None and self.down_until <= now


@dataclass(eq=False)
class _Job:
    index: int
    request: GenerationRequest
    attempts: int = 0
    running: dict[int, float] = field(default_factory=dict)  # id(server) -> start time
    result: Batch | BaseException | None = None
    final: bool = False


class _Call:
    """The state of one generate_many call."""

    def __init__(self, requests: Sequence[GenerationRequest], drain: Callable[[], bool] | None = None) -> None:
        self.jobs = [_Job(i, r) for i, r in enumerate(requests)]
        self.pending: list[int] = list(range(len(self.jobs)))  # sorted: proposal order
        self.cancelled = False
        self._drain = drain

    def draining(self) -> bool:
        """True once no batch may be started any more (the ones in flight still finish)."""
        return self._drain is not None and self._drain()

    def drop_pending(self) -> None:
        """Draining: the batches not started are settled as not made (None). A pending batch has
        no request out: it is queued only when none is (`_settle`)."""
        for index in self.pending:
            self.jobs[index].result, self.jobs[index].final = None, True
        self.pending = []

    @property
    def finished(self) -> bool:
        return self.cancelled or all(job.final for job in self.jobs)


class RemoteGenerator:
    """A Generator whose batches come from WebUI / Forge servers (see the module doc)."""

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        settings: RemoteSettings | None = None,
        *,
        slots: int = 1,
        max_attempts: int | None = None,
        retry_after: float = 2.0,
        give_up_after: float = 120.0,
        clients: Sequence[WebUIClient] | None = None,
        cancel: Callable[[], bool] | None = None,
        images: Img2ImgImages | None = None,
    ) -> None:
        """cancel: polled by every call that is given none, `generate` included (the WebUI's
        Interrupt, which must reach a request in flight whoever made the call). images: img2img's
        init images and mask, already encoded (the WebUI's, from memory); else read once from the
        settings' files."""
        if not servers and not clients:
            raise PinningInputError("at least one server is required (--server URL)")
        self.settings = settings or RemoteSettings()
        made = list(clients) if clients is not None else [WebUIClient(c) for c in servers]
        self._servers = [
            _Server(client, max(1, min(int(slots), int(getattr(client, "max_slots", slots))))) for client in made
        ]
        self.cancel = cancel
        self.max_attempts = max_attempts or max(3, 2 * len(self._servers))
        self.retry_after = float(retry_after)
        self.give_up_after = float(give_up_after)
        self.checkpoint: Checkpoint | None = None
        # A resumed run's checkpoint (its short hash): check() refuses servers with another one.
        self.expected_checkpoint: dict[str, str] | None = None
        self._images = _img2img_images(self.settings, images)
        self._cond = threading.Condition()

    # what the run needs to know --------------------------------------------------------------------

    @property
    def steps(self) -> int:
        return self.settings.steps

    @property
    def image_size(self) -> tuple[int, int]:
        return self.settings.output_size()

    @property
    def servers(self) -> list[str]:
        return [s.name for s in self._servers]

    def throughput(self) -> dict[str, float | None]:
        """Measured seconds per batch of each server (None: none measured yet)."""
        return {s.name: s.seconds_per_batch for s in self._servers}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "remote",
            "servers": self.servers,
            "checkpoint": None if self.checkpoint is None else {
                "title": self.checkpoint.title, "hash": self.checkpoint.identity,
            },
            "settings": self.settings.to_json(),
            # How the servers were reached, so `resume` rebuilds the same pool; never credentials.
            "connection": {
                "verify": all(s.client.config.verify for s in self._servers),
                "timeout": max(s.client.config.timeout for s in self._servers),
                "connect_timeout": max(s.client.config.connect_timeout for s in self._servers),
                "slots": self._servers[0].slots,
                "retry_after": self.retry_after,
            },
        }

    @classmethod
    def from_description(
        cls, description: Mapping[str, Any],
        addresses: Sequence[tuple[str, tuple[str, str] | None]] | None = None, verify: bool | None = None,
    ) -> RemoteGenerator:
        """The pool a run recorded (`describe()`), for `resume`. `addresses`: (url, credentials) of
        each server, replacing the recorded addresses (which come without credentials: they are
        never recorded). check() then also refuses servers whose checkpoint is not the run's."""
        if description.get("backend") != "remote":
            raise ValueError(f"this run was generated by the {description.get('backend')!r} backend, not remote servers")
        connection = description.get("connection") or {}
        configs = [
            ServerConfig(
                url, auth=auth, verify=bool(connection.get("verify", True)) if verify is None else verify,
                timeout=float(connection.get("timeout", 600.0)),
                connect_timeout=float(connection.get("connect_timeout", 10.0)),
            )
            for url, auth in (addresses or [(url, None) for url in description["servers"]])
        ]
        generator = cls(
            configs, RemoteSettings.from_json(description["settings"]),
            slots=int(connection.get("slots", 1)), retry_after=float(connection.get("retry_after", 2.0)),
        )
        generator.expected_checkpoint = description.get("checkpoint")
        return generator

    def close(self) -> None:
        for server in self._servers:
            server.client.close()

    # the start check --------------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Refuse (ServerCheckFailed) unless every server is reachable, has the same checkpoint and
        knows the sampler and schedule type; returns what each server has."""
        wanted = self.settings.overrides().get("sd_model_checkpoint")
        found: dict[str, Checkpoint] = {}
        problems: list[str] = []
        for server in self._servers:
            client = server.client
            try:
                checkpoint = client.find_checkpoint(str(wanted)) if wanted else client.checkpoint()
                found[client.name] = checkpoint
                if self.settings.sampler_name not in client.samplers():
                    problems.append(f"{client.name} has no sampler {self.settings.sampler_name!r}")
                schedulers = client.schedulers()
                if self.settings.scheduler != "Automatic":
                    if schedulers is None:
                        problems.append(
                            f"{client.name} has no schedule types (WebUI before 1.9): use Schedule type "
                            "'Automatic' and a sampler name with its schedule, e.g. 'DPM++ 2M Karras'"
                        )
                    elif self.settings.scheduler not in schedulers:
                        problems.append(f"{client.name} has no schedule type {self.settings.scheduler!r}")
            except AuthFailed as e:
                problems.append(f"{e} (give --api-auth USER:PASSWORD for this server)")
            except RemoteError as e:
                problems.append(str(e))
        identities = {c.identity for c in found.values()}
        expected = self.expected_checkpoint
        if expected and found and identities != {expected["hash"]}:
            listed = "; ".join(f"{name}: {c.title}" for name, c in found.items() if c.identity != expected["hash"])
            problems.append(
                f"the run was made with checkpoint {expected['title']} (hash {expected['hash']}), "
                f"and resuming it on another would mix two models' images: {listed}"
            )
        if len(identities) > 1:
            listed = "; ".join(f"{name}: {c.title}" for name, c in found.items())
            problems.append(
                "the servers have different checkpoints loaded, so their images would differ: " + listed
                + ". Load the same checkpoint on every server (or give sd_model_checkpoint in --override-settings)"
            )
        if problems:
            raise ServerCheckFailed("cannot pin on these servers:\n  " + "\n  ".join(problems))
        self.checkpoint = next(iter(found.values()))
        return {name: {"checkpoint": c.title, "hash": c.identity} for name, c in found.items()}

    # generation -----------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> Batch:
        (result,) = self.generate_many([request])
        if isinstance(result, BaseException):
            raise result
        if result is None:
            # Cancelled while in flight (the servers were told to stop): the run stops, as it does
            # when the local WebUI is interrupted mid-batch.
            raise RunStopped("the batch was cancelled on its way")
        return result

    def generate_many(
        self,
        requests: Sequence[GenerationRequest],
        cancel: Callable[[], bool] | None = None,
        on_result: Callable[[int, Batch | BaseException], None] | None = None,
        drain: Callable[[], bool] | None = None,
    ) -> list[Batch | BaseException | None]:
        """Every request's batch (or the exception that failed it), in the order of `requests`;
        None for those not finished when `cancel()` turned true, and for those not started when
        `drain()` did. `on_result(i, result)` hears of each request's result as soon as it is
        settled (the run loop scores it meanwhile)."""
        if self.checkpoint is None:
            self.check()
        cancel = _either(cancel, self.cancel)
        call = _Call(requests, drain)
        if not call.jobs:
            return []
        workers = [
            threading.Thread(target=self._work, args=(call, server), name=f"pin-remote-{n}", daemon=True)
            for n, server in enumerate(self._servers) for _ in range(server.slots)
        ]
        for worker in workers:
            worker.start()
        try:
            results = self._wait(call, cancel, on_result)
        except BaseException:
            # Ctrl-C (a second one: the run's first only sets the cancel flag), or anything else that
            # ends this wait: the servers are still generating, so they are told to stop first.
            with self._cond:
                call.cancelled = True
                self._cond.notify_all()
            self.interrupt()
            raise
        if call.cancelled:
            self.interrupt()
        return results

    def _wait(
        self,
        call: _Call,
        cancel: Callable[[], bool] | None,
        on_result: Callable[[int, Batch | BaseException], None] | None = None,
    ) -> list[Batch | BaseException | None]:
        """Wait for the call's jobs (the workers do them), watching cancel() and the servers' health."""
        all_down_since: float | None = None
        told: set[int] = set()
        with self._cond:
            while not call.finished:
                if on_result is not None:
                    self._tell(call, told, on_result)
                if cancel is not None and cancel():
                    call.cancelled = True
                    break
                if call.draining():
                    call.drop_pending()
                    if call.finished:
                        break
                now = time.monotonic()
                if any(s.usable(now) or s.busy for s in self._servers):
                    all_down_since = None
                elif all_down_since is None:
                    all_down_since = now
                elif now - all_down_since > self.give_up_after:
                    self._give_up(call)
                    break
                self._cond.wait(POLL_SECONDS)
            self._cond.notify_all()
            if on_result is not None and not call.cancelled:
                self._tell(call, told, on_result)
            # Every job is settled now and no longer changes. The workers are not joined: an idle
            # one returns within POLL_SECONDS, and one still in an HTTP request (the losing copy of
            # a duplicated batch, or a batch cut short by a cancel) must not hold up the run; its
            # answer is dropped, and until then it keeps its server's slot busy for the next call.
            return [job.result if job.final else None for job in call.jobs]

    @staticmethod
    def _tell(call: _Call, told: set[int], on_result: Callable[[int, Batch | BaseException], None]) -> None:
        for job in call.jobs:
            if job.final and job.index not in told and job.result is not None:
                told.add(job.index)
                on_result(job.index, job.result)

    def interrupt(self) -> None:
        """Forward a cancel to every server (/sdapi/v1/interrupt), in parallel."""
        threads = [threading.Thread(target=s.client.interrupt, daemon=True) for s in self._servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30.0)

    # workers ----------------------------------------------------------------------------------------------

    def _work(self, call: _Call, server: _Server) -> None:
        while True:
            if server.needs_probe and server.usable(time.monotonic()):
                self._probe(server)
                continue
            with self._cond:
                job = self._take(call, server)
                if job is None:
                    return
                server.busy += 1
                job.running[id(server)] = time.monotonic()
                settings, images = self.settings, self._images
            outcome: Batch | RemoteError
            try:
                outcome = server.client.generate_batch(settings, job.request, images)
            except RemoteError as e:
                outcome = e
            with self._cond:
                server.busy -= 1
                job.running.pop(id(server), None)
                self._settle(call, server, job, outcome)
                self._cond.notify_all()

    def _take(self, call: _Call, server: _Server) -> _Job | None:
        """The next batch for `server` (waiting while it is down or full), or None when the call is over."""
        while not call.finished:
            now = time.monotonic()
            if server.retired is not None:
                return None
            if call.draining():
                return None
            if not server.usable(now) or server.busy >= server.slots:
                self._cond.wait(max(POLL_SECONDS, min(server.down_until - now, 1.0)))
                if server.needs_probe and server.usable(time.monotonic()):
                    return self._take_after_probe(call, server)
                continue
            if call.pending:
                return call.jobs[call.pending.pop(0)]
            hedge = self._hedge(call, server, now)
            if hedge is not None:
                log.debug("%s duplicates batch %d of a slower server", server.name, hedge.index)
                return hedge
            self._cond.wait(POLL_SECONDS)
        return None

    def _take_after_probe(self, call: _Call, server: _Server) -> _Job | None:
        """A down server's pause is over: probe it (outside the lock) before it takes a batch."""
        self._cond.release()
        try:
            self._probe(server)
        finally:
            self._cond.acquire()
        return self._take(call, server)

    def _hedge(self, call: _Call, server: _Server, now: float) -> _Job | None:
        mine = server.seconds_per_batch
        if mine is None:
            return None
        by_id = {id(s): s for s in self._servers}
        for job in call.jobs:
            if job.final or len(job.running) != 1 or id(server) in job.running:
                continue
            (other_id, started), = job.running.items()
            theirs = by_id[other_id].seconds_per_batch
            if theirs is not None and theirs > HEDGE_FACTOR * mine and (now - started) + mine < theirs:
                return job
        return None

    def _probe(self, server: _Server) -> None:
        """Before a server that failed takes batches again: is it back, with the same checkpoint?"""
        try:
            checkpoint = server.client.checkpoint()
        except RemoteError as e:
            with self._cond:
                self._mark_down(server, e)
            return
        with self._cond:
            server.needs_probe = False
            if self.checkpoint is not None and checkpoint.identity != self.checkpoint.identity:
                server.retired = f"it now has checkpoint {checkpoint.title}, the run uses {self.checkpoint.title}"
                log.error("%s takes no more batches: %s", server.name, server.retired)
            else:
                log.info("%s is back", server.name)
            self._cond.notify_all()

    def _mark_down(self, server: _Server, error: BaseException) -> None:
        pause = self.retry_after * 2 ** min(server.failures, 5)
        server.failures += 1
        server.down_until = time.monotonic() + pause
        server.needs_probe = True
        log.warning("%s; retrying this server in %.1f s", error, pause)

    def _settle(self, call: _Call, server: _Server, job: _Job, outcome: Batch | RemoteError) -> None:
        if isinstance(outcome, Batch):
            seconds = outcome.timings["request"]
            previous = server.seconds_per_batch
            server.seconds_per_batch = seconds if previous is None else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * seconds
            server.batches += 1
            server.failures = 0
            if not job.final and not call.cancelled:  # a duplicate's answer, or one after a cancel, is dropped
                job.result, job.final = outcome, True
            return
        if isinstance(outcome, BatchStopped):
            # The user stopped generating (this member saw it first): as cancel() turning true, not
            # a failure; retried elsewhere, the batch would be made anyway and the member sidelined.
            # While draining it is "Stop generating" reaching a batch this member had not started:
            # that batch is not made, the others in flight go on.
            if call.draining():
                if not job.final and not job.running:
                    job.result, job.final = None, True
                return
            if not call.cancelled:
                log.info("%s: the call is cancelled", outcome)
                call.cancelled = True
            return
        if job.final or call.cancelled:
            return
        if isinstance(outcome, RequestRejected):
            job.result, job.final = outcome, True  # every server would refuse it alike
            return
        self._mark_down(server, outcome)
        job.attempts += 1
        if job.running:
            return  # a duplicate is still running elsewhere
        if job.attempts >= self.max_attempts:
            job.result, job.final = outcome, True
            log.error("batch %d failed on %d attempts; last: %s", job.index, job.attempts, outcome)
        elif job.index not in call.pending:
            bisect.insort(call.pending, job.index)
            log.info("batch %d goes back to the queue for another server", job.index)

    def _give_up(self, call: _Call) -> None:
        error = ServerUnavailable("pool", f"no server reachable for {self.give_up_after:.0f} s")
        for job in call.jobs:
            if not job.final:
                job.result, job.final = error, True
        log.error("%s", error)


def _either(first: Callable[[], bool] | None, second: Callable[[], bool] | None) -> Callable[[], bool] | None:
    if first is None or second is None:
        return first or second
    return lambda: first() or second()
