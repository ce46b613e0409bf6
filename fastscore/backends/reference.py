"""The reference backend (``backend="torch"``): the seeds' loops generalised, readable first.

It calls the torch model itself (not the packed weights), in the model's dtype and on its
device, so running it on ``model.double()`` gives the float64 yardstick every kernel is
tested against. Samplers run their rule's step program (fastscore/samplers.py) op by op with
float64 coefficients (fastscore/program.py ``execute``). Random numbers come from
``fastscore.rng`` (the Philox stream all backends share), so trajectories match the kernels
sample by sample.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import torch

from .. import integrators, rng
from ..plan import LogProbPlan, SamplePlan, check_finite_result
from ..program import STATE, execute
from ..sde import SDE

NOISE_CHUNK = 64  # steps of noise drawn per call to the vectorised Philox


def _model_dtype_device(model):
    p = next(model.parameters(), None)
    return (p.dtype, p.device) if p is not None else (torch.get_default_dtype(), torch.device("cpu"))


def conditioned(model, cond, dtype, device):
    """The score s(x, t) of `model` under the condition cond [n, cond_dim] (None: model itself)."""
    if cond is None:
        return model
    c = cond.to(dtype=dtype, device=device)
    return lambda x, t: model(x, t, c)


class _Noise:
    """Standard normals of one stream for every step, drawn NOISE_CHUNK steps at a time."""

    def __init__(self, plan: SamplePlan, stream: int, dtype, device):
        self.plan, self.stream, self.dtype, self.device = plan, stream, dtype, device
        self.samples = np.arange(plan.start, plan.start + plan.n)
        self._first, self._block = 0, None

    def __call__(self, k: int) -> torch.Tensor:
        if self._block is None or not (self._first <= k < self._first + len(self._block)):
            steps = np.arange(k, min(k + NOISE_CHUNK, self.plan.steps))
            z = rng.normals(self.plan.seed, self.samples, steps, self.stream, self.plan.dim)
            self._first, self._block = k, torch.from_numpy(z).to(self.dtype).to(self.device)
        return self._block[k - self._first]


# -- sampling -------------------------------------------------------------------------


@torch.no_grad()
def sample(model, plan: SamplePlan, cond=None) -> torch.Tensor:
    """Samples [n, dim]: the prior at T, then the plan's step program (fastscore/samplers.py)
    step by step down to eps, then its final program (the denoising step) if any."""
    dtype, device = _model_dtype_device(model)
    score = conditioned(model, cond, dtype, device)
    samples = np.arange(plan.start, plan.start + plan.n)
    z0 = rng.normals(plan.seed, samples, 0, rng.STREAM_PRIOR, plan.dim)
    x = torch.from_numpy(plan.prior_std * z0).to(dtype).to(device)
    if plan.n == 0:
        return x
    regs = registers(plan, x)
    noise = {stream: _Noise(plan, stream, dtype, device) for stream in plan.program.streams}
    for k in range(plan.steps):
        step(score, plan, regs, k, lambda stream: noise[stream](k))
    if plan.program.final:
        step(score, plan, regs, plan.steps, None)
    return regs[STATE]


def registers(plan: SamplePlan, x: torch.Tensor) -> dict:
    """The program's registers at the start: the state x, carried history at zero."""
    return {STATE: x, **{name: torch.zeros_like(x) for name in plan.rule.carries}}


def step(score, plan: SamplePlan, regs: dict, k: int, draw) -> None:
    """Step k of the plan's program on regs (name -> [n, dim]) in place; k == steps runs the
    final program. score(x, t) is the network; draw(stream) the step's normals."""
    prog = plan.program
    ops = prog.final if k == plan.steps else prog.body
    row, first = plan.coef[k], k * prog.n_slots  # coefficient row, first evaluation-time row
    execute(ops, regs, lambda name: float(row[prog.coefficients.index(name)]),
            lambda x, slot: score(x, float(plan.times[first + slot])), draw)


# -- likelihood -----------------------------------------------------------------------


def divergence(score, x: torch.Tensor, t, probe: torch.Tensor | None = None):
    """(s(x, t) [n, dim], tr ds/dx [n]). Exact: one autograd pass per dimension (seed 000's
    ``score_net_div`` does a single pass, which is exact only in 1-D). With a probe
    [n, dim] of Rademacher signs: Hutchinson's estimate probe^T (ds/dx) probe, one pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = score(x, t)
        if probe is not None:
            (g,) = torch.autograd.grad((s * probe).sum(), x)
            return s.detach(), (g * probe).sum(1).detach()
        tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(x.shape[1]):
            (g,) = torch.autograd.grad(s[:, d].sum(), x, retain_graph=d + 1 < x.shape[1])
            tr = tr + g[:, d]
    return s.detach(), tr.detach()


def _augmented(score, sde, x, t, probe):
    """Velocity of the augmented ODE [x, delta]: dx/dt = v, d delta/dt = tr dv/dx."""
    s, tr = divergence(score, x, t, probe)
    v = sde.drift_coeff(t) * x - 0.5 * sde.diffusion_sq(t) * s
    return v, x.shape[1] * sde.drift_coeff(t) - 0.5 * sde.diffusion_sq(t) * tr


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_eps(x) [n] in nats, network evaluations per sample [n]): integrate [x, delta]
    from eps to T along the probability flow, then log p = log p_T(x_T) + delta(T) (seed
    000's ``likelihood_ode``)."""
    dtype, device = _model_dtype_device(model)
    x = x.to(dtype=dtype, device=device)
    score = conditioned(model, cond, dtype, device)
    probe = None
    if plan.trace == "hutchinson":
        # one probe per sample for the whole solve (FFJORD's choice): the ODE stays smooth
        z = rng.rademacher(plan.seed, np.arange(x.shape[0]), 0, plan.dim)
        probe = torch.from_numpy(z).to(x.dtype).to(x.device)
    if plan.method == "rk45":
        return _log_prob_scipy(score, sde, x, plan, probe)
    tab = integrators.FIXED[plan.method]
    delta = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for k in range(plan.steps):
        t, h = plan.time(k), plan.h
        kx, kd = [], []
        for i in range(tab.stages):
            xi = x + h * sum(aij * kj for aij, kj in zip(tab.a[i], kx)) if i else x
            vx, vd = _augmented(score, sde, xi, t + tab.c[i] * h, probe)
            kx.append(vx)
            kd.append(vd)
        x = x + h * sum(bi * ki for bi, ki in zip(tab.b, kx))
        delta = delta + h * sum(bi * ki for bi, ki in zip(tab.b, kd))
    nfe = torch.full((x.shape[0],), plan.steps * tab.stages, dtype=torch.int64)
    return sde.prior_log_prob(x) + delta, nfe


def _log_prob_scipy(score, sde, x, plan, probe):
    """Adaptive RK45 (Dormand–Prince) with scipy on the whole batch as one system, as
    score_sde's likelihood does (one step size for the batch, error measured over every
    sample at once, so every sample reports the batch's evaluation count)."""
    n, dim = x.shape
    dtype, device = x.dtype, x.device

    def rhs(t, y):
        xt = torch.from_numpy(y[: n * dim].reshape(n, dim)).to(dtype).to(device)
        v, d = _augmented(score, sde, xt, float(t), probe)
        # a non-finite velocity fails scipy's step control only after many rejections, as an
        # unrelated "step size" error: fail now, as the kernels do
        check_finite_result(torch.cat([v, d[:, None]], dim=1), "log_prob (method 'rk45', backend 'torch')")
        return np.concatenate([v.cpu().numpy().ravel(), d.cpu().numpy()]).astype(np.float64)

    y0 = np.concatenate([x.detach().cpu().numpy().ravel(), np.zeros(n)]).astype(np.float64)
    sol = scipy.integrate.solve_ivp(rhs, (plan.eps, plan.T), y0, rtol=plan.rtol, atol=plan.atol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"scipy RK45 failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).to(dtype).to(device)
    nfe = torch.full((n,), sol.nfev, dtype=torch.int64)
    return sde.prior_log_prob(y[: n * dim].reshape(n, dim)) + y[n * dim :], nfe
