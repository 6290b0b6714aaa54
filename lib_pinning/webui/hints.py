"""Tooltips for the script's UI: javascript/prompt_pinning_hints.js, generated from the option specs.

A javascript file cannot import the Python specs, so the tooltips are generated into the file and
checked in; tests/test_webui_script.py fails when the file differs from what `render_js()` makes
now, so help texts and tooltips cannot drift apart. Regenerate after changing an option:

    python -m lib_pinning.webui.hints

Two routes put a tooltip on an element, both used:

- The WebUI's javascript/hints.js keeps a global `titles` object (label -> tooltip) and sets
  `title` on every span, button, p or input whose text is a key (v1.10.1 javascript/hints.js:L3
  and L116-L145; the same in Forge). Extension javascript loads after the WebUI's own
  (modules/ui_gradio_extensions.py:L19-L20 lists the built-in folder first), so the file extends
  `titles` with one entry per label.
- Labels are translated when a localization is active, and a translated label no longer matches
  a key; so the file also sets `title` on each component's element by its elem_id once the UI
  has loaded (`onUiLoaded`, script.js:L60). The accordions get theirs only this way.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionSpec
from lib_pinning.webui import TITLE
from lib_pinning.webui.ui import groups

log = logging.getLogger(__name__)

HINTS_FILE = Path(__file__).resolve().parents[2] / "javascript" / "prompt_pinning_hints.js"

GROUP_HINTS: dict[str, str] = {
    "objective": "What the search minimises: the weights of the image loss, the aesthetic score, CLIP "
    "tags and the distance penalty, target masks, and the CLIP model and weights folder.",
    "cma": "The CMA-ES search: starting point and step size, population (lambda, mu), learning rates and "
    "the size limit. Empty fields use the standard CMA-ES defaults for the number of weights.",
    "stopping": "When the run stops before its last generation: plateau patience, stagnation, the loss "
    "and weight tolerances. The budget (Max batches, Max minutes) is at the top.",
    "hyperbatch": "How image pairs from a hyperbatch sampler are weighted by where they split.",
    "guard": "Recognises broken images (NaN, black, flat, fried by over-emphasis): batches with any are "
    "penalised and never chosen as the best; the thresholds of each check.",
    "advanced": "Logging and other options that do not change the result.",
}


def script_slug() -> str:
    """The title part of the script's elem_ids, as modules/scripts.py:L334-L343 (v1.10.1) builds it."""
    return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", TITLE.lower()))


def hint(spec: OptionSpec) -> str:
    """The tooltip of one option: its help, and for a number its allowed range."""
    if spec.kind in ("int", "float"):
        return f"{spec.help} Allowed: {spec.range_text()}."
    return spec.help


def label_hints() -> dict[str, str]:
    """label -> tooltip for every option's label.

    The accordions' labels ("Objective", "Advanced", ...) are left out: `titles` is global, and
    such common words label other extensions' elements too; they get their tooltip by elem_id only.
    """
    return {spec.label: hint(spec) for spec in PinningOptions.specs()}


# Elements of the panel that are not options: the planned-batches line and its button (ui.py).
PANEL_HINTS = {
    "plan": "How many batches the run will generate at most: the baseline, then generations x lambda, "
    "capped by Max batches; the stopping rule may end it sooner. With a time estimate from the last run.",
    "plan_button": "Count the planned batches for the prompts and options as they are now.",
}


def elem_hints() -> dict[str, str]:
    """elem_id suffix (option key, group_<group>, or a panel element) -> tooltip."""
    out = {spec.key: hint(spec) for spec in PinningOptions.specs()}
    for group, _ in groups():
        if group != "main":
            out[f"group_{group}"] = GROUP_HINTS[group]
    out.update(PANEL_HINTS)
    return out


def render_js() -> str:
    """The content of javascript/prompt_pinning_hints.js."""
    labels = json.dumps(label_hints(), indent=4, ensure_ascii=False).replace("\n", "\n    ")
    by_elem = json.dumps(elem_hints(), indent=4, ensure_ascii=False).replace("\n", "\n    ")
    return f"""// Tooltips of the Prompt pinning script's UI. Generated from lib_pinning/options.py by
// `python -m lib_pinning.webui.hints`: do not edit by hand (a test checks the two agree).
(function() {{
    var byLabel = {labels};
    var byElemId = {by_elem};
    var slug = {json.dumps(script_slug())};

    // The WebUI's hints.js shows titles[label] on the element whose text is the label.
    if (typeof titles === "undefined") {{
        window.titles = {{}};
    }}
    Object.assign(titles, byLabel);

    // A translated label matches no key: put the tooltip on the component by its elem_id too.
    function applyByElemId() {{
        var app = typeof gradioApp === "function" ? gradioApp() : document;
        ["txt2img", "img2img"].forEach(function(tab) {{
            Object.keys(byElemId).forEach(function(key) {{
                var element = app.getElementById("script_" + tab + "_" + slug + "_" + key);
                if (element && !element.title) {{
                    element.title = byElemId[key];
                }}
            }});
        }});
    }}
    if (typeof onUiLoaded === "function") {{
        onUiLoaded(applyByElemId);
    }}
}})();
"""


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    HINTS_FILE.write_text(render_js(), encoding="utf-8")
    log.info("wrote %s", HINTS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
