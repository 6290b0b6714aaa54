"""lib_pinning.remote against fake WebUI servers on 127.0.0.1: the payload and seeds, the start
checks, proposal order under random latency, fail-over, throughput, cancel forwarding."""

from __future__ import annotations

import json
import random
import shutil
import ssl
import subprocess
import threading
import time
from typing import Any

import pytest
import torch

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.remote import (
    BatchStopped, RemoteGenerator, RemoteSettings, ServerCheckFailed, ServerConfig, ServerUnavailable, WebUIClient,
)
from lib_pinning.remote.fake import FakeWebUI, Faults, ToyImages
from lib_pinning.remote.payload import MalformedResponse, build_payload, parse_response, seed_runs
from lib_pinning.evaluation import RunStopped, quantize
from lib_pinning.interrupts import RunStop
from lib_pinning.prefetch import CallCancelled, Prefetch, prefetch_one

TOY = ToySettings(steps=6)
SETTINGS = RemoteSettings(width=64, height=64, steps=6)
SEEDS = (11, 12, 13, 14)


@pytest.fixture(scope="module")
def images() -> ToyImages:
    return ToyImages(TOY)


@pytest.fixture(scope="module")
def local() -> ToyGenerator:
    return ToyGenerator(TOY)


def requests(n: int, seeds: tuple[int, ...] = SEEDS) -> list[GenerationRequest]:
    return [GenerationRequest(f"({'red' if i % 2 else 'blue'}:1.{i}) circle", "blurry", seeds) for i in range(n)]


def pool(*fakes: FakeWebUI, **kwargs) -> RemoteGenerator:
    auth = kwargs.pop("auth", None)
    kwargs.setdefault("retry_after", 0.05)
    return RemoteGenerator([ServerConfig(f.url, auth=auth, timeout=10) for f in fakes], SETTINGS, **kwargs)


def assert_equal_to_local(results, reqs, local: ToyGenerator) -> None:
    assert len(results) == len(reqs)
    for result, request in zip(results, reqs):
        assert not isinstance(result, BaseException) and result is not None, result
        assert result.seeds == request.seeds
        assert torch.equal(result.images, quantize(local.generate(request).images))


# payload ------------------------------------------------------------------------------------------


def test_seed_runs_split_non_consecutive_seeds():
    assert seed_runs([5, 6, 7]) == [(5, 3)]
    assert seed_runs([5, 6, 9, 10, 4]) == [(5, 2), (9, 2), (4, 1)]


def test_payload_carries_the_settings_and_makes_seed_i_image_i():
    settings = RemoteSettings(sampler_name="DPM++ 2M", scheduler="Karras", steps=30, cfg_scale=5.0,
                              override_settings='{"CLIP_stop_at_last_layers": 2}')
    payload = build_payload(settings, "a cat", "blurry", 100, 4)
    assert payload["seed"] == 100 and payload["batch_size"] == 4 and payload["n_iter"] == 1
    assert payload["subseed_strength"] == 0  # the WebUI then gives image i the seed 100 + i
    assert (payload["sampler_name"], payload["scheduler"], payload["steps"], payload["cfg_scale"]) == ("DPM++ 2M", "Karras", 30, 5.0)
    assert payload["override_settings"] == {"CLIP_stop_at_last_layers": 2}
    assert "scheduler" not in build_payload(RemoteSettings(), "a", "", 1, 1)  # Automatic: the WebUI's choice


def test_hires_fix_travels_in_the_payload_and_sets_the_answers_size():
    settings = RemoteSettings(width=512, height=768, enable_hr=True, hr_scale=1.5, hr_upscaler="R-ESRGAN 4x+",
                              hr_second_pass_steps=10, denoising_strength=0.4)
    payload = build_payload(settings, "a cat", "", 1, 2)
    assert (payload["enable_hr"], payload["hr_scale"], payload["hr_upscaler"], payload["hr_second_pass_steps"],
            payload["denoising_strength"]) == (True, 1.5, "R-ESRGAN 4x+", 10, 0.4)
    assert "hr_prompt" not in payload  # the second pass gets the pinned prompt itself
    assert settings.output_size() == (1152, 768)
    assert "enable_hr" not in build_payload(RemoteSettings(), "a", "", 1, 1)


def test_bad_override_settings_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="override_settings"):
        RemoteSettings(override_settings="{not json")


def test_a_response_with_other_seeds_is_refused(images):
    with FakeWebUI(images) as fake:
        body = fake.generate(build_payload(SETTINGS, "red circle", "", 7, 2))
    parse_response(body, 7, 2, images.size)
    with pytest.raises(MalformedResponse, match="seeds"):
        parse_response(body, 8, 2, images.size)
    with pytest.raises(MalformedResponse, match="info"):
        parse_response({**body, "info": "{oops"}, 7, 2, images.size)


# start checks -------------------------------------------------------------------------------------


def test_servers_with_the_same_checkpoint_pass_the_check(images):
    with FakeWebUI(images) as a, FakeWebUI(images) as b:
        found = pool(a, b).check()
    assert {v["hash"] for v in found.values()} == {"0a1b2c3d4e"}


def test_checkpoint_mismatch_is_refused_with_both_named(images):
    with FakeWebUI(images) as a, FakeWebUI(images, Faults(checkpoint="other.safetensors [ffffffffff]")) as b:
        with pytest.raises(ServerCheckFailed, match="different checkpoints") as info:
            pool(a, b).check()
    assert "other.safetensors" in str(info.value) and "toy-v1.safetensors" in str(info.value)


def test_unknown_sampler_and_missing_schedule_types_are_refused(images):
    with FakeWebUI(images, Faults(schedulers=None)) as a:
        generator = RemoteGenerator([ServerConfig(a.url)], RemoteSettings(width=64, height=64, sampler_name="Nope", scheduler="Karras"))
        with pytest.raises(ServerCheckFailed) as info:
            generator.check()
    assert "no sampler 'Nope'" in str(info.value) and "before 1.9" in str(info.value)


def test_auth_failure_is_refused_and_the_right_credentials_work(images, local):
    with FakeWebUI(images, Faults(auth=("pin", "secret"))) as a:
        with pytest.raises(ServerCheckFailed, match="--api-auth"):
            pool(a).check()
        with pytest.raises(ServerCheckFailed, match="--api-auth"):
            pool(a, auth=("pin", "wrong")).check()
        generator = pool(a, auth=("pin", "secret"))
        generator.check()
        assert_equal_to_local(generator.generate_many(requests(2)), requests(2), local)


def test_tls_servers_are_verified_unless_told_not_to(images, local, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeWebUI(images, tls=context) as a:
        assert a.url.startswith("https://")
        with pytest.raises(ServerCheckFailed, match="ConnectError.*(?i:certificate)"):
            RemoteGenerator([ServerConfig(a.url, timeout=10)], SETTINGS).check()
        generator = RemoteGenerator([ServerConfig(a.url, verify=False, timeout=10)], SETTINGS)  # --insecure
        assert_equal_to_local(generator.generate_many(requests(2)), requests(2), local)


def test_an_unreachable_server_is_refused(images):
    dead = FakeWebUI(images)
    dead.stop()
    with FakeWebUI(images) as a:
        with pytest.raises(ServerCheckFailed, match="ConnectError"):
            pool(a, dead).check()


# evaluation -----------------------------------------------------------------------------------------


def test_results_keep_proposal_order_under_random_latency(images, local):
    rng = random.Random(3)
    lock = threading.Lock()

    def latency() -> float:
        with lock:
            return rng.uniform(0.0, 0.05)

    reqs = requests(8)
    with FakeWebUI(images, Faults(latency=latency)) as a, FakeWebUI(images, Faults(latency=latency)) as b, \
            FakeWebUI(images, Faults(latency=latency)) as c:
        generator = pool(a, b, c)
        results = generator.generate_many(reqs)
        assert_equal_to_local(results, reqs, local)
        assert len(a.calls.generations) + len(b.calls.generations) + len(c.calls.generations) >= len(reqs)


@pytest.mark.parametrize("slots", [1, 2])
def test_no_server_has_more_batches_in_flight_than_its_slots(images, local, slots):
    reqs = requests(6)
    with FakeWebUI(images, Faults(latency=0.1)) as a, FakeWebUI(images, Faults(latency=0.1)) as b:
        assert_equal_to_local(pool(a, b, slots=slots).generate_many(reqs), reqs, local)
    assert a.max_in_flight == b.max_in_flight == slots


def test_non_consecutive_seeds_get_their_own_images(images, local):
    reqs = requests(2, seeds=(3, 4, 10, 2))
    with FakeWebUI(images) as a:
        assert_equal_to_local(pool(a).generate_many(reqs), reqs, local)
        assert [(p["seed"], p["batch_size"]) for p in a.calls.generations[:3]] == [(3, 2), (10, 1), (2, 1)]


def test_an_http_500_answer_is_retried_and_its_batch_goes_to_another_server(images, local):
    reqs = requests(3)
    with FakeWebUI(images, Faults(http_500=1)) as a:
        assert_equal_to_local(pool(a).generate_many(reqs), reqs, local)
        assert a.faults.http_500 == 0  # the 500 was answered, then its batch came again
    with FakeWebUI(images, Faults(http_500=2)) as a, FakeWebUI(images) as b:
        assert_equal_to_local(pool(a, b).generate_many(reqs), reqs, local)
        assert a.faults.http_500 < 2  # it answered 500 (once or twice, as its pauses fell) and b covered


def test_a_malformed_json_answer_is_retried_and_its_batch_goes_to_another_server(images, local):
    reqs = requests(3)
    with FakeWebUI(images, Faults(malformed=1)) as a:
        assert_equal_to_local(pool(a).generate_many(reqs), reqs, local)
        assert a.faults.malformed == 0
    with FakeWebUI(images, Faults(malformed=2)) as a, FakeWebUI(images) as b:
        assert_equal_to_local(pool(a, b).generate_many(reqs), reqs, local)
        assert a.faults.malformed < 2


def test_a_server_whose_credentials_stop_working_mid_run_hands_its_batches_on(images, local):
    reqs = requests(4)
    with FakeWebUI(images, Faults(auth=("pin", "secret"))) as a, FakeWebUI(images, Faults(auth=("pin", "secret"))) as b:
        generator = pool(a, b, auth=("pin", "secret"))
        generator.check()
        b.faults.auth = ("pin", "changed")  # its --api-auth changed after the start check
        assert_equal_to_local(generator.generate_many(reqs), reqs, local)
    assert len(a.calls.generations) == len(reqs) and b.calls.generations == []


def test_a_server_that_drops_mid_call_loses_nothing_and_is_retried_later(images, local):
    reqs = requests(6)
    for r in reqs:  # the toy's images once, so the latency is what the servers differ by
        images.png_base64(r.prompt, r.negative_prompt, r.seeds)
    with FakeWebUI(images, Faults(latency=0.02)) as a, FakeWebUI(images, Faults(latency=0.02, drop_after=1)) as b:
        generator = pool(a, b)
        assert_equal_to_local(generator.generate_many(reqs), reqs, local)
        assert b.faults.drop
        b.faults.drop = False  # back up: after its pause (a few tenths of a second here) it is probed and takes batches again
        a.faults.latency = 0.2  # so the next call outlasts that pause
        before = len(b.calls.generations)
        more = requests(6, seeds=(1, 2, 3, 4))
        assert_equal_to_local(generator.generate_many(more), more, local)
        assert len(b.calls.generations) > before


def test_a_request_fails_when_no_server_is_reachable(images):
    with FakeWebUI(images) as a:
        generator = pool(a, give_up_after=0.2)
        generator.check()
    results = generator.generate_many(requests(2))
    assert all(isinstance(r, ServerUnavailable) for r in results)
    with pytest.raises(ServerUnavailable):
        generator.generate(requests(1)[0])


def test_the_faster_server_takes_more_batches_and_covers_the_slow_ones_tail(images, local):
    reqs = requests(8)
    for r in reqs:
        images.png_base64(r.prompt, r.negative_prompt, r.seeds)
    with FakeWebUI(images, Faults(latency=0.005)) as fast, FakeWebUI(images, Faults(latency=1.0)) as slow:
        generator = pool(fast, slow)
        assert_equal_to_local(generator.generate_many(reqs), reqs, local)
        assert len(fast.calls.generations) > len(slow.calls.generations)
        throughput = generator.throughput()
        assert throughput[fast.url] < throughput[slow.url]
        # Now both are measured: the batch the slow server takes is duplicated on the fast one.
        fast.calls.generations.clear()
        started = time.monotonic()
        assert_equal_to_local(generator.generate_many(reqs[:3]), reqs[:3], local)
        assert time.monotonic() - started < 0.5  # not held up by the slow server's losing copy (1 s)
        assert {p["prompt"] for p in fast.calls.generations} == {r.prompt for r in reqs[:3]}


def test_cancel_forwards_interrupt_to_every_server(images):
    reqs = requests(4)
    with FakeWebUI(images, Faults(latency=5.0)) as a, FakeWebUI(images, Faults(latency=5.0)) as b:
        generator = pool(a, b)
        generator.check()
        started = threading.Event()
        threading.Timer(0.3, started.set).start()
        results = generator.generate_many(reqs, cancel=started.is_set)
        assert results == [None] * 4
        assert a.calls.interrupts == 1 and b.calls.interrupts == 1


class StoppedOnce:
    """A member whose first batch the user stops (as the local WebUI's Interrupt does to its own:
    lib_pinning.webui.servers.LocalMember); otherwise the fake server behind it."""

    def __init__(self, fake: FakeWebUI, after: Any = None) -> None:
        self.client = WebUIClient(ServerConfig(fake.url, timeout=10))
        self.stopped: list[GenerationRequest] = []
        self.after = after  # the stop waits for this to turn true (at most 5 s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def generate_batch(self, settings: RemoteSettings, request: GenerationRequest, images: Any = None) -> Any:
        if not self.stopped:
            deadline = time.monotonic() + 5
            while self.after is not None and not self.after() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.stopped.append(request)
            raise BatchStopped(self.client.name, "interrupted")
        return self.client.generate_batch(settings, request, images)


def test_a_batch_a_member_stopped_cancels_the_call_and_is_not_retried(images):
    """BatchStopped is the user's stop, not a failure: the call ends as cancelled (the others are
    interrupted), the batch goes to no other server and the member stays in the pool."""
    with FakeWebUI(images) as a, FakeWebUI(images, Faults(latency=5.0)) as b:
        member = StoppedOnce(a)
        generator = RemoteGenerator([], SETTINGS, clients=[member, WebUIClient(ServerConfig(b.url, timeout=10))],
                                    retry_after=30.0)
        generator.check()
        started = time.monotonic()
        assert generator.generate_many(requests(2)) == [None, None]
        assert time.monotonic() - started < 3.0
        assert b.calls.interrupts == 1
        (stopped,) = member.stopped
        deadline = time.monotonic() + 5
        while b.in_flight and time.monotonic() < deadline:  # its interrupted request ends
            time.sleep(0.01)
        assert stopped.prompt not in [p["prompt"] for p in b.calls.generations]
        b.faults.latency = 0.5
        results = generator.generate_many(requests(4))
        assert all(r is not None and not isinstance(r, BaseException) for r in results)
        assert a.calls.generations  # not marked down (it would pause for 30 s)


def test_drain_lets_the_batches_in_flight_finish_and_starts_no_other(images, local):
    """The WebUI's "Stop generating" with servers: the batches being made are kept, those not
    started come back as None, and no server is interrupted (it would cut a kept batch short)."""
    reqs = requests(6)
    with FakeWebUI(images, Faults(latency=0.6)) as a, FakeWebUI(images, Faults(latency=0.6)) as b:
        generator = pool(a, b)
        generator.check()
        pressed = threading.Event()

        def stop_generating() -> bool:  # pressed while each server makes its first batch
            if a.in_flight and b.in_flight:
                pressed.set()
            return pressed.is_set()

        results = generator.generate_many(reqs, drain=stop_generating)
        assert a.calls.interrupts == 0 and b.calls.interrupts == 0
    assert_equal_to_local(results[:2], reqs[:2], local)
    assert results[2:] == [None] * 4
    assert len(a.calls.generations) + len(b.calls.generations) == 2


def test_a_member_stopped_while_draining_drops_only_its_batch(images, local):
    """While draining, a member's BatchStopped is "Stop generating" reaching a batch it had not
    started (the local WebUI's process_images makes nothing then): the server's batch in flight
    still finishes, nothing is interrupted and the member stays in the pool."""
    with FakeWebUI(images, Faults(latency=0.1)) as a, FakeWebUI(images, Faults(latency=1.0)) as b:
        member = StoppedOnce(a, after=lambda: b.in_flight > 0)
        slow = WebUIClient(ServerConfig(b.url, timeout=10))
        generator = RemoteGenerator([], SETTINGS, clients=[slow, member], retry_after=30.0)
        generator.check()
        reqs = requests(3)
        # Stop generating is pressed as the member starts (once the server makes its batch): the
        # member's batch is the one it stops.
        results = generator.generate_many(reqs, drain=lambda: bool(member.stopped))
        assert b.calls.interrupts == 0
    (stopped,) = member.stopped
    made = [i for i, r in enumerate(results) if r is not None]
    assert len(made) == 1 and reqs[made[0]] != stopped and made[0] < 2  # the slow server's, finished
    assert_equal_to_local([results[made[0]]], [reqs[made[0]]], local)
    assert results[2] is None


def test_a_prefetch_drains_on_a_stop_that_is_not_a_cut(images, local):
    """The run's RunStop reaches a pool as drain (every stop) and cancel (the cut); a plain stop,
    or a generator without drain, gets every stop as its cancel. `holds` names the batches the
    run may still take after a stop that is not a cut: those asked for and not taken yet."""
    reqs = requests(2)
    with FakeWebUI(images, Faults(latency=0.1)) as a:
        generator = pool(a)
        generator.check()
        drained = Prefetch(generator.generate_many, reqs[:1], RunStop(lambda: False, lambda: False))
        assert drained.drains and drained.holds(reqs[0]) and not drained.holds(reqs[1])
        assert_equal_to_local([drained.take(reqs[0])], reqs[:1], local)
        assert not drained.holds(reqs[0])
        drained.close()
        plain = Prefetch(generator.generate_many, reqs[:1], lambda: False)
        assert not plain.drains
        plain.close()

    def many_without_drain(requests, cancel):
        return [local.generate(r) for r in requests]

    assert not Prefetch(many_without_drain, reqs[:1], RunStop(lambda: False, lambda: False)).drains


def test_the_constructors_cancel_reaches_a_single_batch_in_flight(images):
    """`generate` (the baseline, when no one passes a cancel) is cut short too: the WebUI's Interrupt."""
    with FakeWebUI(images, Faults(latency=5.0)) as a:
        generator = pool(a, cancel=lambda: a.in_flight > 0)
        generator.check()
        started = time.monotonic()
        with pytest.raises(RunStopped):
            generator.generate(requests(1)[0])
        assert time.monotonic() - started < 3.0
        assert a.calls.interrupts == 1


def test_a_baseline_made_through_prefetch_one_is_cancelled_in_flight(images):
    """What the run's baseline gets, made with prefetch_one (Evaluator.produce_baseline): its stop
    (the first Ctrl-C) reaches the request in flight instead of waiting for the whole batch."""
    with FakeWebUI(images, Faults(latency=5.0)) as a:
        generator = pool(a)
        generator.check()
        request = requests(1)[0]
        prefetched = prefetch_one(generator, request, stop=lambda: a.in_flight > 0)
        assert prefetched is not None
        started = time.monotonic()
        with pytest.raises(CallCancelled):
            prefetched.take(request)
        prefetched.close()
        assert time.monotonic() - started < 3.0
        assert a.calls.interrupts == 1


def test_prefetch_one_leaves_other_generators_and_a_stopped_run_alone(local):
    request = requests(1)[0]
    assert prefetch_one(local, request, stop=lambda: False) is None  # no generate_many: it asks generate()
    unused = RemoteGenerator([ServerConfig("http://127.0.0.1:9")], SETTINGS)
    assert prefetch_one(unused, request, stop=lambda: True) is None  # stopped already: nothing is asked


def test_describe_names_servers_and_checkpoint_not_credentials(images):
    with FakeWebUI(images) as a:
        generator = pool(a, auth=("pin", "secret"))
        generator.check()
        described = json.dumps(generator.describe())
    assert a.url in described and "0a1b2c3d4e" in described and "secret" not in described


def test_ctrl_c_while_waiting_interrupts_every_server_and_goes_on_up(images):
    with FakeWebUI(images, Faults(latency=5.0)) as a, FakeWebUI(images, Faults(latency=5.0)) as b:
        generator = pool(a, b)
        generator.check()

        def ctrl_c() -> bool:
            if a.in_flight and b.in_flight:
                raise KeyboardInterrupt
            return False

        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            generator.generate_many(requests(4), cancel=ctrl_c)
        assert time.monotonic() - started < 3.0
        assert a.calls.interrupts == 1 and b.calls.interrupts == 1
