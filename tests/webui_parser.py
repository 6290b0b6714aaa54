"""The real WebUI's `modules/prompt_parser.py` (A1111 v1.10.1), loaded from the shared source tree.

Only that one file is unpacked (into a temporary folder, never into the repository). It needs
`lark` (the WebUI pins 1.1.2; the test extras install it) and torch (imported at its end).
`load()` returns None with the reason when the tree or lark is missing, so callers can skip.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: The tarball, or PROMPT_PINNING_A1111 (an unpacked WebUI folder or the tarball).
TARBALL = ROOT.parent / "shared" / "webui" / "a1111-v1.10.1.tar.gz"
MEMBER = "stable-diffusion-webui/modules/prompt_parser.py"

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
    source = _source()
    if isinstance(source, Path) and source.suffix == ".py":
        path = source
    elif Path(source).is_file():
        folder = Path(tempfile.mkdtemp(prefix="a1111-prompt-parser-"))
        path = folder / "prompt_parser.py"
        with tarfile.open(source) as archive:
            data = archive.extractfile(MEMBER)
            assert data is not None
            path.write_bytes(data.read())
    else:
        path = Path(source)
    if not path.is_file():
        result = (None, f"the A1111 v1.10.1 source is not available at {source} (set PROMPT_PINNING_A1111)")
    else:
        spec = importlib.util.spec_from_file_location("a1111_prompt_parser", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = (module, "")
    _cache["module"] = result
    return result
