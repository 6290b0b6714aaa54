"""scikit-learn's HDBSCAN fitted in a helper process that imports it while the run generates.

Why: `import sklearn.cluster` costs about 1.1 s of CPU (mostly scipy.stats, which sklearn.utils
imports), where the weight map's fit of a demo's few dozen points takes 10 ms: that import is
most of what the analyses add to the toy demo, against the issue's 5% of its wall time
(docs/benchmarks.md, bench_analysis). Importing it in a background thread of the run's own
process did not help: the toy run is Python-bound, the import holds the interpreter lock, and the
run's own time grew by about what the import took (an exploratory run: 4.0 -> 5.1 s). A child process
imports it on another core, sharing no lock with the run, and then answers the one fit the final
report asks for (the vectors and labels travel as JSON: floats round-trip exactly).

How it stays out of the run's way:
- It imports at the lowest CPU priority (nice 19), in a thread of its own: on Linux the nice value
  belongs to the thread, so the import only takes cycles the run and everyone else leave idle,
  and the fit, in the main thread, runs at the parent's priority when the final report waits on it.
- It says when it is ready. A final report that finds it still importing (a busy machine, a short
  run, `report` rebuilding a folder) ends it and fits in its own process: waiting for a low-priority
  import could take longer than importing here.
- It leaves with `os._exit` as soon as the answer is written: the parent reads until the pipe
  closes, and a normal interpreter exit with scipy and scikit-learn loaded took 0.3 s, which was
  most of the "waiting for the helper" measured at 7daaf7c.

The helper is an optimisation only; `weight_map.cluster` fits in its own process whenever there
is none, it is not ready, or it failed. At most one is started per process (`ClusterProcess.start`,
when the report is created, i.e. at the run's start): the first run of a process is the one whose
time the import weighs on (a CLI demo); a long-lived process (the WebUI, a test session) imports
scikit-learn once and later fits are free there. None is started when scikit-learn's clusterer is
imported already, scikit-learn is not installed (cluster() then says so, with the install hint),
or the process may use a single core (`_spare_core`: idle cycles are then rare, and the helper's
own interpreter would cost more than the import it saves).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

MODULE = "sklearn.cluster"
# The helper's niceness while it imports (the lowest priority there is).
IMPORT_NICE = 19
# Seconds the final report waits for a ready helper's answer (a 10 ms fit) before it fits in its
# own process; generous, for a machine under heavy load.
TIMEOUT = 60.0

# The helper's code. Its messages are JSON lines on stdout: {"ready": ..., "nice": n} once
# imported (n: the importing thread's niceness) or {"error": ...}, then the answer to the one
# request read from stdin (EOF: the parent is gone or no longer needs it). Ctrl-C reaches the
# terminal's whole process group, the helper too: it ignores it, since the first Ctrl-C ends a run
# with its final report, which still asks the helper.
_HELPER = r"""
import json, os, signal, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)
imported = {}

def say(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

def load():
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)  # this thread only, on Linux
    except (AttributeError, OSError):
        pass
    try:
        from sklearn.cluster import HDBSCAN
        import numpy
    except Exception as e:
        imported["error"] = f"{type(e).__name__}: {e}"
        return
    imported.update(HDBSCAN=HDBSCAN, numpy=numpy)
    imported["nice"] = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None

thread = threading.Thread(target=load)
thread.start()
thread.join()
if "error" in imported:
    say({"error": imported["error"]})
    os._exit(0)
say({"ready": True, "nice": imported["nice"]})
line = sys.stdin.readline()
if line:
    try:
        request = json.loads(line)
        vectors = imported["numpy"].asarray(request["vectors"], dtype=float)
        labels = imported["HDBSCAN"](copy=True, **request["params"]).fit_predict(vectors)
        say({"labels": [int(v) for v in labels], "nice": os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None})
    except Exception as e:
        say({"error": f"{type(e).__name__}: {e}"})
os._exit(0)
""".replace("NICE", str(IMPORT_NICE))

_lock = threading.Lock()
_started = False
# The helper `start` started and no final report has taken yet. The report object that starts it
# (RunAnalysis) can be replaced before the run's final update (the Reporter resets its run state
# when it meets its run folder), so the helper belongs to the process, not to that object.
_pending: ClusterProcess | None = None
_serving: contextvars.ContextVar[ClusterProcess | None] = contextvars.ContextVar("cluster_process", default=None)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity: `taskset -c 0` gives 1 where
    os.cpu_count() still says how many the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call (macOS, Windows)
        return os.cpu_count() or 1


def _spare_core() -> bool:
    """Whether the helper can run beside the run rather than take its turns: at least two usable
    cores. The machine's load is left to the helper's low priority (module docstring)."""
    return _usable_cores() >= 2


def _installed() -> bool:
    try:
        return importlib.util.find_spec("sklearn") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (tests)
        return False


class ClusterProcess:
    """One helper process, used for one fit (`labels`) or closed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process: subprocess.Popen[str] | None = process
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._status: dict[str, Any] | None = None  # the helper's first message, once read
        self.fit_nice: int | None = None  # the niceness the helper fitted at (its answer says)
        if process is not None and process.stdout is not None:
            # Reads the helper's lines as they come, so that `ready` never blocks; a blocked read
            # releases the interpreter lock and costs the run nothing.
            threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._messages.put(message)
        # Closed here, by the one thread that reads it (closing it from another could block on the
        # read in progress).
        stream.close()
        self._messages.put({"error": "the clustering process ended"})

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
        """Start the process's one helper, when it can save anything (module docstring), and keep
        it for the next final report (`take`); None when none is started."""
        global _started, _pending
        with _lock:
            if _started or MODULE in sys.modules or not _installed() or not _spare_core():
                return None
            _started = True
            _pending = cls.spawn()
            return _pending

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the helper has imported scikit-learn, waiting up to `timeout` seconds for it."""
        if self._status is None:
            try:
                self._status = self._messages.get(timeout=timeout) if timeout > 0 else self._messages.get_nowait()
            except queue.Empty:
                return False
        return bool(self._status.get("ready"))

    @property
    def import_nice(self) -> int | None:
        """The niceness the helper imported at (None: not ready, or not known on this system)."""
        return self._status.get("nice") if self._status is not None and self._status.get("ready") else None

    def labels(self, vectors: np.ndarray, params: dict[str, Any]) -> np.ndarray | None:
        """HDBSCAN(**params).fit_predict(vectors) in the helper; None when it is not ready or
        failed (the caller fits in its own process). The helper ends with its answer."""
        process = self._process
        if process is None:
            return None
        if not self.ready():
            why = (self._status or {}).get("error")
            self.close()
            if why:
                log.warning("weight map: the clustering process failed (%s); clustering here", why)
            else:
                log.info("weight map: the clustering process is still importing scikit-learn; clustering here")
            return None
        self._process = None
        request = json.dumps({"vectors": np.asarray(vectors, dtype=float).tolist(), "params": params})
        try:
            assert process.stdin is not None
            process.stdin.write(request + "\n")
            process.stdin.close()
            answer = self._messages.get(timeout=TIMEOUT)
        except queue.Empty:
            _close(process)
            log.warning("weight map: the clustering process gave no answer in %g s; clustering here", TIMEOUT)
            return None
        except OSError as e:
            _close(process)
            log.warning("weight map: the clustering process failed (%s); clustering here", e)
            return None
        _close(process)
        labels = answer.get("labels")
        if not isinstance(labels, list) or len(labels) != len(vectors):
            log.warning("weight map: the clustering process failed (%s); clustering here",
                        answer.get("error") or f"exit {process.returncode}")
            return None
        self.fit_nice = answer.get("nice")
        return np.asarray(labels, dtype=int)

    def close(self) -> None:
        """End the helper if it is still running (its fit was not needed)."""
        process, self._process = self._process, None
        if process is not None:
            _close(process)


def _close(process: subprocess.Popen[str]) -> None:
    """End `process` (it may have ended already) and reap it in the background: the kernel's
    teardown of a helper killed while importing took 0.02-0.1 s on the busy 2-core machine, and
    nothing here needs to wait for it."""
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(OSError, ValueError):  # a broken pipe: the helper is gone already
        if process.stdin is not None:
            process.stdin.close()
    threading.Thread(target=process.wait, daemon=True).start()


def take() -> ClusterProcess | None:
    """The helper `start` left for a final report (None: none, or taken already); the caller
    serves it (`serving`) and closes it."""
    global _pending
    with _lock:
        helper, _pending = _pending, None
    if helper is not None and not _installed():
        # scikit-learn is gone from this process since the start (a test hides it): the helper,
        # which still has it, must not give clusters this process could not fit.
        helper.close()
        return None
    return helper


@atexit.register
def _close_pending() -> None:
    """A process that ends without a final report (a test, an interrupted CLI) ends its helper."""
    helper = take()
    if helper is not None:
        helper.close()


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
