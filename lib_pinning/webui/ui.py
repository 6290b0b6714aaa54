"""The script's gradio components, built from `PinningOptions.specs()`.

One component per option, in a layout by group: the "main" options at the top, then one closed
accordion per other group ("objective", "cma", "hyperbatch", "advanced"). The WebUI passes the
components' values to `run(p, *args)` in the order `ui()` returns them, so `build()` returns them
in `specs()` order, whatever the layout: `PinningOptions.from_positional` reads them in that order.

Which component for which kind of option:

    choice                     Dropdown
    bool                       Checkbox
    int / float with a range   Slider (min, max, step from the spec; ints step 1)
    optional int / float       Textbox: empty means automatic (a Number cannot be empty in gradio
                               3.41); the value is checked and coerced by the spec
    other number               Number
    text                       Textbox
    paths                      File(file_count="multiple"): gradio 3.41 passes temp-file objects
                               (with .name), gradio 4 passes path strings; the spec accepts both

Only keyword arguments that gradio 3.41 (A1111) and gradio 4.x (Forge) both accept are used, so no
branch on the gradio version is needed; gradio is passed in rather than imported, which keeps this
module importable (and its layout testable) without gradio. Every component gets an elem_id from
the script's `elem_id(key)` (script_<tab>_prompt_pinning_<key>), which javascript can target; the
tooltips come from javascript/prompt_pinning_hints.js, keyed by label (see `hints`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lib_pinning.options import OptionSpec, PinningOptions

GROUP_TITLES: dict[str, str] = {
    "objective": "Objective",
    "cma": "CMA-ES",
    "hyperbatch": "Hyperbatch",
    "advanced": "Advanced",
}
"""Accordion labels of the groups shown folded; "main" is shown open at the top."""

INTRO = (
    "Searches the attention weight of every word (or phrase, or token) of the prompt with CMA-ES so "
    "that the batch varies less across seeds, or lands on target images. Each individual is one batch "
    "of <i>Batch size</i> images with this generation's settings and seeds. The result shows the best "
    "batch first, then the unpinned baseline, and links to the run's report."
)

RUN_MARKER = "Pin run"
"""The infotext key every pinning image carries; its presence marks a pinning infotext."""


def component_kind(spec: OptionSpec) -> str:
    """"dropdown", "checkbox", "slider", "optional_number", "number", "textbox" or "files"."""
    if spec.kind == "choice":
        return "dropdown"
    if spec.kind == "bool":
        return "checkbox"
    if spec.kind == "paths":
        return "files"
    if spec.kind in ("int", "float"):
        if spec.optional:
            return "optional_number"
        if spec.minimum is not None and spec.maximum is not None:
            return "slider"
        return "number"
    return "textbox"


def ui_value(spec: OptionSpec, value: Any) -> Any:
    """An option value as its component holds it (None -> "" for an optional number's textbox)."""
    kind = component_kind(spec)
    if kind == "optional_number":
        return "" if value is None else str(value)
    if kind == "files":
        return None
    return value


def slider_step(spec: OptionSpec) -> float:
    if spec.step is not None:
        return spec.step
    return 1 if spec.kind == "int" else (float(spec.maximum) - float(spec.minimum)) / 1000  # type: ignore[arg-type]


def make_component(gr: Any, spec: OptionSpec, elem_id: str, value: Any, *, with_info: bool) -> Any:
    """The gradio component of one option."""
    info = {"info": spec.help} if with_info else {}
    kind = component_kind(spec)
    if kind == "dropdown":
        return gr.Dropdown(choices=list(spec.choices), value=value, label=spec.label, elem_id=elem_id, **info)
    if kind == "checkbox":
        return gr.Checkbox(value=bool(value), label=spec.label, elem_id=elem_id, **info)
    if kind == "slider":
        return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=slider_step(spec), value=value,
                         label=spec.label, elem_id=elem_id, **info)
    if kind == "optional_number":
        return gr.Textbox(value=value, label=spec.label, placeholder=f"automatic ({spec.range_text()})",
                          lines=1, max_lines=1, elem_id=elem_id, **info)
    if kind == "number":
        return gr.Number(value=value, label=spec.label, precision=0 if spec.kind == "int" else None,
                         elem_id=elem_id, **info)
    if kind == "files":
        return gr.File(value=None, file_count="multiple", file_types=["image"], label=spec.label, elem_id=elem_id)
    return gr.Textbox(value=value, label=spec.label, lines=1, elem_id=elem_id, **info)


def groups() -> list[tuple[str, list[OptionSpec]]]:
    """(group, its specs) in display order: main first, then the folded groups in GROUP_TITLES order."""
    order = ["main", *GROUP_TITLES]
    by_group: dict[str, list[OptionSpec]] = {g: [] for g in order}
    for spec in PinningOptions.specs():
        if spec.group not in by_group:
            raise ValueError(f"option {spec.key} has group {spec.group!r}, which the WebUI layout does not place")
        by_group[spec.group].append(spec)
    return [(g, by_group[g]) for g in order if by_group[g]]


def build(gr: Any, elem_id: Callable[[str], str], defaults: Mapping[str, Any] | None = None) -> list[Any]:
    """Create the components inside the current gradio Blocks context; return them in specs() order.

    `elem_id` maps an option key to the component's elem_id (the script's `elem_id`); `defaults`
    overrides an option's default value (the "default image loss" setting).
    """
    defaults = dict(defaults or {})
    made: dict[str, Any] = {}
    gr.HTML(value=f"<p>{INTRO}</p>", elem_id=elem_id("intro"))
    for group, specs in groups():
        if group == "main":
            for spec in specs:
                value = ui_value(spec, defaults.get(spec.key, spec.default))
                made[spec.key] = make_component(gr, spec, elem_id(spec.key), value, with_info=True)
            continue
        with gr.Accordion(GROUP_TITLES[group], open=False, elem_id=elem_id(f"group_{group}")):
            for spec in specs:
                value = ui_value(spec, defaults.get(spec.key, spec.default))
                made[spec.key] = make_component(gr, spec, elem_id(spec.key), value, with_info=False)
    return [made[spec.key] for spec in PinningOptions.specs()]


def paste_function(spec: OptionSpec) -> Callable[[Mapping[str, Any]], Any]:
    """What pasting an infotext puts in `spec`'s component.

    In a pinning infotext (one that carries RUN_MARKER) a missing key means the option had its
    default (`to_infotext` leaves defaults out), so the default is restored; any other infotext
    leaves the component as it is (None tells the WebUI's paste to skip the component,
    modules/infotext_utils.py:L490-L517 in v1.10.1).
    """
    key = spec.infotext

    def read(params: Mapping[str, Any]) -> Any:
        if RUN_MARKER not in params:
            return None
        if key in params:
            return params[key]
        return ui_value(spec, spec.default)

    return read


def infotext_fields(components: list[Any]) -> list[tuple[Any, Callable[[Mapping[str, Any]], Any]]]:
    """(component, function of the parsed infotext) for every option that has an infotext key."""
    return [(c, paste_function(s)) for c, s in zip(components, PinningOptions.specs()) if s.infotext]


def labels() -> list[str]:
    """Every label the script's UI shows: the options' labels and the accordions'."""
    return [s.label for s in PinningOptions.specs()] + [GROUP_TITLES[g] for g, _ in groups() if g != "main"]
