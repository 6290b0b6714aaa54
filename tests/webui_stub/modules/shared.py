"""Stand-in for modules/shared.py (v1.10.1 82a973c0): the WebUI's global objects.

In the WebUI these names are declared in shared.py and filled by modules/shared_init.py and
modules/initialize.py at startup; the stand-in fills them when this module is imported (opts with
the built-in settings of modules/shared_options.py, a fresh State and TotalTQDM, an empty style
database). `sd_model` is set by tests/webui_env.py (modules.sd_models.load_model).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from modules import options, shared_cmd_options, shared_options, shared_state, shared_total_tqdm, styles

if TYPE_CHECKING:
    from modules.sd_models import ToySdModel

cmd_opts = shared_cmd_options.cmd_opts
"""modules/shared.py:L14."""
parser = shared_cmd_options.parser

batch_cond_uncond = True
parallel_processing_allowed = True

demo: Any = None
"""modules/shared.py:L23: the gradio Blocks of the UI (None here: no UI is built)."""

device = "cpu"

options_templates: dict[str, options.OptionInfo] = shared_options.options_templates
restricted_opts: set[str] = shared_options.restricted_opts

opts: options.Options = options.Options(options_templates, restricted_opts)
"""modules/shared.py:L44: the settings."""

state: shared_state.State = shared_state.State()
"""modules/shared.py:L35."""

total_tqdm: shared_total_tqdm.TotalTQDM = shared_total_tqdm.TotalTQDM()
"""modules/shared.py:L72."""

prompt_styles: styles.StyleDatabase = styles.StyleDatabase()
"""modules/shared.py:L37."""

sd_model: ToySdModel | None = None
"""modules/shared.py:L47: the loaded checkpoint (the stand-in's toy model)."""

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}
"""modules/shared.py:L55: the latent hires-fix upscalers."""

sd_upscalers: list[Any] = []
"""modules/shared.py:L64: image upscalers (none in the stand-in; hires fix uses latent upscaling)."""

progress_print_out = sys.stdout

OptionInfo = options.OptionInfo
"""modules/shared.py:L77."""
OptionHTML = options.OptionHTML
options_section = options.options_section


def list_samplers() -> list[Any]:
    """modules/shared_items.py:L65 (shared.list_samplers): every registered sampler."""
    import modules.sd_samplers

    return modules.sd_samplers.all_samplers
