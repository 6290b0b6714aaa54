"""Faults lose nothing: a full disk, a scoring bug, deleted or broken files, and the guards that
the failure counter and the size-limit penalty keep working."""

from __future__ import annotations

import errno
import shutil

import pytest

from lib_pinning import store as store_module
from lib_pinning.evaluation import Evaluator
from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator
from lib_pinning.run import PinningRun, RunEndedEarly
from lib_pinning.store import RunDirectoryError, RunStore
from lib_pinning.tally import RunTally
from tests.test_run import FAST, comparable, records, start


class FailsOn(ToyGenerator):
    """Raises a simulated out-of-memory error on the given (1-based) calls."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__(FAST)
        self.failing, self.calls = failing, 0

    def generate(self, request: GenerationRequest) -> Batch:
        self.calls += 1
        if self.calls in self.failing:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().generate(request)


def test_the_failure_counter_counts_consecutive_failures_only(tmp_path):
    # Two failures, a success, two failures: never three in a row, so the run finishes.
    result = start(tmp_path, generator=FailsOn({2, 3, 5, 6})).execute()
    assert result.status == "finished", result.error
    assert sum(r["status"] == "failed" for r in records(result.run_dir)) == 4


def test_a_scoring_bug_stops_the_run_with_its_traceback(tmp_path, monkeypatch, caplog):
    run = start(tmp_path)
    calls = {"n": 0}
    original = Evaluator.score

    def buggy(self, record, batch, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ZeroDivisionError("a bug in our scoring")
        return original(self, record, batch, x)

    monkeypatch.setattr(Evaluator, "score", buggy)
    with caplog.at_level("ERROR", logger="lib_pinning"):
        result = run.execute()
    assert result.status == "failed" and "ZeroDivisionError" in result.error
    assert all(r["status"] == "ok" for r in records(result.run_dir)), "a bug is not a failed individual"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records), "traceback shown"


def _disk_full_after(monkeypatch, pngs: int) -> None:
    """The store's PNG writes fail with ENOSPC after `pngs` of them."""
    original = store_module.save_png
    count = {"n": 0}

    def save_png(path, image):
        count["n"] += 1
        if count["n"] > pngs:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, image)

    monkeypatch.setattr(store_module, "save_png", save_png)


def test_a_full_disk_stops_the_run_records_no_failure_and_resume_redoes_it(tmp_path, monkeypatch, caplog):
    straight = start(tmp_path / "a").execute()
    # Baseline (4 images + 4 targets) and one individual are written, then the disk is full.
    _disk_full_after(monkeypatch, 12)
    with caplog.at_level("ERROR"):
        result = start(tmp_path / "b").execute()
    assert result.status == "failed" and "No space left" in result.error
    assert "cannot be written" in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "one clear line, no traceback"
    recs = records(result.run_dir)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), "no fake failed individuals"
    assert RunStore.open(result.run_dir).read_run()["status"] == "failed"
    assert not list(result.run_dir.rglob(".*.png")) and not list(result.run_dir.rglob("*.tmp"))

    monkeypatch.undo()
    resumed = PinningRun.resume(result.run_dir, ToyGenerator(FAST)).execute()
    assert resumed.status == "finished"
    assert [comparable(r) for r in records(straight.run_dir)] == [comparable(r) for r in records(result.run_dir)]


def test_a_full_disk_while_finishing_is_one_log_line(tmp_path, monkeypatch, caplog):
    run = start(tmp_path)
    original = RunStore.write_run

    def write_run(self, data):
        if data.get("status") != "running":
            raise store_module.StoreError(errno.ENOSPC, "cannot write run.json: No space left on device")
        original(self, data)

    monkeypatch.setattr(RunStore, "write_run", write_run)
    result = run.execute()
    assert result.status == "finished"
    assert "could not record the run's end" in caplog.text


def test_resume_regenerates_a_deleted_generation_and_broken_records(tmp_path):
    straight = start(tmp_path / "a").execute()
    damaged = start(tmp_path / "b").execute()
    shutil.rmtree(damaged.run_dir / "gen-002")
    (damaged.run_dir / "gen-003/ind-001/batch_stats.json").write_text("{not json")
    (damaged.run_dir / "gen-001/ind-000/batch_stats.json").write_text("[]")
    shutil.rmtree(damaged.run_dir / "targets")
    stale = damaged.run_dir / "gen-001/ind-002/.00-11.png.k3j2l1.png"
    stale.write_bytes(b"half a png")
    resumed = PinningRun.resume(damaged.run_dir, ToyGenerator(FAST)).execute()
    assert resumed.status == "finished" and resumed.evaluations == straight.evaluations == 13
    assert [comparable(r) for r in records(straight.run_dir)] == [comparable(r) for r in records(damaged.run_dir)]
    assert (damaged.run_dir / "targets/target-00.png").is_file()
    assert not stale.exists()


def _generations(run_dir):
    return [{k: v for k, v in g.to_json().items() if k != "seconds"} for g in RunStore.open(run_dir).iter_generations()]


@pytest.mark.parametrize("damage", [
    ("checkpoint.json", "[]"), ("checkpoint.json", "{}"), ("checkpoint.json", '{"optimizer": {}}'),
    ("checkpoint.json", '{"optimizer": {"generation": 2, "rng'), ("gen-001/generation.json", "[]"),
    ("gen-002/generation.json", None),
])
def test_resume_replays_past_a_damaged_checkpoint_or_generation_summary(tmp_path, damage, caplog):
    straight = start(tmp_path / "a").execute()
    first = start(tmp_path / "b", generations=2).execute()
    name, content = damage
    path = first.run_dir / name
    path.unlink() if content is None else path.write_text(content)
    with caplog.at_level("WARNING", logger="lib_pinning.resume"):
        resumed = PinningRun.resume(first.run_dir, ToyGenerator(FAST), {"generations": 3}).execute()
    assert "replaying the search" in caplog.text
    assert resumed.status == "finished" and resumed.batches == straight.batches
    assert [comparable(r) for r in records(straight.run_dir)] == [comparable(r) for r in records(first.run_dir)]
    assert _generations(straight.run_dir) == _generations(first.run_dir)


@pytest.mark.parametrize("content", ["[]", "{}", '{"options": 3}', "not json"])
def test_resume_of_a_malformed_run_json_is_a_run_directory_error(tmp_path, content):
    result = start(tmp_path).execute()
    (result.run_dir / "run.json").write_text(content)
    with pytest.raises(RunDirectoryError, match="restore it from a copy of the run folder, or start a new run"):
        PinningRun.resume(result.run_dir, ToyGenerator(FAST))


def test_a_run_ended_before_its_baseline_says_so(tmp_path):
    run = start(tmp_path)
    with pytest.raises(RunEndedEarly) as raised:
        run.execute(cancel=lambda: True)
    assert raised.value.status == "interrupted"
    assert RunStore.open(run.store.root).read_run()["status"] == "interrupted"


def test_the_size_limit_penalty_counts_when_choosing_the_best(tmp_path):
    result = start(tmp_path, size_limit=0.05, initial_std=0.5, size_limit_weight=10.0).execute()
    recs = list(RunStore.open(result.run_dir).iter_individuals())
    projected = [r for r in recs if r.x != r.x_evaluated]
    assert projected and all(r.penalty > 0 for r in projected)
    for r in recs:
        assert r.fitness[0] == pytest.approx(r.loss + r.penalty + r.guard_penalty)
        assert r.total == pytest.approx(r.loss + r.penalty + r.guard_penalty)
    best = min(recs, key=lambda r: (r.total, r.generation, r.index))
    assert result.best.key == best.key


def test_account_prefers_a_worse_loss_within_the_limit():
    from tests.test_run import _record

    tally = RunTally()
    tally.account(_record(0, 0, 0.9, [[], []]))
    beyond = _record(1, 0, 0.1, [[], []])
    beyond.penalty = 5.0  # far outside the size limit
    tally.account(beyond)
    within = _record(1, 1, 0.5, [[], []])
    tally.account(within)
    assert tally.best is within


def test_a_stop_seen_by_the_generator_is_a_stop_not_a_failure(tmp_path):
    from lib_pinning.evaluation import RunStopped

    class StopsOnThird(ToyGenerator):
        calls = 0

        def generate(self, request: GenerationRequest) -> Batch:
            StopsOnThird.calls += 1
            if StopsOnThird.calls == 3:
                raise RunStopped("interrupted in the WebUI")
            return super().generate(request)

    result = start(tmp_path, generator=StopsOnThird(FAST)).execute()
    assert result.status == "interrupted"
    assert all(r["status"] == "ok" for r in records(result.run_dir)) and len(records(result.run_dir)) == 2


def test_running_out_of_gpu_memory_while_scoring_is_a_failed_individual(tmp_path, monkeypatch):
    import torch

    run = start(tmp_path)
    calls = {"n": 0}
    original = Evaluator.score

    def scarce(self, record, batch, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated, in CLIP)")
        return original(self, record, batch, x)

    monkeypatch.setattr(Evaluator, "score", scarce)
    result = run.execute()
    assert result.status == "finished"
    (failed,) = [r for r in records(result.run_dir) if r["status"] == "failed"]
    assert "CUDA out of memory (simulated, in CLIP)" in failed["error"]
