"""Stand-in for modules/devices.py (v1.10.1 82a973c0): the stand-in always runs on the CPU in float32.

The WebUI picks CUDA/MPS/CPU and half precision here; the toy model is float32 on the CPU, so
these are fixed, and the autocast helpers are plain null contexts (on CPU the WebUI's are too,
for float32).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

cpu: torch.device = torch.device("cpu")
"""modules/devices.py:L115."""
device: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
unet_needs_upcast = False
fp8 = False


def torch_gc() -> None:
    """modules/devices.py:L77: frees CUDA memory in the WebUI; nothing to free on the CPU."""


def autocast(disable: bool = False) -> contextlib.AbstractContextManager[Any]:
    """modules/devices.py:L210: a null context for float32 (as the WebUI's)."""
    return contextlib.nullcontext()


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager[Any]:
    """modules/devices.py:L234."""
    return contextlib.nullcontext()


class NansException(Exception):
    """modules/devices.py:L238."""


def test_for_nans(x: torch.Tensor, where: str) -> None:
    """modules/devices.py:L242: raise when the first element of `x` is NaN (the UNet or VAE failed).

    The WebUI checks only that one element, a cheap proxy for "the whole tensor is NaN"; so does
    this. --disable-nan-check is not mirrored.
    """
    if not torch.isnan(x[(0,) * len(x.shape)]):
        return
    if where == "unet":
        message = "A tensor with NaNs was produced in Unet."
    elif where == "vae":
        message = "A tensor with NaNs was produced in VAE."
    else:
        message = "A tensor with NaNs was produced."
    raise NansException(message + " Use --disable-nan-check commandline argument to disable this check.")
