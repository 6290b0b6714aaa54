"""Hyperbatch samplers in the k-diffusion calling convention.

Each sampler is one function, `sample_<name>_hyperbatch(model, x, sigmas, extra_args=None,
callback=None, disable=None, <the plain sampler's own kwargs>, split_rho=..., growth=...)`, whose
body is the plain k-diffusion solver step; everything about growing the batch lives in
`loop.Hyperbatch` (the shared loop), which the bodies iterate:

    for i, denoised in run:      # model evaluated at sigmas[i]; state grown at splits
        ...update run.state.x (and any history kept on run.state)...
        run.noise(sigma, sigma_next)   # per-row, seed-derived noise
        run.model(x_2, sigma_s)        # a second evaluation, on the active rows

x has B rows (the caller's initial noise times sigma_max); sampling starts from row 0 (see
`plan.GrowthPlan.sizes`) and returns B rows. `model(x, sigma * s_in, **extra_args)` returns the
denoised rows; batch-sized entries of extra_args are cut to the active rows. With growth="none"
(or B = 1) every sampler computes exactly what its k-diffusion counterpart computes given the same
noise.

Noise samplers must return one row per image (B rows). Defaults, as in k-diffusion: Euler a and
DPM++ 2M draw `torch.randn_like` of the full batch from this module's `torch` (the WebUI replaces
k-diffusion's module-level torch the same way to serve its per-seed generators); the SDE samplers
use one Brownian tree per row with random seeds. Pass `noise.SeededNoise` or
`noise.SeededBrownianNoise` (or the WebUI's own per-seed samplers) for results that are a pure
function of the seeds.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from .coefficients import dpmpp_2m_steps, euler_ancestral_steps, get_ancestral_step
from .coefficients import sigma_of_t as _sigma_of_t
from .coefficients import t_of_sigma as _t_of_sigma
from .loop import Hyperbatch, NoiseSampler
from .noise import SeededBrownianNoise
from .plan import DEFAULT_SCHEDULE, GrowthPlan

DEFAULT_SPLIT_RHO = 1.0
"""Every sampler's default rho of the split refresh (see `loop.Hyperbatch`).

rho = 1: a copy keeps its parent's denoised estimate and draws all of its noise from its own seed.
Chosen by the fidelity measure ("Fidelity: chosen defaults (toy)" in docs/benchmarks.md): under
"front" it ranks prompts and CMA-ES individuals more like plain batches than rho^2 = 1/2 (the
default before) for Euler a (variety Spearman 0.764 against 0.682, ranking 0.433 against 0.370)
and DPM++ 2M (0.671 against 0.661, ranking 0.455 against 0.068). The price, measured by
`benchmarks/bench_split_rho.py` on the analytic mixture of benchmarks/mixture.py (20 Karras steps,
"even" growth, B = 8, 1000 roots): at this rho 0.31 of the image pairs end in different components
(rho = sqrt(1/2): 0.18; Euler a and DPM++ 2M SDE: 0.30 and 0.31; a plain batch: 0.62), and the
worst image keeps 0.75 of a plain 2M batch's spread within a component, where rho = sqrt(1/2)
keeps 0.92 (Euler a's own noise keeps 0.65): the refresh keeps the parent's denoised estimate,
whose variance is below the data's (the usual approximation of ancestral samplers). Pass
split_rho=math.sqrt(0.5) to keep more of that spread at the cost of fewer parted pairs.
"""

DPMPP_2M_SDE_SCHEDULE = "front-early"
DPMPP_2M_SDE_SPLIT_RHO = math.sqrt(0.5)
"""DPM++ 2M SDE's defaults (also its Heun variant's, the same function): the fidelity rule's pick
for it ("Fidelity: chosen defaults (toy)", docs/benchmarks.md): variety Spearman 0.693 and ranking
0.518 against 0.707 and 0.294 for "front" with rho = 1, within the rule's 0.05 tie on variety, so
the ranking decides."""

ModelFn = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], Any]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The Karras ODE derivative dx/dsigma from a denoiser output."""
    return (x - denoised) / sigma[(...,) + (None,) * (x.ndim - sigma.ndim)]


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """k-diffusion's default: a fresh `torch.randn_like(x)` (B rows) on every call."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def default_brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor) -> NoiseSampler:
    """One Brownian tree per row, seeded from torch's global generator (k-diffusion draws one
    random seed the same way for its single tree)."""
    seeds = torch.randint(0, 2**63 - 1, (x.shape[0],)).tolist()
    return SeededBrownianNoise.from_sigmas(seeds, x, sigmas)


def _refresh_unless_noisy(eta: float, s_noise: float, split_rho: float) -> float | None:
    """A stochastic solver needs the split refresh only when its own noise is switched off."""
    return None if (eta and s_noise) else split_rho


@torch.no_grad()
def sample_euler_ancestral_hyperbatch(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    split_rho: float = DEFAULT_SPLIT_RHO,
    growth: GrowthPlan | str = DEFAULT_SCHEDULE,
) -> torch.Tensor:
    """Ancestral sampling with Euler steps, on a growing batch."""
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    run = Hyperbatch(
        model, x, sigmas, extra_args, callback, disable, growth, noise_sampler,
        split_refresh=_refresh_unless_noisy(eta, s_noise, split_rho), plan_refresh=split_rho,
    )
    state = run.state
    steps = euler_ancestral_steps(sigmas, eta) if run.steps else ()
    # x * 1.0 is x, bit for bit: the default s_noise costs no op.
    unit_noise = type(s_noise) in (int, float) and s_noise == 1
    for i, denoised in run:
        step = steps[i]  # sigma_down, sigma_up and dt of k-diffusion's step, computed once per schedule
        # k-diffusion's d = to_d(x, sigma, denoised); x = x + d * dt; x = x + noise * sigma_up, with
        # d's buffer reused for the new x (x + y == y + x bit for bit) and x grown in place by the
        # noise term: the same values with one fresh buffer a step instead of three. The x the
        # callback saw is not modified. In place only where every operand has x's dtype: else
        # k-diffusion's expressions promote (to_d's sigma has x's dims), and so do these.
        if denoised.dtype == state.x.dtype == step.sigma.dtype:
            d = (state.x - denoised).div_(step.sigma)
            state.x = d.mul_(step.dt).add_(state.x)
        else:
            state.x = state.x + to_d(state.x, step.sigma, denoised) * step.dt
        if step.noisy:
            noise = run.noise(step.sigma, step.sigma_next)
            noise_term = (noise if unit_noise else noise * s_noise) * step.sigma_up
            state.x = state.x.add_(noise_term) if noise_term.dtype == state.x.dtype else state.x + noise_term
    return run.result()


@torch.no_grad()
def sample_dpmpp_2m_hyperbatch(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    split_rho: float = DEFAULT_SPLIT_RHO,
    growth: GrowthPlan | str = DEFAULT_SCHEDULE,
) -> torch.Tensor:
    """DPM-Solver++(2M), on a growing batch.

    The solver is deterministic, so copies get a partial noise refresh at their split (rho =
    split_rho, noise from noise_sampler, row r from image r's seed); the plain solver never calls
    noise_sampler.
    """
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    run = Hyperbatch(
        model, x, sigmas, extra_args, callback, disable, growth, noise_sampler,
        split_refresh=split_rho,
    )
    state = run.state
    state.old_denoised = None
    steps = dpmpp_2m_steps(sigmas) if run.steps else ()
    for i, denoised in run:
        step = steps[i]  # ratio, expm1(-h) and the 2M weights of k-diffusion's step, once per schedule
        # k-diffusion's expressions, with each result written into a temporary of the same
        # expression (0-d coefficients never change a dtype; x * y == y * x bit for bit): the same
        # values with half the fresh buffers, whose page faults cost the toy more than the math.
        if step.first_order:
            state.x = (step.ratio * state.x).sub_(step.em1 * denoised)
        else:
            denoised_d = (step.c_new * denoised).sub_(step.c_old * state.old_denoised)
            state.x = (step.ratio * state.x).sub_(denoised_d.mul_(step.em1))
        state.old_denoised = denoised
    return run.result()


@torch.no_grad()
def sample_dpmpp_sde_hyperbatch(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 1 / 2,
    split_rho: float = DEFAULT_SPLIT_RHO,
    growth: GrowthPlan | str = DEFAULT_SCHEDULE,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, two model evaluations per step), on a growing batch."""
    noise_sampler = default_brownian_noise_sampler(x, sigmas) if noise_sampler is None else noise_sampler
    run = Hyperbatch(
        model, x, sigmas, extra_args, callback, disable, growth, noise_sampler,
        split_refresh=_refresh_unless_noisy(eta, s_noise, split_rho), plan_refresh=split_rho,
    )
    state = run.state
    for i, denoised in run:
        if sigmas[i + 1] == 0:
            # Euler method
            d = to_d(state.x, sigmas[i], denoised)
            dt = sigmas[i + 1] - sigmas[i]
            state.x = state.x + d * dt
        else:
            t, t_next = _t_of_sigma(sigmas[i]), _t_of_sigma(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)

            # Step 1: to the intermediate time s
            sd, su = get_ancestral_step(_sigma_of_t(t), _sigma_of_t(s), eta)
            s_ = _t_of_sigma(sd)
            x_2 = (_sigma_of_t(s_) / _sigma_of_t(t)) * state.x - (t - s_).expm1() * denoised
            x_2 = x_2 + run.noise(_sigma_of_t(t), _sigma_of_t(s)) * s_noise * su
            denoised_2 = run.model(x_2, _sigma_of_t(s))

            # Step 2: to t_next with the combined denoised estimate
            sd, su = get_ancestral_step(_sigma_of_t(t), _sigma_of_t(t_next), eta)
            t_next_ = _t_of_sigma(sd)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            state.x = (_sigma_of_t(t_next_) / _sigma_of_t(t)) * state.x - (t - t_next_).expm1() * denoised_d
            state.x = state.x + run.noise(_sigma_of_t(t), _sigma_of_t(t_next)) * s_noise * su
    return run.result()


@torch.no_grad()
def sample_dpmpp_2m_sde_hyperbatch(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
    split_rho: float = DPMPP_2M_SDE_SPLIT_RHO,
    growth: GrowthPlan | str = DPMPP_2M_SDE_SCHEDULE,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, on a growing batch (its own default growth and rho, see
    `DPMPP_2M_SDE_SCHEDULE`)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise_sampler = default_brownian_noise_sampler(x, sigmas) if noise_sampler is None else noise_sampler
    run = Hyperbatch(
        model, x, sigmas, extra_args, callback, disable, growth, noise_sampler,
        split_refresh=_refresh_unless_noisy(eta, s_noise, split_rho), plan_refresh=split_rho,
    )
    state = run.state
    state.old_denoised = None
    state.h_last = None
    for i, denoised in run:
        if sigmas[i + 1] == 0:
            # Denoising step
            state.x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h

            state.x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * state.x + (-h - eta_h).expm1().neg() * denoised

            if state.old_denoised is not None:
                r = state.h_last / h
                if solver_type == "heun":
                    state.x = state.x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (
                        denoised - state.old_denoised
                    )
                else:
                    state.x = state.x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - state.old_denoised)

            if eta:
                state.x = state.x + run.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (
                    -2 * eta_h
                ).expm1().neg().sqrt() * s_noise
            state.h_last = h
        state.old_denoised = denoised
    return run.result()


# -- registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerInfo:
    """What a UI or a cost estimate needs to know about one hyperbatch sampler.

    name: registry key. function: the sampler. label: the name shown in UIs (no scheduler suffix:
    the WebUI picks the schedule separately). aliases: short names (WebUI SamplerData aliases).
    stochastic: whether the solver adds noise at every step (2M only at splits).
    evals_per_step / final_step_evals: model evaluations per step, and in the final step (whose
    next sigma is 0). webui_options: the WebUI SamplerData options of the plain counterpart
    (default scheduler, second_order, brownian_noise: the WebUI then passes one Brownian tree per
    image seed as noise_sampler). extra_params: WebUI sampler_extra_params (settings it forwards).
    """

    name: str
    function: Callable[..., torch.Tensor]
    label: str
    aliases: tuple[str, ...]
    stochastic: bool
    evals_per_step: int
    final_step_evals: int
    webui_options: Mapping[str, str | bool | int | float] = field(default_factory=dict)
    extra_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "webui_options", MappingProxyType(dict(self.webui_options)))

    @property
    def default_growth(self) -> str:
        """The growth schedule this sampler uses when none is given: its function's `growth`
        default (the one definition; the WebUI and the toy read it from here)."""
        return inspect.signature(self.function).parameters["growth"].default

    @property
    def default_split_rho(self) -> float:
        """The split refresh's rho this sampler uses when none is given (its `split_rho` default)."""
        return inspect.signature(self.function).parameters["split_rho"].default

    def evals(self, steps: int) -> tuple[int, ...]:
        """Model evaluations in each of `steps` steps (schedules ending in sigma 0)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return (self.evals_per_step,) * (steps - 1) + (self.final_step_evals,)

    def cost_ratio(self, plan: GrowthPlan) -> float:
        """The fraction of a plain batch's model rows this sampler evaluates under `plan`."""
        return plan.cost_ratio(self.evals(plan.steps))


SAMPLERS: Mapping[str, SamplerInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            SamplerInfo(
                "euler_ancestral", sample_euler_ancestral_hyperbatch, "Euler a - Hyperbatch",
                ("k_euler_a_hyperbatch",), stochastic=True, evals_per_step=1, final_step_evals=1,
                webui_options={"uses_ensd": True},
            ),
            SamplerInfo(
                "dpmpp_2m", sample_dpmpp_2m_hyperbatch, "DPM++ 2M - Hyperbatch",
                ("k_dpmpp_2m_hyperbatch",), stochastic=False, evals_per_step=1, final_step_evals=1,
                webui_options={"scheduler": "karras", "brownian_noise": True},
            ),
            SamplerInfo(
                "dpmpp_sde", sample_dpmpp_sde_hyperbatch, "DPM++ SDE - Hyperbatch",
                ("k_dpmpp_sde_hyperbatch",), stochastic=True, evals_per_step=2, final_step_evals=1,
                webui_options={"scheduler": "karras", "second_order": True, "brownian_noise": True},
                extra_params=("s_noise",),
            ),
            SamplerInfo(
                "dpmpp_2m_sde", sample_dpmpp_2m_sde_hyperbatch, "DPM++ 2M SDE - Hyperbatch",
                ("k_dpmpp_2m_sde_hyperbatch",), stochastic=True, evals_per_step=1, final_step_evals=1,
                webui_options={"scheduler": "exponential", "brownian_noise": True},
                extra_params=("s_noise",),
            ),
            SamplerInfo(
                "dpmpp_2m_sde_heun", sample_dpmpp_2m_sde_hyperbatch, "DPM++ 2M SDE Heun - Hyperbatch",
                ("k_dpmpp_2m_sde_heun_hyperbatch",), stochastic=True, evals_per_step=1,
                final_step_evals=1,
                webui_options={"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"},
                extra_params=("s_noise",),
            ),
        )
    }
)
"""Every hyperbatch sampler by name."""
