"""The reference backend (``backend="torch"``): the seeds' loops generalised, readable first.

It calls the torch model itself (not the packed weights), in the model's dtype and on its
device, so running it on ``model.double()`` gives the float64 yardstick every kernel is
tested against. Random numbers come from ``fastscore.rng`` (the Philox stream all
backends share), so trajectories match the kernels sample by sample.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.integrate
import torch

from .. import rng
from ..plan import LogProbPlan, SamplePlan
from ..sde import SDE

NOISE_CHUNK = 64  # steps of noise drawn per call to the vectorised Philox


def _model_dtype_device(model):
    p = next(model.parameters(), None)
    return (p.dtype, p.device) if p is not None else (torch.get_default_dtype(), torch.device("cpu"))


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
def sample(model, sde: SDE, plan: SamplePlan) -> torch.Tensor:
    """Samples [n, dim] by ``plan.method``, starting from the prior at T and ending at eps."""
    dtype, device = _model_dtype_device(model)
    samples = np.arange(plan.start, plan.start + plan.n)
    z0 = rng.normals(plan.seed, samples, 0, rng.STREAM_PRIOR, plan.dim)
    x = torch.from_numpy(sde.prior_std * z0).to(dtype).to(device)
    if plan.n == 0:
        return x
    step = STEPS[plan.method]
    noise = _Noise(plan, rng.STREAM_PREDICTOR, dtype, device)
    correctors = [_Noise(plan, rng.STREAM_CORRECTOR + j, dtype, device) for j in range(plan.corrector_steps)]
    for k in range(plan.steps):
        x = step(model, sde, plan, x, k, noise, correctors)
    if plan.denoise:
        x = tweedie(model, sde, x, plan.eps)
    return x


def em_step(score, sde, plan, x, k, noise, correctors):
    """Reverse-SDE Euler–Maruyama, seed 002's ``reverse_step`` for any SDE:
    x <- x - (f(t) x - g(t)^2 s(x, t)) h + g(t) sqrt(h) z."""
    t, h = plan.time(k), plan.h
    g2 = sde.diffusion_sq(t)
    return x - (sde.drift_coeff(t) * x - g2 * score(x, t)) * h + math.sqrt(g2 * h) * noise(k)


def pc_step(score, sde, plan, x, k, noise, correctors):
    """Predictor–corrector of Song et al. (2021), ``pc_sampler`` of score_sde: Langevin
    corrector sweeps at t, then the reverse-diffusion predictor from t to t - h.

    Both are built on the exact forward transition x_t = a x_{t-h} + G z (SDE.transition):
    predictor x <- (2 - a) x + G^2 s + G z (score_sde's ReverseDiffusionPredictor: for VE it
    is SMLD's, for VP a = exp(-1/2 int beta) plays sqrt(alpha_i)).

    Corrector step size eps(t) = 2 alpha (snr sigma(t))^2 with alpha = a^2. score_sde uses
    2 alpha (snr ||z|| / ||s||)^2 with norms averaged over the batch, which couples samples;
    taken per sample, the step would depend on the position (||s(x)|| vanishes at every
    mode of low-dimensional data), and unadjusted Langevin with a position-dependent step
    samples the wrong law (tests/test_reference.py shows the spread it adds). sigma(t)
    replaces the ratio because E||z||^2 = dim and E||s||^2 <= dim / sigma(t)^2 (the
    denoising score matching identity): the same value for a typical batch, from t alone.
    """
    t, h = plan.time(k), plan.h
    a, G2 = sde.transition(t, t - h)
    step = 2 * a * a * (plan.snr * sde.std(t)) ** 2
    for j, z_of in enumerate(correctors):
        x = x + step * score(x, t) + math.sqrt(2 * step) * z_of(k)
    return (2 - a) * x + G2 * score(x, t) + math.sqrt(G2) * noise(k)


def _pf_drift(score, sde, x, t):
    """Probability-flow ODE velocity f(t) x - 1/2 g(t)^2 s(x, t) (forward time)."""
    return sde.drift_coeff(t) * x - 0.5 * sde.diffusion_sq(t) * score(x, t)


def ode_euler_step(score, sde, plan, x, k, noise, correctors):
    """Probability-flow ODE, explicit Euler from t to t - h (seed 001's backward Euler)."""
    t = plan.time(k)
    return x - plan.h * _pf_drift(score, sde, x, t)


def ode_heun_step(score, sde, plan, x, k, noise, correctors):
    """Probability-flow ODE, Heun's method (Karras et al. 2022, Algorithm 1 without churn)."""
    t, h = plan.time(k), plan.h
    d1 = _pf_drift(score, sde, x, t)
    x_euler = x - h * d1
    d2 = _pf_drift(score, sde, x_euler, t - h)
    return x - 0.5 * h * (d1 + d2)


# each method's step(score, sde, plan, x, k, noise, correctors) -> x at t_k - h
STEPS = {"em": em_step, "pc": pc_step, "ode_euler": ode_euler_step, "ode_heun": ode_heun_step}


def tweedie(score, sde, x, t):
    """Noise-free final step E[x_0 | x_t] = (x + sigma(t)^2 s(x, t)) / m(t) (score_sde's denoise)."""
    return (x + sde.std(t) ** 2 * score(x, t)) / sde.mean_coeff(t)


# -- likelihood -----------------------------------------------------------------------


def divergence(model, x: torch.Tensor, t, probe: torch.Tensor | None = None):
    """(s(x, t) [n, dim], tr ds/dx [n]). Exact: one autograd pass per dimension (seed 000's
    ``score_net_div`` does a single pass, which is exact only in 1-D). With a probe
    [n, dim] of Rademacher signs: Hutchinson's estimate probe^T (ds/dx) probe, one pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = model(x, t)
        if probe is not None:
            (g,) = torch.autograd.grad((s * probe).sum(), x)
            return s.detach(), (g * probe).sum(1).detach()
        tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(x.shape[1]):
            (g,) = torch.autograd.grad(s[:, d].sum(), x, retain_graph=d + 1 < x.shape[1])
            tr = tr + g[:, d]
    return s.detach(), tr.detach()


def _augmented(model, sde, x, t, probe):
    """Velocity of the augmented ODE [x, delta]: dx/dt = v, d delta/dt = tr dv/dx."""
    s, tr = divergence(model, x, t, probe)
    v = sde.drift_coeff(t) * x - 0.5 * sde.diffusion_sq(t) * s
    return v, x.shape[1] * sde.drift_coeff(t) - 0.5 * sde.diffusion_sq(t) * tr


_TABLEAUX = {  # explicit Runge–Kutta: (nodes c, weights b, matrix a) — fixed-step methods
    "euler": ([0.0], [1.0], []),
    "heun": ([0.0, 1.0], [0.5, 0.5], [[1.0]]),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]]),
}


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_eps(x) [n] in nats, network evaluations per sample [n]): integrate [x, delta]
    from eps to T along the probability flow, then log p = log p_T(x_T) + delta(T) (seed
    000's ``likelihood_ode``)."""
    dtype, device = _model_dtype_device(model)
    x = x.to(dtype=dtype, device=device)
    probe = None
    if plan.trace == "hutchinson":
        # one probe per sample for the whole solve (FFJORD's choice): the ODE stays smooth
        z = rng.rademacher(plan.seed, np.arange(x.shape[0]), 0, plan.dim)
        probe = torch.from_numpy(z).to(x.dtype).to(x.device)
    if plan.method == "rk45":
        return _log_prob_scipy(model, sde, x, plan, probe)
    c, b, a = _TABLEAUX[plan.method]
    delta = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for k in range(plan.steps):
        t, h = plan.time(k), plan.h
        kx, kd = [], []
        for i in range(len(c)):
            xi = x + h * sum(aij * kj for aij, kj in zip(a[i - 1], kx)) if i else x
            vx, vd = _augmented(model, sde, xi, t + c[i] * h, probe)
            kx.append(vx)
            kd.append(vd)
        x = x + h * sum(bi * ki for bi, ki in zip(b, kx))
        delta = delta + h * sum(bi * ki for bi, ki in zip(b, kd))
    nfe = torch.full((x.shape[0],), plan.steps * len(c), dtype=torch.int64)
    return sde.prior_log_prob(x) + delta, nfe


def _log_prob_scipy(model, sde, x, plan, probe):
    """Adaptive RK45 with scipy on the whole batch as one system, exactly seed 000's way
    (one step size for the batch, error measured over every sample at once, so every
    sample reports the batch's evaluation count)."""
    n, dim = x.shape
    dtype, device = x.dtype, x.device

    def rhs(t, y):
        xt = torch.from_numpy(y[: n * dim].reshape(n, dim)).to(dtype).to(device)
        v, d = _augmented(model, sde, xt, float(t), probe)
        return np.concatenate([v.cpu().numpy().ravel(), d.cpu().numpy()]).astype(np.float64)

    y0 = np.concatenate([x.detach().cpu().numpy().ravel(), np.zeros(n)]).astype(np.float64)
    sol = scipy.integrate.solve_ivp(rhs, (plan.eps, plan.T), y0, rtol=plan.rtol, atol=plan.atol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"scipy RK45 failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).to(dtype).to(device)
    nfe = torch.full((n,), sol.nfev, dtype=torch.int64)
    return sde.prior_log_prob(y[: n * dim].reshape(n, dim)) + y[n * dim :], nfe
