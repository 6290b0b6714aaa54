"""The installed k-diffusion's sampling.py, executed as `k_diffusion.sampling`.

Its `from . import utils` resolves to this package's `k_diffusion.utils` (append_dims only). The
WebUI replaces this module's `torch` with sd_samplers_common.TorchHijack during sampling, and
modules/sd_schedulers.py replaces its `to_d`; both act on this module object, as in the WebUI.
"""

from __future__ import annotations

from k_diffusion import installed_package_dir

_PATH = installed_package_dir() / "sampling.py"
exec(compile(_PATH.read_text(encoding="utf-8"), str(_PATH), "exec", dont_inherit=True), globals())  # noqa: S102
