"""The report in a real browser: headless Chromium opens index.html from disk.

Checks that the page's script renders the individuals table from the embedded rows, and that none
of the hostile strings in the run (prompts, run id, error, options) executed: each payload would
change the document title, add an <img src=x>, or mark <body> with data-pwned if it ran.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
