"""Stand-in for modules/infotext_utils.py (v1.8.0+; cited at v1.10.1 82a973c0): reading infotexts back.

`parse_generation_parameters` turns the "parameters" text of an image into a dict, filling the
defaults the WebUI fills (e.g. "Schedule type": "Automatic" when absent); a UI field declared as
`PasteField(component, "Key")` takes params["Key"], one declared with a function takes
function(params) (1.9+ declares the sampler field with sd_samplers.get_sampler_from_infotext).
Before 1.8 this module was named `generation_parameters_copypaste`; the WebUI keeps that name as
an alias (L13), and so does the stand-in (modules/generation_parameters_copypaste.py).

Not mirrored: gradio (buttons, `connect_paste`; `paste_values` stands in for the values its
paste function computes), style extraction from prompts (the "infotext_styles" setting acts as
"Ignore"), and the pre-1.6 "First pass size" conversion.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from modules import errors, prompt_parser, script_callbacks, shared

sys.modules["modules.generation_parameters_copypaste"] = sys.modules[__name__]

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


class ParamBinding:
    """modules/infotext_utils.py:L23: a "send to" button and what it copies."""

    def __init__(self, paste_button: Any, tabname: str, source_text_component: Any = None, source_image_component: Any = None,
                 source_tabname: str | None = None, override_settings_component: Any = None,
                 paste_field_names: list[str] | None = None) -> None:
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    """modules/infotext_utils.py:L34 (1.9+): (component, infotext key or function of the params)."""

    def __new__(cls, component: Any, target: str | Callable[[dict[str, Any]], Any], *, api: str | None = None) -> PasteField:
        return super().__new__(cls, (component, target))

    def __init__(self, component: Any, target: str | Callable[[dict[str, Any]], Any], *, api: str | None = None) -> None:
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict[str, Any]] = {}
"""modules/infotext_utils.py:L47: tabname -> {"init_img", "fields", "override_settings_component"}."""
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    """modules/infotext_utils.py:L51."""
    paste_fields.clear()
    registered_param_bindings.clear()


def quote(text: Any) -> Any:
    """modules/infotext_utils.py:L56: JSON-quote a value containing "," ":" or a newline."""
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """modules/infotext_utils.py:L63."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def add_paste_fields(tabname: str, init_img: Any, fields: list[Any] | None, override_settings_component: Any = None) -> None:
    """modules/infotext_utils.py:L102: register a tab's pasteable fields."""
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])
    paste_fields[tabname] = {"init_img": init_img, "fields": fields, "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding) -> None:
    """modules/infotext_utils.py:L135."""
    registered_param_bindings.append(binding)


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """modules/infotext_utils.py:L234: infotext -> {"Prompt", "Negative prompt", "Steps", ...}.

    "Size: 64x64" becomes "Size-1"/"Size-2"; missing keys get the WebUI's defaults.
    """
    if skip_fields is None:
        skip_fields = shared.opts.infotext_skip_pasting
    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f'Error parsing "{k}: {v}"')
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    defaults = {
        "Clip skip": "1",
        "Hires resize-1": 0,
        "Hires resize-2": 0,
        "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": 32,
        "RNG": "GPU",
        "Schedule type": "Automatic",
        "Schedule max sigma": 0,
        "Schedule min sigma": 0,
        "Schedule rho": 0,
        "VAE Encoder": "Full",
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
    }
    for key, value in defaults.items():
        if key not in res:
            res[key] = value
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    prompt_attention = prompt_parser.parse_prompt_attention(prompt)
    prompt_attention += prompt_parser.parse_prompt_attention(negative_prompt)
    prompt_uses_emphasis = len(prompt_attention) != len([p for p in prompt_attention if p[1] == 1.0 or p[0] == "BREAK"])
    if "Emphasis" not in res and prompt_uses_emphasis:
        res["Emphasis"] = "Original"
    if "Refiner switch by sampling steps" not in res:
        res["Refiner switch by sampling steps"] = False
    for key in skip_fields:
        res.pop(key, None)
    return res


infotext_to_setting_name_mapping: list[tuple[str, str]] = []
"""modules/infotext_utils.py:L389: legacy (infotext label, setting) pairs; settings declare infotext= now."""


def create_override_settings_dict(text_pairs: Sequence[str]) -> dict[str, Any]:
    """modules/infotext_utils.py:L404: ["Clip skip: 2", ...] -> {"CLIP_stop_at_last_layers": 2, ...}."""
    res = {}
    params = {}
    for pair in text_pairs:
        k, v = pair.split(":", maxsplit=1)
        params[k] = v.strip()
    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        value = params.get(param_name, None)
        if value is None:
            continue
        res[setting_name] = shared.opts.cast_value(setting_name, value)
    return res


def get_override_settings(params: dict[str, Any], *, skip_fields: Any = None) -> list[tuple[str, str, Any]]:
    """modules/infotext_utils.py:L434: (infotext label, setting, value) for settings the params change."""
    res = []
    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        if param_name in (skip_fields or {}):
            continue
        v = params.get(param_name, None)
        if v is None:
            continue
        v = shared.opts.cast_value(setting_name, v)
        current_value = getattr(shared.opts, setting_name, None)
        if v == current_value:
            continue
        res.append((param_name, setting_name, v))
    return res


def paste_values(fields: Sequence[tuple[Any, Any]], infotext: str) -> list[Any]:
    """The values `connect_paste`'s paste function (modules/infotext_utils.py:L477 `def paste_func`) gives each field.

    Stand-in only (no gradio): parses `infotext`, fires the infotext_pasted callbacks, then for
    each (component, key) takes key(params) when key is callable, else params.get(key); None
    means "leave the component unchanged". Type conversion to the component's value type is left
    to the caller.
    """
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    res = []
    for _output, key in fields:
        if callable(key):
            try:
                v = key(params)
            except Exception:
                errors.report(f"Error executing {key}", exc_info=True)
                v = None
        else:
            v = params.get(key, None)
        res.append(v)
    return res
