"""Row bookkeeping at a split: the caller's per-image arguments cut to the active rows, and the
solver's per-row state grown from n rows to n' (row r >= n a copy of row r - n, see `plan`).

Because rows are stable, resizing the per-image arguments (cond, uncond, image_cond, ...) is
always "take the first n rows" of the full-size entries, even when every image has its own
prompt. Duck-typed, so no WebUI import is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch


def take_rows(value: Any, batch_size: int, rows: int) -> Any:
    """`value` cut to its first `rows` rows if it is batch-sized, else `value` unchanged.

    Batch-sized means, duck-typed so no WebUI import is needed:
    - a tensor whose first dimension is `batch_size`;
    - a MulticondLearnedConditioning-like object: `.shape == (batch_size,)` and a `.batch`
      list; the result is a shallow copy of the same type with shape (rows,) and batch[:rows];
    - a list (or plain tuple) of length `batch_size`, e.g. the WebUI's uncond (one list of
      ScheduledPromptConditioning per image);
    - a dict: resized entry by entry (SDXL-style {"crossattn": ..., "vector": ...}).
    Everything else (scalars, None, tensors of another length) is returned as is. The caller's
    objects are never mutated. With rows == batch_size the value itself is returned.
    """
    if rows == batch_size:
        return value
    if isinstance(value, torch.Tensor):
        return value[:rows] if value.ndim >= 1 and value.shape[0] == batch_size else value
    if isinstance(value, dict):
        resized = copy.copy(value)
        for key, entry in value.items():
            resized[key] = take_rows(entry, batch_size, rows)
        return resized
    batch = getattr(value, "batch", None)
    shape = getattr(value, "shape", None)
    if isinstance(batch, list) and shape is not None and tuple(shape) == (batch_size,):
        if len(batch) != batch_size:
            raise ValueError(f"conditioning has shape ({batch_size},) but {len(batch)} batch rows")
        resized = copy.copy(value)
        resized.shape = (rows,)
        resized.batch = batch[:rows]
        return resized
    if isinstance(value, list) and len(value) == batch_size:
        resized = copy.copy(value)
        del resized[rows:]
        return resized
    if type(value) is tuple and len(value) == batch_size:
        return value[:rows]
    return value


def resize_extra_args(extra_args: Mapping[str, Any], batch_size: int, rows: int) -> dict[str, Any]:
    """The sampler's extra_args with every batch-sized entry cut to the first `rows` rows.

    Because rows are stable, the active rows are always images 0..rows-1, so this is correct
    even when every image has its own prompt, seed or image conditioning.
    """
    return {key: take_rows(value, batch_size, rows) for key, value in extra_args.items()}


# -- solver state -------------------------------------------------------------------------------


def grow_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` (n rows) grown to `rows` rows: row r >= n is a copy of row r - n."""
    n = tensor.shape[0]
    if not n < rows <= 2 * n:
        raise ValueError(f"can only grow {n} rows to n+1..{2 * n}, not {rows}")
    return torch.cat([tensor, tensor[: rows - n]])


class SolverState:
    """The per-row state a solver carries between steps: `x` plus whatever history it keeps.

    Solvers assign attributes freely (state.old_denoised = denoised, state.h_last = h). At a
    split, every tensor attribute whose first dimension is the active row count is grown the same
    way as x; everything else (None, 0-d tensors such as a step size, floats) is shared.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    def grow(self, rows: int, copies_x: torch.Tensor | None = None) -> None:
        """Duplicate every per-row field from the current row count to `rows` rows.

        copies_x: the new rows of x, when they are not plain duplicates (a split refresh); it
        must have rows - n rows.
        """
        n = self.rows
        if copies_x is not None and copies_x.shape[0] != rows - n:
            raise ValueError(f"copies_x has {copies_x.shape[0]} rows, growing {n} to {rows} needs {rows - n}")
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
                if name == "x" and copies_x is not None:
                    setattr(self, name, torch.cat([value, copies_x]))
                else:
                    setattr(self, name, grow_rows(value, rows))
