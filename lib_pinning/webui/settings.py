"""The "Prompt pinning" settings section, and where runs, reports and models live.

Settings are registered from an `on_ui_settings` callback (modules/script_callbacks.py:L493 in
v1.10.1) with `shared.opts.add_option(key, shared.OptionInfo(...))`. That callback fires only
while the settings page is built, so with --nowebui the settings never exist: every read here
goes through `setting()`, which falls back to the default instead of raising AttributeError.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from lib_pinning.options import PinningOptions

SECTION = ("prompt_pinning", "Prompt pinning")
"""(id, title) of the settings section; 2-tuples are what every version from 1.6 accepts."""

CATEGORY = "sd"
"""The settings category (1.7+ groups sections by category; 1.6 has none)."""

MODELS_FLAG = "prompt_pinning_models_dir"
"""argparse dest of --prompt-pinning-models-dir (added by preload.py)."""

DEFAULT_MODELS_SUBDIR = "PromptPinning"
"""The models folder inside the WebUI's models directory: models/PromptPinning."""


@dataclass(frozen=True)
class Setting:
    """One WebUI setting of this extension: key, default, label and an optional explanation."""

    key: str
    default: Any
    label: str
    info: str = ""
    choices: tuple[str, ...] = ()
    lines: int = 1  # a text box of this many lines


OBJECTIVE_SPEC = PinningOptions.spec("flip_loss")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "prompt_pinning_dir_name",
        "prompt_pins",
        "Folder for pinning runs",
        "inside the txt2img / img2img output folder; an absolute path puts every run there",
    ),
    Setting(
        "prompt_pinning_keep_intermediate",
        False,
        "Keep intermediate images in the WebUI's output folder",
        "every individual's batch is always kept in the run folder; on: the WebUI also saves them "
        "where it saves normal generations, with their infotext (as the original tool required)",
    ),
    Setting(
        "prompt_pinning_default_objective",
        str(OBJECTIVE_SPEC.default),
        f"Default {OBJECTIVE_SPEC.label.lower()}",
        "what the script's image loss starts at: " + OBJECTIVE_SPEC.help,
        choices=OBJECTIVE_SPEC.choices,
    ),
    Setting(
        "prompt_pinning_models_dir",
        "",
        "Folder for CLIP and aesthetic weights",
        "empty: --prompt-pinning-models-dir, else models/PromptPinning",
    ),
    Setting(
        "prompt_pinning_servers",
        "",
        "Extra servers",
        "WebUI or Forge servers started with --api, one URL a line (http://user:password@host:7860 with "
        "--api-auth), with this WebUI's checkpoint loaded; the script's 'Also generate on the extra servers' "
        "sends individuals to them next to this WebUI",
        lines=3,
    ),
)

SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}


def setting(opts: Any, key: str) -> Any:
    """A setting's value, or its default when the settings page never registered it (--nowebui)."""
    value = getattr(opts, key, None)
    return SETTINGS_BY_KEY[key].default if value is None else value


def register_settings(shared: Any, gr: Any) -> None:
    """Add the section's settings (the body of the on_ui_settings callback).

    `shared` is modules.shared, `gr` the gradio module (the settings page builds components from
    `component`/`component_args`; the dropdown and the multi-line box need one, the rest follow their defaults;
    without gradio, which only a test lacks, the choices are still recorded).
    """
    category = {"category_id": CATEGORY} if "category_id" in inspect.signature(shared.OptionInfo).parameters else {}
    for s in SETTINGS:
        component, component_args = None, None
        if s.choices:
            component, component_args = (gr.Dropdown if gr is not None else None), {"choices": list(s.choices)}
        elif s.lines > 1:
            component, component_args = (gr.Textbox if gr is not None else None), {"lines": s.lines}
        info = shared.OptionInfo(s.default, s.label, component, component_args, section=SECTION, **category)
        if s.info:
            info = info.info(s.info)
        shared.opts.add_option(s.key, info)


def runs_dir(p: Any, opts: Any) -> Path:
    """Where this generation's run directories go: <p.outpath_samples>/<folder setting>.

    p.outpath_samples is what the UI and the API set (modules/txt2img.py:L22, modules/api/api.py:L472):
    the txt2img or img2img output folder, or the common one when "Output directory for images" is set.
    """
    name = str(setting(opts, "prompt_pinning_dir_name")).strip() or SETTINGS_BY_KEY["prompt_pinning_dir_name"].default
    folder = Path(os.path.expanduser(name))
    if folder.is_absolute():
        return folder
    return Path(p.outpath_samples or ".") / folder


def output_roots(opts: Any) -> list[tuple[str, Path]]:
    """(tab, folder) of every place a tab's runs can be: the UI writes under the common "Output
    directory for images" when it is set, else the tab's own (modules/txt2img.py:L22), while the API
    always uses the tab's own (modules/api/api.py:L472, L543 in v1.10.1). Duplicates are kept; the API
    module lists each folder once."""
    roots = []
    for tab in ("txt2img", "img2img"):
        for samples in (getattr(opts, "outdir_samples", ""), getattr(opts, f"outdir_{tab}_samples", "")):
            if samples:
                roots.append((tab, runs_dir(_Outpath(samples), opts)))
    return roots


@dataclass(frozen=True)
class _Outpath:
    outpath_samples: str


def models_dir(opts: Any, cmd_opts: Any, models_path: str) -> str:
    """The models folder: the setting, else --prompt-pinning-models-dir, else models/PromptPinning."""
    configured = str(setting(opts, "prompt_pinning_models_dir") or "").strip()
    if configured:
        return os.path.expanduser(configured)
    flag = getattr(cmd_opts, MODELS_FLAG, None)
    if flag:
        return os.path.expanduser(str(flag))
    return os.path.join(models_path, DEFAULT_MODELS_SUBDIR)


def file_url(path: Path, allowed_roots: Sequence[str | os.PathLike[str]]) -> str | None:
    """The gradio `/file=` URL of `path`, or None when gradio would refuse to serve it.

    gradio serves `file=<path>` only inside its allowed paths (the WebUI passes
    `--gradio-allowed-path`, default [data_path]: modules/cmd_args.py:L91, webui.py:L90 in v1.10.1;
    the same since 1.6, and in Forge) and, in gradio 3.x, the working directory; it refuses any
    path with a component starting with "." (gradio 3.41.2 routes.py:L361). The URL is relative
    (no leading "/"), as the WebUI writes its own (modules/ui_gradio_extensions.py:L9), so it also
    works under --subpath or a reverse proxy.
    """
    absolute = Path(os.path.abspath(path))
    if any(part.startswith(".") for part in absolute.parts):
        return None
    for root in allowed_roots:
        try:
            absolute.relative_to(os.path.abspath(root))
        except ValueError:
            continue
        return "file=" + quote(absolute.as_posix(), safe="/:")
    return None


def gradio_allowed_roots(cmd_opts: Any, gradio_version: str) -> list[str]:
    """The directories gradio serves files from in this WebUI (see `file_url`)."""
    roots = [str(r) for r in (getattr(cmd_opts, "gradio_allowed_path", None) or [])]
    if gradio_version.split(".", 1)[0] in ("2", "3"):
        roots.append(os.getcwd())
    return roots
