"""install.py with a fake `launch` module: only missing packages are installed, torch never, every
pip call protects the installed torch/numpy/gradio, failures are reported by name with pip's
output, and the script never fails the WebUI's startup."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prompt_pinning_install", REPO / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


install = load_install()


class FakeLaunch:
    """The part of the WebUI's `launch` module install.py uses (modules/launch_utils.py:L121-L144)."""

    def __init__(self, installed: set[str], fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.installed = set(installed)
        self.fail = set(fail)
        self.pip_calls: list[str] = []
        self.constraints: list[str] = []

    def is_installed(self, package: str) -> bool:
        return package in self.installed

    def run_pip(self, command: str, desc: str | None = None, live: bool = False) -> str:
        self.pip_calls.append(command)
        constraints = command.split(' -c "', 1)[1].rstrip('"')
        self.constraints.append(Path(constraints).read_text())
        name = command.split('"', 2)[1]
        if any(name.startswith(f) for f in self.fail):
            raise RuntimeError(f"Couldn't install {desc}.\nCommand: pip {command}\nError code: 1\n"
                               f"stderr: ERROR: No matching distribution found for {name}")
        return ""


ALL = {r.dist for r in install.REQUIRED} | {r.dist for r in install.OPTIONAL}


def test_nothing_is_installed_when_everything_is_there() -> None:
    launch = FakeLaunch(ALL)
    assert install.install(launch) == [] and launch.pip_calls == []


def test_only_the_missing_packages_are_installed_with_protective_constraints(caplog: pytest.LogCaptureFixture) -> None:
    launch = FakeLaunch(ALL - {"deap", "jinja2"})
    with caplog.at_level(logging.INFO):
        assert install.install(launch) == []
    assert [c.split('"')[1] for c in launch.pip_calls] == ["deap==1.4.4", "jinja2>=3.0,<4"]
    for constraints in launch.constraints:
        pinned = dict(line.split("==", 1) for line in constraints.split())
        assert pinned.get("torch") == importlib.metadata.version("torch")
        assert pinned.get("numpy") == importlib.metadata.version("numpy")
    assert not any("torch" in c.split('"')[1] for c in launch.pip_calls)


def test_torch_is_never_a_requirement() -> None:
    assert not {r.dist for r in install.REQUIRED} & {"torch", "torchvision", "torchaudio"}
    assert all(r.spec == "" for r in install.OPTIONAL)  # optional packages are only reported


def test_failures_are_reported_by_name_with_pip_output(caplog: pytest.LogCaptureFixture) -> None:
    launch = FakeLaunch(ALL - {"deap", "matplotlib", "open-clip-torch"}, fail={"deap"})
    with caplog.at_level(logging.INFO):
        failures = install.install(launch)
    assert [name for name, _ in failures] == ["deap"]
    text = caplog.text
    assert "could not install deap (needed for the CMA-ES optimizer)" in text
    assert "No matching distribution found for deap==1.4.4" in text
    assert "1 package(s) failed to install: deap" in text
    assert "optional open-clip-torch is not installed" in text
    assert len(launch.pip_calls) == 2  # matplotlib was still installed after deap failed


def test_an_old_installed_version_is_reported_not_upgraded(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(install, "installed_version", lambda dist: "3.1.0" if dist == "matplotlib" else "99")
    launch = FakeLaunch(ALL)
    with caplog.at_level(logging.WARNING):
        install.install(launch)
    assert launch.pip_calls == [] and "matplotlib 3.1.0 is older than the tested 3.6" in caplog.text


@pytest.mark.parametrize("variant", ["onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon"])
def test_an_onnxruntime_variant_counts_and_no_second_onnxruntime_goes_beside_it(variant: str) -> None:
    launch = FakeLaunch((ALL - {"onnxruntime"}) | {variant})
    assert install.install(launch) == [] and launch.pip_calls == []


def test_onnxruntime_is_installed_when_no_variant_is_there() -> None:
    launch = FakeLaunch(ALL - {"onnxruntime"})
    assert install.install(launch) == []
    assert len(launch.pip_calls) == 1 and launch.pip_calls[0].startswith('install "onnxruntime>=')
    assert "numpy==" in launch.constraints[0]  # the WebUI's numpy is kept


def test_versions_compare_by_release_numbers() -> None:
    assert install.older_than("3.5.9", "3.6") and not install.older_than("3.10.0", "3.6")
    assert not install.older_than("2.1.2+cu121", "2.1") and install.older_than("1.3.3", "1.4")


def test_the_requirements_cover_the_engines_runtime_dependencies() -> None:
    """Every runtime dependency in pyproject.toml is installed here or shipped by the WebUI."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    # A1111 1.10.1's and Forge's requirements_versions.txt (httpx==0.24.1 in both, also a gradio dependency).
    shipped_by_webui = {"torch", "numpy", "pillow", "tqdm", "httpx"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip().lower() for dep in project["dependencies"]}
    assert names - shipped_by_webui <= {r.dist.lower() for r in install.REQUIRED}


def _run_script(tmp_path: Path, launch_source: str | None) -> subprocess.CompletedProcess[str]:
    if launch_source is not None:
        (tmp_path / "launch.py").write_text(launch_source)
    return subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)


def test_the_script_exits_0_and_talks_on_stdout_even_when_everything_fails(tmp_path: Path) -> None:
    failing = (
        "def is_installed(package):\n    return False\n"
        "def run_pip(command, desc=None, live=False):\n"
        "    raise RuntimeError('Couldn\\'t install ' + str(desc) + '\\nstderr: network unreachable')\n"
    )
    done = _run_script(tmp_path, failing)
    assert done.returncode == 0, done.stderr
    assert "could not install deap" in done.stdout and "network unreachable" in done.stdout
    assert f"{len(install.REQUIRED)} package(s) failed to install" in done.stdout
    broken = _run_script(tmp_path, "def is_installed(package):\n    raise OSError('disk gone')\n")
    assert broken.returncode == 0 and "install.py failed" in broken.stdout


def test_the_script_outside_the_webui_says_so(tmp_path: Path) -> None:
    done = _run_script(tmp_path, None)
    assert done.returncode == 0 and "runs inside the WebUI's launcher" in done.stdout
