"""`pin` and `resume` against fake WebUI servers on 127.0.0.1, and the run loop over remote servers:
--dry-run, one server or two give the same records, a remote run resumes (on moved servers too,
never on another checkpoint), a cancel mid-generation reaches every server as /interrupt, and Stop
generating keeps every batch the servers made."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from lib_pinning.cli import main
from lib_pinning.generator import ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.remote import RemoteGenerator, RemoteSettings, ServerConfig
from lib_pinning.remote.fake import FakeWebUI, Faults, ToyImages
from lib_pinning.report import Reporter, rebuild
from lib_pinning.run import PinningRun, RunEndedEarly, derive_seeds
from lib_pinning.store import RunStore

PROMPT = ["--prompt", "red circle, blue square", "--negative-prompt", "", "--seed", "1", "--batch-size", "3"]
TINY = ["--generations", "2", "--cma-lambda", "3", "--granularity", "phrase", "--width", "64", "--height", "64",
        "--steps", "6", "--retry-after", "0.05", "--timeout", "10"]
SETTINGS = RemoteSettings(width=64, height=64, steps=6)
OPTIONS = PinningOptions(generations=2, cma_lambda=3, granularity="phrase", cli_log=False)  # as TINY


@pytest.fixture(scope="module")
def images() -> ToyImages:
    return ToyImages(ToySettings(steps=6))


def records(run_dir: Path) -> list[tuple]:
    """What a run found, individual by individual (timings aside, which differ run to run)."""
    store = RunStore.open(run_dir)
    out = []
    for r in store.iter_individuals():
        pixels = store.load_batch_images(r).numpy().tobytes() if r.status == "ok" else b""
        out.append((r.generation, r.index, r.prompt, r.negative_prompt, r.status, r.loss, tuple(r.seeds), pixels))
    return out


def run_dir_of(out: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith("run directory:"))
    return Path(line.split(":", 1)[1].strip())


def start(tmp_path: Path, *fakes: FakeWebUI) -> PinningRun:
    generator = RemoteGenerator([ServerConfig(f.url, timeout=10) for f in fakes], SETTINGS, retry_after=0.05)
    generator.check()
    return PinningRun.start(generator=generator, prompt="red circle, blue square", negative_prompt="",
                            seeds=derive_seeds(1, 3), options=OPTIONS, runs_dir=tmp_path)


def test_dry_run_checks_the_servers_prints_the_plan_and_generates_nothing(tmp_path, images, capsys):
    with FakeWebUI(images) as a, FakeWebUI(images) as b:
        code = main(["pin", "--server", a.url, "--server", b.url, "--runs-dir", str(tmp_path), "--dry-run",
                     *PROMPT, *TINY])
        assert code == 0
        assert a.calls.generations == [] and b.calls.generations == []
    out = capsys.readouterr().out
    assert f"{a.url}: toy-v1.safetensors [0a1b2c3d4e]" in out and f"{b.url}: " in out
    assert "2 generations of 3" in out and "seeds:         1, 2, 3" in out
    payload = json.loads(out.split("first request: POST /sdapi/v1/txt2img ", 1)[1].splitlines()[0])
    assert (payload["seed"], payload["batch_size"], payload["width"], payload["steps"]) == (1, 3, 64, 6)
    assert not any(tmp_path.iterdir())  # no run folder


def test_dry_run_refuses_servers_with_other_checkpoints(tmp_path, images, capsys):
    with FakeWebUI(images) as a, FakeWebUI(images, Faults(checkpoint="other.safetensors [ffffffffff]")) as b:
        with pytest.raises(SystemExit) as exit_info:
            main(["pin", "--server", a.url, "--server", b.url, "--runs-dir", str(tmp_path), "--dry-run", *PROMPT, *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "different checkpoints" in err and "other.safetensors" in err
    assert not any(tmp_path.iterdir())


def test_two_servers_with_random_latency_give_the_records_of_one(tmp_path, images, capsys):
    with FakeWebUI(images) as a:
        one = start(tmp_path / "one", a).execute().run_dir
    rng, lock = random.Random(5), threading.Lock()

    def latency() -> float:
        with lock:
            return rng.uniform(0.0, 0.04)

    with FakeWebUI(images, Faults(latency=latency)) as a, FakeWebUI(images, Faults(latency=latency)) as b:
        assert main(["pin", "--server", a.url, "--server", b.url, "--runs-dir", str(tmp_path / "two"),
                     *PROMPT, *TINY]) == 0
        assert a.calls.generations and b.calls.generations  # both took part
    two = run_dir_of(capsys.readouterr().out)
    assert len(records(one)) == 7 and records(two) == records(one)
    described = RunStore.open(two).read_run()["generator"]
    assert described["backend"] == "remote" and described["servers"] == [a.url, b.url]


def test_a_run_with_failing_servers_gives_the_records_of_one_without(tmp_path, images):
    with FakeWebUI(images) as a:
        clean = start(tmp_path / "clean", a).execute()
    with FakeWebUI(images, Faults(http_500=1, malformed=1)) as a, FakeWebUI(images, Faults(drop_after=2)) as b:
        faulty = start(tmp_path / "faulty", a, b).execute()
        assert a.faults.http_500 == a.faults.malformed == 0 and b.faults.drop  # every fault happened
    assert faulty.status == "finished" and records(faulty.run_dir) == records(clean.run_dir)


def test_a_remote_run_resumes_on_moved_servers_with_the_records_of_an_uninterrupted_run(tmp_path, images, capsys):
    with FakeWebUI(images) as a:
        straight = start(tmp_path / "straight", a).execute()
        assert straight.status == "finished"
        stopped = start(tmp_path / "stopped", a).execute(cancel=lambda: len(a.calls.generations) >= 9)
    assert stopped.status == "interrupted"
    with FakeWebUI(images) as moved, FakeWebUI(images) as other:  # a is gone: its address is refused now
        assert main(["resume", str(stopped.run_dir), "--server", moved.url, "--server", other.url]) == 0
        assert moved.calls.generations
    assert "status:        finished" in capsys.readouterr().out
    assert records(stopped.run_dir) == records(straight.run_dir)
    assert RunStore.open(stopped.run_dir).read_run()["generator"]["servers"] == [moved.url, other.url]


def test_resume_refuses_servers_with_another_checkpoint_than_the_runs(tmp_path, images, capsys):
    with FakeWebUI(images) as a:
        stopped = start(tmp_path, a).execute(cancel=lambda: len(a.calls.generations) >= 2)
    assert stopped.status == "interrupted"
    with FakeWebUI(images, Faults(checkpoint="other.safetensors [ffffffffff]")) as other:
        with pytest.raises(SystemExit) as exit_info:
            main(["resume", str(stopped.run_dir), "--server", other.url])
        assert other.calls.generations == []
    assert exit_info.value.code == 2
    assert "the run was made with checkpoint toy-v1.safetensors" in capsys.readouterr().err
    assert RunStore.open(stopped.run_dir).read_run()["status"] == "interrupted"


def test_a_cancel_mid_generation_interrupts_every_server_and_the_run_stays_valid(tmp_path, images):
    with FakeWebUI(images) as a, FakeWebUI(images) as b:
        run = start(tmp_path, a, b)

        def after_the_baseline(event) -> None:  # from generation 1 on, each batch takes 5 s unless interrupted
            if event.kind == "individual" and event.generation == 0:
                a.faults.latency = b.faults.latency = 5.0

        cancelled = threading.Event()

        def both_busy() -> bool:  # a cancel stays given, as the WebUI's Interrupt and Ctrl-C do
            if a.in_flight > 0 and b.in_flight > 0:
                cancelled.set()
            return cancelled.is_set()

        started = time.monotonic()
        result = run.execute(cancel=both_busy, on_event=after_the_baseline)
        assert time.monotonic() - started < 3.0  # the 5 s batches were cut short
        assert result.status == "interrupted" and result.stop_reason
        assert a.calls.interrupts == 1 and b.calls.interrupts == 1
        info = RunStore.open(result.run_dir).read_run()
        assert info["status"] == "interrupted"
        assert rebuild(result.run_dir).is_file()  # the run folder makes a report as it stands
        assert [r[:2] for r in records(result.run_dir)] == [(0, 0)]  # nothing half-made was recorded
        a.faults.latency = b.faults.latency = 0.0
        resumed = PinningRun.resume(result.run_dir, run.generator).execute()
    assert resumed.status == "finished" and len(records(result.run_dir)) == 7


def test_stop_generating_after_a_failed_batch_keeps_the_batch_a_server_finished(tmp_path, images):
    """Stop generating (a stop that is not a cut) pressed once a server's batch failed and went back
    in the queue while the other server makes a later one: the queued batch is not made, the later
    one is finished and kept, with a record of its own, and a resume makes only what is missing."""
    with FakeWebUI(images) as a, FakeWebUI(images) as b:
        run = start(tmp_path, a, b)
        before: dict[FakeWebUI, int] = {}  # batches each server made until the baseline

        def after_the_baseline(event) -> None:  # generation 1: a fails its next batch, b takes 1 s
            if event.kind == "individual" and event.generation == 0:
                before.update({fake: len(fake.calls.generations) for fake in (a, b)})
                a.faults.http_500, b.faults.latency = 1, 1.0

        pressed = threading.Event()

        def stop_generating() -> bool:  # pressed once a's batch failed while b makes its own
            if a.faults.http_500 == 0 and b.in_flight > 0:
                pressed.set()
            return pressed.is_set()

        result = run.execute(cancel=stop_generating, cut=lambda: False, on_event=after_the_baseline)
        assert result.status == "interrupted"
        assert a.calls.interrupts == 0 and b.calls.interrupts == 0  # nothing in flight was cut short
        made = sorted(call["prompt"] for fake in (a, b) for call in fake.calls.generations[before[fake]:])
        kept = sorted(r[2] for r in records(result.run_dir) if r[0] == 1)
        assert 1 <= len(made) < OPTIONS.cma_lambda and kept == made  # every batch made is kept, and no other
        a.faults.latency = b.faults.latency = 0.0
        resumed = PinningRun.resume(result.run_dir, run.generator).execute()
    assert resumed.status == "finished" and len(records(result.run_dir)) == 7


def test_a_cancel_during_the_baseline_reaches_the_request_in_flight(tmp_path, images):
    with FakeWebUI(images, Faults(latency=5.0)) as a:
        run = start(tmp_path, a)
        started = time.monotonic()
        with pytest.raises(RunEndedEarly) as ended:  # stopped before the baseline existed
            run.execute(cancel=lambda: a.in_flight > 0)
        assert time.monotonic() - started < 3.0  # not the 5 s batch
        assert a.calls.interrupts == 1
    assert ended.value.status == "interrupted"


def test_resume_of_a_toy_run_refuses_server_flags(tmp_path, capsys):
    from lib_pinning.generator import ToyGenerator

    checks = iter(range(100))
    stopped = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt="red circle, blue square",
                               negative_prompt="", seeds=derive_seeds(1, 3), options=OPTIONS,
                               runs_dir=tmp_path).execute(cancel=lambda: next(checks) >= 3)
    assert stopped.status == "interrupted"
    with pytest.raises(SystemExit) as exit_info:
        main(["resume", str(stopped.run_dir), "--server", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2 and "runs made with `pin`" in capsys.readouterr().err


def test_dry_run_from_a_run_prints_the_old_runs_prompt_and_seeds_at_the_cluster(tmp_path, images, capsys, monkeypatch):
    """`pin --dry-run --from-run` shows what the run would start from (region.start_run): the old
    run's prompts rendered at the cluster's centre and its seeds, not --prompt / --seed."""
    import numpy as np

    from lib_pinning.analysis import region, weight_map
    from lib_pinning.generator import ToyGenerator

    # A fixed clustering: HDBSCAN may find no cluster in a few toy points.
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: (np.arange(len(vectors)) % 2).astype(int))
    old = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt="a green triangle, soft light",
                           negative_prompt="blurry", seeds=derive_seeds(7, 2), runs_dir=tmp_path,
                           options=PinningOptions(generations=4, cma_lambda=4, cli_log=False, stop_early=False))
    root = old.execute(reporter=Reporter(budget=None)).run_dir
    start = region.region_start(root, 1)
    capsys.readouterr()
    with FakeWebUI(images) as a:
        assert main(["pin", "--server", a.url, "--runs-dir", str(tmp_path), "--dry-run", "--from-run", root.name,
                     "--from-cluster", "1", *PROMPT, *TINY]) == 0
        assert a.calls.generations == []
    out = capsys.readouterr().out
    payload = json.loads(out.split("first request: POST /sdapi/v1/txt2img ", 1)[1].splitlines()[0])
    assert (payload["prompt"], payload["negative_prompt"]) == (start.prompt, start.negative_prompt)
    assert (payload["seed"], payload["batch_size"]) == (start.seeds[0], 2)
    assert f"seeds:         {start.seeds[0]}, {start.seeds[1]}\n" in out
    assert f"start:         cluster 1 of {root} (initial std {start.initial_std:g})" in out
    assert sorted(tmp_path.iterdir()) == [root]  # nothing started
