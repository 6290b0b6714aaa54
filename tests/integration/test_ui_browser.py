"""The script's UI in the real WebUIs, driven in headless Chromium (Playwright on Debian's chromium).

Why a browser: the panel is built by the WebUI's gradio (3.41 in A1111, 4.40 in Forge) from
components this extension describes, its tooltips come from javascript/ that only a page runs, and
the result reaches the user through the gallery and the log box. The stand-in tests cover none of
that. Each check runs per target (tests/integration/conftest.py parametrizes over them, so
`-k forge` or `-k a1111-sd1` selects a target's), on A1111 SD 1.x and Forge only: the SDXL target
is the same A1111 tree and UI code with another checkpoint, so its page is the SD 1.x page, and its
generations are covered by the API checks (its 4 browser checks would add about 30 s a session):

- the txt2img page loads, the extension's javascript is served and runs, "Prompt pinning" is in
  the Script dropdown;
- choosing it shows the panel: one component per option with the options model's label, its
  tooltip (elem_id route and, for labels, the WebUI's hints.js route), the folded groups; choosing
  "None" hides it again;
- a short run from the Generate button ends with the best batch first in the gallery (compared
  pixel for pixel with the run folder's best individual), then the baseline, and a report link that
  opens the run's report; in txt2img, and in img2img from an init image uploaded in the page;
- no JavaScript error comes from this extension's files (errors of the WebUIs themselves are
  listed in the failure message but do not fail a check).

Screenshots of every check go to the session folder's ui/ (kept under tests/integration/artifacts/
when a check fails). Needs `playwright` (PyPI; no browser download: it drives /usr/bin/chromium,
or $PINNING_CHROMIUM).
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lib_pinning.options import PinningOptions
from lib_pinning.webui.hints import GROUP_HINTS, hint
from lib_pinning.webui.ui import GROUP_TITLES, groups
from tests.integration import checks
from tests.integration.harness import Server

pytestmark = [pytest.mark.browser, pytest.mark.not_on("sdxl", reason="the A1111 SD 1.x page is the same page")]

CHROMIUM = os.environ.get("PINNING_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""--headless comes from Playwright's launch(headless=True); it also gives each launch a fresh profile."""
EXTENSION_MARKERS = ("sd-prompt-pinning", "prompt_pinning")
"""Substrings of this extension's script URLs: a JS error whose stack or location has one is ours."""
SLUG = "prompt_pinning"
PAGE_TIMEOUT_MS = 180_000
RUN_TIMEOUT_MS = 900_000
"""A browser run on Forge took 80-100 s for 3 batches on this busy 2-core machine; ample margin."""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser checks need `pip install playwright`")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"headless Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Ui:
    """One page of the WebUI with everything the checks inspect afterwards."""

    page: Any
    server: Server
    shots: Path
    tab: str = "txt2img"
    """The WebUI tab the checks drive ("txt2img" or "img2img"): the prefix of its elem_ids."""
    errors: list[str] = field(default_factory=list)
    """Every uncaught exception and console error, as "kind: message @ where"."""
    ours: list[str] = field(default_factory=list)
    """The subset that comes from this extension's files."""
    scripts: dict[str, int] = field(default_factory=dict)
    """URL -> HTTP status of every javascript file of this extension the page loaded."""
    webui_scripts: dict[str, int] = field(default_factory=dict)
    """URL -> HTTP status of every other `file=...js` the page loaded (the WebUI's own)."""

    def record(self, kind: str, text: str, where: str) -> None:
        entry = f"{kind}: {text} @ {where}"
        self.errors.append(entry)
        if any(m in where or m in text for m in EXTENSION_MARKERS):
            self.ours.append(entry)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def field(self, elem_id: str) -> Any:
        """The text or number input of a component (a slider's number box, not its range)."""
        return self.page.locator(f"#{elem_id} textarea, #{elem_id} input:not([type=range])").first

    def set_value(self, elem_id: str, value: str) -> None:
        box = self.field(elem_id)
        box.fill(value)
        box.press("Tab")  # commits gradio 3's and 4's number inputs (change on blur)
        assert box.input_value() == value, f"#{elem_id} holds {box.input_value()!r}, not {value!r}"

    def open_tab(self, tab: str) -> None:
        """Switch to a top-level tab of the WebUI, by its button, as a user does."""
        # The top-level buttons come first in the DOM (img2img has a sub-tab called "img2img" too);
        # Forge labels them "Txt2img", "Img2img".
        name = re.compile(rf"^\s*{re.escape(tab)}\s*$", re.IGNORECASE)
        self.page.locator("#tabs button:visible", has_text=name).first.click()
        self.page.locator(f"#{tab}_generate").wait_for(state="visible")
        self.tab = tab

    def choose_script(self, title: str) -> None:
        """Pick `title` in the tab's Script dropdown the way a user does: open it, click the option."""
        self.page.locator(f"#{self.tab}_script_container #script_list input").click()
        self.page.locator("ul.options li", has_text=re.compile(rf"^\W*{re.escape(title)}\s*$")).first.click()

    def elem(self, key: str) -> Any:
        """The component of option `key` (gradio 3.41's HTML repeats its elem_id on an inner div:
        the first is the block, the one getElementById and the tooltips use)."""
        return self.page.locator(f"#script_{self.tab}_{SLUG}_{key}").first

    def assert_no_errors_of_ours(self) -> None:
        assert not self.ours, "javascript errors from this extension:\n" + "\n".join(self.ours) + \
            "\nall errors of the page:\n" + "\n".join(self.errors)


def _script_loaded(session: Ui, url: str, status: int) -> None:
    if "file=" not in url or ".js" not in url:
        return
    ours = "/javascript/" in url and any(k in url for k in EXTENSION_MARKERS)
    (session.scripts if ours else session.webui_scripts)[url] = status


@pytest.fixture
def ui(browser: Any, webui_server: Server, request: pytest.FixtureRequest) -> Iterator[Ui]:
    shots = webui_server.session_dir / "ui" / re.sub(r"[^\w.-]+", "_", request.node.name)
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    # Only the WebUI itself: gradio 4 pages also ask a CDN for a script, which offline can hold up
    # DOMContentLoaded until name resolution gives up.
    local = webui_server.url.rstrip("/")
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local + "/")
                  or route.request.url.startswith(("data:", "blob:")) else route.abort())
    page = context.new_page()
    page.set_default_timeout(60_000)
    session = Ui(page=page, server=webui_server, shots=shots)
    page.on("pageerror", lambda e: session.record("exception", str(e), getattr(e, "stack", "") or ""))
    page.on("console", lambda m: m.type == "error" and session.record("console", m.text, str(m.location.get("url"))))
    page.on("response", lambda r: _script_loaded(session, r.url, r.status))
    try:
        page.goto(webui_server.url + "/", wait_until="domcontentloaded", timeout=PAGE_TIMEOUT_MS)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=PAGE_TIMEOUT_MS)
        refused = sorted(url for url, status in session.webui_scripts.items() if status == 403)
        if refused:
            pytest.fail(f"the WebUI refused its own javascript (HTTP 403): {refused[:3]}... gradio 3 serves no "
                        f"file= path with a component starting with '.', gradio 4 only its allowed paths; "
                        f"the tree is {webui_server.prepared.tree} (set PINNING_CACHE to a folder without one)")
        # the WebUI's onUiLoaded callbacks (ours among them) have run once gradioApp() has the tabs
        page.wait_for_function("() => typeof gradioApp === 'function' && gradioApp().querySelector('#tabs')",
                               timeout=PAGE_TIMEOUT_MS)
        yield session
    finally:
        try:
            session.shot("final")
        except Exception as e:  # a page that crashed has no screenshot; the check reports why it failed
            print(f"no final screenshot: {e}")
        (shots / "console.txt").write_text("\n".join(session.errors) + "\n")
        context.close()


def test_ui_page_loads(ui: Ui) -> None:
    page = ui.page
    assert page.locator("#txt2img_generate").is_visible()
    assert ui.scripts, "the page loaded none of this extension's javascript files"
    assert all(status == 200 for status in ui.scripts.values()), ui.scripts
    label, spec = "Weight units", PinningOptions.spec("granularity")
    assert page.evaluate("(label) => typeof titles !== 'undefined' && titles[label]", label) == hint(spec), \
        "javascript/prompt_pinning_hints.js did not run (the WebUI's `titles` lack its labels)"
    page.locator("#txt2img_script_container #script_list input").click()
    options = page.locator("ul.options li").all_inner_texts()
    assert any(o.strip().endswith("Prompt pinning") for o in options), options
    page.keyboard.press("Escape")
    ui.shot("loaded")
    ui.assert_no_errors_of_ours()


def test_ui_panel_labels_and_tooltips(ui: Ui) -> None:
    page = ui.page
    intro = ui.elem("intro")
    assert not intro.is_visible(), "the pinning panel shows before the script is chosen"
    ui.choose_script("Prompt pinning")
    intro.wait_for(state="visible")
    assert "CMA-ES" in intro.inner_text()

    for group, specs in groups():
        if group != "main":
            accordion = ui.elem(f"group_{group}")
            assert accordion.is_visible(), group
            assert accordion.locator(".label-wrap span").first.inner_text().strip() == GROUP_TITLES[group]
            assert accordion.get_attribute("title") == GROUP_HINTS[group], group
            accordion.locator(".label-wrap").first.click()
        for spec in specs:
            component = ui.elem(spec.key)
            component.wait_for(state="visible")
            assert spec.label in component.inner_text(), f"{spec.key}: label {spec.label!r} not shown"
            assert component.get_attribute("title") == hint(spec), f"{spec.key}: tooltip by elem_id"
    ui.shot("panel")

    # The WebUI's hints.js puts titles[label] on the label's own element (debounced by 1 s after
    # the nodes appear): check it for the labels of the open "main" group.
    main = next(specs for group, specs in groups() if group == "main")
    labelled = [s for s in main if s.kind != "paths"]  # gradio's File label is a badge, not a span
    wanted = {s.label: hint(s) for s in labelled}
    page.wait_for_function(
        """([slug, wanted]) => Object.entries(wanted).every(([label, tip]) =>
            [...gradioApp().querySelectorAll(`[id^="script_txt2img_${slug}_"] span`)]
                .some(el => el.textContent.trim() === label && el.title === tip))""",
        arg=[SLUG, wanted], timeout=15_000)

    ui.choose_script("None")
    intro.wait_for(state="hidden")
    ui.assert_no_errors_of_ours()


def _image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _generate_and_check(ui: Ui, batch: int) -> None:
    """Set a tiny pinning run in the current tab, press Generate and check what the user gets: the
    log box, the gallery (best batch, then baseline, pixel for pixel from the run folder) and the
    report behind the log's link."""
    page, server, tab = ui.page, ui.server, ui.tab
    forge = "forge" in server.target.features
    ui.field(f"{tab}_prompt").fill(checks.TINY["prompt"])
    for elem_id, value in ((f"{tab}_width", 64), (f"{tab}_height", 64), (f"{tab}_steps", 4),
                           (f"{tab}_batch_size", batch), (f"{tab}_seed", 5)):
        ui.set_value(elem_id, str(value))
    ui.choose_script("Prompt pinning")
    ui.elem("intro").wait_for(state="visible")
    generations = 1 if forge else 2  # Forge: about 7 s a batch here, and the budget is shared
    ui.set_value(f"script_{tab}_{SLUG}_generations", str(generations))
    ui.elem("group_cma").locator(".label-wrap").first.click()
    ui.set_value(f"script_{tab}_{SLUG}_cma_lambda", "2")
    ui.shot("before-generate")

    started = time.monotonic()
    page.locator(f"#{tab}_generate").click()
    page.wait_for_function(f"() => (gradioApp().querySelector('#html_log_{tab}')?.textContent || '')"
                           ".includes('Run folder')", timeout=RUN_TIMEOUT_MS)
    print(f"{server.target.name}: {tab} browser run of {1 + 2 * generations} batches: "
          f"{time.monotonic() - started:.1f} s")
    ui.shot("after-generate")

    log_text = page.locator(f"#html_log_{tab}").first.inner_text()  # gradio 3.41 repeats HTML elem_ids
    assert "Prompt pinning finished" in log_text, log_text
    info_text = page.locator(f"#html_info_{tab}").first.inner_text()
    run_id = checks.infotext_fields(info_text).get("Pin run")
    assert run_id, f"no 'Pin run' in the info box: {info_text!r}"
    run = server.get(f"/prompt-pinning/v1/runs/{run_id}?tab={tab}").ok().json
    run_dir = Path(run["run_dir"])
    assert run["status"] == "finished" and run["tab"] == tab, run

    # the gallery's grid (gradio 3.41 and 4.40 also render a strip of small thumbnails beside a preview)
    grid = f"#{tab}_gallery .grid-container .thumbnail-item img"
    thumbnails = page.locator(grid)
    page.wait_for_function("([css, n]) => gradioApp().querySelectorAll(css).length >= n", arg=[grid, 2 * batch])
    sources = [thumbnails.nth(i).get_attribute("src") for i in range(thumbnails.count())]
    assert len(sources) == 2 * batch, sources
    shown = [_image(page.request.get(src).body()) for src in sources]
    for position, name in ((0, "best"), (batch, "baseline")):
        record = run[name]
        folder = run_dir / record["path"]
        expected = [_image(p.read_bytes()) for p in sorted(folder.glob("[0-9][0-9]-*.png"))]
        assert len(expected) == batch, folder
        for i in range(batch):
            assert np.array_equal(shown[position + i], expected[i]), \
                f"gallery image {position + i + 1} is not image {i + 1} of the {name} batch ({folder})"

    link = page.locator(f"#html_log_{tab} a", has_text="report")
    assert link.count() == 1, f"no report link in the log box: {page.locator(f'#html_log_{tab}').first.inner_html()}"
    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state("load")
    report.wait_for_selector("tr[data-generation]", timeout=60_000)
    assert "Prompt pinning" in report.title()
    rows = report.locator("tr[data-generation]").count()
    assert rows == run["evaluations"], (rows, run["evaluations"])
    report.screenshot(path=str(ui.shots / "report.png"), full_page=True)
    ui.assert_no_errors_of_ours()


def test_ui_generate_shows_best_batch_and_report(ui: Ui) -> None:
    _generate_and_check(ui, batch=2)


def _init_image() -> Image.Image:
    """A 64 x 64 picture with structure (a gradient and a disc), so that img2img starts from something."""
    y, x = np.mgrid[0:64, 0:64]
    image = Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8), "RGB")
    image.paste((230, 30, 30), (16, 16, 48, 48))
    return image


def test_ui_img2img_generate_shows_best_batch_and_report(ui: Ui) -> None:
    """img2img tab, an init image uploaded through the page's own file input (A1111's gr.Image,
    Forge's ForgeCanvas: both have one inside #img2img_image), then the same run as in txt2img."""
    ui.open_tab("img2img")
    init = ui.shots / "init.png"
    _init_image().save(init)
    ui.page.locator("#img2img_image input[type=file]").first.set_input_files(str(init))
    ui.page.wait_for_function(
        "() => [...gradioApp().querySelectorAll('#img2img_image img')].some(i => i.src && i.naturalWidth === 64)",
        timeout=60_000)
    ui.shot("init-uploaded")
    _generate_and_check(ui, batch=2)
