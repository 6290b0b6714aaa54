"""The "Prompt pinning" script inside the WebUI stand-in (tests/webui_stub): discovery, settings,
a whole pinning run from `run(p, *args)`, progress counters, Interrupt / Skip / Stop generating,
a failing individual, the result's shape and infotexts, and the UI built with real gradio.

The UI tests need gradio 3.41.2, which cannot share .venv (numpy 2); they run in .venv-gradio
(`make test-gradio`, constraints/gradio341.txt) and are skipped elsewhere with a message. Every
other test here runs in both environments. Most runs use a recording reporter instead of the real
one (drawing the plots costs seconds); one run writes the real report.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lib_pinning.options import PinningOptions
from lib_pinning.store import RunStore
from lib_pinning.webui import TITLE, hints, result, ui
from lib_pinning.webui import script as glue
from lib_pinning.webui.generator import model_tokenizer
from lib_pinning.webui.progress import WebUIProgress

PROMPT = "a red circle, soft light"
SPECS = PinningOptions.specs()
HAS_GRADIO = importlib.util.find_spec("gradio") is not None
needs_gradio = pytest.mark.skipif(
    not HAS_GRADIO,
    reason="gradio is not installed here: the UI tests run in the gradio 3.41.2 environment (make test-gradio)",
)
SMALL_RUN = {"generations": "2", "cma_lambda": "3", "granularity": "phrase"}
"""2 generations of 3 individuals over the prompt's 2 phrases: 7 batches."""


class RecordingReporter:
    """Stands in for lib_pinning.report.Reporter: records the calls, writes a tiny index.html."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def update(self, store: RunStore, final: bool = False) -> None:
        self.calls.append(final)
        (store.root / "index.html").write_text("<html>report</html>")


@pytest.fixture
def reporter(monkeypatch: pytest.MonkeyPatch) -> RecordingReporter:
    recording = RecordingReporter()
    monkeypatch.setattr(glue, "_reporter", lambda notes: recording)
    return recording


def ui_values(**changes: Any) -> list[Any]:
    """The script's arguments as the UI sends them: each component's value, in specs() order."""
    values = {s.key: ui.ui_value(s, s.default) for s in SPECS}
    values.update(changes)
    return [values[s.key] for s in SPECS]


def pinning_script(webui: Any, tab: str = "txt2img") -> tuple[Any, Any]:
    """(runner, script) with the script's argument slice set as the WebUI's setup_ui sets it."""
    if not webui.script_modules:
        webui.load_scripts()
    runner = getattr(webui.module("scripts"), f"scripts_{tab}")
    script = runner.script(TITLE)
    assert script is not None, runner.titles
    script.args_from, script.args_to = 1, 1 + len(SPECS)
    return runner, script


def make_p(webui: Any, **kwargs: Any) -> Any:
    settings = dict(prompt=PROMPT, negative_prompt="", seed=5, batch_size=4, steps=6, sampler_name="Euler a")
    if webui.version >= (1, 9, 0):
        settings["scheduler"] = "Automatic"
    settings.update(kwargs)
    return webui.txt2img(**settings)


def run_script(webui: Any, args: list[Any], p: Any = None, tab: str = "txt2img") -> Any:
    """What modules/txt2img.py:L102-L108 does around a selected script (v1.10.1)."""
    runner, script = pinning_script(webui, tab)
    p = p if p is not None else make_p(webui)
    p.scripts = runner
    full = [runner.selectable_scripts.index(script) + 1, *args]
    p.script_args = full
    state = webui.shared.state
    state.begin(job=tab)
    try:
        return runner.run(p, *full)
    finally:
        state.end()


class BatchWatcher:
    """Calls `on_batch(index)` at the first model call of every sampling pass and `on_step(index, call)`
    at every call (a pass: one process_images batch, or a hires pass; each has its own CFG denoiser)."""

    def __init__(self, webui: Any) -> None:
        self.denoisers: list[Any] = []  # kept alive so no id is reused
        self.calls = 0
        webui.load_scripts()
        webui.module("script_callbacks").on_cfg_denoiser(self._on_denoiser)

    def _on_denoiser(self, params: Any) -> None:
        if not self.denoisers or params.denoiser is not self.denoisers[-1]:
            self.denoisers.append(params.denoiser)
            self.calls = 0
            self.on_batch(len(self.denoisers) - 1)
        self.on_step(len(self.denoisers) - 1, self.calls)
        self.calls += 1

    def on_batch(self, index: int) -> None:
        pass

    def on_step(self, index: int, call: int) -> None:
        pass


def run_dir_of(processed: Any) -> Path:
    line = next(c for c in processed.comments.splitlines() if c.startswith("Run folder: "))
    return Path(line[len("Run folder: "):])


# discovery, settings, callbacks --------------------------------------------------------------------


@pytest.mark.parametrize("webui", ["1.10", "1.8"], indirect=True)
def test_the_script_is_offered_in_both_tabs(webui: Any) -> None:
    webui.load_scripts()
    scripts = webui.module("scripts")
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        assert TITLE in runner.titles
        script = runner.script(TITLE)
        assert script.show(True) is True and script.show(False) is True
        assert script.elem_id("granularity") == f"script_{script.tabname}_prompt_pinning_granularity"


def test_settings_exist_with_the_ui_and_fall_back_with_nowebui(webui: Any) -> None:
    from lib_pinning.webui import settings

    webui.load_scripts()
    webui.start(nowebui=True)
    opts = webui.shared.opts
    assert not hasattr(opts, "prompt_pinning_dir_name")
    assert settings.setting(opts, "prompt_pinning_dir_name") == "prompt_pins"
    webui.start()
    for s in settings.SETTINGS:
        assert getattr(opts, s.key) == s.default
        assert opts.data_labels[s.key].section == settings.SECTION
    assert opts.data_labels["prompt_pinning_default_objective"].component_args["choices"] == list(
        PinningOptions.spec("flip_loss").choices)


def test_reload_ui_leaves_one_set_of_callbacks(webui: Any) -> None:
    webui.load_scripts()
    webui.reload_ui()
    callbacks = webui.module("script_callbacks")
    for category in ("callbacks_ui_settings", "callbacks_app_started"):
        ours = [c for c in callbacks.callback_map[category] if c.callback.__module__ == glue.__name__]
        assert len(ours) == 1, category


def test_preload_adds_the_models_flag_and_the_models_folder_follows_it(webui: Any, tmp_path: Path) -> None:
    from lib_pinning.webui import settings

    loading = webui.module("script_loading")
    cmd = webui.module("shared_cmd_options")
    extensions = tmp_path / "extensions"
    (extensions / "sd-prompt-pinning").mkdir(parents=True)
    (extensions / "sd-prompt-pinning" / "preload.py").write_text((Path(glue.__file__).parents[2] / "preload.py").read_text())
    loading.preload_extensions(str(extensions), cmd.parser)
    parsed = cmd.parser.parse_args(["--prompt-pinning-models-dir", str(tmp_path / "weights")])
    opts = webui.shared.opts
    assert settings.models_dir(opts, parsed, "/webui/models") == str(tmp_path / "weights")
    assert settings.models_dir(opts, cmd.parser.parse_args([]), "/webui/models") == "/webui/models/PromptPinning"


# a whole run -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("webui", ["1.10", "1.8", "1.10-sdxl"], indirect=True)
def test_a_run_reports_progress_and_returns_best_then_baseline(webui: Any, reporter: RecordingReporter) -> None:
    shared = webui.shared
    seen: list[tuple[int, int, Any, str]] = []
    watcher = BatchWatcher(webui)
    watcher.on_batch = lambda index: seen.append(  # type: ignore[method-assign]
        (shared.state.job_no, shared.state.job_count, shared.total_tqdm.total, shared.state.textinfo))
    processed = run_script(webui, ui_values(**SMALL_RUN))

    total = 1 + 2 * 3
    assert [s[0] for s in seen] == list(range(total))  # job_no: one job per individual, in order
    assert {s[1] for s in seen} == {total}  # job_count: every individual of the run
    assert {s[2] for s in seen} == {6 * total}  # the console's total bar: steps x individuals
    assert seen[0][3] == f"Pinning: baseline batch, batch 0/{total}"
    assert seen[1][3].startswith("Pinning: generation 1/2, individual 1/3, best ")
    assert seen[-1][3].startswith("Pinning: generation 2/2, individual 3/3, best ")
    assert "\n" not in "".join(s[3] for s in seen)
    assert shared.state.job_no == total

    store = RunStore.open(run_dir_of(processed))
    info = store.read_run()
    assert info["status"] == "finished" and info["evaluations"] == total
    assert reporter.calls[-1] is True and reporter.calls.count(False) == 2  # each generation, then final
    best = info["best"]
    assert len(processed.images) == 8
    assert processed.prompt == best["prompt"] and processed.all_prompts[0] == best["prompt"]
    assert processed.all_prompts[4:] == [PROMPT] * 4
    assert processed.all_seeds == [5, 6, 7, 8] * 2
    assert [t.count("Pin image: best") for t in processed.infotexts] == [1] * 4 + [0] * 4
    assert all("Pin image: baseline" in t and f"Script: {TITLE}" in t for t in processed.infotexts[4:])
    assert not any("Script:" in t for t in processed.infotexts[:4])
    assert all(f"Pin run: {store.run_id}" in t for t in processed.infotexts)
    assert processed.infotexts[0].startswith(best["prompt"] + "\n")
    assert processed.images[0].info["parameters"] == processed.infotexts[0]
    js = json.loads(processed.js())
    assert js["prompt"] == best["prompt"] and js["infotexts"] == processed.infotexts
    assert "Images 1-4: the best batch" in processed.comments
    # the best batch is the scored one, read back from the run folder
    best_dir = store.root / best["path"]
    assert [Image.open(f).tobytes() for f in sorted(best_dir.glob("*.png"))] == [im.tobytes() for im in processed.images[:4]]
    # the paste button's params.txt now holds the pinned prompt's infotext
    assert (Path(webui.data_dir) / "params.txt").read_text(encoding="utf8") == processed.infotexts[0]
    # nothing was saved where the WebUI saves generations
    outputs = Path(make_p(webui).outpath_samples)
    assert sorted(p.name for p in outputs.iterdir()) == ["prompt_pins"]


def test_the_hires_fix_counts_two_jobs_per_individual(webui: Any, reporter: RecordingReporter) -> None:
    shared = webui.shared
    counts: list[tuple[int, Any]] = []
    watcher = BatchWatcher(webui)
    watcher.on_batch = lambda index: counts.append(  # type: ignore[method-assign]
        (shared.state.job_count, shared.total_tqdm.total))
    p = make_p(webui, enable_hr=True, hr_scale=1.0, hr_second_pass_steps=3, denoising_strength=0.5)
    processed = run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"), p)
    total = 1 + 2
    assert set(counts) == {(2 * total, (6 + 3) * total)}  # not doubled again by each process_images
    assert shared.state.job_no == 2 * total
    assert len(processed.images) == 8


def test_a_hyperbatch_sampler_records_its_split_tree(webui: Any, reporter: RecordingReporter) -> None:
    from pinning_samplers.plan import plan_growth

    webui.load_scripts()
    p = make_p(webui, sampler_name="Euler a - Hyperbatch", steps=8)
    processed = run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"), p)
    records = list(RunStore.open(run_dir_of(processed)).iter_individuals())
    plan = plan_growth(4, 8)
    assert all(r.growth == plan.to_dict() for r in records)
    assert all(r.model_rows == plan.model_rows() < 4 * 8 for r in records)


def test_the_real_report_is_written_and_linked(webui: Any, tmp_path: Path) -> None:
    webui.load_scripts()
    webui.shared.cmd_opts.gradio_allowed_path = [str(webui.data_dir)]
    processed = run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"))
    run_dir = run_dir_of(processed)
    assert (run_dir / "index.html").is_file()
    link = next(c for c in processed.comments.splitlines() if c.startswith(result.REPORT_PREFIX))
    assert link == result.REPORT_PREFIX + "file=" + Path(os.path.abspath(run_dir / "index.html")).as_posix()


def test_a_run_can_start_from_a_previous_runs_cluster(webui: Any, reporter: RecordingReporter,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lib_pinning.analysis import region, weight_map

    first = run_dir_of(run_script(webui, ui_values(**SMALL_RUN)))
    # A map of the first run with two clusters (its 7 points are too few for a real one).
    monkeypatch.setattr(weight_map, "MIN_POINTS", 3)
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: (np.arange(len(vectors)) % 2).astype(int))
    weight_map.write_weight_map(RunStore.open(first))
    start = region.region_start(first, 1)

    # Another prompt and seed in the boxes: the cluster's run decides both, as `resume --from-cluster`.
    p = make_p(webui, prompt="a blue square", seed=50)
    processed = run_script(webui, ui_values(**SMALL_RUN, from_run=first.name[:5], from_cluster=1), p=p)
    second = run_dir_of(processed)
    info = RunStore.open(second).read_run()
    assert second != first and second.parent == first.parent
    assert (info["prompt"], info["negative_prompt"], info["seeds"]) == (start.prompt, start.negative_prompt, start.seeds)
    assert info["options"]["initial_std"] == start.initial_std and info["options"]["centroid_radius"] == 0
    assert processed.all_seeds == start.seeds * 2 and processed.all_prompts[4:] == [start.prompt] * 4
    assert f"Started from cluster 1 of run {first.name}" in processed.comments
    assert all(f"Pin from run: {first.name[:5]}" in t and "Pin from cluster: 1" in t for t in processed.infotexts)


def test_a_run_id_is_found_in_either_tabs_runs_folder_and_refused_when_ambiguous(
        webui: Any, reporter: RecordingReporter, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lib_pinning.analysis import region, weight_map

    opts = webui.shared.opts
    # The WebUI's layout: each tab writes under its own output folder ("Output directory for images" empty).
    opts.outdir_samples = ""
    opts.outdir_txt2img_samples = str(webui.data_dir / "outputs" / "txt2img-images")
    opts.outdir_img2img_samples = str(webui.data_dir / "outputs" / "img2img-images")
    init = Image.new("RGB", (64, 64), (200, 30, 30))

    def img2img(**changes: Any) -> Any:
        p = webui.img2img(prompt=PROMPT, negative_prompt="", seed=3, batch_size=2, steps=6, sampler_name="Euler a",
                          init_images=[init], denoising_strength=0.5, outpath_samples=opts.outdir_img2img_samples)
        return run_script(webui, ui_values(**SMALL_RUN, **changes), p, tab="img2img")

    first = run_dir_of(run_script(webui, ui_values(**SMALL_RUN), make_p(webui, outpath_samples=opts.outdir_txt2img_samples)))
    assert first.parent.parent == Path(opts.outdir_txt2img_samples)
    monkeypatch.setattr(weight_map, "MIN_POINTS", 3)
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: (np.arange(len(vectors)) % 2).astype(int))
    weight_map.write_weight_map(RunStore.open(first))
    start = region.region_start(first, 1)

    # In the img2img tab, the txt2img run named by its number: found in the other tab's folder.
    second = run_dir_of(img2img(from_run=str(int(first.name[:5])), from_cluster=1))
    assert second.parent.parent == Path(opts.outdir_img2img_samples) and second.name[:5] == first.name[:5]
    assert RunStore.open(second).read_run()["prompt"] == start.prompt

    # Now number 0 is a run in each folder: refused, naming both, in either tab.
    for tab_run in (img2img, lambda **changes: run_script(webui, ui_values(**SMALL_RUN, **changes))):
        with pytest.raises(glue.PinningInputError) as caught:
            tab_run(from_run=first.name[:5], from_cluster=1)
        message = str(caught.value)
        assert f"Start from run: {first.name[:5]!r} names 2 runs" in message and str(first) in message
        assert str(second) in message and "give the run folder's path" in message
    with pytest.raises(glue.PinningInputError, match="Start from run: no run '7' .*img2img-images.* or .*txt2img-images"):
        img2img(from_run="7")


def test_a_start_from_a_missing_run_or_cluster_fails_before_any_work(webui: Any, reporter: RecordingReporter) -> None:
    first = run_dir_of(run_script(webui, ui_values(**SMALL_RUN)))  # no weight map: the recording reporter
    runs = sorted(first.parent.iterdir())
    watcher = BatchWatcher(webui)
    batches: list[int] = []
    watcher.on_batch = batches.append  # type: ignore[method-assign]
    for changes, expected in [
        ({"from_run": "12345"}, "Start from run: no run '12345'"),
        ({"from_run": first.name}, f"Start from cluster: {first} has no weight_map.json"),
    ]:
        with pytest.raises(glue.PinningInputError) as caught:
            run_script(webui, ui_values(**SMALL_RUN, **changes))
        assert expected in str(caught.value), str(caught.value)
    assert batches == [] and sorted(first.parent.iterdir()) == runs  # nothing generated, no run folder


def test_the_report_link_falls_back_to_the_api_route_then_to_the_path(tmp_path: Path) -> None:
    from types import SimpleNamespace

    report = tmp_path / "runs" / "00001-20240101-000000" / "index.html"
    outside = SimpleNamespace(gradio_allowed_path=[str(tmp_path / "elsewhere")], api=False, nowebui=False)
    assert glue.report_link(report, report.parent.name, "txt2img", outside) == str(report)
    outside.api = True
    assert glue.report_link(report, report.parent.name, "img2img", outside) == (
        "prompt-pinning/v1/runs/00001-20240101-000000/files/index.html?tab=img2img")
    hidden = SimpleNamespace(gradio_allowed_path=[str(tmp_path)], api=False)
    assert glue.report_link(tmp_path / ".cache" / "index.html", "x", "txt2img", hidden).endswith(".cache/index.html")
    assert not glue.report_link(tmp_path / ".cache" / "index.html", "x", "txt2img", hidden).startswith("file=")


def test_img2img_runs_with_its_own_step_count(webui: Any, reporter: RecordingReporter) -> None:
    shared = webui.shared
    totals: list[Any] = []
    watcher = BatchWatcher(webui)
    watcher.on_batch = lambda index: totals.append(shared.total_tqdm.total)  # type: ignore[method-assign]
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    p = webui.img2img(prompt=PROMPT, negative_prompt="", seed=3, batch_size=2, steps=8, sampler_name="Euler a",
                      init_images=[init], denoising_strength=0.5)
    processed = run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"), p, tab="img2img")
    assert len(processed.images) == 4
    assert set(totals) == {(int(0.5 * 8) + 1) * 3}  # t_enc + 1 steps per individual
    assert RunStore.open(run_dir_of(processed)).read_run()["generator"]["mode"] == "img2img"


def test_batch_count_is_noted_and_not_used(webui: Any, reporter: RecordingReporter) -> None:
    processed = run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"),
                           make_p(webui, n_iter=3, batch_size=2))
    assert len(processed.images) == 4
    assert "Batch count 3 is not used" in processed.comments


def test_keep_intermediate_images_lets_the_webui_save_them(webui: Any, reporter: RecordingReporter) -> None:
    webui.load_scripts()
    webui.start()
    webui.shared.opts.prompt_pinning_keep_intermediate = True
    p = make_p(webui, do_not_save_samples=False, batch_size=2)
    run_script(webui, ui_values(generations="1", cma_lambda="2", granularity="phrase"), p)
    saved = [f for f in Path(p.outpath_samples).rglob("*.png") if "prompt_pins" not in f.parts]
    assert len(saved) == 3 * 2
    assert all("Pin run: " in Image.open(f).info["parameters"] for f in saved)


# stopping ------------------------------------------------------------------------------------------------


class Trigger(BatchWatcher):
    """Calls state.<action>() at the third model call of the `batch`-th batch (0 = the baseline)."""

    def __init__(self, webui: Any, batch: int, action: str) -> None:
        super().__init__(webui)
        self.state = webui.shared.state
        self.batch = batch
        self.action = action

    def on_step(self, index: int, call: int) -> None:
        if index == self.batch and call == 2:
            getattr(self.state, self.action)()


def completed(store: RunStore) -> list[tuple[int, int]]:
    return [r.key for r in store.iter_individuals()]


@pytest.mark.parametrize("action", ["interrupt", "skip"])
@pytest.mark.parametrize("batch", [2, 5])
def test_interrupt_and_skip_end_the_run_with_the_best_so_far(webui: Any, reporter: RecordingReporter,
                                                               action: str, batch: int) -> None:
    Trigger(webui, batch, action)
    processed = run_script(webui, ui_values(**SMALL_RUN))
    store = RunStore.open(run_dir_of(processed))
    info = store.read_run()
    assert info["status"] == "interrupted"
    assert len(completed(store)) == batch  # the interrupted individual's half-denoised batch was dropped
    assert reporter.calls[-1] is True
    assert len(processed.images) == 8
    best = min((r for r in store.iter_individuals()), key=lambda r: r.fitness[0])
    assert processed.prompt == best.prompt
    assert f"Stopped by {action.capitalize()}" in processed.comments
    assert "Pin status: interrupted" in processed.infotexts[0]


def test_interrupt_between_individuals_keeps_the_finished_one(webui: Any, reporter: RecordingReporter,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    state = webui.shared.state
    original = WebUIProgress.on_event

    def on_event(self: WebUIProgress, event: Any) -> None:
        original(self, event)
        if event.kind == "individual" and event.done == 3:  # pressed while individual 3 was being scored
            state.interrupt()

    monkeypatch.setattr(WebUIProgress, "on_event", on_event)
    processed = run_script(webui, ui_values(**SMALL_RUN))
    store = RunStore.open(run_dir_of(processed))
    assert completed(store) == [(0, 0), (1, 0), (1, 1)]
    assert store.read_run()["status"] == "interrupted"


def test_interrupt_during_the_baseline_returns_no_images(webui: Any, reporter: RecordingReporter) -> None:
    Trigger(webui, 0, "interrupt")
    processed = run_script(webui, ui_values(**SMALL_RUN))
    assert processed.images == []
    assert "before the baseline batch was done" in processed.info
    assert RunStore.open(run_dir_of(processed)).read_run()["status"] == "interrupted"


def test_a_run_with_the_sweep_option_sweeps_in_the_webui_and_says_so(webui: Any, reporter: RecordingReporter) -> None:
    shared = webui.shared
    seen: list[tuple[int, int, Any, str]] = []
    watcher = BatchWatcher(webui)
    watcher.on_batch = lambda index: seen.append(  # type: ignore[method-assign]
        (shared.state.job_no, shared.state.job_count, shared.total_tqdm.total, shared.state.textinfo))
    processed = run_script(webui, ui_values(**SMALL_RUN, sweep_batches=4))
    search = 1 + 2 * 3
    assert len(seen) == search + 4  # the search's batches, then the sweep's 4
    sweep = seen[search:]
    assert [s[:3] for s in sweep] == [(k, 4, 6 * 4) for k in range(4)]  # the bar restarts over the sweep
    assert [s[3].split(", best")[0] for s in sweep] == [f"Pinning: sensitivity sweep, batch {k}/4" for k in range(1, 5)]
    run_dir = run_dir_of(processed)
    info = RunStore.open(run_dir).read_run()
    assert info["status"] == "finished" and info["batches"] == search and info["sweep"]["status"] == "done"
    swept = json.loads((run_dir / "influence.json").read_text())["sweep"]
    assert swept["batches"] == 4 and swept["seeds"] == [5, 6, 7, 8]
    assert "Per-unit influence (loss change per weight step, measured by the sensitivity sweep): tightest units " \
        "(sensitivity sweep, 4 batches)" in processed.comments
    assert all("Pin sweep batches: 4" in t for t in processed.infotexts)
    assert len(processed.images) == 8 and reporter.calls[-1] is True


def test_interrupt_during_the_sweep_keeps_the_search_and_drops_the_sweep(webui: Any, reporter: RecordingReporter) -> None:
    Trigger(webui, 1 + 2 * 3 + 1, "interrupt")  # the sweep's second batch
    processed = run_script(webui, ui_values(**SMALL_RUN, sweep_batches=4))
    store = RunStore.open(run_dir_of(processed))
    info = store.read_run()
    assert info["status"] == "finished" and len(completed(store)) == 7
    assert (info["sweep"]["status"], info["sweep"]["batches"]) == ("interrupted", 1)
    assert "sweep" not in json.loads((store.root / "influence.json").read_text())
    assert "Sensitivity sweep interrupted after 1 of 4 batches: dropped (the search's result is complete); " \
        "run the generation again to sweep it." in processed.comments
    assert "from the run's own evaluations" in processed.comments
    assert len(processed.images) == 8 and processed.prompt == info["best"]["prompt"]
    assert reporter.calls[-1] is True


@pytest.mark.parametrize("webui", ["1.10", "1.8"], indirect=True)
def test_stop_generating_finishes_the_current_batch_first(webui: Any, reporter: RecordingReporter) -> None:
    Trigger(webui, 3, "stop_generating")
    processed = run_script(webui, ui_values(**SMALL_RUN))
    store = RunStore.open(run_dir_of(processed))
    assert completed(store) == [(0, 0), (1, 0), (1, 1), (1, 2)]  # the batch in progress was finished and kept
    assert store.read_run()["status"] == "interrupted"
    assert "Stopped by Stop generating" in processed.comments


def test_a_failing_individual_is_recorded_and_the_run_goes_on(webui: Any, reporter: RecordingReporter,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    processing = webui.processing
    original = processing.process_images
    calls = []

    def flaky(p: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(p)

    monkeypatch.setattr(processing, "process_images", flaky)
    processed = run_script(webui, ui_values(**SMALL_RUN))
    store = RunStore.open(run_dir_of(processed))
    records = list(store.iter_individuals())
    assert len(records) == 7 and store.read_run()["status"] == "finished"
    failed = [r for r in records if r.status == "failed"]
    assert [r.key for r in failed] == [(1, 1)] and "CUDA out of memory" in failed[0].error
    assert "1 individual(s) failed" in processed.comments and len(processed.images) == 8


def test_a_broken_backend_fails_the_run_and_still_shows_the_best(webui: Any, reporter: RecordingReporter,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    processing = webui.processing
    original = processing.process_images
    calls = []

    def broken_after_two(p: Any) -> Any:
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("the GPU fell off the bus (simulated)")
        return original(p)

    monkeypatch.setattr(processing, "process_images", broken_after_two)
    processed = run_script(webui, ui_values(**SMALL_RUN))
    store = RunStore.open(run_dir_of(processed))
    assert store.read_run()["status"] == "failed"
    assert "The run failed: RuntimeError: 3 individuals in a row failed" in processed.comments
    assert len(processed.images) == 8 and reporter.calls[-1] is True


# arguments --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"initial_std": 5.0}, ["Initial std", "initial_std", "[0.001, 2]"]),
        ({"generations": "many"}, ["Generations", "generations", "or empty for automatic"]),
        ({"granularity": "letter"}, ["Weight units", "'word'"]),
        ({"sweep_batches": 3}, ["Sensitivity sweep after the search (batches)", "sweep_batches", "is odd"]),
        ({"sweep_batches": -2}, ["sweep_batches", "[0, 1000]"]),
    ],
)
def test_an_invalid_value_names_the_option_and_its_range(webui: Any, changes: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(glue.PinningInputError) as caught:
        run_script(webui, ui_values(**changes))
    assert all(text in str(caught.value) for text in expected), str(caught.value)
    assert str(caught.value).startswith(f"{TITLE}: ")


def test_arguments_as_one_object_or_too_few() -> None:
    options = glue.parse_args([{"generations": 3, "cma_lambda": 4}, "ignored", None])
    assert options.generations == 3 and options.cma_lambda == 4 and options.granularity == "word"
    with pytest.raises(glue.PinningInputError, match=f"expected {len(SPECS)} script arguments"):
        glue.parse_args(ui_values()[:5])
    with pytest.raises(glue.PinningInputError, match="unknown option"):
        glue.parse_args([{"generation": 3}])


NON_DEFAULTS = dict(
    granularity="phrase", flip_loss="variety", flip_weight=2.5, distance_weight=0.25, aesthetic_weight=0.5,
    aesthetic_spread_weight=0.125, tags="red hair, (smile:1.2)", negative_tags="blurry", tag_weight=3.0,
    clip_model="ViT-B-32/openai", cma_seed="77", generations="5", centroid_radius=0.5, initial_std=0.125,
    size_limit=0.5, size_limit_error="0.01", size_limit_weight="7.5", cma_lambda="8", cma_mu="3",
    cma_weights="linear", cma_cs="0.3", cma_damps="1.5", cma_ccum="0.25", cma_ccov1="0.01", cma_ccovmu="0.02",
    hyperbatch_weights=False, hyperbatch_weights_any_sampler=True, hyperbatch_weight_type="Polynomial",
    hyperbatch_weight_scale=2.0, sweep_batches=6,
)


def paste(webui: Any, infotext: str, types: list[type]) -> list[Any]:
    """The values the WebUI's paste gives the script's components, converted to each component's
    value type as modules/infotext_utils.py:L500-L517 (v1.10.1) converts them; None: left as it is."""
    fields = ui.infotext_fields([object() for _ in SPECS])
    pasted = iter(webui.module("infotext_utils").paste_values(fields, infotext))
    out: list[Any] = []
    for spec, valtype in zip(SPECS, types):
        if not spec.infotext:
            out.append(ui.ui_value(spec, spec.default))
            continue
        value = next(pasted)
        if value is None:
            out.append(None)
        elif valtype is bool and value == "False":
            out.append(False)
        else:
            out.append(float(value) if valtype is int else valtype(value))
    return out


def test_options_round_trip_ui_infotext_ui(webui: Any) -> None:
    values = ui_values(**NON_DEFAULTS)
    options = PinningOptions.from_positional(values)
    params = {"Pin run": "00001-20240101-000000", **options.to_infotext()}
    infotext = result.with_params(f"{PROMPT}\nSteps: 6, Sampler: Euler a, Seed: 5", params)
    types = [type(v) for v in ui_values()]
    restored = paste(webui, infotext, types)
    assert PinningOptions.from_positional(restored) == options
    defaults_restored = paste(webui, result.with_params(f"{PROMPT}\nSteps: 6, Seed: 5", {"Pin run": "x"}), types)
    assert PinningOptions.from_positional(defaults_restored) == PinningOptions()
    # an infotext of a plain generation leaves every pinning field as it is
    assert all(v is None for v, s in zip(paste(webui, f"{PROMPT}\nSteps: 6, Seed: 5, Size: 64x64", types), SPECS)
               if s.infotext)


def test_infotext_values_are_quoted_like_the_webuis(webui: Any) -> None:
    infotext_utils = webui.module("infotext_utils")
    for value in ("plain", "a, b", "k: v", "two\nlines", 'say "hi", ok'):
        assert result.quote(value) == str(infotext_utils.quote(value))
        parsed = infotext_utils.parse_generation_parameters(result.with_params("p\nSteps: 2, Seed: 1", {"Pin tags": value}))
        assert parsed["Pin tags"] == value


# pieces ---------------------------------------------------------------------------------------------------


def test_the_tokenizer_is_found_where_each_webui_keeps_it() -> None:
    from types import SimpleNamespace

    class HF:
        def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
            return {"input_ids": [1]}

        def get_vocab(self) -> dict[str, int]:
            return {}

    hf = HF()
    assert model_tokenizer(SimpleNamespace(cond_stage_model=SimpleNamespace(tokenizer=hf))) is hf
    assert model_tokenizer(SimpleNamespace(conditioner=SimpleNamespace(embedders=[SimpleNamespace(tokenizer=hf)]))) is hf
    assert model_tokenizer(SimpleNamespace(text_processing_engine_l=SimpleNamespace(tokenizer=hf))) is hf
    assert model_tokenizer(SimpleNamespace(cond_stage_model=SimpleNamespace())) is None
    assert model_tokenizer(None) is None


def test_the_planned_batches_line_adds_the_sweep_and_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from lib_pinning.webui import progress

    monkeypatch.setattr(progress, "LAST_TIMING", {"seconds_per_batch": 10.0})
    text = ui.plan_text(PROMPT, "", ui_values(**SMALL_RUN, sweep_batches=4))
    assert text == ("Planned: at most 7 batches (baseline + 2 generations x 3; 2 weights), fewer when the search "
                    "settles, then 4 batches of sensitivity sweep. At the last run's 10.0 s per batch: at most 2 min.")  # 11 batches
    assert "sweep" not in ui.plan_text(PROMPT, "", ui_values(**SMALL_RUN))


def test_progress_text_names_what_comes_next() -> None:
    from types import SimpleNamespace

    progress = WebUIProgress(SimpleNamespace(), SimpleNamespace(), lambda_=4, generations=3, steps_per_individual=20)
    assert progress.text(0, None) == "Pinning: baseline batch"
    assert progress.text(1, 0.5) == "Pinning: generation 1/3, individual 1/4, best 0.5"
    assert progress.text(8, 0.25) == "Pinning: generation 2/3, individual 4/4, best 0.25"
    assert progress.text(13, 0.25) == "Pinning: generation 3/3 done, best 0.25"
    state = SimpleNamespace(interrupted=False, skipped=False)  # 1.6/1.7: no stopping_generation
    assert not WebUIProgress(state, None, lambda_=2, generations=1, steps_per_individual=1).cancel()


def test_the_consoles_total_bar_catches_up_on_steps_no_local_sampler_made(webui: Any) -> None:
    """A resumed run's bar starts where the run is; an individual this WebUI did not sample (a
    repeat, a server's batch) is added when it is done; a batch in flight here (ahead of the
    count) is not taken back; the sweep gets a bar of its own, caught up at the end."""
    from lib_pinning.run import RunEvent

    webui.start()
    shared = webui.shared
    bar = shared.total_tqdm
    progress = WebUIProgress(shared.state, bar, lambda_=3, generations=2, steps_per_individual=6)

    def event(kind: str, done: int, **sweep: int) -> RunEvent:
        return RunEvent(kind=kind, generation=1, done=done, total=7, best_fitness=None, **sweep)

    progress.on_event(event("start", 3))  # resumed after 3 individuals
    assert (bar.count, bar.total) == (18, 42)
    for _ in range(6):  # individual 4, sampled here
        bar.update()
    progress.on_event(event("individual", 4))
    assert bar.count == 24
    progress.on_event(event("individual", 5))  # a repeat, or a server's batch
    assert bar.count == 30
    for _ in range(9):  # individual 6 here, and half of 7 in flight
        bar.update()
    progress.on_event(event("individual", 6))
    assert bar.count == 39
    progress.on_event(event("sweep", 7, sweep_done=0, sweep_total=4))
    assert (bar.count, bar.total) == (0, 24)
    progress.on_event(event("sweep", 7, sweep_done=2, sweep_total=4))
    assert bar.count == 12
    progress.on_event(event("end", 7, sweep_done=4, sweep_total=4))
    assert bar.count == 24
    shared.opts.multiple_tqdm = False  # no console bar: nothing to advance, and no error
    bar.clear()
    progress.on_event(event("individual", 7))
    assert bar.count == 0


def test_engine_info_lines_reach_an_unconfigured_webui_console(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the WebUI without --loglevel
    engine = logging.getLogger("lib_pinning.run")
    with glue.console_logging(False):
        engine.info("hidden when the option is off")
    with glue.console_logging(True):
        engine.info("gen   1  best 0.5")
    engine.info("after the run")
    err = capsys.readouterr().err
    assert "[Prompt pinning] gen   1  best 0.5" in err
    assert "hidden" not in err and "after the run" not in err
    assert not logging.getLogger("lib_pinning").handlers


def test_engine_info_lines_reach_a_console_the_webui_left_at_warning(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Measured in v1.10.1: the WebUI's own logging.warning() calls (sampler autocorrection) run
    logging.basicConfig(), so the root has a handler but stays at WARNING before a run starts."""
    import logging
    import sys

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(sys.stderr)])
    monkeypatch.setattr(root, "level", logging.WARNING)
    engine = logging.getLogger("lib_pinning.run")
    with glue.console_logging(True):
        engine.info("gen   1  best 0.5")
        engine.warning("printed once")
    err = capsys.readouterr().err
    assert "[Prompt pinning] gen   1  best 0.5" in err
    assert err.count("printed once") == 1
    assert logging.getLogger("lib_pinning").propagate and not logging.getLogger("lib_pinning").handlers
    monkeypatch.setattr(root, "level", logging.INFO)  # --loglevel INFO: the WebUI's handler shows them
    with glue.console_logging(True):
        assert not logging.getLogger("lib_pinning").handlers


def test_the_hints_file_is_generated_from_the_current_specs() -> None:
    assert hints.HINTS_FILE.read_text(encoding="utf-8") == hints.render_js(), (
        "javascript/prompt_pinning_hints.js is out of date: run `python -m lib_pinning.webui.hints`")


def test_every_label_and_element_has_a_hint() -> None:
    labels = hints.label_hints()
    elems = hints.elem_hints()
    for spec in SPECS:
        assert labels[spec.label] and elems[spec.key]
    for group, _ in ui.groups():
        if group != "main":
            assert elems[f"group_{group}"]


# the UI with real gradio ---------------------------------------------------------------------------------


@needs_gradio
def test_the_ui_builds_with_gradio_and_matches_the_specs(webui: Any) -> None:
    import gradio as gr

    _, script = pinning_script(webui)
    with gr.Blocks():
        components = script.ui(False)
    assert len(components) == len(SPECS)
    kinds = {"dropdown": gr.Dropdown, "checkbox": gr.Checkbox, "slider": gr.Slider, "optional_number": gr.Textbox,
             "number": gr.Number, "textbox": gr.Textbox, "files": gr.File}
    for component, spec in zip(components, SPECS):
        assert isinstance(component, kinds[ui.component_kind(spec)]), spec.key
        assert component.label == spec.label
        assert component.elem_id == f"script_txt2img_prompt_pinning_{spec.key}"
        if isinstance(component, gr.Slider):
            assert (component.minimum, component.maximum) == (spec.minimum, spec.maximum)
        if isinstance(component, gr.Dropdown):
            assert [c[0] if isinstance(c, tuple) else c for c in component.choices] == list(spec.choices)
    # the components' initial values are the defaults (what the API's default script args read)
    assert PinningOptions.from_positional([c.value for c in components]) == PinningOptions()
    assert [c for c, _ in script.infotext_fields] == [c for c, s in zip(components, SPECS) if s.infotext]


@needs_gradio
def test_every_ui_label_has_a_tooltip(webui: Any) -> None:
    import gradio as gr

    _, script = pinning_script(webui)
    with gr.Blocks() as demo:
        script.ui(False)
    labels = hints.label_hints()
    elems = hints.elem_hints()
    prefix = "script_txt2img_prompt_pinning_"
    seen = 0
    for block in demo.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if not elem_id.startswith(prefix) or elem_id == prefix + "intro":
            continue
        seen += 1
        assert elem_id[len(prefix):] in elems, elem_id
        label = getattr(block, "label", None)
        if label and not isinstance(block, gr.Accordion):
            assert label in labels, label
    assert seen == len(SPECS) + len([g for g, _ in ui.groups() if g != "main"]) + len(hints.PANEL_HINTS)


@needs_gradio
def test_the_default_objective_setting_sets_the_dropdown(webui: Any) -> None:
    import gradio as gr

    _, script = pinning_script(webui)
    webui.start()
    webui.shared.opts.prompt_pinning_default_objective = "variety"
    with gr.Blocks():
        components = script.ui(False)
    assert components[[s.key for s in SPECS].index("flip_loss")].value == "variety"
