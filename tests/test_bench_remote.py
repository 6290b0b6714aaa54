"""Smoke test of benchmarks/bench_remote.py, so the benchmark cannot silently rot: its measuring
functions on a tiny run, and what they rest on (every server count gives the local run's result,
the batches are spread over the servers)."""

from __future__ import annotations

from benchmarks import bench_remote as bench
from lib_pinning.remote.fake import ToyImages


def test_a_tiny_run_on_two_servers_equals_the_local_one_and_uses_both(tmp_path):
    images = ToyImages(bench.TOY)
    recording = bench.Recording()
    reference = bench.pin(recording, tmp_path / "local", 1, 4)
    for request in recording.requests:
        images.png_base64(request.prompt, request.negative_prompt, request.seeds)
    seconds, result, shares = bench.remote_run(images, 2, 0.02, tmp_path / "remote", 1, 4)
    assert result.best.loss == reference.best.loss and result.batches == reference.batches == 5
    assert sum(shares) == 5 and min(shares) >= 1 and seconds > 0
    calls = [recording.requests[:1], recording.requests[1:]]
    assert bench.pool_only(images, 2, 0.0, calls) > 0
    cost = bench.overhead(images, 3)
    assert cost["remote"] > 0 and cost["toy"] > 0
