"""scikit-learn's HDBSCAN fitted in a helper process that imports it while the run generates.

Why: `import sklearn.cluster` costs about 1 s of CPU (mostly scipy.stats, which sklearn.utils
imports), where the weight map's fit of a demo's few dozen points takes 10 ms: that import is
most of what the analyses add to the toy demo, 7-9% of its wall time against the issue's 5%
(docs/benchmarks.md, bench_analysis). Importing it in a background thread of the run's own
process did not help: the toy run is Python-bound, the import holds the interpreter lock, and the
run's own time grew by about what the import took (an exploratory run: 4.0 -> 5.1 s). A child process
imports it on another core, sharing no lock with the run, and then answers the one fit the final
report asks for (the vectors and labels travel as JSON: floats round-trip exactly).

The helper is an optimisation only; `weight_map.cluster` fits in its own process whenever there
is none, or it failed. At most one is started per process (`ClusterProcess.start`): the first run
of a process is the one whose time the import weighs on (a CLI demo); a long-lived process (the
WebUI, a test session) imports scikit-learn once and later fits are free there. None is started
when scikit-learn's clusterer is imported already, scikit-learn is not installed (cluster() then
says so, with the install hint), or no core is idle (`_spare_core`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

MODULE = "sklearn.cluster"
# Seconds the final report waits for the helper's answer (its import included) before it fits
# in its own process: the import takes seconds even on a loaded 2-core machine.
TIMEOUT = 60.0

# The helper's code: import, then answer one request read from stdin (EOF: the parent is gone or
# no longer needs it). Errors go to stdout as JSON, so the parent can log why it fits itself.
# Ctrl-C reaches the terminal's whole process group, the helper too: it ignores it, since the
# first Ctrl-C ends a run with its final report, which still asks the helper.
_HELPER = r"""
import json, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    from sklearn.cluster import HDBSCAN
    import numpy as np
except Exception as e:
    sys.stdout.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
    raise SystemExit(0)
line = sys.stdin.readline()
if line:
    request = json.loads(line)
    labels = HDBSCAN(**request["params"]).fit_predict(np.asarray(request["vectors"], dtype=float))
    sys.stdout.write(json.dumps({"labels": [int(v) for v in labels]}) + "\n")
"""

_lock = threading.Lock()
_started = False
_serving: contextvars.ContextVar[ClusterProcess | None] = contextvars.ContextVar("cluster_process", default=None)


def _spare_core() -> bool:
    """Whether a core is idle for the helper: it costs more CPU than the import here (its own
    interpreter and numpy, about 1.6 s against 1.1 s), which only pays when it runs beside the
    run rather than taking the run's turns. The 1-minute load average counts the run itself, so
    below cpu_count - 0.5 at least about half a core is left over on average."""
    count = os.cpu_count() or 1
    if count < 2:
        return False
    try:
        return os.getloadavg()[0] < count - 0.5
    except (AttributeError, OSError):  # no load average (Windows): assume the usual idle cores
        return True


def _installed() -> bool:
    try:
        return importlib.util.find_spec("sklearn") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (tests)
        return False


class ClusterProcess:
    """One helper process, used for one fit (`labels`) or closed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process: subprocess.Popen[str] | None = process

    @classmethod
    def spawn(cls) -> ClusterProcess | None:
        """A new helper process (None when it cannot be started)."""
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True,
            )
        except OSError as e:
            log.debug("weight map: no clustering process (%s)", e)
            return None
        return cls(process)

    @classmethod
    def start(cls) -> ClusterProcess | None:
        """The process's one helper, when it can save anything (module docstring), else None."""
        global _started
        with _lock:
            if _started or MODULE in sys.modules or not _installed() or not _spare_core():
                return None
            _started = True
        return cls.spawn()

    def labels(self, vectors: np.ndarray, params: dict[str, Any]) -> np.ndarray | None:
        """HDBSCAN(**params).fit_predict(vectors) in the helper; None when it failed (the caller
        fits in its own process). The helper ends with its answer."""
        process, self._process = self._process, None
        if process is None:
            return None
        request = json.dumps({"vectors": np.asarray(vectors, dtype=float).tolist(), "params": params})
        try:
            out, _ = process.communicate(request + "\n", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            log.warning("weight map: the clustering process gave no answer in %.0f s; clustering here", TIMEOUT)
            return None
        except OSError as e:
            _close(process)
            log.warning("weight map: the clustering process failed (%s); clustering here", e)
            return None
        try:
            answer = json.loads(out.splitlines()[-1]) if out.strip() else {}
        except ValueError:
            answer = {}
        labels = answer.get("labels") if isinstance(answer, dict) else None
        if not isinstance(labels, list) or len(labels) != len(vectors):
            why = answer.get("error") if isinstance(answer, dict) and answer.get("error") else f"exit {process.returncode}"
            log.warning("weight map: the clustering process failed (%s); clustering here", why)
            return None
        return np.asarray(labels, dtype=int)

    def close(self) -> None:
        """End the helper if it is still running (its fit was not needed)."""
        process, self._process = self._process, None
        if process is not None:
            _close(process)


def _close(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.communicate()


@contextlib.contextmanager
def serving(helper: ClusterProcess | None) -> Iterator[None]:
    """Within the block (in this thread), `labels` asks `helper`."""
    token = _serving.set(helper)
    try:
        yield
    finally:
        _serving.reset(token)


def labels(vectors: np.ndarray | Sequence[Sequence[float]], params: dict[str, Any]) -> np.ndarray | None:
    """The labels from the helper `serving` names, None when there is none or it failed."""
    helper = _serving.get()
    return None if helper is None else helper.labels(np.asarray(vectors, dtype=float), params)
