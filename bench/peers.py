"""What a user would run instead of fastscore, on the same network: the peers of
bench/test_bench_peers.py, each written as its documentation shows.

- reverse-SDE Euler–Maruyama: a plain PyTorch loop (eager), the same loop's step under
  ``torch.compile``, and ``torchsde.sdeint(method="euler")`` on the reverse SDE in reversed time;
- probability-flow ODE: ``torchdiffeq.odeint`` with fixed-step Heun (``heun2``) and with
  ``dopri5``, and ``torchode``'s per-sample adaptive Dopri5;
- exact log-likelihood: the augmented ODE [x, delta log p] with the divergence of the drift from
  autograd, one backward pass per dimension (FFJORD's brute force), under torchdiffeq's dopri5
  and torchode's; and the same with Hutchinson's estimator, one Rademacher probe.

Every peer integrates what fastscore does (bench/README.md): the same SDE coefficients, the same
uniform time grid from T to eps, the same prior; only the random numbers differ (torch's
generator instead of the Philox stream), so peers are compared by time per sample-step and, for
the likelihood, by their error against a float64 solve.
"""

from __future__ import annotations

import copy

import torch

import fastscore as fs


def _column(t, x):
    """t as a factor of x: a scalar, or (torchode) one time per sample [n] as a column."""
    return t[:, None] if torch.is_tensor(t) and t.dim() == 1 else t


def reverse_drift(model, sde, x, t):
    """f(t) x - g(t)^2 s(x, t): the reverse SDE's drift in forward time t."""
    t = _column(t, x)
    return sde.drift_coeff(t) * x - sde.diffusion_sq(t) * model(x, t)


def flow(model, sde, x, t):
    """The probability-flow ODE's velocity f(t) x - g(t)^2 s(x, t) / 2."""
    t = _column(t, x)
    return sde.drift_coeff(t) * x - 0.5 * sde.diffusion_sq(t) * model(x, t)


def _grid(sde, steps: int, eps: float) -> torch.Tensor:
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)


def em_loop(model, sde, n: int, steps: int, eps: float, *, compiled: bool = False, seed: int = 0):
    """The reverse-SDE Euler–Maruyama loop a PyTorch user writes: x <- x - h v + g sqrt(h) z,
    the network on the whole batch each step. compiled: the step under torch.compile (the
    loop stays in Python; time enters as a tensor, so one compiled graph serves every step)."""
    ts = _grid(sde, steps, eps)
    h = (ts[:-1] - ts[1:]).float()
    t = ts[:-1].float()
    g = torch.sqrt(sde.diffusion_sq(ts[:-1]) * (ts[:-1] - ts[1:])).float()

    def step(x, t, h, g, z):
        return x - h * reverse_drift(model, sde, x, t) + g * z

    step_fn = torch.compile(step, dynamic=False) if compiled else step
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def run():
        x = sde.prior_std * torch.randn(n, model.dim, generator=gen)
        for k in range(steps):
            x = step_fn(x, t[k], h[k], g[k], torch.randn(n, model.dim, generator=gen))
        return x

    return run


class _ReverseSDE(torch.nn.Module):
    """The reverse SDE in reversed time u = T - t (torchsde integrates forward in time):
    dy = -(f(t) y - g(t)^2 s(y, t)) du + g(t) dW, diagonal Ito noise."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, model, sde):
        super().__init__()
        self.model, self.sde = model, sde

    def f(self, u, y):
        return -reverse_drift(self.model, self.sde, y, self.sde.T - u)

    def g(self, u, y):
        return self.sde.diffusion(self.sde.T - u) * torch.ones_like(y)


def em_torchsde(model, sde, n: int, steps: int, eps: float, *, seed: int = 0):
    """torchsde.sdeint(method="euler") with dt = (T - eps) / steps and its default Brownian motion."""
    import torchsde

    rsde = _ReverseSDE(model, sde)
    us = torch.tensor([0.0, sde.T - eps])
    dt = (sde.T - eps) / steps
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def run():
        y0 = sde.prior_std * torch.randn(n, model.dim, generator=gen)
        return torchsde.sdeint(rsde, y0, us, method="euler", dt=dt)[-1]

    return run


def flow_torchdiffeq(model, sde, n: int, eps: float, *, method: str, steps: int = 0, rtol=1e-3, atol=1e-3,
                     seed: int = 0):
    """torchdiffeq.odeint on the probability flow from T to eps: fixed-step Heun (method="heun2",
    on the uniform grid of `steps` steps, 2 evaluations a step) or dopri5 (rtol, atol: one error
    norm for the whole batch)."""
    from torchdiffeq import odeint

    gen = torch.Generator().manual_seed(seed)
    ts = _grid(sde, steps, eps).float() if method == "heun2" else torch.tensor([sde.T, eps])
    options = {"rtol": rtol, "atol": atol} if method != "heun2" else {}

    @torch.no_grad()
    def run():
        x0 = sde.prior_std * torch.randn(n, model.dim, generator=gen)
        return odeint(lambda t, x: flow(model, sde, x, t), x0, ts, method=method, **options)[-1]

    return run


def _torchode_solver(term, rtol, atol):
    import torchode as to

    return to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=atol, rtol=rtol, term=term))


def flow_torchode(model, sde, n: int, eps: float, *, rtol=1e-3, atol=1e-3, seed: int = 0):
    """torchode's Dopri5 with a step size per sample (IntegralController) on the probability flow."""
    import torchode as to

    gen = torch.Generator().manual_seed(seed)
    solver = _torchode_solver(to.ODETerm(lambda t, x: flow(model, sde, x, t)), rtol, atol)

    @torch.no_grad()
    def run():
        x0 = sde.prior_std * torch.randn(n, model.dim, generator=gen)
        problem = to.InitialValueProblem(y0=x0, t_start=torch.full((n,), sde.T), t_end=torch.full((n,), eps))
        sol = solver.solve(problem)
        return sol.ys[:, -1], sol.stats["n_f_evals"]

    return run


def _divergence(model, sde, x, t, probe=None):
    """div of the flow at (x, t), [n]: exact (one backward pass per dimension) or Hutchinson's
    v^T (dv/dx) v with the Rademacher probe `probe` [n, dim] (one backward pass)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = flow(model, sde, x, t)
        if probe is not None:
            (g,) = torch.autograd.grad((v * probe).sum(), x)
            return v.detach(), (g * probe).sum(-1)
        div = torch.zeros(x.shape[0], dtype=x.dtype)
        for i in range(x.shape[1]):
            (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i + 1 < x.shape[1])
            div = div + g[:, i]
    return v.detach(), div


def _augmented(model, sde, dim: int, probe):
    """d/dt [x, delta] = [v(x, t), div v(x, t)] on a flat state [n, dim + 1]."""

    def f(t, state):
        v, div = _divergence(model, sde, state[:, :dim], t, probe)
        return torch.cat([v, div[:, None]], dim=1)

    return f


def log_prob_torchdiffeq(model, sde, x, eps: float, *, rtol: float, atol: float, hutchinson: bool = False,
                         seed: int = 0):
    """log p_eps(x) [n]: torchdiffeq dopri5 on the augmented ODE from eps to T, then the prior."""
    from torchdiffeq import odeint

    probe = _rademacher(x, seed) if hutchinson else None
    f = _augmented(model, sde, x.shape[1], probe)
    ts = torch.tensor([eps, sde.T], dtype=x.dtype)

    @torch.no_grad()
    def run():
        state = torch.cat([x, torch.zeros(x.shape[0], 1, dtype=x.dtype)], dim=1)
        end = odeint(f, state, ts, method="dopri5", rtol=rtol, atol=atol)[-1]
        return sde.prior_log_prob(end[:, :-1]) + end[:, -1]

    return run


def log_prob_torchode(model, sde, x, eps: float, *, rtol: float, atol: float, hutchinson: bool = False, seed: int = 0):
    """log p_eps(x) [n]: torchode's per-sample Dopri5 on the augmented ODE, then the prior."""
    import torchode as to

    probe = _rademacher(x, seed) if hutchinson else None
    solver = _torchode_solver(to.ODETerm(_augmented(model, sde, x.shape[1], probe)), rtol, atol)
    n = x.shape[0]

    @torch.no_grad()
    def run():
        state = torch.cat([x, torch.zeros(n, 1, dtype=x.dtype)], dim=1)
        problem = to.InitialValueProblem(y0=state, t_start=torch.full((n,), eps, dtype=x.dtype),
                                         t_end=torch.full((n,), sde.T, dtype=x.dtype))
        end = solver.solve(problem).ys[:, -1]
        return sde.prior_log_prob(end[:, :-1]) + end[:, -1]

    return run


def _rademacher(x, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1


def reference_log_prob(model, sde, x, eps: float) -> torch.Tensor:
    """The float64 solve every likelihood is scored against: fastscore's reference backend on a
    float64 copy of the network, rk45 at rtol = atol = 1e-9."""
    return fs.log_prob(copy.deepcopy(model).double(), sde, x.double(), "rk45", rtol=1e-9, atol=1e-9, eps=eps,
                       backend="torch")

