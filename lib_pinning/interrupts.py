"""Ctrl-C during a run: the first asks the run to stop after the current individual, the second
interrupts at once. Only the main thread installs the handler (signals reach no other thread)."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStop:
    """The run's stop flags. Called, it says whether to stop before the next batch (any stop);
    `cut()` says whether batches already in flight are abandoned too (Interrupt, Skip, Ctrl-C) or
    left to finish (the WebUI's "Stop generating", which locally ends the run after the batch
    under way). lib_pinning.prefetch gives the one to a pool's cancel, the other to its drain."""

    asked: Callable[[], bool]
    cut: Callable[[], bool]

    def __call__(self) -> bool:
        return self.asked()


@contextmanager
def first_ctrl_c_cancels() -> Iterator[threading.Event]:
    """In the main thread, the first Ctrl-C asks the run to stop after the current individual;
    a second one interrupts at once. Elsewhere (the WebUI's worker threads) this does nothing."""
    flag = threading.Event()  # set by the first Ctrl-C; the run reads it before every individual
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        log.warning("stopping after the current individual (Ctrl-C again to stop now)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
