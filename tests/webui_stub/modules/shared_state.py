"""Stand-in for modules/shared_state.py (v1.10.1 82a973c0): the progress and interruption state.

`shared.state` is how a script reports progress (job_count, job_no, job, textinfo) and learns
that the user pressed Interrupt or Skip (interrupted, skipped) or, from 1.8, "Stop generating
after the current image" (stopping_generation). The stand-in keeps the fields and methods
extensions touch; live previews and the server-restart signalling are omitted.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class State:
    """modules/shared_state.py:L12."""

    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    job_timestamp = "0"
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    current_image_sampling_step = 0
    id_live_preview = 0
    textinfo = None
    time_start: float | None = None
    server_start: float | None = None

    def __init__(self) -> None:
        self.server_start = time.time()

    def skip(self) -> None:
        """modules/shared_state.py:L75: skip the current batch (the next one still runs)."""
        self.skipped = True
        log.info("Received skip request")

    def interrupt(self) -> None:
        """modules/shared_state.py:L79: stop the whole job."""
        self.interrupted = True
        log.info("Received interrupt request")

    def stop_generating(self) -> None:
        """modules/shared_state.py:L83 (1.8+): finish the current image, then stop."""
        self.stopping_generation = True
        log.info("Received stop generating request")

    def nextjob(self) -> None:
        """modules/shared_state.py:L87: one more job (a batch, or a hires pass) is done."""
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def dict(self) -> dict[str, Any]:
        """modules/shared_state.py:L95: what /sdapi/v1/progress reports."""
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def begin(self, job: str = "(unknown)") -> None:
        """modules/shared_state.py:L110: start a job (the UI calls this around every generation)."""
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        log.info("Starting job %s", job)

    def end(self) -> None:
        """modules/shared_state.py:L129."""
        duration = time.time() - (self.time_start or time.time())
        log.info("Ending job %s (%.2f seconds)", self.job, duration)
        self.job = ""
        self.job_count = 0

    def set_current_image(self) -> None:
        """modules/shared_state.py:L137: live previews are not produced by the stand-in."""

    def assign_current_image(self, image: Any) -> None:
        """modules/shared_state.py:L164."""
        self.current_image = image
        self.id_live_preview += 1
