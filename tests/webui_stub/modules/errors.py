"""Stand-in for modules/errors.py (v1.10.1 82a973c0): how the WebUI reports errors.

The WebUI prints to stderr and keeps the last five exceptions for its "sysinfo" page; extensions
call `report` (message + optional traceback) and `display` (an exception with a task name). The
stand-in keeps the same signatures and records, and logs through `logging` as well, so tests can
assert on reported errors with caplog.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("modules.errors")

exception_records: list[dict[str, Any]] = []
"""modules/errors.py:L6: the last (up to five) recorded exceptions, oldest first."""

already_displayed: dict[str, int] = {}
"""modules/errors.py:L82: tasks `display_once` has shown."""


def format_traceback(tb: Any) -> list[list[str]]:
    """modules/errors.py:L9."""
    return [[f"{x.filename}, line {x.lineno}, {x.name}", x.line] for x in traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb: Any) -> dict[str, Any]:
    """modules/errors.py:L13."""
    return {"exception": str(e), "traceback": format_traceback(tb)}


def record_exception() -> None:
    """modules/errors.py:L24: remember the exception being handled (at most five are kept)."""
    _, e, tb = sys.exc_info()
    if e is None:
        return
    if exception_records and exception_records[-1] == e:
        return
    exception_records.append(format_exception(e, tb))
    if len(exception_records) > 5:
        exception_records.pop(0)


def report(message: str, *, exc_info: bool = False) -> None:
    """modules/errors.py:L38: print `message` (and the current traceback) to stderr."""
    record_exception()
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(traceback.format_exc(), file=sys.stderr)
    logger.error("%s", message, exc_info=exc_info)


def print_error_explanation(message: str) -> None:
    """modules/errors.py:L52: print a boxed explanation to stderr."""
    record_exception()
    lines = message.strip().split("\n")
    width = max(len(x) for x in lines)
    print("=" * width, file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    print("=" * width, file=sys.stderr)


def display(e: Exception, task: str | None, *, full_traceback: bool = False) -> None:
    """modules/errors.py:L64: print `task`, the exception type and its traceback to stderr."""
    record_exception()
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    te = traceback.TracebackException.from_exception(e)
    if full_traceback:
        te.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + te.stack)
    print(*te.format(), sep="", file=sys.stderr)
    logger.error("%s: %s: %s", task or "error", type(e).__name__, e)


def display_once(e: Exception, task: str) -> None:
    """modules/errors.py:L85: `display` only the first time for a given task."""
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code: Callable[[], Any], task: str) -> None:
    """modules/errors.py:L96: call `code`, displaying any exception.

    The WebUI passes the arguments to `display` in swapped order (`display(task, e)`), a
    long-standing slip that prints the task as if it were the exception; mirrored here.
    """
    try:
        code()
    except Exception as e:
        display(task, e)  # type: ignore[arg-type]
