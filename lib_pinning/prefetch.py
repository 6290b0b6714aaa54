"""Batches made in the background for the generation under way.

A generator with `generate_many(requests, cancel)` (lib_pinning.remote: several servers) gets all
the batches a generation needs in one call, made in a thread of its own, while the run loop takes
them one by one in proposal order and scores each as soon as it is there: scoring and the servers'
work overlap. Generators whose `generate_many` also takes `on_result(index, result)` hand over each
batch when it is done; others hand over the whole call at its end (no overlap, same records).

Stopping: `cancel` is the run's cut (Interrupt, Skip, Ctrl-C: batches in flight are abandoned).
A generator whose `generate_many` takes `drain` gets the run's every stop there, so that "Stop
generating" starts nothing more but lets the batches in flight finish, as it does locally; others
get every stop as their cancel.
"""

from __future__ import annotations

import inspect
import logging
import threading
from concurrent.futures import Future
from typing import Callable, Sequence, Union

from lib_pinning.generator import Batch, GenerationRequest
from lib_pinning.interrupts import RunStop

log = logging.getLogger(__name__)

Result = Union[Batch, BaseException, None]  # None: not made (the call was cancelled)

# How long close() waits for an abandoned call to hand back (it forwards an interrupt to the
# servers first, which has its own 30 s limit); the thread is a daemon and ends with its call.
CLOSE_WAIT_SECONDS = 35.0


class CallCancelled(Exception):
    """The batch was asked for but not made: the call was cancelled (the run is being stopped)."""


def prefetch_one(generator: object, request: GenerationRequest, stop: Callable[[], bool]) -> Prefetch | None:
    """The baseline's batch made like a generation's: through `generate_many` in the background, so
    that `stop()` (the first Ctrl-C, the WebUI's Interrupt) reaches it while it is in flight (the
    pool forwards /sdapi/v1/interrupt and `take` raises CallCancelled); None for a generator
    without `generate_many`, which the caller then asks itself (`generate`)."""
    many = getattr(generator, "generate_many", None)
    if many is None or stop():
        return None
    return Prefetch(many, [request], stop)


class Prefetch:
    """The batches of one `generate_many` call, made in the background (see the module doc)."""

    def __init__(
        self,
        generate_many: Callable[..., Sequence[Result]],
        requests: Sequence[GenerationRequest],
        stop: Callable[[], bool],
    ) -> None:
        self._requests = list(requests)
        self._futures: dict[GenerationRequest, Future[Result]] = {r: Future() for r in self._requests}
        self._taken: set[GenerationRequest] = set()
        self._abandoned = threading.Event()
        self._thread: threading.Thread | None = None
        accepts = inspect.signature(generate_many).parameters
        self.drains = isinstance(stop, RunStop) and "drain" in accepts
        """Whether a stop that is not a cut lets the batches in flight finish (the caller then takes
        them: `take` raises CallCancelled at the first one the stop kept from starting)."""
        if not self._requests:
            return
        cut = stop.cut if isinstance(stop, RunStop) and self.drains else stop
        kwargs: dict[str, object] = {"cancel": lambda: cut() or self._abandoned.is_set()}
        if self.drains:
            kwargs["drain"] = stop
        if "on_result" in accepts:
            kwargs["on_result"] = self._on_result
        self._thread = threading.Thread(
            target=self._make, args=(generate_many, kwargs), name="pin-prefetch", daemon=True
        )
        self._thread.start()

    def take(self, request: GenerationRequest) -> Result:
        """The batch made for `request` (waiting for it) or the exception that failed it; None when
        it was not asked for here (the caller then generates it itself). Raises CallCancelled when
        it was asked for but the call was cancelled first."""
        if not self.holds(request):
            return None
        self._taken.add(request)
        result = self._futures[request].result()  # not popped: the maker thread still sets it
        if result is None:
            raise CallCancelled(f"the batch of {request.prompt!r} was not made: the call was cancelled")
        return result

    def holds(self, request: GenerationRequest) -> bool:
        """Whether this call was asked for `request`'s batch and it has not been taken yet."""
        return request in self._futures and request not in self._taken

    def close(self) -> None:
        """End of the generation: a call still making batches nobody will take is cancelled."""
        self._abandoned.set()
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_WAIT_SECONDS)

    def _make(self, generate_many: Callable[..., Sequence[Result]], kwargs: dict[str, object]) -> None:
        try:
            results: Sequence[Result] = generate_many(self._requests, **kwargs)
        except BaseException as e:  # noqa: BLE001 (the generator's failure is each batch's failure)
            log.error("generating a generation's batches failed: %s", e)
            results = [e] * len(self._requests)
        for index, result in enumerate(results):
            self._on_result(index, result)
        for future in self._futures.values():  # a generator that answered fewer results than asked
            if not future.done():
                future.set_result(None)

    def _on_result(self, index: int, result: Result) -> None:
        future = self._futures.get(self._requests[index])
        if future is not None and not future.done():
            future.set_result(result)
