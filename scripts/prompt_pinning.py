"""WebUI script file: the "Prompt pinning" entry of the txt2img and img2img Script dropdowns.

Thin on purpose: the work is in lib_pinning.webui (importable and tested without the WebUI). The
WebUI executes this file at startup and on "Reload UI" with the extension folder on sys.path only
while it runs, so the packages used later are imported here.
"""

from __future__ import annotations

from typing import Any

from modules import scripts, shared

from lib_pinning.webui import TITLE
from lib_pinning.webui import script as glue


class PromptPinningScript(scripts.Script):
    """Selectable script: CMA-ES over the prompt's attention weights (see lib_pinning.webui)."""

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> bool:
        return True

    def after_component(self, component: Any, **kwargs: Any) -> None:
        # The tab's prompt boxes, for the panel's planned-batches line (lib_pinning.webui.ui.is_prompt_box).
        if glue.ui.is_prompt_box(kwargs):
            self.prompt_boxes = [*getattr(self, "prompt_boxes", []), component]

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr  # here, not at the top: running a pinning (and its tests) needs no gradio

        return glue.build_ui(self, gr, shared.opts)  # the same options in both tabs

    def run(self, p: Any, *args: Any) -> Any:
        return glue.run(p, args)


glue.register_callbacks()
