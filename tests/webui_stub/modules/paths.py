"""Stand-in for modules/paths.py and modules/paths_internal.py (v1.10.1 82a973c0).

The WebUI computes these from its install directory and --data-dir; tests/webui_env.py points them
at a temporary directory (data, models, outputs) and at this repository as the one installed
extension, before any script loads.
"""

from __future__ import annotations

import os
import tempfile

script_path: str = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
"""modules/paths_internal.py:L17: the WebUI's install directory (here: tests/webui_stub)."""

data_path: str = tempfile.gettempdir()
"""modules/paths_internal.py:L30: --data-dir (params.txt, config.json, outputs)."""

models_path: str = os.path.join(data_path, "models")
"""modules/paths_internal.py:L32."""

extensions_dir: str = os.path.join(data_path, "extensions")
"""modules/paths_internal.py:L33: where user extensions are installed."""

extension_dirs: list[str] = []
"""Stand-in only: the installed extensions' directories, in load order (the WebUI lists the
subdirectories of extensions_dir, modules/extensions.py:L228 `def list_extensions`). Set by tests/webui_env.py."""
