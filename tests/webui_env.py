"""Put the WebUI stand-in (tests/webui_stub) in place for one test, and take it away afterwards.

`webui_stub(...)` is a context manager (tests/conftest.py wraps it in the `webui` fixture): it
imports a fresh `modules` package mirroring the chosen WebUI version, points its paths at a
temporary directory, registers and loads the toy checkpoint, and yields a `WebUIStub` handle with
helpers that drive the WebUI lifecycle (loading this extension's scripts, "Reload UI", the
startup callbacks) and build processing objects. On exit every `modules.*` and stand-in
`k_diffusion.*` module is dropped from sys.modules, sys.path is restored and the global hook the
WebUI installs into torchsde is undone, so tests never see each other's WebUI state.

Versions: "1.10" mirrors v1.10.1 (the 1.9+ behaviour), "1.8" mirrors v1.8.0 (the 1.6-1.8
behaviour); see tests/webui_stub/modules/__init__.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tarfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
STUB_DIR = Path(__file__).resolve().parent / "webui_stub"

VERSIONS: dict[str, tuple[int, int, int]] = {"1.10": (1, 10, 1), "1.8": (1, 8, 0)}

TOY_CHECKPOINT = "toy-sd15.safetensors"
TOY_SDXL_CHECKPOINT = "toy-sdxl.safetensors"
TOY_REFINER_CHECKPOINT = "toy-refiner.safetensors"

_STUB_PACKAGES = ("modules", "k_diffusion")


class _CompiledOnceLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles each stand-in file once per process.

    Every test imports the stand-in afresh (new module objects, new state); only the immutable
    code objects are shared. Without this, with PYTHONDONTWRITEBYTECODE set (as in this
    environment) every test would recompile ~30 files, about 0.2 s each time.
    """

    _code: dict[tuple[str, int], types.CodeType] = {}

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        key = (path, os.stat(path).st_mtime_ns)
        code = self._code.get(key)
        if code is None:
            code = super().get_code(fullname)
            self._code[key] = code
        return code


class _StubFinder(importlib.abc.MetaPathFinder):
    """Finds the stand-in's packages in tests/webui_stub and loads them with _CompiledOnceLoader."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in _STUB_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path if path is not None else [str(STUB_DIR)])
        if spec is None or spec.origin is None or not spec.origin.startswith(str(STUB_DIR)):
            return spec
        loader = _CompiledOnceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader,
                                                      submodule_search_locations=spec.submodule_search_locations)


_FINDER = _StubFinder()


class RealWebUIUnavailable(Exception):
    """No real A1111 tree here; the message says where one was looked for, in one line."""


@functools.cache
def real_a1111_sources() -> dict[str, str]:
    """The text of every `.py` file of the real A1111 v1.10.1 tree the stand-in imitates, by path
    relative to the tree's root ("modules/processing.py").

    Found the way tests/integration/harness.py finds it: the checkout in $PINNING_WEBUI_A1111, else
    the tarball in $PINNING_WEBUI_TARBALLS (default ../shared/webui), read in place (no unpacking,
    no venv). Raises RealWebUIUnavailable when neither is there.
    """
    from tests.integration.harness import Unavailable
    from tests.integration.target_a1111 import A1111

    try:
        kind, source = A1111.source()
    except Unavailable as e:
        raise RealWebUIUnavailable(str(e)) from None
    if kind == "checkout":
        files = [*source.glob("*.py"), *(source / "modules").rglob("*.py")]
        return {str(path.relative_to(source)): path.read_text(encoding="utf-8", errors="replace") for path in files}
    texts: dict[str, str] = {}
    with tarfile.open(source) as archive:
        for member in archive:
            _, _, relative = member.name.partition("/")
            wanted = relative.endswith(".py") and (relative.startswith("modules/") or "/" not in relative)
            if member.isfile() and wanted:
                handle = archive.extractfile(member)
                if handle is not None:
                    texts[relative] = handle.read().decode("utf-8", errors="replace")
    if not texts:
        raise RealWebUIUnavailable(f"{source} holds no WebUI source files")
    return texts


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".", 1)[0] in _STUB_PACKAGES:
            del sys.modules[name]


class WebUIStub:
    """A loaded stand-in WebUI: its modules and the lifecycle steps tests drive."""

    def __init__(self, version: tuple[int, int, int], data_dir: Path) -> None:
        self.version = version
        self.data_dir = data_dir
        self.script_modules: list[types.ModuleType] = []

    def module(self, name: str) -> types.ModuleType:
        """`modules.<name>` of this stand-in (imported on first use, as the WebUI would)."""
        return importlib.import_module(f"modules.{name}")

    @property
    def shared(self) -> types.ModuleType:
        return self.module("shared")

    @property
    def sd_samplers(self) -> types.ModuleType:
        return self.module("sd_samplers")

    @property
    def processing(self) -> types.ModuleType:
        return self.module("processing")

    def load_scripts(self) -> list[types.ModuleType]:
        """What the WebUI's startup does with extension scripts: execute them, build the runners.

        Returns the script modules executed by this call (the extension's `scripts/*.py`).
        """
        scripts = self.module("scripts")
        script_loading = self.module("script_loading")
        before = dict(script_loading.loaded_scripts)
        scripts.load_scripts()
        scripts.scripts_txt2img.initialize_scripts(is_img2img=False)
        scripts.scripts_img2img.initialize_scripts(is_img2img=True)
        loaded = [m for path, m in script_loading.loaded_scripts.items() if before.get(path) is not m]
        self.script_modules = loaded
        return loaded

    def start(self, *, nowebui: bool = False, app: Any = None) -> None:
        """The startup callbacks in webui.py's order (v1.10.1 webui.py:L26-L38 and L48-L119).

        With the UI: before_ui, then ui_settings (fired while the settings page is built,
        modules/ui_settings.py:L103), then app_started(demo, app). With --nowebui (api_only):
        before_ui and app_started(None, app) only; the settings page, and with it
        on_ui_settings, never runs.
        """
        callbacks = self.module("script_callbacks")
        callbacks.before_ui_callback()
        if nowebui:
            callbacks.app_started_callback(None, app)
            return
        callbacks.ui_settings_callback()
        callbacks.app_started_callback(types.SimpleNamespace(kind="gradio Blocks stand-in"), app)

    def reload_ui(self) -> list[types.ModuleType]:
        """"Reload UI" (v1.10.1 webui.py:L149-L153): reload and unload callbacks, then load_scripts again."""
        callbacks = self.module("script_callbacks")
        callbacks.app_reload_callback()
        callbacks.script_unloaded_callback()
        return self.load_scripts()

    def txt2img(self, **kwargs: Any) -> Any:
        """A StableDiffusionProcessingTxt2Img with the toy's size and no file output by default."""
        defaults = dict(width=64, height=64, steps=12, cfg_scale=3.0, outpath_samples=str(self.data_dir / "out"),
                        outpath_grids=str(self.data_dir / "grids"), do_not_save_samples=True, do_not_save_grid=True)
        defaults.update(kwargs)
        return self.processing.StableDiffusionProcessingTxt2Img(**defaults)

    def img2img(self, **kwargs: Any) -> Any:
        """A StableDiffusionProcessingImg2Img with the toy's size and no file output by default."""
        defaults = dict(width=64, height=64, steps=12, cfg_scale=3.0, outpath_samples=str(self.data_dir / "out"),
                        outpath_grids=str(self.data_dir / "grids"), do_not_save_samples=True, do_not_save_grid=True,
                        mask_blur=4, inpaint_full_res=False)  # the WebUI's UI defaults (mask blur 4, whole picture)
        defaults.update(kwargs)
        return self.processing.StableDiffusionProcessingImg2Img(**defaults)

    def use_checkpoint(self, name: str) -> Any:
        """Load the toy checkpoint `name` (as choosing it in the checkpoint dropdown)."""
        sd_models = self.module("sd_models")
        info = sd_models.get_closet_checkpoint_match(name)
        if info is None:
            raise KeyError(name)
        return sd_models.load_model(info)


@contextlib.contextmanager
def webui_stub(version: str = "1.10", *, data_dir: Path, sdxl: bool = False) -> Iterator[WebUIStub]:
    """Install a fresh stand-in WebUI of `version` for the duration of the block."""
    if version not in VERSIONS:
        raise ValueError(f"unknown stand-in version {version!r}; choose one of {sorted(VERSIONS)}")
    import torchsde._brownian.brownian_interval as brownian_interval

    torchsde_randn = brownian_interval._randn
    saved_path = list(sys.path)
    # The toy's tensors are tiny, so intra-op threads only add synchronisation: on this 2-core
    # machine under load an elementwise op on a [8, 3, 64, 64] tensor took 9 ms with 2 threads and
    # 0.12 ms with 1. Generations through the stand-in run single-threaded; restored on exit.
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _purge()
    sys.path.insert(0, str(STUB_DIR))
    sys.meta_path.insert(0, _FINDER)
    try:
        modules = importlib.import_module("modules")
        modules.WEBUI_VERSION = VERSIONS[version]
        paths = importlib.import_module("modules.paths")
        data_dir.mkdir(parents=True, exist_ok=True)
        paths.data_path = str(data_dir)
        paths.models_path = str(data_dir / "models")
        paths.extensions_dir = str(data_dir / "extensions")
        paths.extension_dirs = [str(REPO_ROOT)]
        importlib.import_module("modules.shared")
        # The WebUI imports these at startup (modules/initialize.py); rng.py also installs the
        # devices.randn* functions that sd_samplers_common's torchsde hook calls.
        importlib.import_module("modules.sd_samplers")
        importlib.import_module("modules.processing")
        sd_models = importlib.import_module("modules.sd_models")
        sd_models.register_toy_checkpoint(TOY_CHECKPOINT)
        sd_models.register_toy_checkpoint(TOY_SDXL_CHECKPOINT, is_sdxl=True)
        sd_models.register_toy_checkpoint(TOY_REFINER_CHECKPOINT)
        stub = WebUIStub(VERSIONS[version], data_dir)
        stub.use_checkpoint(TOY_SDXL_CHECKPOINT if sdxl else TOY_CHECKPOINT)
        yield stub
    finally:
        _purge()
        sys.meta_path.remove(_FINDER)
        sys.path[:] = saved_path
        brownian_interval._randn = torchsde_randn
        torch.set_num_threads(saved_threads)
