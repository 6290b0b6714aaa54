"""The script's gradio components, built from `PinningOptions.specs()`.

One component per option, in a layout by group: the "main" options at the top, then one closed
accordion per other group ("objective", "stopping", "cma", "hyperbatch", "guard", "advanced"). The WebUI passes the
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

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionSpec

GROUP_TITLES: dict[str, str] = {
    "objective": "Objective",
    "stopping": "Stopping and budget",
    "cma": "CMA-ES",
    "hyperbatch": "Hyperbatch",
    "guard": "Degenerate-image guard",
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


def build(
    gr: Any,
    elem_id: Callable[[str], str],
    defaults: Mapping[str, Any] | None = None,
    prompt_boxes: Sequence[Any] = (),
) -> list[Any]:
    """Create the components inside the current gradio Blocks context; return them in specs() order.

    `elem_id` maps an option key to the component's elem_id (the script's `elem_id`); `defaults`
    overrides an option's default value (the "default image loss" setting); `prompt_boxes` are the
    tab's prompt and negative prompt boxes when the script caught them (`is_prompt_box`), which
    the planned-batches line reads.
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
    components = [made[spec.key] for spec in PinningOptions.specs()]
    _plan_panel(gr, elem_id, components, prompt_boxes)
    return components


PROMPT_BOX_IDS = ("txt2img_prompt", "txt2img_neg_prompt", "img2img_prompt", "img2img_neg_prompt")
"""elem_ids of the WebUI's prompt boxes (modules/ui_toprow.py in v1.10.1 and Forge)."""


def is_prompt_box(kwargs: Mapping[str, Any]) -> bool:
    """Whether a component the WebUI announces to `Script.after_component` is a prompt box. The
    WebUI initialises the scripts before it builds the prompt row and calls after_component of
    every script, selectable ones too, for every component (modules/scripts.py:L786-L790,
    modules/ui.py:L264-L268 in v1.10.1; the same in Forge), so the boxes exist before `ui()`."""
    return kwargs.get("elem_id") in PROMPT_BOX_IDS


def plan_text(prompt: str, negative_prompt: str, values: Sequence[Any]) -> str:
    """The planned number of batches for these options and prompts, with a time estimate when a
    run in this WebUI has measured the seconds per batch. `values` are the option components'."""
    from lib_pinning.optimizer import CmaSettings
    from lib_pinning.prompt import PromptSpace
    from lib_pinning.stopping import planned_batches
    from lib_pinning.webui.progress import LAST_TIMING, format_duration

    try:
        options = PinningOptions.from_positional(list(values))
        space = PromptSpace(prompt or "", negative_prompt or "", options.granularity)
        settings = CmaSettings.resolve(
            options, space.dim, blocks=(space.positive.unit_count, space.negative.unit_count)
        )
    except Exception as e:  # an option out of range, an empty prompt: say so instead of a number
        return f"Planned batches: not known yet ({e})."
    planned = planned_batches(options, settings.generations, settings.lambda_)
    where = f"{space.dim} weights" + (f" in {settings.search_dim} groups" if settings.groups else "")
    text = (f"Planned: at most {planned} batches (baseline + {settings.generations} generations x "
            f"{settings.lambda_}{', capped by Max batches' if planned < 1 + settings.generations * settings.lambda_ else ''}"
            f"; {where})")
    if options.stop_early:
        text += ", fewer when the search settles"
    if options.sweep_batches:
        text += f", then {options.sweep_batches} batches of sensitivity sweep"
        planned += options.sweep_batches  # in the time estimate too
    per_batch = LAST_TIMING.get("seconds_per_batch")
    if per_batch:
        text += f". At the last run's {per_batch:.1f} s per batch: at most {format_duration(planned * per_batch)}"
    return text + "."


def _plan_panel(gr: Any, elem_id: Callable[[str], str], components: list[Any], prompt_boxes: Sequence[Any]) -> None:
    """A line with the planned batches, refreshed by its button, by changes of the options and,
    where the prompt boxes are known, when they lose focus. Without the boxes (another WebUI) the
    button counts for an empty prompt and says so; the progress text shows the plan during a run."""
    plan = gr.HTML(value="<p>Planned batches: press Count.</p>", elem_id=elem_id("plan"))
    button = gr.Button(value="Count batches", elem_id=elem_id("plan_button"))
    boxes = list(prompt_boxes)[:2]

    def refresh(*args: Any) -> str:
        texts = list(args[: len(boxes)]) + [""] * (2 - len(boxes))
        return f"<p>{html.escape(plan_text(texts[0], texts[1], args[len(boxes):]))}</p>"

    inputs = [*boxes, *components]
    button.click(fn=refresh, inputs=inputs, outputs=[plan])
    for component in components:
        if hasattr(component, "change"):
            component.change(fn=refresh, inputs=inputs, outputs=[plan])
    for box in boxes:
        if hasattr(box, "blur"):
            box.blur(fn=refresh, inputs=inputs, outputs=[plan])


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
