"""The Stable Diffusion WebUI glue (AUTOMATIC1111 1.6-1.10, Forge): everything between the WebUI and the engine.

`scripts/prompt_pinning.py` is a thin `scripts.Script` subclass that delegates here:

- `ui`         the script's gradio components, built from `PinningOptions.specs()`, and its
               infotext fields (works with gradio 3.41 and 4.x; gradio is passed in, not imported)
- `hints`      the tooltip file javascript/prompt_pinning_hints.js, generated from the same specs
- `generator`  `WebUIGenerator`: the Generator protocol on top of `modules.processing.process_images`
- `progress`   RunEvents -> the WebUI's job counters, progress bar and Interrupt/Skip/Stop flags
- `result`     the `Processed` the script returns (best batch, then the baseline batch)
- `script`     `run(p, *args)`: options -> `PinningRun` -> `Processed`; settings and callbacks
- `settings`   the "Prompt pinning" settings section and where runs and models go
- `api`        HTTP routes listing runs and serving their summaries and reports

Nothing in this package imports `modules` (the WebUI) at import time: the WebUI's modules are
passed in or imported inside the functions that need them, so the package imports and its pure
parts are tested without the WebUI.
"""

from __future__ import annotations

TITLE = "Prompt pinning"
"""The script's title: its name in the Script dropdown and, lower-cased, the API's `script_name`."""
