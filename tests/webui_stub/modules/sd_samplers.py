"""Stand-in for modules/sd_samplers.py (v1.10.1 82a973c0; v1.8.0 as noted): the sampler registry.

`all_samplers` (list of SamplerData) and `all_samplers_map` (name -> SamplerData) hold every
sampler; `set_samplers()` rebuilds the UI lists (`samplers`, `samplers_for_img2img`, which are
the very `all_samplers` list object since 1.6) and `samplers_map` (lowercase name or alias ->
name; the X/Y/Z plot and prompts-from-file look names up there); `create_sampler(name, model)`
builds one for a generation. An extension registers a sampler by appending to `all_samplers`
in place, adding it to `all_samplers_map` and calling `set_samplers()`.

1.9+ only: `get_sampler_and_scheduler` (functools.cache'd: clear it after registering) and the
infotext helpers built on it, `visible_samplers`, `fix_p_invalid_sampler_and_scheduler`. Only
the k-diffusion samplers are mirrored (the WebUI also lists DDIM/PLMS/UniPC/LCM, which come
after them in `all_samplers`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import modules
from modules import sd_samplers_common, sd_samplers_kdiffusion, shared

samples_to_image_grid = sd_samplers_common.samples_to_image_grid
sample_to_image = sd_samplers_common.sample_to_image

all_samplers: list[sd_samplers_common.SamplerData] = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
]
"""modules/sd_samplers.py:L11."""

all_samplers_map: dict[str, sd_samplers_common.SamplerData] = {x.name: x for x in all_samplers}
"""modules/sd_samplers.py:L16."""

samplers: list[sd_samplers_common.SamplerData] = []
samplers_for_img2img: list[sd_samplers_common.SamplerData] = []
samplers_map: dict[str, str] = {}
samplers_hidden: set[str] = set()


def find_sampler_config(name: str | None) -> sd_samplers_common.SamplerData | None:
    """modules/sd_samplers.py:L24: the SamplerData named `name` (None: the first sampler)."""
    if name is not None:
        return all_samplers_map.get(name, None)
    return all_samplers[0]


def create_sampler(name: str, model: Any) -> sd_samplers_common.Sampler:
    """modules/sd_samplers.py:L33: build sampler `name` for `model` and attach its SamplerData."""
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    if model.is_sdxl and config.options.get("no_sdxl", False):
        raise Exception(f"Sampler {config.name} is not supported for SDXL")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def set_samplers() -> None:
    """modules/sd_samplers.py:L47: refresh the UI lists and the lowercase name/alias map."""
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = all_samplers
    samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names() -> list[str]:
    """modules/sd_samplers.py:L61: names shown in the UI (hide_samplers removed)."""
    return [x.name for x in samplers if x.name not in samplers_hidden]


if modules.version_at_least(1, 9):
    from modules import sd_schedulers

    def visible_samplers() -> list[sd_samplers_common.SamplerData]:
        """modules/sd_samplers.py:L65 (1.9+)."""
        return [x for x in samplers if x.name not in samplers_hidden]

    def get_sampler_from_infotext(d: dict[str, Any]) -> str:
        """modules/sd_samplers.py:L69 (1.9+): the "Sampler" infotext field -> a sampler name."""
        return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]

    def get_scheduler_from_infotext(d: dict[str, Any]) -> str:
        """modules/sd_samplers.py:L73 (1.9+): -> a "Schedule type" label."""
        return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]

    @functools.cache
    def get_sampler_and_scheduler(sampler_name: str | None, scheduler_name: str | None, *,
                                  convert_automatic: bool = True) -> tuple[str, str]:
        """modules/sd_samplers.py:L101 (1.9+): split an old-style "Name Karras" into (name, label).

        An unknown sampler name falls back to the first sampler; the scheduler is reported as
        "Automatic" when it is the sampler's default (convert_automatic). Cached: a sampler
        registered after a lookup stays unknown to it until `get_sampler_and_scheduler.cache_clear()`.
        """
        default_sampler = samplers[0]
        found_scheduler = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
        name = sampler_name or default_sampler.name
        for scheduler in sd_schedulers.schedulers:
            name_options = [scheduler.label, scheduler.name, *(scheduler.aliases or [])]
            for name_option in name_options:
                if name.endswith(" " + name_option):
                    found_scheduler = scheduler
                    name = name[0:-(len(name_option) + 1)]
                    break
        sampler = all_samplers_map.get(name, default_sampler)
        if convert_automatic and sampler.options.get("scheduler", None) == found_scheduler.name:
            found_scheduler = sd_schedulers.schedulers[0]
        return sampler.name, found_scheduler.label

    def fix_p_invalid_sampler_and_scheduler(p: Any) -> None:
        """modules/sd_samplers.py:L125 (1.9+): correct p.sampler_name / p.scheduler (old names)."""
        i_sampler_name, i_scheduler = p.sampler_name, p.scheduler
        p.sampler_name, p.scheduler = get_sampler_and_scheduler(p.sampler_name, p.scheduler, convert_automatic=False)
        if p.sampler_name != i_sampler_name or i_scheduler != p.scheduler:
            logging.warning(f'Sampler Scheduler autocorrection: "{i_sampler_name}" -> "{p.sampler_name}", "{i_scheduler}" -> "{p.scheduler}"')


set_samplers()
