"""Stand-in for modules/shared_total_tqdm.py (v1.10.1 82a973c0): the console's "Total progress" bar.

Scripts that run several generations call `shared.total_tqdm.updateTotal(n)` so the bar covers
the whole job; the samplers' step callback calls `update()`. The stand-in counts instead of
drawing a bar (`count`, `total`), so tests can check the bookkeeping. Like the real one, it keeps
its bar in `_tqdm`, with tqdm's public `n` and `total`, which extensions read.
"""

from __future__ import annotations

from dataclasses import dataclass

from modules import shared


@dataclass
class _Bar:
    """What the stand-in keeps of a tqdm bar: its count and total."""

    total: int
    n: int = 0


class TotalTQDM:
    """modules/shared_total_tqdm.py:L6."""

    def __init__(self) -> None:
        self._tqdm: _Bar | None = None

    def reset(self) -> None:
        """modules/shared_total_tqdm.py:L10: a fresh bar sized job_count * sampling_steps."""
        self._tqdm = _Bar(shared.state.job_count * shared.state.sampling_steps)

    def update(self) -> None:
        """modules/shared_total_tqdm.py:L18: one sampling step done."""
        if not shared.opts.multiple_tqdm or shared.cmd_opts.disable_console_progressbars:
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.n += 1

    def updateTotal(self, new_total: int) -> None:  # noqa: N802 - the WebUI's name
        """modules/shared_total_tqdm.py:L25: resize the bar to `new_total` steps."""
        if not shared.opts.multiple_tqdm or shared.cmd_opts.disable_console_progressbars:
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.total = new_total

    def clear(self) -> None:
        """modules/shared_total_tqdm.py:L32: close the bar (the next update starts a new one)."""
        self._tqdm = None

    @property
    def count(self) -> int:
        """Stand-in only: steps counted since the bar was (re)started; 0 when closed."""
        return 0 if self._tqdm is None else self._tqdm.n

    @property
    def total(self) -> int | None:
        """Stand-in only: the bar's total, None when closed."""
        return None if self._tqdm is None else self._tqdm.total
