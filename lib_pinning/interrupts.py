"""Ctrl-C during a run: the first asks the run to stop after the current individual, the second
interrupts at once. Only the main thread installs the handler (signals reach no other thread)."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger(__name__)


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
