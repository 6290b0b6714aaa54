"""Pinning on several remote servers: wall time of one fixed run on 1, 2 and 4 fake WebUI servers
of a fixed per-batch latency, and the per-batch overhead of the remote path over a local backend.

The servers are lib_pinning.remote.fake.FakeWebUI on 127.0.0.1: each answers one batch at a time
(as a WebUI does) after `--latency` seconds, with the toy model's images computed once beforehand,
so the latency stands in for the GPU and the scaling measured is the pool's. The run is the whole
pinning loop (baseline, CMA-ES, scoring, the run folder), so its serial parts count against the
speed-up as they would in use. Overhead: a zero-latency server with cached images against the
batch handed over locally: HTTP, JSON, base64 PNG both ways and the pool's thread hand-off.

    python benchmarks/bench_remote.py            # measures and writes its section of docs/benchmarks.md
    python benchmarks/bench_remote.py --no-write
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DOC, git_commit, load_average, machine_line, write_section  # noqa: E402
from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.remote import RemoteGenerator, RemoteSettings, ServerConfig  # noqa: E402
from lib_pinning.remote.fake import FakeWebUI, Faults, ToyImages  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402

TOY = ToySettings(steps=6)
SETTINGS = RemoteSettings(width=64, height=64, steps=6)
PROMPT = "a red circle, a blue square, green background"
SEEDS = derive_seeds(7, 4)
SERVERS = (1, 2, 4)
TARGET = 3.5  # the speed-up at 4 servers


def options(generations: int, lambda_: int) -> PinningOptions:
    return PinningOptions(generations=generations, cma_lambda=lambda_, granularity="phrase", cli_log=False,
                          stop_early=False)


class Recording:
    """A pass-through generator that keeps the requests a run makes, to warm the fakes' caches."""

    def __init__(self) -> None:
        self.inner = ToyGenerator(TOY)
        self.requests: list[GenerationRequest] = []
        self.steps, self.image_size = self.inner.steps, self.inner.image_size

    def generate(self, request: GenerationRequest):
        self.requests.append(request)
        return self.inner.generate(request)

    def describe(self):
        return self.inner.describe()

    def __getattr__(self, name):  # what the objectives ask the generator (its device, model...)
        return getattr(self.inner, name)


def pin(generator, runs: Path, generations: int, lambda_: int):
    result = PinningRun.start(generator=generator, prompt=PROMPT, negative_prompt="", seeds=SEEDS,
                              options=options(generations, lambda_), runs_dir=runs).execute()
    assert result.status == "finished", result
    return result


def remote_run(images: ToyImages, servers: int, latency: float, runs: Path, generations: int, lambda_: int):
    fakes = [FakeWebUI(images, Faults(latency=latency)).start() for _ in range(servers)]
    try:
        generator = RemoteGenerator([ServerConfig(f.url, timeout=60) for f in fakes], SETTINGS)
        generator.check()
        started = time.perf_counter()
        result = pin(generator, runs, generations, lambda_)
        seconds = time.perf_counter() - started
        shares = [len(f.calls.generations) for f in fakes]
        generator.close()
    finally:
        for fake in fakes:
            fake.stop()
    return seconds, result, shares


def pool_only(images: ToyImages, servers: int, latency: float, calls: list[list[GenerationRequest]]) -> float:
    """Seconds for the run's requests, one generate_many call per generation, with no scoring."""
    fakes = [FakeWebUI(images, Faults(latency=latency)).start() for _ in range(servers)]
    try:
        generator = RemoteGenerator([ServerConfig(f.url, timeout=60) for f in fakes], SETTINGS)
        generator.check()
        started = time.perf_counter()
        for requests in calls:
            assert all(r is not None and not isinstance(r, BaseException) for r in generator.generate_many(requests))
        seconds = time.perf_counter() - started
        generator.close()
    finally:
        for fake in fakes:
            fake.stop()
    return seconds


def overhead(images: ToyImages, repeats: int) -> dict[str, float]:
    """Median ms per batch: the local toy generator, and remote minus a zero-cost local hand-over."""
    local = ToyGenerator(TOY)
    request = GenerationRequest(PROMPT, "", SEEDS)
    images.png_base64(request.prompt, request.negative_prompt, request.seeds)

    def timed(call) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    toy_ms = timed(lambda: local.generate(request))
    with FakeWebUI(images) as fake:
        generator = RemoteGenerator([ServerConfig(fake.url, timeout=60)], SETTINGS)
        generator.check()
        generator.generate(request)  # connect once, as in a run
        remote_ms = timed(lambda: generator.generate_many([request]))
        generator.close()
    return {"toy": toy_ms, "remote": remote_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per batch on every fake server")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--lambda", dest="lambda_", type=int, default=16, help="individuals per generation")
    parser.add_argument("--repeats", type=int, default=30, help="batches timed for the overhead")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    load_before = load_average()

    images = ToyImages(TOY)
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as folder:
        runs = Path(folder)
        recording = Recording()
        started = time.perf_counter()
        reference = pin(recording, runs / "local", args.generations, args.lambda_)
        local_seconds = time.perf_counter() - started
        for request in recording.requests:  # the fakes' images, made once: the latency is the servers' cost
            images.png_base64(request.prompt, request.negative_prompt, request.seeds)
        rows = []
        for servers in SERVERS:
            seconds, result, shares = remote_run(images, servers, args.latency, runs / f"remote-{servers}",
                                                 args.generations, args.lambda_)
            same = result.best.loss == reference.best.loss and result.batches == reference.batches
            rows.append((servers, seconds, shares, same))
            print(f"{servers} server(s): {seconds:.2f} s, batches per server {shares}, same result as local: {same}")
        # The same requests as the run's calls: the baseline alone, then one call per generation.
        requests = recording.requests
        calls = [requests[:1]] + [requests[i:i + args.lambda_] for i in range(1, len(requests), args.lambda_)]
        pool_rows = [(servers, pool_only(images, servers, args.latency, calls)) for servers in SERVERS]
        for servers, seconds in pool_rows:
            print(f"pool alone, {servers} server(s): {seconds:.2f} s")
    cost = overhead(images, args.repeats)
    print(f"local toy batch {cost['toy']:.1f} ms; remote batch (zero-latency server) {cost['remote']:.1f} ms")
    batches = reference.batches
    single = rows[0][1]
    table = "\n".join(
        f"| {servers} | {seconds:.2f} | {single / seconds:.2f}x | {', '.join(map(str, shares))} | {'yes' if same else 'NO'} |"
        for servers, seconds, shares, same in rows
    )
    four = single / rows[-1][1]
    pool_single = pool_rows[0][1]
    pool_table = " | ".join(f"{servers}: {seconds:.2f} s ({pool_single / seconds:.2f}x)" for servers, seconds in pool_rows)
    # Rounds of one batch per server: what 4 servers would take with nothing but the latency.
    ideal = sum(len(c) for c in calls) / sum(-(-len(c) // SERVERS[-1]) for c in calls)
    body = f"""
Machine: {machine_line("httpx")}.
Command: `{("python benchmarks/bench_remote.py " + " ".join(sys.argv[1:])).strip()}` (commit {git_commit()}).
1-minute load average {load_before:.1f} before and {load_average():.1f} after.

One pinning run (toy model, {TOY.steps} steps, {len(SEEDS)} images of 64x64 per batch, {args.generations}
generations of {args.lambda_}, {batches} batches with the baseline, every stopping rule but the budget off),
on fake WebUI servers (lib_pinning.remote.fake) that answer one batch at a time after {args.latency} s,
their images made beforehand. The same run on the local toy backend takes {local_seconds:.2f} s (its
model's time, without the latency).

| servers | wall s | speed-up | batches per server | best loss and batches as local |
|---|---|---|---|---|
{table}

Speed-up of the whole run at 4 servers: {four:.2f}x (target {TARGET}x: {"met" if four >= TARGET else "NOT met"}).
The baseline batch comes before the search and runs on one server, which bounds it at {ideal:.2f}x with
nothing else serial. The run loop scores each batch as it arrives (lib_pinning.prefetch), so what
is left between generations is serial: scoring the generation's last batch, the CMA-ES update, the
checkpoint and the report refresh, on this machine's shared cores.

The pool alone (the run's requests in the same {len(calls)} generate_many calls, no scoring): {pool_table}.

Per-batch overhead of the remote path: {cost["remote"]:.1f} ms (median of {args.repeats}) for a batch from a
zero-latency server with cached images, i.e. HTTP on 127.0.0.1, JSON, base64 PNG decoding
and the pool's hand-off, against about 0 ms for a batch already in memory; the local toy backend
takes {cost["toy"]:.1f} ms to make the same batch. Images of 512x512 carry 64 times the pixels of
these, so their PNG coding costs more (not measured here).
"""
    if args.no_write:
        print(body)
    else:
        write_section(DOC, "## Remote servers (bench_remote.py)", body=body)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
