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
from ..plan import AdaptivePlan, LogProbPlan, SamplePlan, check_finite_result
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


# -- per-sample adaptive sampling ---------------------------------------------------------


class _Lanes:
    """Per-sample bookkeeping of an adaptive solve: time t, signed step h (toward eps),
    done flags, counts. Mirrors the kernels' per-lane controller (likelihood.h adaptive_steps)."""

    def __init__(self, plan: AdaptivePlan, h0_fraction: float):
        n = plan.n
        self.t = np.full(n, plan.T)
        self.h = np.full(n, -h0_fraction * (plan.T - plan.eps))
        self.done = np.zeros(n, dtype=bool)
        self.nfe = np.zeros(n, dtype=np.int64)
        self.accepted = np.zeros(n, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=np.int64)
        self.failed = np.zeros(n, dtype=bool)
        self.plan = plan

    def control(self, act: np.ndarray, err: np.ndarray, exponent: float) -> np.ndarray:
        """Accept or reject the attempts of the active samples `act` with error norms err;
        returns the accept mask over act. A sample whose step would fall below the minimum
        stops as failed (its result becomes NaN)."""
        p = self.plan
        ok = err <= 1.0
        t, h = self.t[act], self.h[act]
        last = ok & (-h >= t - p.eps)
        t = np.where(ok, np.where(last, p.eps, t + h), t)
        nxt = h * integrators.step_factor(err, exponent)
        self.t[act] = t
        self.h[act] = -np.minimum(-nxt, t - p.eps)
        self.accepted[act] += ok
        self.rejected[act] += ~ok
        fail = ~last & (-nxt < integrators.RK45_MIN_STEP_FRACTION * (p.T - p.eps))
        self.failed[act] |= fail
        self.done[act] = last | fail
        return ok

    def info(self) -> dict:
        return {"nfe": torch.from_numpy(self.nfe), "accepted": torch.from_numpy(self.accepted),
                "rejected": torch.from_numpy(self.rejected)}


@torch.no_grad()
def sample_adaptive(model, plan: AdaptivePlan, cond=None) -> tuple[torch.Tensor, dict]:
    """Samples [n, dim] and {"nfe", "accepted", "rejected"} [n] of a per-sample adaptive solve
    from T to eps ("ode_rk45": Dormand–Prince on the probability flow; "em_adaptive": Gotta Go
    Fast on the reverse SDE), float64 bookkeeping, the model in its dtype."""
    dtype, device = _model_dtype_device(model)
    c = None if cond is None else cond.to(dtype=dtype, device=device)
    sde = plan.sde
    samples = np.arange(plan.start, plan.start + plan.n)
    x = torch.from_numpy(plan.prior_std * rng.normals(plan.seed, samples, 0, rng.STREAM_PRIOR, plan.dim))
    x = x.to(dtype).to(device)

    def score(act, xa, t):
        tt = torch.from_numpy(t).to(dtype).to(device)
        return model(xa, tt) if c is None else model(xa, tt, c[torch.from_numpy(act).to(device)])

    run = _rk45_sample if plan.method == "ode_rk45" else _ggf_sample
    lanes = run(score, sde, plan, samples, x)
    if plan.denoise and plan.n:
        every = np.arange(plan.n)
        s = score(every, x, np.full(plan.n, plan.eps))
        x = (x + sde.std(plan.eps) ** 2 * s) / sde.mean_coeff(plan.eps)
        lanes.nfe += 1
    x[torch.from_numpy(lanes.failed).to(device)] = float("nan")
    return x, lanes.info()


def _col(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(a).to(like.dtype).to(like.device)[:, None]


def _rk45_sample(score, sde, plan, samples, x) -> _Lanes:
    """Dormand–Prince 5(4) per sample on dx/dt = f(t) x - 1/2 g(t)^2 s(x, t), T -> eps, with
    the likelihood's controller: err = RMS_j(h sum_i e_i k_ij / (atol + rtol max(|x_j|, |x5_j|)))."""
    dp = integrators.DOPRI5
    lanes = _Lanes(plan, integrators.RK45_H0_FRACTION)

    def velocity(act, xa, t):
        return _col(sde.drift_coeff(t), xa) * xa - 0.5 * _col(sde.diffusion_sq(t), xa) * score(act, xa, t)

    every = np.arange(plan.n)
    k_first = velocity(every, x, lanes.t)
    lanes.nfe += 1
    for _ in range(integrators.RK45_MAX_ATTEMPTS):
        act = np.flatnonzero(~lanes.done)
        if act.size == 0:
            break
        xa, t, h = x[act], lanes.t[act], lanes.h[act]
        hc = _col(h, xa)
        ks = [k_first[act]]
        for i in range(1, len(dp.c)):
            yi = xa + hc * sum(a * k for a, k in zip(dp.a[i], ks))
            ks.append(velocity(act, yi, t + dp.c[i] * h))
        x5 = xa + hc * sum(b * k for b, k in zip(dp.b, ks))
        ks.append(velocity(act, x5, t + h))
        lanes.nfe[act] += len(dp.c)
        e = hc * sum(w * k for w, k in zip(dp.e, ks))
        scale = plan.atol + plan.rtol * torch.maximum(xa.abs(), x5.abs())
        err = (e / scale).pow(2).mean(dim=1).sqrt().cpu().double().numpy()
        ok = torch.from_numpy(lanes.control(act, err, integrators.RK45_EXPONENT)).to(x.device)
        sel = torch.from_numpy(act).to(x.device)
        x[sel] = torch.where(ok[:, None], x5, xa)
        k_first[sel] = torch.where(ok[:, None], ks[-1], ks[0])
    else:
        lanes.failed |= ~lanes.done
    return lanes


def _ggf_sample(score, sde, plan, samples, x) -> _Lanes:
    """Gotta Go Fast (Jolicoeur-Martineau et al. 2021, Algorithm 1) per sample on the reverse
    SDE dx = (f x - g^2 s) dt + g dW from T to eps, the Brownian increments from each sample's
    Brownian tree (rng.brownian): a step t -> t + h (h < 0) uses W(t) - W(t + h)."""
    lanes = _Lanes(plan, integrators.GGF_H0_FRACTION)
    x_prev = x.clone()  # the last accepted Euler–Maruyama proposal x'
    w_t = rng.brownian(plan.seed, samples, lanes.t, plan.eps, plan.T, plan.dim)

    def em(act, xa, xs, t, dt, dw):
        """xa - dt (f(t) xs - g(t)^2 s(xs, t)) + g(t) dW: an EM step of length dt toward eps
        from xa, with the drift at xs."""
        drift = _col(sde.drift_coeff(t), xs) * xs - _col(sde.diffusion_sq(t), xs) * score(act, xs, t)
        return xa - _col(dt, xa) * drift + _col(np.sqrt(sde.diffusion_sq(t)), xa) * dw

    for _ in range(integrators.RK45_MAX_ATTEMPTS):
        act = np.flatnonzero(~lanes.done)
        if act.size == 0:
            break
        xa, t, h = x[act], lanes.t[act], lanes.h[act]
        w_next = rng.brownian(plan.seed, samples[act], t + h, plan.eps, plan.T, plan.dim)
        dw = torch.from_numpy(w_t[act] - w_next).to(x.dtype).to(x.device)
        x1 = em(act, xa, xa, t, -h, dw)
        x2 = 0.5 * (x1 + em(act, xa, x1, t + h, -h, dw))
        lanes.nfe[act] += 2
        scale = torch.clamp(plan.rtol * torch.maximum(x1.abs(), x_prev[act].abs()), min=plan.atol)
        err = ((x1 - x2) / scale).pow(2).mean(dim=1).sqrt().cpu().double().numpy()
        ok_np = lanes.control(act, err, -integrators.GGF_R)
        ok = torch.from_numpy(ok_np).to(x.device)
        sel = torch.from_numpy(act).to(x.device)
        x[sel] = torch.where(ok[:, None], x2, xa)
        x_prev[sel] = torch.where(ok[:, None], x1, x_prev[act])
        w_t[act[ok_np]] = w_next[ok_np]
    else:
        lanes.failed |= ~lanes.done
    return lanes


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


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan, cond=None,
             start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_eps(x) [n] in nats, network evaluations per sample [n]): integrate [x, delta]
    from eps to T along the probability flow, then log p = log p_T(x_T) + delta(T) (seed
    000's ``likelihood_ode``). start: the stream index of x's first point (a chunk's offset),
    whose Hutchinson probe it takes, as on every backend."""
    dtype, device = _model_dtype_device(model)
    x = x.to(dtype=dtype, device=device)
    score = conditioned(model, cond, dtype, device)
    probe = None
    if plan.trace == "hutchinson":
        # one probe per sample for the whole solve (FFJORD's choice): the ODE stays smooth
        z = rng.rademacher(plan.seed, start + np.arange(x.shape[0]), 0, plan.dim)
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
