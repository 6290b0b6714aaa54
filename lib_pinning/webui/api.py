"""HTTP routes for pinning runs, added to the WebUI's FastAPI app from `on_app_started(demo, app)`.

    GET /prompt-pinning/v1/runs                          every run, newest first (both tabs)
    GET /prompt-pinning/v1/runs/{run_id}[?tab=img2img]   one run's run.json plus where its report is
    GET /prompt-pinning/v1/runs/{run_id}/files/{path}    a file of the run (index.html, plots, images)

Starting a run goes through the WebUI's own /sdapi/v1/txt2img with `script_name` (see README.md, section API).

The routes exist where the WebUI's API does: with --api or --nowebui (webui.py creates the API only
then, webui.py:L34 and L111-L112 in v1.10.1; app_started fires after it, L38 and L119), and they
require the same HTTP Basic credentials when --api-auth is given (modules/api/api.py:L200-L204,
L273-L283). With --nowebui the `demo`
argument is None and gradio's /file= route does not exist; the files route serves the report then.

A run id is a run directory's name (RunStore.create: NNNNN-YYYYmmdd-HHMMSS). It must match
RUN_ID_PATTERN, and every path is resolved and checked to lie inside its run directory, so
"..", absolute paths, symlinks out of the directory and dotfiles (the store's temporary files)
are refused. The handlers are plain functions raising ApiError, so they are tested without
FastAPI; `mount` wraps them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lib_pinning.store import RUN_FILE, RunDirectoryError, RunStore

PREFIX = "/prompt-pinning/v1"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
REPORT_FILE = "index.html"
TABS = ("txt2img", "img2img")


class ApiError(Exception):
    """An HTTP error answer: status code and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id or ""):
        raise ApiError(400, f"invalid run id {run_id!r}: expected a run folder name such as 00003-20240727-154939")
    return run_id


def check_tab(tab: str | None) -> str | None:
    if tab is not None and tab not in TABS:
        raise ApiError(400, f"invalid tab {tab!r}: expected one of {', '.join(TABS)}")
    return tab


Roots = Mapping[str, Path] | Iterable[tuple[str, Path]]
"""Where runs are: {tab: folder}, or (tab, folder) pairs when a tab has several (settings.output_roots)."""


def root_pairs(roots: Roots) -> list[tuple[str, Path]]:
    pairs = roots.items() if isinstance(roots, Mapping) else roots
    return [(tab, Path(folder)) for tab, folder in pairs]


def run_dirs(roots: Roots) -> list[tuple[str, Path]]:
    """(tab, run directory) of every run under the run folders; a folder listed twice (the common
    "Output directory for images" of both tabs) is listed once, under its first tab."""
    seen: set[str] = set()
    found = []
    for tab, root in root_pairs(roots):
        key = os.path.normcase(os.path.abspath(root))
        if key in seen or not root.is_dir():
            continue
        seen.add(key)
        for child in root.iterdir():
            if RUN_ID_PATTERN.match(child.name) and (child / RUN_FILE).is_file():
                found.append((tab, child))
    return found


def find_run(roots: Roots, run_id: str, tab: str | None = None) -> tuple[str, Path]:
    check_run_id(run_id)
    check_tab(tab)
    for run_tab, root in root_pairs(roots):
        if tab is not None and run_tab != tab:
            continue
        candidate = root / run_id
        if (candidate / RUN_FILE).is_file():
            return run_tab, candidate
    raise ApiError(404, f"no pinning run {run_id!r}" + (f" in {tab}" if tab else ""))


def files_url(run_id: str, relative: str, tab: str) -> str:
    """The files route's URL of a run's file, relative to the server root (no leading "/")."""
    return f"{PREFIX.lstrip('/')}/runs/{run_id}/files/{quote(relative)}?tab={tab}"


def summary(tab: str, run_dir: Path, *, full: bool,
            report_url: Callable[[Path], str | None] | None = None) -> dict[str, Any]:
    """run.json (all of it with `full`, else the fields a listing needs) plus location fields."""
    try:
        info = RunStore.open(run_dir).read_run()
    except (RunDirectoryError, FileNotFoundError) as e:
        info = {"status": "unreadable", "error": str(e)}
    report = run_dir / REPORT_FILE
    best = info.get("best") or {}
    if full:
        out = dict(info)
    else:
        out = {k: info.get(k) for k in ("status", "created", "updated", "prompt", "negative_prompt",
                                        "generations_done", "evaluations", "error")}
        out["best_fitness"] = (best.get("fitness") or [None])[0]
        out["best_prompt"] = best.get("shown_prompt", best.get("prompt"))
    out.update({
        "run_id": run_dir.name,
        "tab": tab,
        "run_dir": str(run_dir.resolve()),
        "report_path": str(report.resolve()),
        "report_exists": report.is_file(),
        "report_url": (report_url(report) if report_url else None) or files_url(run_dir.name, REPORT_FILE, tab),
        "summary_url": f"{PREFIX.lstrip('/')}/runs/{run_dir.name}?tab={tab}",
    })
    return out


def list_runs(roots: Roots, report_url: Callable[[Path], str | None] | None = None) -> dict[str, Any]:
    runs = [summary(tab, d, full=False, report_url=report_url) for tab, d in run_dirs(roots)]
    runs.sort(key=lambda r: (r.get("created") or "", r["run_id"]), reverse=True)
    return {"runs": runs}


def get_run(roots: Roots, run_id: str, tab: str | None = None,
            report_url: Callable[[Path], str | None] | None = None) -> dict[str, Any]:
    run_tab, run_dir = find_run(roots, run_id, tab)
    return summary(run_tab, run_dir, full=True, report_url=report_url)


def run_file(roots: Roots, run_id: str, relative: str, tab: str | None = None) -> Path:
    """The file `relative` inside run `run_id`, refusing anything that leaves the run directory."""
    _, run_dir = find_run(roots, run_id, tab)
    parts = re.split(r"[\\/]", relative or "")  # as written: Path() would drop "." and empty parts
    if not relative or Path(relative).is_absolute() or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ApiError(400, f"invalid file path {relative!r}")
    base = run_dir.resolve()
    target = (base / relative).resolve()
    try:
        target.relative_to(base)
    except ValueError:
        raise ApiError(400, f"invalid file path {relative!r}") from None
    if not target.is_file():
        raise ApiError(404, f"no file {relative!r} in run {run_id}")
    return target


def parse_credentials(api_auth: str | None) -> dict[str, str] | None:
    """--api-auth "user:password,user2:password2" -> {user: password}, as the WebUI's Api does."""
    if not api_auth:
        return None
    credentials = {}
    for pair in api_auth.split(","):
        user, _, password = pair.partition(":")
        credentials[user] = password
    return credentials


def mount(app: Any, roots: Callable[[], Roots], *, credentials: Mapping[str, str] | None = None,
          report_url: Callable[[Path], str | None] | None = None) -> bool:
    """Add the routes to the FastAPI `app` (once: "Reload UI" builds a new app, this skips an app that
    has them). Returns whether routes were added."""
    from secrets import compare_digest

    from fastapi import Depends, HTTPException
    from fastapi.responses import FileResponse
    from fastapi.security import HTTPBasic

    if any(getattr(r, "path", "") == f"{PREFIX}/runs" for r in getattr(app, "routes", [])):
        return False

    dependencies = []
    if credentials:
        # `given` is an HTTPBasicCredentials; the annotation stays Any because FastAPI resolves
        # annotations (strings here) in this module's globals, where fastapi is not imported.
        def auth(given: Any = Depends(HTTPBasic())) -> bool:
            expected = credentials.get(given.username)
            if expected is not None and compare_digest(given.password, expected):
                return True
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})

        dependencies = [Depends(auth)]

    def answer(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiError as e:
            raise HTTPException(status_code=e.status, detail=e.detail) from None

    def runs_endpoint() -> Any:
        return answer(lambda: list_runs(roots(), report_url))

    def run_endpoint(run_id: str, tab: str | None = None) -> Any:
        return answer(lambda: get_run(roots(), run_id, tab, report_url))

    def file_endpoint(run_id: str, path: str, tab: str | None = None) -> Any:
        return FileResponse(answer(lambda: run_file(roots(), run_id, path, tab)))

    app.add_api_route(f"{PREFIX}/runs", runs_endpoint, methods=["GET"], dependencies=dependencies)
    app.add_api_route(f"{PREFIX}/runs/{{run_id}}", run_endpoint, methods=["GET"], dependencies=dependencies)
    app.add_api_route(f"{PREFIX}/runs/{{run_id}}/files/{{path:path}}", file_endpoint, methods=["GET"],
                      dependencies=dependencies)
    return True
