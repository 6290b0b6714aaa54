"""The report in a real browser: headless Chromium opens index.html from disk.

Checks that the page's script renders the individuals table from the embedded rows, and that none
of the hostile strings in the run (prompts, run id, error, options) executed: each payload would
change the document title, add an <img src=x>, or mark <body> with data-pwned if it ran. Then, in
Playwright (which drives the same chromium), that a real toy run's analysis sections (ids
`influence` and `weight-map`) show their plots and cluster images loaded and the prompt with each
unit in its class's colour.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lib_pinning.report import rebuild
from lib_pinning.store import RunStore
from tests.report_synthetic import ELEMENT_PAYLOAD, HOSTILE, QUOTES, TITLE_PAYLOAD, build_run
from tests.test_report import PageParser

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1440, 2200)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"headless Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    root = tmp_path_factory.mktemp("browser") / "00000-browser"
    run = build_run(root, generations=2, lambda_=3, batch=3, size=16, failed={1: [2]}, status="failed",
                    error=f"RuntimeError: {TITLE_PAYLOAD}")
    store = RunStore.open(root)
    info = store.read_run()
    info["run_id"] = f"{TITLE_PAYLOAD}{HOSTILE}"  # reaches <title> and the header
    store.write_run(info)
    index = rebuild(root)
    return index, len(run.records), f"Prompt pinning · {info['run_id']}"


def chromium_run(chromium: str, profile: Path, index: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        # Advance the page's virtual clock so deferred scripts and lazy images settle before output.
        "--virtual-time-budget=5000",
        *arguments,
        index.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_table_renders_and_no_payload_runs(chromium: str, report: tuple[Path, int, str], tmp_path: Path) -> None:
    index, n_records, title = report
    result = chromium_run(chromium, tmp_path / "profile", index, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = PageParser()
    dom.feed(result.stdout)
    dom.close()

    rows = [a for tag, a in dom.elements if tag == "tr" and "data-generation" in a]
    assert len(rows) == n_records  # the script ran and rendered every row (one page of 100)
    keys = [(int(a["data-generation"] or 0), int(a["data-index"] or 0)) for a in rows]
    assert keys == sorted(keys)
    assert any("failed" in (a.get("class") or "").split() for a in rows)
    assert sum("is-best" in (a.get("class") or "").split() for a in rows) == 1

    # nothing executed
    html_attributes = [a for tag, a in dom.elements if tag == "html"][0]
    assert "js-ready" in (html_attributes.get("class") or "")  # our script did run
    assert _document_title(result.stdout) == title  # the hostile run id, as text; not "PWNED"
    body = [a for tag, a in dom.elements if tag == "body"][0]
    assert "data-pwned" not in body
    assert not [a for tag, a in dom.elements if tag == "img" and a.get("src") == "x"]
    text = "".join(dom.text)
    for payload in (HOSTILE, TITLE_PAYLOAD, ELEMENT_PAYLOAD, QUOTES):
        assert payload in text  # shown, as text


def _document_title(dom: str) -> str:
    parser = _TitleParser()
    parser.feed(dom)
    return parser.title


class _TitleParser(PageParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        super().handle_endtag(tag)
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        if self._in_title:
            self.title += data


def test_screenshot(chromium: str, report: tuple[Path, int, str], tmp_path: Path) -> None:
    index, _, _ = report
    shot = tmp_path / "report.png"
    result = chromium_run(
        chromium, tmp_path / "profile", index, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == WINDOW
        colours = image.convert("RGB").resize((64, 96)).getcolors(64 * 96)
    assert colours is not None and len(colours) > 50  # a rendered page, not a blank one
    keep = os.environ.get("REPORT_SCREENSHOT")
    if keep:  # e.g. REPORT_SCREENSHOT=/tmp/report.png to look at the page
        Path(keep).write_bytes(shot.read_bytes())


def test_a_live_page_with_pending_artifacts(chromium: str, tmp_path: Path) -> None:
    """Under a refresh budget the newest individuals' GIF and loss plot lag: the table the script
    renders shows their first image and a "pending" note, and every image it shows exists."""
    from lib_pinning.report import Reporter
    from tests.report_synthetic import SyntheticRun

    run = SyntheticRun(tmp_path / "00001-live", lambda_=3, batch=2, size=16, generations=3)
    reporter = Reporter(budget=0.0)  # the first update draws one item; the rest stays pending
    run.baseline()
    run.generation(1)
    reporter.update(run.store)
    assert reporter.pending > 0
    index = run.store.root / "index.html"
    result = chromium_run(chromium, tmp_path / "profile", index, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = PageParser()
    dom.feed(result.stdout)
    dom.close()
    rows = [a for tag, a in dom.elements if tag == "tr" and "data-generation" in a]
    assert len(rows) == 1 + 3
    pending_notes = [a for tag, a in dom.elements if tag == "span" and "pending" in (a.get("class") or "").split()]
    assert len(pending_notes) >= 2  # the individuals' cells and the generations' table
    root = run.store.root
    for tag, attributes in dom.elements:
        if tag == "img":
            src = (attributes.get("src") or "").split("?", 1)[0]
            assert (root / src).is_file(), src


# -- the analysis sections of a real run, in Playwright (naturalWidth needs a live page) ------------


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real toy run (the demo's prompt, 8 generations: 64 evaluations, enough for a map with
    clusters) and its final report. Its units' classes are then dealt in turn (tightening,
    loosening, inert, cannot tell) before the page is drawn: this short run leaves every unit
    "cannot tell", and a page that coloured every unit alike would pass then."""
    from lib_pinning.analysis import influence
    from lib_pinning.generator import DemoPrompt, ToyGenerator, ToySettings
    from lib_pinning.options import PinningOptions
    from lib_pinning.report import Reporter
    from lib_pinning.run import PinningRun, derive_seeds
    from lib_pinning.store import atomic_write_json

    real = influence.write_influence

    def dealt(store: RunStore) -> dict[str, Any]:
        data = real(store)
        classes = (influence.TIGHTENING, influence.LOOSENING, influence.INERT, influence.UNKNOWN)
        for n, unit in enumerate(data["units"]):
            unit["class"] = classes[n % len(classes)]
        atomic_write_json(store.root / influence.INFLUENCE_FILE, data)
        return data

    demo = DemoPrompt()
    options = PinningOptions(generations=8, stop_early=False, cli_log=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(influence, "write_influence", dealt)
        run = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt=demo.prompt,
                               negative_prompt=demo.negative_prompt, seeds=derive_seeds(demo.seed, 4),
                               options=options, runs_dir=tmp_path_factory.mktemp("analysis"))
        return run.execute(reporter=Reporter(budget=None)).run_dir


@pytest.fixture(scope="module")
def page(chromium: str) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="these checks need `pip install playwright`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            yield browser.new_page(viewport={"width": WINDOW[0], "height": 1000})
        finally:
            browser.close()


def _loaded_images(page: Any, section: str) -> list[tuple[str, int]]:
    """(src, naturalWidth) of every image in `section`, each scrolled into view first: the report
    loads its images lazily, and an image a user never scrolls to is never fetched."""
    images = page.locator(f"#{section} img")
    for n in range(images.count()):
        image = images.nth(n)
        image.scroll_into_view_if_needed()
        image.evaluate("img => img.complete ? null : new Promise(done => { img.onload = img.onerror = done; })")
    return [(i.get_attribute("src") or "", int(i.evaluate("img => img.naturalWidth"))) for i in images.all()]


def test_the_analysis_sections_of_a_real_run(page: Any, toy_report: Path) -> None:
    import json

    from lib_pinning.report.analysis import CLASS_CSS, INFLUENCE_PLOT, WEIGHT_MAP_PLOT

    page.goto((toy_report / "index.html").as_uri())
    influence = json.loads((toy_report / "influence.json").read_text())
    weight_map = json.loads((toy_report / "weight_map.json").read_text())
    assert weight_map["embedded"] and weight_map["clusters"], weight_map["notes"]  # the run is big enough

    images = _loaded_images(page, "influence")
    assert [src.split("?")[0] for src, _ in images] == [INFLUENCE_PLOT]
    assert all(width > 0 for _, width in images), images
    images = _loaded_images(page, "weight-map")
    sources = [src.split("?")[0] for src, _ in images]
    assert sources[0] == WEIGHT_MAP_PLOT and len(sources) == 1 + len(weight_map["clusters"])  # + each cluster's image
    assert all(width > 0 for _, width in images), images

    # The prompt with each unit coloured by its class: every unit, in order, and the class's colour
    # really applied (a missing stylesheet rule would leave them all alike).
    units = page.locator("#influence .units .iunit")
    shown = [(u.inner_text(), u.get_attribute("class")) for u in units.all()]
    assert shown == [(u["text"], f"iunit {CLASS_CSS[u['class']]}") for u in influence["units"]]
    backgrounds = {cls: page.evaluate(
        "cls => { const e = document.createElement('span'); e.className = 'iunit ' + cls; "
        "document.body.append(e); const c = getComputedStyle(e).backgroundColor; e.remove(); return c; }", cls)
        for cls in CLASS_CSS.values()}
    assert len(set(backgrounds.values())) == len(CLASS_CSS)  # four distinct colours
    for n in range(units.count()):
        unit = units.nth(n)
        cls = unit.get_attribute("class").split()[1]
        assert unit.evaluate("e => getComputedStyle(e).backgroundColor") == backgrounds[cls]

    keep = os.environ.get("REPORT_SCREENSHOT")
    for section in ("influence", "weight-map"):
        shot = page.locator(f"#{section}").screenshot()
        with Image.open(io.BytesIO(shot)) as image:
            assert image.width > 600 and len(image.convert("RGB").resize((48, 48)).getcolors(48 * 48) or []) > 20
        if keep:  # e.g. REPORT_SCREENSHOT=/tmp/report.png also writes /tmp/report-influence.png
            Path(keep).with_name(f"{Path(keep).stem}-{section}.png").write_bytes(shot)
