"""The real WebUI's `modules/prompt_parser.py` (A1111 v1.10.1), loaded from the shared source tree.

Only that one file is read from the tarball, into memory (nothing is written to disk). It needs
`lark` (the WebUI pins 1.1.2; the test extras install it) and torch (imported at its end).
`load()` returns None with the reason when the tree or lark is missing, so callers can skip.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import tarfile
import warnings
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: The tarball, or PROMPT_PINNING_A1111 (an unpacked WebUI folder or the tarball).
TARBALL = ROOT.parent / "shared" / "webui" / "a1111-v1.10.1.tar.gz"
MEMBER = "stable-diffusion-webui/modules/prompt_parser.py"
MODULE_NAME = "a1111_prompt_parser"

_cache: dict[str, tuple[ModuleType | None, str]] = {}


def _source() -> Path | str:
    configured = os.environ.get("PROMPT_PINNING_A1111")
    if configured:
        path = Path(configured)
        if path.is_dir():
            return path / "modules" / "prompt_parser.py"
        return path
    return TARBALL


def load() -> tuple[ModuleType | None, str]:
    """(the module, "") or (None, why it is unavailable)."""
    if "module" in _cache:
        return _cache["module"]
    result: tuple[ModuleType | None, str]
    try:
        import lark  # noqa: F401
    except ImportError:
        result = (None, "lark is not installed (pip install lark==1.1.2, the WebUI's version)")
        _cache["module"] = result
        return result
    source = Path(_source())
    if not source.is_file():
        result = (None, f"the A1111 v1.10.1 source is not available at {source} (set PROMPT_PINNING_A1111)")
    elif source.suffix == ".py":
        spec = importlib.util.spec_from_file_location(MODULE_NAME, source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = (module, "")
    else:
        result = (_from_tarball(source), "")
    _cache["module"] = result
    return result


def _from_tarball(tarball: Path) -> ModuleType:
    """Execute the parser's source straight from the tarball (an unpacked copy would be left behind)."""
    with tarfile.open(tarball) as archive:
        data = archive.extractfile(MEMBER)
        assert data is not None
        text = data.read().decode("utf-8")
    filename = f"{tarball}/{MEMBER}"
    # Tracebacks into the parser show its lines: linecache keeps entries without an mtime as they are.
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    spec = importlib.util.spec_from_loader(MODULE_NAME, loader=None, origin=filename)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = filename
    with warnings.catch_warnings():
        # The WebUI's source has invalid escapes ("\(" in a plain string): its warning, not ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        code = compile(text, filename, "exec")
    exec(code, module.__dict__)
    return module
