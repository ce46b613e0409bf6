"""Score matching for any fastscore SDE and any network: denoising (Vincent 2011; Song et al.
2021) or sliced (Song et al. 2019), with an optional condition per data point.

With x_t = m(t) x_0 + sigma(t) z the conditional score is -z / sigma(t), so the DSM loss is

    E_t E_x0 E_z  lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2,   t ~ U[eps, T]

averaged over dimensions as well (``nn.MSELoss`` in seed 002). Sliced score matching needs
no conditional score: with random projections v (E[v v^T] = I) it minimises

    E_t E_{x_t} E_v  lambda(t) [ v^T (d s_theta / dx) v + 1/2 (v^T s_theta)^2 ]     ("ssm")

or, variance reduced, with 1/2 ||s_theta||^2 for the last term ("ssm_vr"), both equal to the
explicit score-matching loss up to a constant (the score-SDE report, App. C.3, trains with
either); also averaged over dimensions. Weightings lambda(t):
  "sigma2"      sigma(t)^2 -> || sigma s + z ||^2 (seed 002's B(t)^2, seeds 001/003's sigma_t^2)
  "likelihood"  g(t)^2 (seed 000's beta(t) for VP; Song et al. 2021's likelihood weighting)
  "none"        1
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .plan import (MAX_COUNT, check_choice, check_cond, check_eps, check_int, check_memory, check_points,
                   check_positive, check_sde, check_seed, model_dim)
from .sde import SDE

WEIGHTINGS = ("sigma2", "likelihood", "none")
LOSSES = ("dsm", "ssm", "ssm_vr")
MAX_LR = 10.0  # larger Adam steps only diverge (and overflow float32 inside the optimiser)
BATCH_COPIES = 8  # a training step holds about this many [batch, dim] tensors (data, noise, x_t, targets, grads)


def _score(model, x, t, cond):
    return model(x, t) if cond is None else model(x, t, cond)


def _weight(sde: SDE, tc, weighting: str):
    if weighting == "sigma2":
        return sde.std(tc) ** 2
    return sde.diffusion_sq(tc) if weighting == "likelihood" else torch.ones_like(tc)


def dsm_loss(model, sde: SDE, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, weighting: str,
             cond=None) -> torch.Tensor:
    """The weighted DSM loss of one batch x0 [b, dim] at times t [b] with noise z [b, dim]."""
    tc = t[:, None]
    sigma = sde.std(tc)
    xt = sde.mean_coeff(tc) * x0 + sigma * z
    s = _score(model, xt, t, cond)
    if weighting == "sigma2":
        return ((sigma * s + z) ** 2).mean()
    return (_weight(sde, tc, weighting) * (s + z / sigma) ** 2).mean()


def ssm_loss(model, sde: SDE, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, v: torch.Tensor, weighting: str,
             variance_reduced: bool = True, cond=None) -> torch.Tensor:
    """The weighted sliced score-matching loss of one batch: x_t = m x0 + sigma z drawn from
    p_t, one projection v [b, dim] per point (standard normal: E[v v^T] = I)."""
    tc = t[:, None]
    xt = (sde.mean_coeff(tc) * x0 + sde.std(tc) * z).detach().requires_grad_(True)
    s = _score(model, xt, t, cond)
    sv = (s * v).sum(1)
    (grad,) = torch.autograd.grad(sv.sum(), xt, create_graph=True)  # v^T ds/dx, per point
    half = 0.5 * (s * s).sum(1) if variance_reduced else 0.5 * sv * sv
    return (_weight(sde, tc, weighting)[:, 0] * ((grad * v).sum(1) + half)).mean() / x0.shape[1]


def train(
    model: torch.nn.Module,
    sde: SDE,
    data: torch.Tensor,
    steps: int = 20_000,
    batch_size: int = 5_000,
    lr: float = 1e-3,
    weighting: str = "sigma2",
    seed: int = 0,
    eps: float = 1e-5,
    progress: bool = True,
    *,
    loss: str = "dsm",
    cond=None,
) -> list[float]:
    """Fit `model` to `data` [N, dim] by score matching with Adam; returns the loss of every
    step. Batches, times, noise and projections come from a generator seeded by `seed`, so
    the same initial model, data and seed give the same history.

    loss: "dsm" (denoising), "ssm" or "ssm_vr" (sliced; variance reduced), module docstring.
    cond: for a conditional model (``ScoreMLP(..., cond_dim=k)`` or an imported one), the
    condition of each data point [N, cond_dim]: it learns s(x, t, cond)."""
    dim = model_dim(model)
    check_sde(sde)
    data = check_points(data, dim)
    if data.shape[0] == 0:
        raise ValueError("data is empty: need at least one point [N >= 1, dim]")
    steps = check_int("steps", steps, 1, MAX_COUNT)
    batch_size = check_int("batch_size", batch_size, 1, MAX_COUNT)
    check_memory(f"a batch of {batch_size} points of dim {dim}", BATCH_COPIES * batch_size * dim * 8)
    lr = check_positive("lr", lr)
    if lr > MAX_LR:
        raise ValueError(f"lr must be <= {MAX_LR} (Adam's step size), got {lr}")
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("loss", loss, LOSSES)
    cond = check_cond(model, cond, data.shape[0])
    eps = check_eps(eps, sde)
    p = next(model.parameters())
    data = data.to(p.dtype).to(p.device)
    if cond is not None:
        cond = cond.to(p.dtype).to(p.device)
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for k in tqdm(range(steps), disable=not progress, desc="train", mininterval=1.0):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        t = eps + (sde.T - eps) * torch.rand(batch_size, generator=gen, dtype=p.dtype)
        z = torch.randn(batch_size, dim, generator=gen, dtype=p.dtype).to(p.device)
        c = None if cond is None else cond[idx]
        if loss == "dsm":
            value = dsm_loss(model, sde, data[idx], t.to(p.device), z, weighting, c)
        else:
            v = torch.randn(batch_size, dim, generator=gen, dtype=p.dtype).to(p.device)
            value = ssm_loss(model, sde, data[idx], t.to(p.device), z, v, weighting, loss == "ssm_vr", c)
        if not torch.isfinite(value):  # a diverged model: stop before the optimiser spreads NaN into the weights
            raise FloatingPointError(f"the loss is not finite at step {k} ({value.item()}); lower lr or check the data")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        history.append(value.item())
    model.eval()
    return history
