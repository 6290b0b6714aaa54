"""Stand-in for modules/script_loading.py (v1.10.1 82a973c0): executing extension files."""

from __future__ import annotations

import argparse
import importlib.util
import os
import types

from modules import errors

loaded_scripts: dict[str, types.ModuleType] = {}
"""modules/script_loading.py:L7: path -> module of every loaded script file."""


def load_module(path: str) -> types.ModuleType:
    """modules/script_loading.py:L10: execute a file as a fresh module named after its basename.

    The module is not put in sys.modules: loading the same file again (Reload UI) executes it again.
    """
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module


def preload_extensions(extensions_dir: str, parser: argparse.ArgumentParser, extension_list: list[str] | None = None) -> None:
    """modules/script_loading.py:L19: run each extension's preload.py `preload(parser)`."""
    if not os.path.isdir(extensions_dir):
        return
    extensions = extension_list if extension_list is not None else os.listdir(extensions_dir)
    for dirname in sorted(extensions):
        preload_script = os.path.join(extensions_dir, dirname, "preload.py")
        if not os.path.isfile(preload_script):
            continue
        try:
            module = load_module(preload_script)
            if hasattr(module, "preload"):
                module.preload(parser)
        except Exception:
            errors.report(f"Error running preload() for {preload_script}", exc_info=True)
