"""Reload UI, then the WebUI log: these run after every other check of the target (`last`)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.integration import checks
from tests.integration.harness import Server

pytestmark = pytest.mark.last


def test_reload_ui_keeps_every_hyperbatch_sampler_exactly_once(webui_server: Server) -> None:
    before = webui_server.startups()
    webui_server.restart_scripts()
    assert webui_server.startups() == before + 1
    names = Counter(s["name"] for s in webui_server.get("/sdapi/v1/samplers").ok().json)
    assert {name: names[name] for name in checks.HYPERBATCH} == {name: 1 for name in checks.HYPERBATCH}
    batch = checks.images(webui_server.txt2img(**{**checks.TINY, "sampler_name": "Euler a - Hyperbatch"}).ok())
    assert checks.distinct(batch)
    answer = checks.pin(webui_server).ok()
    assert checks.pin_run(webui_server, answer)["status"] == "finished"
    webui_server.get("/prompt-pinning/v1/runs").ok()


EXTENSION_PATH = re.compile(r"extensions[/\\]sd-prompt-pinning[/\\]|[/\\]lib_pinning[/\\]|[/\\]samplers[/\\]\w+\.py")


def extension_errors(log: str) -> list[str]:
    """Tracebacks (and the WebUI's '*** Error ...' reports) that pass through this extension's files."""
    found = []
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" in line or line.startswith("*** Error"):
            block = [line]
            for following in lines[index + 1:index + 200]:
                if following.startswith("---") or (not following.startswith((" ", "\t")) and len(block) > 1
                                                   and not following.startswith(("Traceback", "During", "The above"))):
                    block.append(following)
                    break
                block.append(following)
            text = "\n".join(block)
            if EXTENSION_PATH.search(text):
                found.append(text)
    return found


def test_the_webui_log_has_no_traceback_from_this_extension(webui_server: Server) -> None:
    log = webui_server.log_text()
    assert "Startup time:" in log
    errors = extension_errors(log)
    assert not errors, f"{len(errors)} traceback(s) through this extension's files; first:\n{errors[0]}"


def test_the_console_log_shows_the_generations(webui_server: Server) -> None:
    """The per-generation lines of the engine (option cli_log, on by default) reach the console."""
    assert "[Prompt pinning]" in webui_server.log_text(), "no line of the engine's console log"
