"""Stand-in for modules/script_callbacks.py (v1.10.1 82a973c0): the WebUI's callback registry.

Extensions register with `on_*` (on_ui_settings, on_app_started, on_before_ui, on_cfg_denoiser,
...); the WebUI fires them with the `*_callback` functions at the matching moment. The stand-in
fires the sampling callbacks (cfg_denoiser, cfg_denoised, cfg_after_cfg, extra_noise) itself
during generation; the UI-lifecycle ones (ui_settings, before_ui, app_started, script_unloaded)
are fired by tests through tests/webui_env.py, which calls these same functions in the WebUI's
startup order. Errors in a callback are reported and swallowed, as in the WebUI.

Not mirrored: the user-configurable callback ordering (`prioritized_callbacks_*` settings and the
extensions' metadata.ini ordering rules); callbacks run in registration order, which is what the
WebUI does without such settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

from modules import errors


def report_exception(c: ScriptCallback, job: str) -> None:
    """modules/script_callbacks.py:L14."""
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    """modules/script_callbacks.py:L18."""

    def __init__(self, image: Any, p: Any, filename: str, pnginfo: dict[str, Any]) -> None:
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class ExtraNoiseParams:
    """modules/script_callbacks.py:L33."""

    def __init__(self, noise: Any, x: Any, xi: Any) -> None:
        self.noise = noise
        self.x = x
        self.xi = xi


class CFGDenoiserParams:
    """modules/script_callbacks.py:L45: the inner model's inputs, before the call (modifiable)."""

    def __init__(self, x: Any, image_cond: Any, sigma: Any, sampling_step: int, total_sampling_steps: int,
                 text_cond: Any, text_uncond: Any, denoiser: Any = None) -> None:
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    """modules/script_callbacks.py:L72: the inner model's output, before CFG combines it."""

    def __init__(self, x: Any, sampling_step: int, total_sampling_steps: int, inner_model: Any) -> None:
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    """modules/script_callbacks.py:L87: the denoised batch after CFG (modifiable)."""

    def __init__(self, x: Any, sampling_step: int, total_sampling_steps: int) -> None:
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class ImageGridLoopParams:
    """modules/script_callbacks.py:L104."""

    def __init__(self, imgs: list[Any], cols: int, rows: int) -> None:
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class ScriptCallback:
    """modules/script_callbacks.py:L121."""

    script: str
    callback: Any
    name: str = "unnamed"


def add_callback(callbacks: list[ScriptCallback], fun: Callable[..., Any], *, name: str | None = None,
                 category: str = "unknown", filename: str | None = None) -> None:
    """modules/script_callbacks.py:L127: append `fun`, named after the file that registered it.

    The WebUI prefixes the name with the registering extension's canonical name; the stand-in has
    no extension registry and uses "base" like the WebUI does for a file outside any extension.
    """
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"
    callback_name = f"base/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"
    unique_callback_name = callback_name
    for index in range(1000):
        if not any(x.name == unique_callback_name for x in callbacks):
            break
        unique_callback_name = f"{callback_name}-{index + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique_callback_name))


callback_map: dict[str, list[ScriptCallback]] = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_tabs=[],
    callbacks_ui_train_tabs=[],
    callbacks_ui_settings=[],
    callbacks_before_image_saved=[],
    callbacks_image_saved=[],
    callbacks_extra_noise=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_image_grid=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_on_reload=[],
    callbacks_list_optimizers=[],
    callbacks_list_unets=[],
    callbacks_before_token_counter=[],
)
"""modules/script_callbacks.py:L219."""


def ordered_callbacks(category: str, unordered_callbacks: list[ScriptCallback] | None = None, *,
                      enable_user_sort: bool = True) -> list[ScriptCallback]:
    """modules/script_callbacks.py:L194: the callbacks of `category` (registration order here)."""
    if unordered_callbacks is None:
        unordered_callbacks = callback_map.get("callbacks_" + category, [])
    return list(unordered_callbacks)


def clear_callbacks() -> None:
    """modules/script_callbacks.py:L246: forget every callback (scripts.load_scripts calls this)."""
    for callback_list in callback_map.values():
        callback_list.clear()


def _fire(category: str, job: str, *args: Any) -> None:
    for c in ordered_callbacks(category):
        try:
            c.callback(*args)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo: Any, app: Any) -> None:
    """modules/script_callbacks.py:L253: the server is up; `demo` is None with --nowebui."""
    _fire("app_started", "app_started_callback", demo, app)


def app_reload_callback() -> None:
    """modules/script_callbacks.py:L262."""
    _fire("on_reload", "callbacks_on_reload")


def model_loaded_callback(sd_model: Any) -> None:
    """modules/script_callbacks.py:L270."""
    _fire("model_loaded", "model_loaded_callback", sd_model)


def ui_settings_callback() -> None:
    """modules/script_callbacks.py:L298: the settings page is being built."""
    _fire("ui_settings", "ui_settings_callback")


def before_image_saved_callback(params: ImageSaveParams) -> None:
    """modules/script_callbacks.py:L306."""
    _fire("before_image_saved", "before_image_saved_callback", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    """modules/script_callbacks.py:L314."""
    _fire("image_saved", "image_saved_callback", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    """modules/script_callbacks.py:L322."""
    _fire("extra_noise", "callbacks_extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    """modules/script_callbacks.py:L330."""
    _fire("cfg_denoiser", "cfg_denoiser_callback", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    """modules/script_callbacks.py:L338."""
    _fire("cfg_denoised", "cfg_denoised_callback", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    """modules/script_callbacks.py:L346."""
    _fire("cfg_after_cfg", "cfg_after_cfg_callback", params)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    """modules/script_callbacks.py:L370."""
    _fire("image_grid", "image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    """modules/script_callbacks.py:L378."""
    _fire("infotext_pasted", "infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    """modules/script_callbacks.py:L386: before "Reload UI" re-imports the scripts (reverse order)."""
    for c in reversed(ordered_callbacks("script_unloaded")):
        try:
            c.callback()
        except Exception:
            report_exception(c, "script_unloaded")


def before_ui_callback() -> None:
    """modules/script_callbacks.py:L394: before the UI is built (reverse order, as the WebUI)."""
    for c in reversed(ordered_callbacks("before_ui")):
        try:
            c.callback()
        except Exception:
            report_exception(c, "before_ui")


def remove_current_script_callbacks() -> None:
    """modules/script_callbacks.py:L434: drop every callback registered from the calling file."""
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    if filename == "unknown file":
        return
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    """modules/script_callbacks.py:L447."""
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback_to_remove)


def _register(category: str) -> Callable[..., None]:
    def register(callback: Callable[..., Any], *, name: str | None = None) -> None:
        add_callback(callback_map["callbacks_" + category], callback, name=name, category=category)

    return register


on_app_started = _register("app_started")
"""modules/script_callbacks.py:L456: `callback(demo, app)` once the server runs."""
on_before_reload = _register("on_reload")
"""modules/script_callbacks.py:L462."""
on_model_loaded = _register("model_loaded")
"""modules/script_callbacks.py:L467."""
on_ui_tabs = _register("ui_tabs")
"""modules/script_callbacks.py:L473."""
on_ui_settings = _register("ui_settings")
"""modules/script_callbacks.py:L493: `callback()` adds settings with shared.opts.add_option."""
on_before_image_saved = _register("before_image_saved")
"""modules/script_callbacks.py:L499."""
on_image_saved = _register("image_saved")
"""modules/script_callbacks.py:L507."""
on_extra_noise = _register("extra_noise")
"""modules/script_callbacks.py:L515."""
on_cfg_denoiser = _register("cfg_denoiser")
"""modules/script_callbacks.py:L523: `callback(CFGDenoiserParams)` before each inner-model call."""
on_cfg_denoised = _register("cfg_denoised")
"""modules/script_callbacks.py:L531."""
on_cfg_after_cfg = _register("cfg_after_cfg")
"""modules/script_callbacks.py:L539."""
on_image_grid = _register("image_grid")
"""modules/script_callbacks.py:L564."""
on_infotext_pasted = _register("infotext_pasted")
"""modules/script_callbacks.py:L572."""
on_script_unloaded = _register("script_unloaded")
"""modules/script_callbacks.py:L581: `callback()` before the scripts are unloaded (Reload UI)."""
on_before_ui = _register("before_ui")
"""modules/script_callbacks.py:L588."""
