"""Hyperbatch samplers in the k-diffusion calling convention.

A hyperbatch sampler starts from one latent and duplicates the in-progress rows during sampling
(1 -> 2 -> 4 ... -> B), so early steps are shared: the batch costs fewer model rows and its split
tree shows at which noise level a prompt's images part. `plan` holds the growth plans (schedules,
ancestry, cost), `rows` the per-row bookkeeping at a split (per-image arguments, solver state),
`loop` the shared sampling loop, `noise` the per-seed noise sources,
`sampling` the solvers and their registry, `schedules` sigma schedules for use outside the WebUI.

Nothing here imports k-diffusion, lib_pinning or the WebUI.
"""

from __future__ import annotations

from .loop import Hyperbatch
from .noise import SeededBrownianNoise, SeededNoise
from .plan import DEFAULT_SCHEDULE, SCHEDULES, GrowthPlan, plan_growth
from .rows import SolverState, resize_extra_args
from .sampling import (
    DEFAULT_SPLIT_RHO,
    SAMPLERS,
    SamplerInfo,
    sample_dpmpp_2m_hyperbatch,
    sample_dpmpp_2m_sde_hyperbatch,
    sample_dpmpp_sde_hyperbatch,
    sample_euler_ancestral_hyperbatch,
)

__all__ = [
    "DEFAULT_SCHEDULE",
    "DEFAULT_SPLIT_RHO",
    "SAMPLERS",
    "SCHEDULES",
    "GrowthPlan",
    "Hyperbatch",
    "SamplerInfo",
    "SeededBrownianNoise",
    "SeededNoise",
    "SolverState",
    "plan_growth",
    "resize_extra_args",
    "sample_dpmpp_2m_hyperbatch",
    "sample_dpmpp_2m_sde_hyperbatch",
    "sample_dpmpp_sde_hyperbatch",
    "sample_euler_ancestral_hyperbatch",
]
