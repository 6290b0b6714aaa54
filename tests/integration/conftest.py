"""Fixtures of the real-WebUI checks (see harness.py for the Target interface).

- `target`: parametrized (session scope) over every registered target, so pytest runs all checks
  of one target before starting the next one's server; ids are the target names.
- `webui_server`: the target's running Server, started once per session and target, stopped by
  PID at the end (or when pytest moves to the next target). When a check of the target failed, or
  the server did not start, the session folder (WebUI log, install.py output, command line, the
  data dir's run folders) is copied to tests/integration/artifacts/<target>-<time>/ and the path
  printed.
- Checks marked `@pytest.mark.last` run after the target's other checks (the log checks);
  `@pytest.mark.not_on("sdxl", reason=...)` leaves out the targets with that feature (not a skip:
  they are not collected for it).
- PINNING_REQUIRE_WEBUI=1 turns every skip of an integration test into a failure (CI).

Timings (venv build, checkpoint, install.py, server start, each module's tests) are printed at the
end of the session and written to tests/integration/artifacts/timings.json.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import harness

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"

for _module in sorted(HERE.glob("target_*.py")):
    importlib.import_module(f"tests.integration.{_module.stem}")

_failed_targets: set[str] = set()
_timings: dict[str, dict[str, float]] = defaultdict(dict)
_module_seconds: dict[tuple[str, str], float] = defaultdict(float)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "last: run after the target's other checks (log checks)")
    config.addinivalue_line("markers", "not_on(*features, reason): leave out the targets with any of these features")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = harness.registered()
        for marker in metafunc.definition.iter_markers("not_on"):
            targets = [t for t in targets if not set(marker.args) & t.features]
        metafunc.parametrize("target", targets, ids=[t.name for t in targets], scope="session")


def _target_name(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    return target.name if target is not None else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep pytest's grouping by target, and put each target's `last` checks at its group's end."""
    order = {}
    for position, item in enumerate(items):
        name = _target_name(item) or ""
        order.setdefault(name, len(order))
    items.sort(key=lambda item: (order[_target_name(item) or ""], item.get_closest_marker("last") is not None))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    name = _target_name(item)
    if name is None:
        return
    if call.when == "call":  # a target's set-up (venv, checkpoint, server start) is timed on its own
        _module_seconds[(name, item.module.__name__.rsplit(".", 1)[-1])] += report.duration
    if report.failed:
        _failed_targets.add(name)
    if report.skipped and harness.require_webui() and call.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"skipped with PINNING_REQUIRE_WEBUI=1: {report.longrepr}"
        _failed_targets.add(name)


@pytest.fixture(scope="session")
def webui_server(target: harness.Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Server]:
    try:
        target.webui.source()
    except harness.Unavailable as e:
        if harness.require_webui():
            pytest.fail(f"{target.name}: {e} (PINNING_REQUIRE_WEBUI=1)")
        pytest.skip(f"{target.name}: {e}")
    session_dir = tmp_path_factory.mktemp(target.name)
    server = None
    try:
        server = harness.start_server(target, session_dir)
        _timings[target.name].update(server.timings)
        yield server
    except BaseException:
        _failed_targets.add(target.name)
        raise
    finally:
        if server is not None:
            server.stop()
            _timings[target.name].update(server.timings)
        if target.name in _failed_targets:
            _keep_artifacts(target.name, session_dir)


def _keep_artifacts(name: str, session_dir: Path) -> None:
    dest = ARTIFACTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(session_dir, dest, ignore=shutil.ignore_patterns("sd-prompt-pinning", "*.safetensors"),
                    dirs_exist_ok=True)
    print(f"\n{name}: WebUI log and session files kept in {dest} (log: {dest / 'webui.log'})")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings and not _module_seconds:
        return
    report: dict[str, dict[str, float]] = {name: dict(values) for name, values in _timings.items()}
    for (name, module), seconds in _module_seconds.items():
        report.setdefault(name, {})[f"tests: {module}"] = seconds
    terminalreporter.section("real-WebUI timings (s)")
    for name, values in sorted(report.items()):
        for label, seconds in values.items():
            terminalreporter.write_line(f"{name:12s} {label.removeprefix(name + ': '):40s} {seconds:8.1f}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(report, indent=1))
