"""WebUI preload hook: this extension's command-line flags.

The WebUI calls `preload(parser)` for every extension before it parses the command line
(modules/script_loading.py:L19-L33 and modules/shared_cmd_options.py:L8-L13 in v1.10.1), so the
flags show in --help and land in `shared.cmd_opts`.
"""

from __future__ import annotations

import argparse


def preload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt-pinning-models-dir",
        type=str,
        default=None,
        help="Prompt pinning: folder for the CLIP and aesthetic-predictor weights (default: "
        "models/PromptPinning; the 'Folder for CLIP and aesthetic weights' setting overrides it)",
    )
