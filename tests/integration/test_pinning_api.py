"""Pinning runs through the real WebUI's /sdapi/v1/txt2img, their run folders and the extension's routes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration import checks
from tests.integration.harness import Response, Server
from tests.test_webui_api import doc_examples

SHRINK = {"width": 64, "height": 64, "steps": 4, "batch_size": 2}
"""The README examples at the tiny checkpoints' size (their options kept, their length cut)."""


def assert_pinning_answer(answer: Response, batch: int) -> list[str]:
    answer.ok()
    texts = checks.info(answer)["infotexts"]
    assert len(checks.images(answer)) == len(texts) == 2 * batch
    kinds = [checks.infotext_fields(t).get("Pin image") for t in texts]
    assert kinds == ["best"] * batch + ["baseline"] * batch
    return texts


def test_the_readme_object_form_request_runs_a_pinning(webui_server: Server) -> None:
    request = {**doc_examples()["object"], **SHRINK}
    request["script_args"] = [{**request["script_args"][0], **checks.PIN}]
    answer = webui_server.post("/sdapi/v1/txt2img", webui_server.generation(request))
    assert_pinning_answer(answer, 2)
    run = checks.pin_run(webui_server, answer)
    assert run["status"] == "finished"
    assert run["options"]["granularity"] == "phrase" and run["options"]["generations"] == 2
    assert run["evaluations"] == 1 + 2 * 2


def test_a_positional_request_from_script_info_runs_a_pinning(webui_server: Server) -> None:
    args = checks.script_info(webui_server)["args"]
    values: list[Any] = [a["value"] for a in args]
    by_label = {a["label"]: i for i, a in enumerate(args)}
    for label, value in (("Generations", "2"), ("Lambda", "2"), ("Stop when settled", False),
                         ("Weight units", "phrase")):
        assert label in by_label, f"script-info has no argument labelled {label!r}: {list(by_label)}"
        values[by_label[label]] = value
    answer = webui_server.txt2img(**checks.TINY, script_name=checks.SCRIPT, script_args=values)
    assert_pinning_answer(answer, checks.TINY["batch_size"])
    run = checks.pin_run(webui_server, answer)
    assert run["options"]["generations"] == 2 and run["options"]["cma_lambda"] == 2
    assert run["options"]["granularity"] == "phrase"


def test_a_run_folder_has_its_report_plots_and_gifs(webui_server: Server) -> None:
    answer = checks.pin(webui_server)
    assert_pinning_answer(answer, 2)
    run = checks.pin_run(webui_server, answer)
    folder = Path(run["run_dir"])
    stored = json.loads((folder / "run.json").read_text())
    assert stored["status"] == "finished" and stored["generations_done"] == 2
    # The answer tells the prompt a person copies: the generated one without the schedule guard.
    assert stored["best"]["shown_prompt"] == checks.info(answer)["prompt"]
    assert not any(text.startswith("\\\n") for text in checks.info(answer)["infotexts"])
    html = (folder / "index.html").read_text()
    assert stored["best"]["prompt"].split(",")[0].split(":")[0].strip("( ") in html
    assert list(folder.glob("*.png")), "no plot in the run folder"
    gifs = list(folder.glob("*.gif")) + list(folder.glob("gen-*/ind-*/*.gif"))
    assert gifs and all(g.read_bytes()[:6] in (b"GIF87a", b"GIF89a") for g in gifs)
    for referenced in re.findall(r'(?:src|href)="([^"#?:]+\.(?:png|gif|css|js))"', html):
        assert (folder / referenced).is_file(), f"index.html refers to the missing file {referenced}"


def test_the_extension_routes_list_and_serve_runs(webui_server: Server) -> None:
    answer = checks.pin(webui_server)
    run = checks.pin_run(webui_server, answer)
    listing = webui_server.get("/prompt-pinning/v1/runs").ok().json["runs"]
    assert run["run_id"] in [r["run_id"] for r in listing]
    assert listing == sorted(listing, key=lambda r: (r.get("created") or "", r["run_id"]), reverse=True)
    report = webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/index.html").ok()
    assert "<html" in report.text.lower()
    assert webui_server.get(f"/{run['report_url'].lstrip('/')}").ok().text == report.text
    stored = webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/run.json").ok().json
    assert stored["run_id"] == run["run_id"]
    assert webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}?tab=img2img").status == 404
    assert webui_server.get("/prompt-pinning/v1/runs/99999-no-such-run").status == 404
    assert webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/..%2F..%2Fconfig.json").status in (400, 404)
    assert webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/.run.json.tmp").status == 400


def test_a_long_prompt_with_a_one_word_negative_prompt(webui_server: Server) -> None:
    """More than 75 tokens: the cond has two chunks (154 tokens), the uncond one (77)."""
    phrases = [f"a {colour} {shape} on a {ground} background with soft light"
               for colour in ("red", "blue", "green") for shape in ("circle", "square", "star")
               for ground in ("white",)]
    prompt = ", ".join(phrases)
    assert len(prompt.split()) > 75
    plain = webui_server.txt2img(**{**checks.TINY, "prompt": prompt, "negative_prompt": "blurry",
                                    "sampler_name": "DPM++ 2M - Hyperbatch"}).ok()
    assert checks.distinct(checks.images(plain))
    answer = checks.pin(webui_server, prompt=prompt, negative_prompt="blurry", options={"granularity": "phrase"})
    assert_pinning_answer(answer, 2)
    run = checks.pin_run(webui_server, answer)
    assert run["status"] == "finished"
    assert run["baseline"]["prompt"] == prompt


def progress(server: Server) -> dict[str, Any]:
    return server.get("/sdapi/v1/progress?skip_current_image=true", timeout=30).ok().json


def test_interrupt_mid_run_leaves_a_report_and_a_result(webui_server: Server) -> None:
    answers: list[Response] = []
    worker = threading.Thread(target=lambda: answers.append(checks.pin(
        webui_server, options={"generations": 40, "cma_lambda": 2, "stop_early": False})))
    worker.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.is_alive():
        state = progress(webui_server)
        if "generation 2/40" in (state.get("textinfo") or ""):  # textinfo outlives a job: match this run
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the run never reached generation 2 (answer: {answers and answers[0].text[:500]})")
    webui_server.post("/sdapi/v1/interrupt").ok()
    worker.join(timeout=300)
    assert not worker.is_alive(), "the run did not stop after /sdapi/v1/interrupt"
    assert_pinning_answer(answers[0], 2)
    run = checks.pin_run(webui_server, answers[0])
    assert run["status"] == "interrupted", run["status"]
    assert 1 <= run["generations_done"] < 40
    assert run["report_exists"]
    report = webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/index.html").ok().text
    assert run["run_id"] in report or run["best"]["prompt"].split(",")[0][:8] in report
    after = webui_server.txt2img(**checks.TINY).ok()  # the WebUI's state is clean for the next job
    assert len(checks.images(after)) == checks.TINY["batch_size"]


@pytest.mark.parametrize(("options", "named"), [
    ({"initial_std": 5.0}, "initial_std"),
    ({"generations": 0}, "generations"),
    ({"granularity": "letters"}, "granularity"),
    ({"no_such_option": 1}, "no_such_option"),
])
def test_a_bad_option_is_a_4xx_naming_it(webui_server: Server, options: dict[str, Any], named: str) -> None:
    answer = checks.pin(webui_server, options=options)
    assert 400 <= answer.status < 500, f"HTTP {answer.status}: {answer.text[:500]}"
    assert named in answer.json["detail"], answer.json


@pytest.mark.parametrize("prompt", ["", "[a:b:2] BREAK <lora:missing:1>"])
def test_an_unusable_prompt_is_a_4xx_naming_the_prompt(webui_server: Server, prompt: str) -> None:
    answer = checks.pin(webui_server, prompt=prompt)
    assert 400 <= answer.status < 500, f"HTTP {answer.status}: {answer.text[:500]}"
    assert "prompt" in answer.json["detail"].lower(), answer.json


def test_a_bad_positional_argument_is_a_4xx_naming_it(webui_server: Server) -> None:
    args = checks.script_info(webui_server)["args"]
    values: list[Any] = [a["value"] for a in args]
    values[[a["label"] for a in args].index("Generations")] = "lots"
    answer = webui_server.txt2img(**checks.TINY, script_name=checks.SCRIPT, script_args=values)
    assert 400 <= answer.status < 500, f"HTTP {answer.status}: {answer.text[:500]}"
    assert "generations" in answer.json["detail"], answer.json


def _target(tmp_path: Path, size: int) -> str:
    from PIL import Image

    path = tmp_path / f"target-{size}.png"
    Image.new("RGB", (size, size), (200, 40, 40)).save(path)
    return str(path)


def test_a_target_of_the_wrong_size_is_refused_before_any_batch(webui_server: Server, tmp_path: Path) -> None:
    """The hires fix makes 96 px images from 64 px: a 64 px target is refused before the baseline
    (no run folder, nothing generated), a 96 px one pins."""
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.5,
             "hr_upscaler": "Latent"}
    if "forge" in webui_server.target.features:
        # Forge's API leaves hr_additional_modules None, which its hires pass cannot read
        # (modules/processing.py: `'Use same choices' not in self.hr_additional_modules`).
        hires["hr_additional_modules"] = ["Use same choices"]
    runs_before = webui_server.get("/prompt-pinning/v1/runs").ok().json
    answer = checks.pin(webui_server, options={"target_images": [_target(tmp_path, 64)]}, **hires)
    assert 400 <= answer.status < 500, f"HTTP {answer.status}: {answer.text[:500]}"
    detail = answer.json["detail"]
    assert "target" in detail.lower() and "96" in detail and "64" in detail, detail
    assert webui_server.get("/prompt-pinning/v1/runs").ok().json == runs_before, "no run folder is left behind"
    answer = checks.pin(webui_server, options={"target_images": [_target(tmp_path, 96)], "generations": 1}, **hires)
    answer.ok()
    assert checks.pin_run(webui_server, answer)["status"] == "finished"
    assert {image.shape for image in checks.images(answer)} == {(96, 96, 3)}
