"""A faithful stand-in of the AUTOMATIC1111 WebUI `modules` package, for tests only.

Putting `tests/webui_stub` on sys.path makes `import modules.scripts`, `from modules import shared,
processing, sd_samplers, ...` work the way they do inside the WebUI, for the parts of the API this
extension uses. Every function and class mirrors the WebUI's signature and behaviour; each
docstring cites the WebUI file and line it mirrors (v1.10.1 = commit 82a973c0 unless noted) and the
version differences that matter here. The model behind it is the toy Gaussian-mixture model of
lib_pinning.toy (see modules.sd_models.ToySdModel), so whole generations run in milliseconds
through WebUI-shaped conditioning, the real k-diffusion samplers and the real CFG denoiser logic.

Flavour. `WEBUI_VERSION` selects which WebUI behaviour the stand-in mirrors where versions differ;
tests/webui_env.py sets it right after importing this package and before any submodule:

- (1, 10, 1): the 1.9+ behaviour: `modules.sd_schedulers` exists ("Schedule type" is chosen
  separately, `p.scheduler`), sampler names carry no scheduler suffix, and
  `sd_samplers.get_sampler_and_scheduler` (functools.cache) resolves infotext.
- (1, 8, 0): the 1.6-1.8 behaviour: no `modules.sd_schedulers` (importing it raises
  ModuleNotFoundError, as in the real 1.8), Karras/Exponential variants are separate sampler
  names, a sampler's `scheduler` option picks its schedule, and the `k_sched_type` setting
  overrides it globally.

Versions 1.6 and 1.7 differ from 1.8 in ways this flavour does not emulate: they have no
`modules.infotext_utils` (only `generation_parameters_copypaste`) and no
`State.stopping_generation`.
"""

from __future__ import annotations

WEBUI_VERSION: tuple[int, int, int] = (1, 10, 1)
"""The WebUI version this stand-in mirrors where versions differ (see the module docstring)."""


def version_at_least(major: int, minor: int, patch: int = 0) -> bool:
    """Stand-in only: True when the mirrored WebUI version is at least major.minor.patch."""
    return WEBUI_VERSION >= (major, minor, patch)
