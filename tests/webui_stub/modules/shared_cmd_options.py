"""Stand-in for modules/shared_cmd_options.py + modules/cmd_args.py (v1.10.1 82a973c0).

`parser` is the WebUI's argparse parser (the subset of its flags the stand-in reads, same names
and defaults, modules/cmd_args.py); extensions add their own flags to it in `preload(parser)`
(modules/script_loading.py:L19 `def preload_extensions`). `cmd_opts` is the parsed namespace; the stand-in parses an empty
command line, so every flag has its default. Tests that need other values parse again:
`shared.cmd_opts = parser.parse_args([...])`.
"""

from __future__ import annotations

import argparse
import os

from modules import paths

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=paths.data_path)
parser.add_argument("--models-dir", type=str, default=None)
parser.add_argument("--ckpt", type=str, default=None)
parser.add_argument("--ckpt-dir", type=str, default=None)
parser.add_argument("--embeddings-dir", type=str, default=os.path.join(paths.data_path, "embeddings"))
parser.add_argument("--hide-ui-dir-config", action="store_true", default=False)
parser.add_argument("--freeze-settings", action="store_true", default=False)
parser.add_argument("--freeze-settings-in-sections", type=str, default=None)
parser.add_argument("--freeze-specific-settings", type=str, default=None)
parser.add_argument("--disable-console-progressbars", action="store_true", default=False)
parser.add_argument("--api", action="store_true")
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--no-prompt-history", action="store_true")

cmd_opts: argparse.Namespace = parser.parse_args([])
"""modules/shared_cmd_options.py:L13: the parsed command line."""
