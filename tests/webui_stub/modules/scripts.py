"""Stand-in for modules/scripts.py (v1.10.1 82a973c0): extension scripts and their runner.

`Script` is the base class every extension script subclasses (title, show, ui, run and the
always-on hooks); `load_scripts()` executes every `scripts/*.py` of every installed extension the
way the WebUI does (extension directory prepended to sys.path and `current_basedir` set only
while its file executes; callbacks cleared first; a fresh module per load, so "Reload UI", which
calls `load_scripts()` again, re-executes the files) and instantiates the Script subclasses into
`scripts_txt2img` / `scripts_img2img`. `ScriptRunner.run` runs the selected script, the hook
methods fan out to the always-on scripts as in the WebUI.

Not mirrored: the gradio UI (`ui()` is never called here: tests call a script's `ui` themselves
if they can build gradio components), script ordering by metadata.ini dependencies, the
built-in processing scripts, and the postprocessing (extras tab) scripts.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections import namedtuple
from typing import Any

from modules import errors, paths, script_callbacks, script_loading, shared

AlwaysVisible = object()
"""modules/scripts.py:L14: `show()` returns this for an always-on script."""


class MaskBlendArgs:
    """modules/scripts.py:L16."""

    def __init__(self, current_latent: Any, nmask: Any, init_latent: Any, mask: Any, blended_latent: Any,
                 denoiser: Any = None, sigma: Any = None) -> None:
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    """modules/scripts.py:L28."""

    def __init__(self, samples: Any) -> None:
        self.samples = samples


class PostprocessImageArgs:
    """modules/scripts.py:L32."""

    def __init__(self, image: Any) -> None:
        self.image = image


class PostProcessMaskOverlayArgs:
    """modules/scripts.py:L36."""

    def __init__(self, index: int, mask_for_overlay: Any, overlay_image: Any) -> None:
        self.index = index
        self.mask_for_overlay = mask_for_overlay
        self.overlay_image = overlay_image


class PostprocessBatchListArgs:
    """modules/scripts.py:L42."""

    def __init__(self, images: list[Any]) -> None:
        self.images = images


class Script:
    """modules/scripts.py:L52: base class of a WebUI script."""

    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group: Any = None
    create_group = True
    infotext_fields: list[Any] | None = None
    """modules/scripts.py:L74: (component, infotext key) pairs restored when an infotext is pasted."""
    paste_field_names: list[str] | None = None
    """modules/scripts.py:L79: infotext keys sent along by the "send to" buttons."""
    api_info: Any = None
    on_before_component_elem_id: list[Any] | None = None
    on_after_component_elem_id: list[Any] | None = None
    setup_for_ui_only = False
    controls: Any = None

    def title(self) -> str:
        """modules/scripts.py:L99: the name shown in the Script dropdown."""
        raise NotImplementedError()

    def ui(self, is_img2img: bool) -> Any:
        """modules/scripts.py:L104: build the gradio components; their values become run()'s args."""

    def show(self, is_img2img: bool) -> Any:
        """modules/scripts.py:L112: False (hidden), True (selectable) or AlwaysVisible."""
        return True

    def run(self, p: Any, *args: Any) -> Any:
        """modules/scripts.py:L124: do the work when selected; return a Processed."""

    def setup(self, p: Any, *args: Any) -> None:
        """modules/scripts.py:L137."""

    def before_process(self, p: Any, *args: Any) -> None:
        """modules/scripts.py:L143."""

    def process(self, p: Any, *args: Any) -> None:
        """modules/scripts.py:L152."""

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L161."""

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L190."""

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L197."""

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L210."""

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L221."""

    def on_mask_blend(self, p: Any, mba: MaskBlendArgs, *args: Any) -> None:
        """modules/scripts.py:L240."""

    def post_sample(self, p: Any, ps: PostSampleArgs, *args: Any) -> None:
        """modules/scripts.py:L250."""

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        """modules/scripts.py:L259."""

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        """modules/scripts.py:L282."""

    def before_hr(self, p: Any, *args: Any) -> None:
        """modules/scripts.py:L344."""

    def describe(self) -> str:
        """modules/scripts.py:L330."""
        return ""

    def elem_id(self, item_id: str) -> str:
        """modules/scripts.py:L334: "script_<tab>_<title>_<item_id>"."""
        import re

        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


current_basedir: str = paths.script_path
"""modules/scripts.py:L366: the extension directory of the script file being executed."""


def basedir() -> str:
    """modules/scripts.py:L369: the current script's extension directory (only valid while it loads)."""
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
"""modules/scripts.py:L379."""


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """modules/scripts.py:L393: the extensions' `<scriptdirname>/*<extension>` files, in order."""
    found = []
    for ext_dir in paths.extension_dirs if include_extensions else []:
        script_dir = os.path.join(ext_dir, scriptdirname)
        if not os.path.isdir(script_dir):
            continue
        for filename in sorted(os.listdir(script_dir)):
            path = os.path.join(script_dir, filename)
            if filename.endswith(extension) and os.path.isfile(path):
                found.append(ScriptFile(ext_dir, filename, path))
    return found


def load_scripts() -> None:
    """modules/scripts.py:L487: execute every extension script file and collect its Script classes."""
    global current_basedir, scripts_txt2img, scripts_img2img
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    syspath = sys.path
    for scriptfile in list_scripts("scripts", ".py"):
        try:
            if scriptfile.basedir != paths.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            script_module = script_loading.load_module(scriptfile.path)
            for script_class in script_module.__dict__.values():
                if inspect.isclass(script_class) and issubclass(script_class, Script):
                    scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, script_module))
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = paths.script_path
    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()


class ScriptRunner:
    """modules/scripts.py:L542: the scripts of one tab (txt2img or img2img)."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list[Any] = []
        self.paste_field_names: list[str] = []
        self.inputs: list[Any] = [None]

    def initialize_scripts(self, is_img2img: bool) -> None:
        """modules/scripts.py:L578: instantiate every script class; sort by its show() result."""
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for script_data in scripts_data:
            try:
                script = script_data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {script_data.module}: ", exc_info=True)
                continue
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.titles = [wrap_call(script.title, script.filename, "title") or script.filename for script in self.selectable_scripts]
        self.title_map = {title.lower(): script for title, script in zip(self.titles, self.selectable_scripts)}

    def run(self, p: Any, *args: Any) -> Any:
        """modules/scripts.py:L768: args[0] is the selected script's 1-based index (0: none)."""
        script_index = args[0]
        if script_index == 0 or script_index is None:
            return None
        script = self.selectable_scripts[script_index - 1]
        if script is None:
            return None
        script_args = args[script.args_from:script.args_to]
        processed = script.run(p, *script_args)
        shared.total_tqdm.clear()
        return processed

    def script(self, title: str) -> Script | None:
        """modules/scripts.py:L958."""
        return self.title_map.get(title.lower())

    def _each(self, method_name: str, p: Any, *leading: Any, **kwargs: Any) -> None:
        for script in self.alwayson_scripts:
            if getattr(type(script), method_name, None) is getattr(Script, method_name, None):
                continue
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method_name)(p, *leading, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def before_process(self, p: Any) -> None:
        """modules/scripts.py:L820."""
        self._each("before_process", p)

    def process(self, p: Any) -> None:
        """modules/scripts.py:L828."""
        self._each("process", p)

    def process_before_every_sampling(self, p: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L836."""
        self._each("process_before_every_sampling", p, **kwargs)

    def before_process_batch(self, p: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L844."""
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L860."""
        self._each("process_batch", p, **kwargs)

    def postprocess(self, p: Any, processed: Any) -> None:
        """modules/scripts.py:L868."""
        self._each("postprocess", p, processed)

    def postprocess_batch(self, p: Any, images: Any, **kwargs: Any) -> None:
        """modules/scripts.py:L876."""
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None:
        """modules/scripts.py:L884."""
        self._each("postprocess_batch_list", p, pp, **kwargs)

    def post_sample(self, p: Any, ps: PostSampleArgs) -> None:
        """modules/scripts.py:L892."""
        self._each("post_sample", p, ps)

    def on_mask_blend(self, p: Any, mba: MaskBlendArgs) -> None:
        """modules/scripts.py:L900."""
        self._each("on_mask_blend", p, mba)

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None:
        """modules/scripts.py:L908."""
        self._each("postprocess_image", p, pp)

    def before_hr(self, p: Any) -> None:
        """modules/scripts.py:L979."""
        self._each("before_hr", p)

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:
        """modules/scripts.py:L987 (sic: the WebUI's spelling)."""
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                script.setup(p, *script_args)
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)


def wrap_call(func: Any, filename: str | None, funcname: str, *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """modules/scripts.py:L533: call func, reporting (not raising) its errors."""
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


scripts_txt2img: ScriptRunner | None = None
"""modules/scripts.py:L1028."""
scripts_img2img: ScriptRunner | None = None
