"""Test-session setup shared by every test module.

torch uses one intra-op thread per test worker: the suite runs with `-n 2` on 2 cores, and the
tensors here are small, so more threads only oversubscribe the cores (measured 5x slower).
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
