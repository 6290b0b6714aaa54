"""The API side: the request examples of README.md run through the WebUI's script-argument path
(the stand-in has no modules.api, so `txt2img_api` below does what modules/api/api.py:L315-L361 and
L432-L490 do in v1.10.1), and the extension's /prompt-pinning/v1 routes: the handlers directly,
and over HTTP with FastAPI's TestClient where FastAPI is installed (the gradio environment)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lib_pinning.options import PinningOptions
from lib_pinning.store import RunStore
from lib_pinning.webui import TITLE, api, settings, ui
from lib_pinning.webui import script as glue
from tests.test_webui_script import RecordingReporter

DOC = Path(__file__).resolve().parent.parent / "README.md"
HAS_FASTAPI = importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("httpx") is not None
needs_fastapi = pytest.mark.skipif(
    not HAS_FASTAPI, reason="FastAPI/httpx are not installed here: the HTTP tests run in the gradio environment "
    "(make test-gradio); the handlers are tested directly in every environment")


def doc_examples() -> dict[str, dict[str, Any]]:
    """The JSON request bodies marked `<!-- api-example: NAME -->` in README.md."""
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- api-example: (\w+) -->\s*```json\n(.*?)```", text, re.S)
    return {name: json.loads(body) for name, body in found}


def default_script_args(webui: Any, runner: Any) -> list[Any]:
    """api.py:L315-L333: None everywhere, 0 first, then each script's UI defaults (its components'
    values, built in a gr.Blocks; without gradio, the values the components start with)."""
    last = max([1] + [s.args_to for s in runner.scripts if s.args_to is not None])
    args: list[Any] = [None] * last
    args[0] = 0
    script = runner.script(TITLE)
    if importlib.util.find_spec("gradio") is not None:
        import gradio as gr

        with gr.Blocks():
            values = [c.value for c in script.ui(script.is_img2img)]
    else:
        values = [ui.ui_value(s, s.default) for s in PinningOptions.specs()]
    args[script.args_from:script.args_to] = values
    return args


def txt2img_api(webui: Any, request: dict[str, Any]) -> dict[str, Any]:
    """What POST /sdapi/v1/txt2img does with script_name/script_args (api.py:L335-L361, L432-L490)."""
    scripts = webui.module("scripts")
    if not webui.script_modules:
        webui.load_scripts()
    runner = scripts.scripts_txt2img
    for s in runner.scripts:  # what ScriptRunner.setup_ui leaves behind: our slice after the dropdown
        s.args_from, s.args_to = (1, 1 + len(PinningOptions.specs())) if s.title() == TITLE else (None, None)
    titles = [s.title().lower() for s in runner.selectable_scripts]
    index = titles.index(request["script_name"].lower())
    selected = runner.selectable_scripts[index]
    script_args = default_script_args(webui, runner)
    script_args[selected.args_from:selected.args_to] = request["script_args"]
    script_args[0] = index + 1
    fields = {k: v for k, v in request.items() if k not in ("script_name", "script_args", "save_images", "send_images")}
    fields.update(width=64, height=64, steps=4)  # the toy model's size; few steps keep the test fast
    if webui.version >= (1, 9, 0):
        fields.setdefault("scheduler", "Automatic")
    opts = webui.shared.opts
    p = webui.processing.StableDiffusionProcessingTxt2Img(
        do_not_save_samples=not request.get("save_images", False), do_not_save_grid=not request.get("save_images", False),
        outpath_samples=opts.outdir_txt2img_samples, outpath_grids=opts.outdir_txt2img_grids, **fields)
    p.is_api = True
    p.scripts = runner
    state = webui.shared.state
    state.begin(job="scripts_txt2img")
    try:
        p.script_args = script_args
        processed = runner.run(p, *p.script_args)
    finally:
        state.end()
        webui.shared.total_tqdm.clear()
    images = []
    for image in processed.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(base64.b64encode(buffer.getvalue()).decode())
    return {"images": images, "info": processed.js()}


@pytest.fixture
def reporter(monkeypatch: pytest.MonkeyPatch) -> RecordingReporter:
    recording = RecordingReporter()
    monkeypatch.setattr(glue, "_reporter", lambda notes: recording)
    return recording


def test_the_documented_examples_are_valid_for_the_current_options() -> None:
    examples = doc_examples()
    assert set(examples) == {"object", "positional"}
    positional = examples["positional"]["script_args"]
    assert len(positional) == len(PinningOptions.specs()), (
        "README.md's positional example no longer matches the options: one value per option, in specs() order")
    PinningOptions.from_positional(positional)
    glue.parse_args(examples["object"]["script_args"])


@pytest.mark.parametrize("name", ["object", "positional"])
def test_a_documented_request_runs_a_pinning(webui: Any, reporter: RecordingReporter, name: str) -> None:
    request = doc_examples()[name]
    response = txt2img_api(webui, request)
    batch = request["batch_size"]
    assert len(response["images"]) == 2 * batch
    info = json.loads(response["info"])
    assert len(info["infotexts"]) == 2 * batch
    assert all("Pin image: best" in t for t in info["infotexts"][:batch])
    listing = api.list_runs(settings.output_roots(webui.shared.opts))["runs"]
    assert len(listing) == 1 and listing[0]["tab"] == "txt2img" and listing[0]["status"] == "finished"
    run = api.get_run(settings.output_roots(webui.shared.opts), listing[0]["run_id"])
    expected = glue.parse_args(request["script_args"])
    assert run["options"]["generations"] == expected.generations == 8
    assert run["options"]["granularity"] == "phrase"
    assert info["prompt"] == run["best"]["prompt"]


@needs_fastapi
def test_a_bad_request_is_an_http_422_naming_the_option(webui: Any) -> None:
    """The WebUI's API middleware answers an HTTPException with its status and detail and prints
    no traceback; any other exception is a 500 with an empty detail (modules/api/api.py:
    api_middleware.handle_exception, v1.10.1)."""
    from fastapi import HTTPException

    request = dict(doc_examples()["object"], script_args=[{"initial_std": 5}])
    with pytest.raises(HTTPException) as refused:
        txt2img_api(webui, request)
    assert refused.value.status_code == 422
    assert re.search(r"Initial std \(initial_std\): 5.0 is not a number in \[0.001, 2\]", refused.value.detail)
    assert type(refused.value).__name__ == "PinningInputError"
    assert isinstance(refused.value.__cause__, glue.PinningInputError)


# the routes' handlers ---------------------------------------------------------------------------------


def make_run(root: Path, prompt: str = "a cat", status: str = "finished", created: str = "2024-01-01 00:00:00") -> Path:
    store = RunStore.create(root)
    store.write_run({"run_id": store.run_id, "status": status, "created": created, "prompt": prompt,
                     "negative_prompt": "", "generations_done": 2, "evaluations": 9,
                     "best": {"fitness": [0.25], "prompt": f"\\\n({prompt}:1.1)", "shown_prompt": f"({prompt}:1.1)"}})
    (store.root / "index.html").write_text("<html>report</html>")
    (store.root / "gen-000" / "ind-000").mkdir(parents=True)
    (store.root / "gen-000" / "ind-000" / "00-5.png").write_bytes(b"png")
    return store.root


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    return {"txt2img": tmp_path / "txt2img-images" / "prompt_pins", "img2img": tmp_path / "img2img-images" / "prompt_pins"}


def test_runs_are_listed_newest_first_across_tabs(roots: dict[str, Path]) -> None:
    first = make_run(roots["txt2img"], created="2024-01-01 00:00:00")
    second = make_run(roots["img2img"], "a dog", created="2024-02-01 00:00:00")
    (roots["txt2img"] / "not-a-run").mkdir()
    runs = api.list_runs(roots)["runs"]
    assert [(r["run_id"], r["tab"]) for r in runs] == [(second.name, "img2img"), (first.name, "txt2img")]
    # The listing shows the prompt a person copies, without the schedule guard it was generated with.
    assert runs[0]["best_fitness"] == 0.25 and runs[0]["best_prompt"] == "(a dog:1.1)"
    assert runs[1]["report_url"] == f"prompt-pinning/v1/runs/{first.name}/files/index.html?tab=txt2img"
    assert runs[1]["report_exists"] and runs[1]["report_path"] == str((first / "index.html").resolve())


def test_run_folders_follow_the_output_settings_of_the_ui_and_the_api(tmp_path: Path) -> None:
    from types import SimpleNamespace

    opts = SimpleNamespace(outdir_samples=str(tmp_path / "all"), outdir_txt2img_samples=str(tmp_path / "t"),
                           outdir_img2img_samples=str(tmp_path / "i"), prompt_pinning_dir_name="pins")
    assert settings.output_roots(opts) == [
        ("txt2img", tmp_path / "all" / "pins"), ("txt2img", tmp_path / "t" / "pins"),
        ("img2img", tmp_path / "all" / "pins"), ("img2img", tmp_path / "i" / "pins")]
    api_run = make_run(tmp_path / "t" / "pins")  # the API ignores the common folder
    ui_run = make_run(tmp_path / "all" / "pins")
    listed = [(r["tab"], r["run_dir"]) for r in api.list_runs(settings.output_roots(opts))["runs"]]
    assert sorted(listed) == sorted([("txt2img", str(api_run.resolve())), ("txt2img", str(ui_run.resolve()))])
    opts.prompt_pinning_dir_name = str(tmp_path / "elsewhere")
    assert {root for _, root in settings.output_roots(opts)} == {tmp_path / "elsewhere"}


def test_a_shared_output_folder_lists_each_run_once(tmp_path: Path) -> None:
    shared = tmp_path / "outputs" / "prompt_pins"
    make_run(shared)
    assert len(api.list_runs({"txt2img": shared, "img2img": shared})["runs"]) == 1


def test_a_run_summary_is_its_run_json_plus_locations(roots: dict[str, Path]) -> None:
    run = make_run(roots["txt2img"])
    summary = api.get_run(roots, run.name, report_url=lambda p: "file=" + p.as_posix())
    assert summary["evaluations"] == 9 and summary["tab"] == "txt2img"
    assert summary["report_url"] == "file=" + (run / "index.html").as_posix()
    with pytest.raises(api.ApiError) as missing:
        api.get_run(roots, run.name, tab="img2img")
    assert missing.value.status == 404


@pytest.mark.parametrize("run_id", ["..", "../etc", "a/b", ".hidden", "", "x" * 200, "00001-2024 01"])
def test_bad_run_ids_are_refused(roots: dict[str, Path], run_id: str) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.get_run(roots, run_id)
    assert refused.value.status == 400


@pytest.mark.parametrize("path", ["../run.json", "/etc/passwd", "gen-000/../../x", ".checkpoint.tmp", "gen-000/./ind-000",
                                  "a//b", ""])
def test_file_paths_cannot_leave_the_run(roots: dict[str, Path], path: str) -> None:
    run = make_run(roots["txt2img"])
    with pytest.raises(api.ApiError) as refused:
        api.run_file(roots, run.name, path)
    assert refused.value.status == 400


def test_a_symlink_out_of_the_run_is_refused(roots: dict[str, Path], tmp_path: Path) -> None:
    run = make_run(roots["txt2img"])
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (run / "leak.txt").symlink_to(secret)
    with pytest.raises(api.ApiError):
        api.run_file(roots, run.name, "leak.txt")
    assert api.run_file(roots, run.name, "gen-000/ind-000/00-5.png") == (run / "gen-000/ind-000/00-5.png").resolve()
    with pytest.raises(api.ApiError) as missing:
        api.run_file(roots, run.name, "nope.png")
    assert missing.value.status == 404


def test_credentials_parse_like_the_webuis() -> None:
    assert api.parse_credentials(None) is None
    assert api.parse_credentials("a:b,c:d:e") == {"a": "b", "c": "d:e"}


# over HTTP ---------------------------------------------------------------------------------------------


@needs_fastapi
@pytest.mark.parametrize(("flags", "mounted"), [({"api": True}, True), ({"nowebui": True}, True), ({}, False)])
def test_routes_are_added_where_the_webui_has_its_api(webui: Any, flags: dict[str, bool], mounted: bool) -> None:
    from fastapi import FastAPI

    webui.load_scripts()
    for flag, value in flags.items():
        setattr(webui.shared.cmd_opts, flag, value)
    app = FastAPI()
    webui.start(nowebui=bool(flags.get("nowebui")), app=app)
    paths = {getattr(r, "path", "") for r in app.routes}
    assert (f"{api.PREFIX}/runs" in paths) is mounted
    webui.start(app=app)  # app_started again on the same app: no duplicate routes
    assert sum(getattr(r, "path", "") == f"{api.PREFIX}/runs" for r in app.routes) == (1 if mounted else 0)


@needs_fastapi
def test_the_routes_over_http(roots: dict[str, Path]) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    run = make_run(roots["txt2img"])
    app = FastAPI()
    assert api.mount(app, lambda: roots)
    client = TestClient(app)
    listing = client.get("/prompt-pinning/v1/runs").json()
    assert [r["run_id"] for r in listing["runs"]] == [run.name]
    assert client.get(f"/prompt-pinning/v1/runs/{run.name}").json()["prompt"] == "a cat"
    report = client.get(f"/prompt-pinning/v1/runs/{run.name}/files/index.html")
    assert report.status_code == 200 and report.text == "<html>report</html>"
    assert client.get("/prompt-pinning/v1/runs/nope").status_code == 404
    assert client.get("/prompt-pinning/v1/runs/..%2Fetc").status_code in (400, 404)
    assert client.get(f"/prompt-pinning/v1/runs/{run.name}/files/..%2F..%2Fsecret").status_code == 400
    assert client.get(f"/prompt-pinning/v1/runs/{run.name}?tab=sideways").status_code == 400


@needs_fastapi
def test_api_auth_protects_the_routes(roots: dict[str, Path]) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    make_run(roots["txt2img"])
    app = FastAPI()
    api.mount(app, lambda: roots, credentials=api.parse_credentials("user:pass"))
    client = TestClient(app)
    assert client.get("/prompt-pinning/v1/runs").status_code == 401
    assert client.get("/prompt-pinning/v1/runs", auth=("user", "wrong")).status_code == 401
    assert client.get("/prompt-pinning/v1/runs", auth=("user", "pass")).status_code == 200
