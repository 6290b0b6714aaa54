"""WebUI script file: offers the hyperbatch samplers in the sampler lists.

The WebUI executes every `scripts/*.py` of an extension at startup and again on "Reload UI",
with the extension directory on sys.path only while the file runs (so everything needed later is
imported here). Registration replaces earlier entries, and the unload callback removes them when
the scripts are unloaded, so a reload or a disabled extension never leaves stale samplers.
"""

from __future__ import annotations

from modules import script_callbacks

from pinning_samplers import webui

webui.register()
script_callbacks.on_script_unloaded(webui.unregister)
