"""The run report: artifacts, page content and escaping, incremental refreshes, memory."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import sys
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from PIL import Image

from lib_pinning.report import Reporter, rebuild
from lib_pinning import store as store_module
from lib_pinning.report import layout, page, plots
from lib_pinning.report.search_plots import pareto_front
from lib_pinning.store import GenerationRecord, IndividualRecord, RunStore
from tests.report_synthetic import (
    ELEMENT_PAYLOAD,
    HOSTILE,
    QUOTES,
    TITLE_PAYLOAD,
    SyntheticRun,
    build_run,
)

GENERATIONS = 2
LAMBDA = 3
BATCH = 3


# helpers ---------------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects the elements of a page, the text of each <script>, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: dict[str, str] = {}
        self.text: list[str] = []
        self._script: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "script":
            self._script = attributes.get("id") or attributes.get("src") or f"script-{len(self.scripts)}"
            self.scripts[self._script] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts[self._script] += data
        else:
            self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def page_data(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parsed = parse(path)
    return json.loads(parsed.scripts["report-meta"]), json.loads(parsed.scripts["report-rows"])


def records(store: RunStore) -> list[IndividualRecord]:
    return list(store.iter_individuals())


def gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        assert image.format == "GIF"
        return image.n_frames


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticRun, Path]:
    """One finished single-objective run with a failed individual, report rebuilt (shared, read-only)."""
    root = tmp_path_factory.mktemp("runs") / "00000-finished"
    run = build_run(root, generations=GENERATIONS, lambda_=LAMBDA, batch=BATCH, failed={2: [1]})
    index = rebuild(root)
    return run, index


# artifacts -----------------------------------------------------------------------------------------


def test_every_artifact_is_written(finished: tuple[SyntheticRun, Path]) -> None:
    run, index = finished
    root = run.store.root
    assert index == root / layout.INDEX_HTML and index.is_file()
    for name in layout.ASSET_FILES:
        assert (root / layout.ASSETS_DIR / name).is_file()

    for record in records(run.store):
        folder = run.store.individual_dir(record.generation, record.index)
        if record.status == "failed":
            # no images: nothing to draw, the page shows the error instead
            assert not (folder / layout.INDIVIDUAL_GIF).exists()
            assert not (folder / layout.INDIVIDUAL_LOSS_PLOT).exists()
            continue
        assert gif_frames(folder / layout.INDIVIDUAL_GIF) == BATCH
        width, height = png_size(folder / layout.INDIVIDUAL_LOSS_PLOT)
        assert width > height > 100

    for generation in range(GENERATIONS + 1):
        folder = run.store.generation_dir(generation)
        assert png_size(folder / layout.GENERATION_LOSS_PLOT)[1] > 300  # 2x2 grid
        sheet_w, sheet_h = png_size(folder / layout.CONTACT_SHEET)
        assert sheet_w >= 2 * 96 and sheet_h >= 2 * 96  # 3 images of 16 px, enlarged, on a 2x2 grid

    assert png_size(root / layout.CMA_PLOT)[0] >= 800
    assert not (root / layout.CMA_MO_PLOT).exists()  # single objective
    assert gif_frames(root / layout.FINAL_GIF) == GENERATIONS + 1  # baseline + each generation
    best = run.best
    assert best is not None
    best_gif = run.store.individual_dir(best.generation, best.index) / layout.INDIVIDUAL_GIF
    assert (root / layout.BEST_GIF).read_bytes() == best_gif.read_bytes()


def test_gifs_are_small_with_a_modest_frame_duration(finished: tuple[SyntheticRun, Path]) -> None:
    run, _ = finished
    path = run.store.individual_dir(1, 0) / layout.INDIVIDUAL_GIF
    with Image.open(path) as image:
        assert image.info["loop"] == 0
        assert 200 <= image.info["duration"] <= 1000
    assert path.stat().st_size < 50_000


# page content ----------------------------------------------------------------------------------------


def test_table_rows_match_the_records(finished: tuple[SyntheticRun, Path]) -> None:
    run, index = finished
    meta, rows = page_data(index)
    expected = records(run.store)
    assert [(r["g"], r["i"]) for r in rows] == [(e.generation, e.index) for e in expected]
    for row, record in zip(rows, expected):
        assert row["s"] == record.status
        assert row["p"] == record.prompt and row["np"] == record.negative_prompt
        assert row["x"] == pytest.approx(record.x_evaluated, abs=1e-4)
        assert row["w"] == pytest.approx([w[0] for w in record.weights], abs=1e-4)
        assert row["dir"] == f"gen-{record.generation:03d}/ind-{record.index:03d}"
        if record.status == "ok":
            assert row["l"] == pytest.approx(record.loss)
            assert row["c"] == pytest.approx(record.components)
            assert row["gif"] and row["plot"]
            assert row["img"] == record.images[0]
        else:
            assert row["l"] is None and row["e"] == record.error
            assert not row["gif"] and not row["plot"]
    best = run.best
    assert best is not None
    assert meta["best"] == [best.generation, best.index]
    assert meta["components"] == ["flip_mean", "flip_std"]
    assert meta["status"] == "finished"
    assert meta["units"] == {"pos": run.units, "neg": run.negative_units}
    assert meta["generations"] == list(range(GENERATIONS + 1))


def test_page_shows_the_best_prompt_options_plots_and_generations(finished: tuple[SyntheticRun, Path]) -> None:
    run, index = finished
    parsed = parse(index)
    text = "".join(parsed.text)
    best = run.best
    assert best is not None
    assert best.prompt in text and best.negative_prompt in text
    copy_targets = {a.get("data-copy") for tag, a in parsed.elements if tag == "button" and a.get("data-copy")}
    assert copy_targets == {"best-prompt", "best-negative"}
    ids = {a.get("id") for _, a in parsed.elements}
    assert {"best", "compare", "plots", "individuals", "generations", "settings", "best-prompt"} <= ids
    images = [a["src"] for tag, a in parsed.elements if tag == "img"]
    for name in (layout.CMA_PLOT, layout.FINAL_GIF, layout.BEST_GIF):
        assert any(src.startswith(name) for src in images)
    for generation in range(GENERATIONS + 1):
        assert f"gen-{generation:03d}/{layout.CONTACT_SHEET}" in images
        assert f"gen-{generation:03d}/{layout.GENERATION_LOSS_PLOT}" in images
    # baseline and best batches side by side
    for record in (run.records[0], best):
        folder = f"gen-{record.generation:03d}/ind-{record.index:03d}"
        assert all(f"{folder}/{name}" in images for name in record.images)
    assert "Weight units" in text and "Image loss" in text  # option labels from the options model
    assert "finished" in text


def test_images_are_lazy_and_relative(finished: tuple[SyntheticRun, Path]) -> None:
    _, index = finished
    parsed = parse(index)
    images = [a for tag, a in parsed.elements if tag == "img"]
    assert images
    for attributes in images:
        assert attributes.get("loading") == "lazy"
        src = attributes["src"] or ""
        assert not src.startswith(("data:", "/", "file:")) and ":" not in src.split("?")[0]
    assert "base64" not in index.read_text()
    # small and linear: the rows are JSON, the unit texts are written once
    _, rows = page_data(index)
    assert index.stat().st_size < 30_000 + 1_000 * len(rows)


def test_hostile_strings_are_shown_as_text(finished: tuple[SyntheticRun, Path]) -> None:
    run, index = finished
    html = index.read_text(encoding="utf-8")
    for payload in (HOSTILE, TITLE_PAYLOAD, ELEMENT_PAYLOAD, QUOTES):
        assert payload not in html  # never literal ...
    parsed = parse(index)
    text = "".join(parsed.text)
    for payload in (HOSTILE, TITLE_PAYLOAD, ELEMENT_PAYLOAD, QUOTES):
        assert payload in text  # ... but visible as text once the entities are decoded
    # no element came out of a payload
    assert not [a for tag, a in parsed.elements if tag == "img" and a.get("src") == "x"]
    assert not [a for _, a in parsed.elements if any(k.startswith("on") for k in a)]
    scripts = [a for tag, a in parsed.elements if tag == "script"]
    assert len(scripts) == 3  # report.js and the two JSON blocks
    assert sorted(a.get("type") or "" for a in scripts) == ["", "application/json", "application/json"]
    for name in ("report-meta", "report-rows"):
        block = parsed.scripts[name]
        assert "<" not in block and ">" not in block and "&" not in block
    _, rows = page_data(index)
    assert any(HOSTILE in row["p"] for row in rows)  # round trip is exact
    assert run.records[0].prompt == rows[0]["p"]


def test_script_json_escapes_everything_that_could_close_a_script() -> None:
    hostile = {"a": "</script><script>alert(1)</script>", "b": "&amp; \u2028 \u2029 <!--"}
    text = page.script_json(hostile)
    assert not set("<>&") & set(text)
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == hostile
    assert json.loads(page.script_json({"x": float("nan"), "y": [float("inf"), 1.5]})) == {"x": None, "y": [None, 1.5]}


EXTERNAL = [
    re.compile(r"(?i)\b(?:https?|ftp|wss?):"),
    re.compile(r"""(?i)(?:src|href|action|poster|srcset)\s*=\s*["']?\s*//"""),
    re.compile(r"""(?i)url\(\s*["']?\s*(?://|[a-z]+:)"""),
    re.compile(r"(?i)@import"),
    re.compile(r"(?i)\b(?:fetch|XMLHttpRequest|WebSocket|EventSource|sendBeacon)\b"),
]


def test_nothing_external_is_referenced(finished: tuple[SyntheticRun, Path]) -> None:
    run, index = finished
    root = run.store.root
    for path in (index, *(root / layout.ASSETS_DIR / name for name in layout.ASSET_FILES)):
        content = path.read_text(encoding="utf-8")
        for pattern in EXTERNAL:
            assert not pattern.search(content), (path.name, pattern.pattern, pattern.search(content))
    parsed = parse(index)
    for tag, attributes in parsed.elements:
        for key in ("src", "href"):
            value = attributes.get(key)
            if value is not None and tag != "meta":
                assert not value.startswith(("/", "\\")) and not re.match(r"^[a-z][a-z0-9+.-]*:", value), value
    csp = [
        a["content"] for tag, a in parsed.elements
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0] and "'unsafe-inline'" not in csp[0]


# run states --------------------------------------------------------------------------------------


def test_multi_objective_run(tmp_path: Path) -> None:
    run = build_run(
        tmp_path / "00001-mo", generations=2, lambda_=4, batch=2, size=8, multi_objective=True, size_limit=0.25,
        nested_weights=False,
    )
    index = rebuild(run.store.root)
    assert png_size(run.store.root / layout.CMA_MO_PLOT)[0] > 400
    meta, rows = page_data(index)
    assert meta["multi"] is True
    by_key = {(r["g"], r["i"]): r for r in rows}
    projected = [r for r in run.records if r.x != r.x_evaluated]
    assert projected, "the synthetic run should exceed its size limit sometimes"
    for record in run.records:
        row = by_key[(record.generation, record.index)]
        assert row["fe"] == (record.x == record.x_evaluated)
        assert row["n"] == pytest.approx(np.linalg.norm(record.x_evaluated), abs=1e-6)
        assert row["f"] == pytest.approx(record.fitness, abs=1e-6)
        assert row["w"] == pytest.approx(record.weights, abs=1e-4)  # plain numbers per unit


def test_pareto_front() -> None:
    losses = np.array([0.5, 0.4, 0.6, 0.3, 0.45, 0.3])
    norms = np.array([0.1, 0.2, 0.05, 0.5, 0.3, 0.6])
    front = pareto_front(losses, norms)
    assert front.tolist() == [3, 1, 0, 2]  # (0.45, 0.3) and (0.3, 0.6) are dominated


def test_rebuild_of_a_crashed_run(tmp_path: Path) -> None:
    """A crash: status left at "running", the last generation half done with no generation.json."""
    run = build_run(
        tmp_path / "00002-crashed", generations=2, lambda_=3, batch=2, size=8, interrupted_after=2, status="running"
    )
    root = run.store.root
    last = run.store.generation_dir(3)
    assert not (last / "generation.json").exists()
    index = rebuild(root)
    meta, rows = page_data(index)
    assert meta["status"] == "running"
    assert [(r["g"], r["i"]) for r in rows if r["g"] == 3] == [(3, 0), (3, 1)]
    assert (run.store.individual_dir(3, 1) / layout.INDIVIDUAL_GIF).is_file()
    # an incomplete generation gets no generation artifacts: they would be stale after a resume
    assert not (last / layout.GENERATION_LOSS_PLOT).exists()
    assert not (last / layout.CONTACT_SHEET).exists()
    assert gif_frames(root / layout.FINAL_GIF) == 3
    assert "incomplete" in "".join(parse(index).text)


def test_rebuild_of_a_run_stopped_before_its_baseline(tmp_path: Path) -> None:
    run = SyntheticRun(tmp_path / "00003-empty")
    index = rebuild(run.store.root)
    meta, rows = page_data(index)
    assert rows == [] and meta["best"] is None
    assert "No successful batch yet" in "".join(parse(index).text)


def test_failed_run_shows_its_error_escaped(tmp_path: Path) -> None:
    error = f"RuntimeError: 3 individuals in a row failed; last error: {HOSTILE}"
    run = build_run(
        tmp_path / "00004-failed", generations=1, lambda_=3, batch=2, size=8, failed={1: [0, 1, 2]},
        status="failed", error=error,
    )
    index = rebuild(run.store.root)
    parsed = parse(index)
    assert error in "".join(parsed.text)
    assert HOSTILE not in index.read_text()
    status = [a for tag, a in parsed.elements if a.get("id") == "run-status"]
    assert status and "status-failed" in (status[0].get("class") or "")


def test_a_broken_image_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = SyntheticRun(tmp_path / "00005-broken", lambda_=2, batch=2, size=8)
    run.baseline()
    record = run.generation(1)[0]
    broken = run.store.individual_dir(1, 0) / record.images[0]
    broken.write_bytes(b"not a png")
    with caplog.at_level(logging.ERROR, logger="lib_pinning.report"):
        index = rebuild(run.store.root)
    assert any("summary.gif" in message for message in caplog.messages)
    _, rows = page_data(index)
    row = next(r for r in rows if (r["g"], r["i"]) == (1, 0))
    assert row["gif"] is False and row["plot"] is True
    assert (run.store.individual_dir(1, 1) / layout.INDIVIDUAL_GIF).is_file()


# unit texts from the prompt space ---------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    [
        {"units": [{"text": "a"}, {"text": "b"}], "negative_units": [{"text": "c"}]},
        {"positive": {"units": [{"word": "a"}, {"word": "b"}]}, "negative": {"units": [{"word": "c"}]}},
        {"units": [{"text": t, "negative": n} for t, n in (("a", False), ("b", False), ("c", True))]},
        {"units": [{"text": "a", "side": "pos"}, {"text": "b", "side": "pos"}, {"text": "c", "side": "neg"}]},
        {"units": [{"text": t, "prompt": p} for t, p in (("a", "positive"), ("b", "positive"), ("c", "negative"))]},
        {"positive": [["a", 1.0], ["b", 1.0]], "negative": [["c", 1.0]]},
        {"prompt": "a b", "prompt_units": ["a", "b"], "negative_units": ["c"]},
    ],
)
def test_unit_texts_accepts_the_plausible_space_forms(space: dict[str, Any]) -> None:
    assert page.unit_texts(space, 3) == (["a", "b"], ["c"])


def test_unit_texts_of_a_real_prompt_space() -> None:
    prompt = pytest.importorskip("lib_pinning.prompt")
    space = prompt.PromptSpace("a (red:1.2) apple, shiny", "blurry", "word")
    assert page.unit_texts(space.to_json(), space.dim) == (["a", "red", "apple", "shiny"], ["blurry"])


@pytest.mark.parametrize("space", [None, "text", {}, {"units": [{"text": "a"}]}, {"units": [{"weight": 1.0}] * 3}])
def test_unit_texts_refuses_what_does_not_match_the_weights(space: Any) -> None:
    assert page.unit_texts(space, 3) is None


def test_unknown_space_falls_back_to_the_plain_prompt(tmp_path: Path) -> None:
    run = build_run(
        tmp_path / "00006-nospace", generations=1, lambda_=2, batch=2, size=8, space={"granularity": "token", "dim": 7}
    )
    index = rebuild(run.store.root)
    meta, _ = page_data(index)
    assert meta["units"] is None
    parsed = parse(index)
    assert run.records[0].prompt in "".join(parsed.text)
    unit_spans = [a for tag, a in parsed.elements if tag == "span" and "unit" in (a.get("class") or "").split()]
    assert all(not a.get("title") for a in unit_spans)  # only the legend's spans, no weighted units


def test_weight_classes() -> None:
    assert page.weight_class(0.0) == "w0"
    assert page.weight_class(0.04) == "w0"
    assert page.weight_class(0.12) == "wp1"
    assert page.weight_class(-0.31) == "wn3"
    assert page.weight_class(9.0) == "wp5" and page.weight_class(-9.0) == "wn5"
    assert page.weight_class(float("nan")) == "w0"


# incremental refreshes -------------------------------------------------------------------------------


def test_updates_draw_only_new_items(tmp_path: Path) -> None:
    run = SyntheticRun(tmp_path / "00007-live", lambda_=2, batch=2, size=8)
    reporter = Reporter(budget=None)  # every update draws everything new (the budget is tested below)
    run.baseline()
    reporter.update(run.store)
    assert reporter.rendered[layout.INDIVIDUAL_LOSS_PLOT] == 1
    assert reporter.rendered[layout.CONTACT_SHEET] == 1
    first_plot = run.store.individual_dir(0, 0) / layout.INDIVIDUAL_LOSS_PLOT
    stamp = first_plot.stat().st_mtime_ns

    for generation in (1, 2):
        before = reporter.rendered.copy()
        run.generation(generation)
        reporter.update(run.store)
        drawn = reporter.rendered - before
        assert drawn[layout.INDIVIDUAL_LOSS_PLOT] == 2 and drawn[layout.INDIVIDUAL_GIF] == 2
        assert drawn[layout.GENERATION_LOSS_PLOT] == 1 and drawn[layout.CONTACT_SHEET] == 1
        assert drawn[layout.CMA_PLOT] == 1
        assert drawn[layout.FINAL_GIF] == 0  # whole-run aggregate: only at the end
    assert first_plot.stat().st_mtime_ns == stamp

    # nothing new: nothing drawn, the page is still rewritten
    before = reporter.rendered.copy()
    page_stamp = (run.store.root / layout.INDEX_HTML).stat().st_mtime_ns
    reporter.update(run.store)
    assert reporter.rendered == before
    assert (run.store.root / layout.INDEX_HTML).stat().st_mtime_ns >= page_stamp

    # an individual of a generation still in progress is drawn at once; its generation later
    run.generation(3, stop_after=1)
    before = reporter.rendered.copy()
    reporter.update(run.store)
    drawn = reporter.rendered - before
    assert drawn[layout.INDIVIDUAL_LOSS_PLOT] == 1 and drawn[layout.GENERATION_LOSS_PLOT] == 0
    _, rows = page_data(run.store.root / layout.INDEX_HTML)
    assert (3, 0) in {(r["g"], r["i"]) for r in rows}

    run.finish("interrupted")
    before = reporter.rendered.copy()
    reporter.update(run.store, final=True)
    drawn = reporter.rendered - before
    assert drawn[layout.FINAL_GIF] == 1 and drawn[layout.INDIVIDUAL_LOSS_PLOT] == 0
    meta, _ = page_data(run.store.root / layout.INDEX_HTML)
    assert meta["status"] == "interrupted"

    # a fresh reporter (the CLI's rebuild, or a resumed run) keeps every existing artifact
    fresh = Reporter()
    fresh.update(run.store, final=True)
    per_item = (layout.INDIVIDUAL_LOSS_PLOT, layout.INDIVIDUAL_GIF, layout.GENERATION_LOSS_PLOT, layout.CONTACT_SHEET)
    assert all(fresh.rendered[name] == 0 for name in per_item)
    assert first_plot.stat().st_mtime_ns == stamp


def test_a_refresh_reads_only_new_json_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost of a refresh does not grow with the run: it reads run.json and the new records only."""
    run = SyntheticRun(tmp_path / "00008-reads", lambda_=2, batch=2, size=8)
    run.baseline()
    for generation in range(1, 5):
        run.generation(generation)
    reporter = Reporter(budget=None)
    reporter.update(run.store)

    read: list[str] = []
    real_read_json = store_module.read_json

    def counting_read_json(path: Path) -> Any:
        read.append(Path(path).relative_to(run.store.root).as_posix())
        return real_read_json(path)

    monkeypatch.setattr(store_module, "read_json", counting_read_json)

    reporter.update(run.store)
    assert read == ["run.json"]
    read.clear()
    run.generation(5)
    reporter.update(run.store)
    assert sorted(read) == sorted(
        ["run.json", "gen-005/ind-000/batch_stats.json", "gen-005/ind-001/batch_stats.json", "gen-005/generation.json"]
    )


def test_reporter_leaves_matplotlib_global_state_alone(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    rc = dict(matplotlib.rcParams)
    run = build_run(tmp_path / "00009-mpl", generations=1, lambda_=2, batch=2, size=8, multi_objective=True)
    rebuild(run.store.root)
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc
    if "matplotlib.pyplot" in sys.modules:  # another test may have imported it; we drew no figure there
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Bounds of the memory test, over refreshes 10 to 50 (see its docstring).
TRACED_GROWTH_BYTES = 256 * 1024
RSS_GROWTH_BYTES = 16 * 2**20


def test_memory_does_not_grow_across_refreshes(tmp_path: Path) -> None:
    """50 refreshes of a live run's report; every 10th is a final one, which redraws the run plots
    and re-encodes final_summary.gif.

    Nothing new arrives, so a refresh has nothing to keep: the records are cached already. After a
    warm-up (10 refreshes), asserted between refresh 10 and 50: traced Python memory grows by less
    than 256 kB in all, RSS by less than 16 MB. Measured here: 65-75 kB traced (matplotlib's glyph
    and path caches still settling: over 100 refreshes the increments shrink towards zero) and RSS
    within +-2.5 MB. What the bounds catch: a refresh keeping its page (18.7 kB of HTML here, so
    750 kB over 40 refreshes), a figure with its artists per final refresh (hundreds of kB each),
    or an Agg canvas per refresh (1-2 MB each, outside tracemalloc's view, hence the RSS bound).
    What a growing run legitimately keeps per individual is measured by benchmarks/bench_report.py.
    """
    run = build_run(tmp_path / "00010-memory", generations=3, lambda_=2, batch=2, size=8, status="running")
    reporter = Reporter(budget=None)  # every refresh runs (a budget would skip most of them)
    for refresh in range(10):
        reporter.update(run.store, final=refresh in (0, 5))
    tracemalloc.start()
    try:
        samples = {}
        for refresh in range(1, 51):
            reporter.update(run.store, final=refresh % 10 == 5)
            if refresh in (10, 50):
                gc.collect()
                samples[refresh] = (tracemalloc.get_traced_memory()[0], _rss_bytes())
    finally:
        tracemalloc.stop()
    traced = samples[50][0] - samples[10][0]
    rss = samples[50][1] - samples[10][1]
    assert traced < TRACED_GROWTH_BYTES, traced
    assert rss < RSS_GROWTH_BYTES, rss


def test_plot_templates_do_not_accumulate_artists() -> None:
    """The plot figures are reused for every PNG: redrawing must replace data, not add artists."""
    plotter = plots.Plotter()

    def draw_all(n: int) -> list[int]:
        rng = np.random.default_rng(n)
        plotter.individual.render(rng.random(n), f"individual {n}")
        plotter.generation.render(rng.random(n * 3), rng.random(n), f"generation {n}")
        records = [
            GenerationRecord(
                generation=g, evaluations=1 + 3 * g, fitness_min=0.2, fitness_mean=0.3, fitness_max=0.5,
                fitness_std=0.1, best_index=0, best_so_far=[g, 0], best_so_far_fitness=0.2,
                best_so_far_x=rng.random(4).tolist(), sigma=0.05, axis_ratio=1.2,
                axis_scales=rng.random(4).tolist(), population_std=rng.random(4).tolist(),
                centroid=[0.0] * 4, seconds=0.1,
            )
            for g in range(1, n)
        ]
        plotter.cma.render(records, "cma")
        plotter.mo.render(rng.random(n), rng.random(n), rng.random(n) > 0.3, 0.8, (0.1, 0.1), "mo")
        # Artists of the figure and its axes; ticks (children of the axes' Axis objects) come and
        # go with the axis limits, which the blitted templates keep per run and only grow.
        return [
            len(template.fig.get_children()) + sum(len(ax.get_children()) for ax in template.fig.axes)
            for template in (plotter.individual, plotter.generation, plotter.cma, plotter.mo)
        ]

    counts = draw_all(9)
    for n in (5, 30, 12):
        draw_all(n)
    # an empty series hides its row instead of failing, and the row comes back
    assert plotter.generation.render([], [0.5, 0.6], "no pairs") is not None
    assert draw_all(9) == counts
