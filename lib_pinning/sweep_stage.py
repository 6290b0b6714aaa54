"""The sensitivity sweep as a run's last stage (the option `sweep_batches`), and the influence summary
that prefers the sweep's measurement to the run's surrogate.

After the search has finished (a stopping rule or the last generation; never after an interrupt or
a failure, and never without a clean best to sweep around), `PinningRun.execute` hands the run's
own generator (toy, WebUI, remote servers alike) to `lib_pinning.analysis.sweep.sweep` before the
final report, so influence.json, the report, the WebUI's info and the CLI's summary carry the sweep.

Interrupting: the stop flags (the WebUI's Interrupt / Skip / Stop, the first Ctrl-C) are asked before
every sweep batch, and a second Ctrl-C interrupts the batch in progress. An interrupted sweep is
dropped, not recorded as partial: `sweep` writes influence.json only once all its batches are
scored, and a partial sweep would give the units it reached fewer seed sets than its plan says, so
its intervals would not mean what the file claims. run.json's `sweep` says what happened
(`SweepOutcome`), and the search's result, records and report are the run's as without a sweep.
A sweep that fails (the backend, a full disk) is logged and recorded the same way: the run keeps
its status.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

from lib_pinning.analysis import influence
from lib_pinning.evaluation import RunStopped
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.interrupts import first_ctrl_c_cancels
from lib_pinning.store import IndividualRecord, RunStore

log = logging.getLogger(__name__)

DONE, INTERRUPTED, FAILED, SKIPPED = "done", "interrupted", "failed", "skipped"


@dataclass(frozen=True)
class SweepOutcome:
    """What became of a run's sweep: run.json's `sweep`, the result's and the summaries' line."""

    status: str  # DONE, INTERRUPTED, FAILED or SKIPPED
    budget: int  # the batches asked for (sweep_batches)
    batches: int  # the batches generated
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _SweepGenerator:
    """The run's generator as the sweep sees it: asks `stop` before every batch (RunStopped, as
    the run's own loop does) and reports each batch about to be generated."""

    def __init__(self, inner: Generator, stop: Callable[[], bool], before_batch: Callable[[int], None]) -> None:
        self.inner, self.stop, self.before_batch = inner, stop, before_batch
        self.batches = 0

    def generate(self, request: GenerationRequest) -> Batch:
        if self.stop():
            raise RunStopped
        self.before_batch(self.batches)
        batch = self.inner.generate(request)
        self.batches += 1
        return batch

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def __getattr__(self, name: str) -> Any:
        # What the objective reads of its generator (the device, the toy's own CLIP and tagger).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _again(store: RunStore, generator: Generator, budget: int) -> str:
    """How to sweep the run later: the command line rebuilds the toy model and `pin`'s servers
    (cli.rebuild_generator), not a WebUI's own process."""
    if generator.describe().get("backend") in ("toy", "remote"):
        return f"sweep it with: python -m lib_pinning sweep \"{store.root}\" --budget {budget}"
    return "run the generation again to sweep it"


def _skip(budget: int, why: str) -> SweepOutcome:
    log.warning("no sensitivity sweep: %s", why)
    return SweepOutcome(SKIPPED, budget, 0, f"No sensitivity sweep: {why}.")


def sweep_after_search(
    store: RunStore, generator: Generator, budget: int, *, status: str, best: IndividualRecord | None,
    stop: Callable[[], bool], before_batch: Callable[[int], None] = lambda done: None,
) -> SweepOutcome | None:
    """Sweep `budget` batches around the run's best (None when the option is off); see the module
    docstring. `before_batch(done)` is called before each batch with the batches done so far."""
    from lib_pinning.analysis.sweep import DEFAULT_STEP, FORMAT, sweep  # it imports lib_pinning.run

    if budget <= 0:
        return None
    if status != "finished":
        return _skip(budget, f"the search ended {status}")
    if best is None or best.status != "ok" or best.excluded:
        return _skip(budget, "the run has no clean, non-failed best to sweep around")
    # Refreshed first: a resumed run's best may have moved since an earlier influence.json.
    data = influence.write_influence(store)
    if data.get("center") is None:
        # The sweep goes around influence.json's centre: the best usable evaluation, which a run
        # whose every batch failed or was excluded does not have.
        notes = "; ".join(str(n) for n in data.get("notes") or []) or "no usable evaluation"
        return _skip(budget, f"influence.json has no centre to sweep around ({notes}): give the search more "
                             "generations or a larger Lambda")
    old = data.get("sweep")
    if isinstance(old, dict) and old.get("format") == FORMAT and old.get("budget") == budget \
            and old.get("step") == DEFAULT_STEP:
        # write_influence kept it, so it was made around this very best: the batches are spent already.
        return SweepOutcome(DONE, budget, 0, f"Sensitivity sweep of this best kept from an earlier session "
                                             f"({old.get('batches')} batches).")
    wrapped = _SweepGenerator(generator, stop, before_batch)
    log.info("sensitivity sweep: %d batches around the best (generation %d, #%d)", budget, best.generation, best.index)
    try:
        with first_ctrl_c_cancels() as ctrl_c:
            wrapped.stop = lambda: stop() or ctrl_c.is_set()
            sweep(store, wrapped, budget)
    except (RunStopped, KeyboardInterrupt):
        log.warning("the sensitivity sweep was interrupted after %d of %d batches: dropped; the search's result "
                    "is kept", wrapped.batches, budget)
        return SweepOutcome(INTERRUPTED, budget, wrapped.batches,
                            f"Sensitivity sweep interrupted after {wrapped.batches} of {budget} batches: dropped "
                            f"(the search's result is complete); {_again(store, generator, budget)}.")
    except Exception as e:  # the backend failed, or the folder cannot be written: the search stays done
        log.exception("the sensitivity sweep failed after %d batches; the search's result is kept", wrapped.batches)
        return SweepOutcome(FAILED, budget, wrapped.batches,
                            f"Sensitivity sweep failed after {wrapped.batches} of {budget} batches "
                            f"({type(e).__name__}: {e}); the search's result is complete.")
    return SweepOutcome(DONE, budget, wrapped.batches, f"Sensitivity sweep: {wrapped.batches} batches.")


def summary_lines(data: dict[str, Any], count: int = 3) -> list[str]:
    """The tightest and loosest units: from the sweep when influence.json has one with units (a
    measurement at the best), else the run's surrogate (influence.summary_lines)."""
    swept = data.get("sweep")
    units = [u for u in (swept.get("units") or []) if u.get("slope") is not None] if isinstance(swept, dict) else []
    if not units:
        return influence.summary_lines(data, count)
    step = float(swept.get("step") or 0.0)

    def describe(unit: dict[str, Any]) -> str:
        where = " (negative)" if unit.get("side") == "negative" else ""
        sure = "" if unit.get("class") in (influence.TIGHTENING, influence.LOOSENING) else f", {unit.get('class')}"
        return f"{unit['text']!r}{where} ({unit['slope'] * step:+.3g} loss at weight +{step:g}{sure})"

    tight = sorted((u for u in units if u["slope"] < 0), key=lambda u: u["slope"])[:count]
    loose = sorted((u for u in units if u["slope"] > 0), key=lambda u: -u["slope"])[:count]
    classes = [u.get("class") for u in swept.get("units") or []]
    tally = ", ".join(f"{classes.count(c)} {c}" for c in influence.CLASSES if classes.count(c))
    unmeasured = sum(bool(u.get("unmeasured")) for u in swept.get("units") or [])
    if unmeasured:  # listed as "cannot tell": the budget did not reach them (lib_pinning.analysis.sweep)
        tally += f" ({unmeasured} not measured: the budget ran out)"
    return [
        f"tightest units (sensitivity sweep, {swept.get('batches')} batches): "
        + (", ".join(describe(u) for u in tight) or "none") + f"  [{tally}]",
        "loosest units:  " + (", ".join(describe(u) for u in loose) or "none"),
    ]
