"""Stand-in for the `k_diffusion` package the WebUI puts on sys.path (repositories/k-diffusion).

The WebUI imports `k_diffusion.sampling` (its samplers, schedules and BrownianTreeNoiseSampler)
and, in `sd_samplers_kdiffusion`, swaps that module's `torch` for its per-seed generator
(sd_samplers_common.TorchHijack). Running the real samplers therefore needs the real
`k_diffusion/sampling.py`, but `import k_diffusion` of the installed package runs its `__init__`,
which imports its whole training stack (not installed here; see tests/kdiffusion_reference.py).
This package provides exactly what the stand-in needs:

- `k_diffusion.sampling`: the installed k-diffusion's own sampling.py, executed as this package's
  submodule (a separate module object from tests.kdiffusion_reference's copy, so the WebUI's
  TorchHijack of `k_diffusion.sampling.torch` never leaks into other tests);
- `k_diffusion.utils`: only `append_dims`, compiled from the installed utils.py.

`k_diffusion.external` (CompVisDenoiser) is not provided: the stand-in's model supplies its own
denoiser through `create_denoiser()`, the route v1.10.1 takes first
(modules/sd_samplers_kdiffusion.py:L56 `create_denoiser`).
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

_STUB_ROOT = Path(__file__).resolve().parent.parent


def installed_package_dir() -> Path:
    """The directory of the installed k-diffusion package, skipping this stand-in.

    Raises ImportError (ModuleNotFoundError) when k-diffusion is not installed; install it with
    `pip install --no-deps k-diffusion==0.1.1.post1` (the Makefile's test target does).
    """
    search = [p for p in sys.path if p and Path(p).resolve() != _STUB_ROOT]
    spec = importlib.machinery.PathFinder.find_spec("k_diffusion", search)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "k-diffusion is not installed; the WebUI stand-in runs its real samplers: "
            "pip install --no-deps k-diffusion==0.1.1.post1",
            name="k_diffusion",
        )
    return Path(next(iter(spec.submodule_search_locations)))
