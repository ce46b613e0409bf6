"""Denoising score matching (Vincent 2011; Song et al. 2021) for any fastscore SDE.

With x_t = m(t) x_0 + sigma(t) z the conditional score is -z / sigma(t), so the loss is

    E_t E_x0 E_z  lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2,   t ~ U[eps, T]

averaged over dimensions as well (``nn.MSELoss`` in seed 002). Weightings lambda(t):
  "sigma2"      sigma(t)^2 -> || sigma s + z ||^2 (seed 002's B(t)^2, seeds 001/003's sigma_t^2)
  "likelihood"  g(t)^2 (seed 000's beta(t) for VP; Song et al. 2021's likelihood weighting)
  "none"        1
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .plan import (MAX_COUNT, check_choice, check_eps, check_int, check_memory, check_points, check_positive, check_sde,
                   check_seed, model_dim)
from .sde import SDE

WEIGHTINGS = ("sigma2", "likelihood", "none")
MAX_LR = 10.0  # larger Adam steps only diverge (and overflow float32 inside the optimiser)
BATCH_COPIES = 8  # a training step holds about this many [batch, dim] tensors (data, noise, x_t, targets, grads)


def dsm_loss(model, sde: SDE, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, weighting: str) -> torch.Tensor:
    """The weighted DSM loss of one batch x0 [b, dim] at times t [b] with noise z [b, dim]."""
    tc = t[:, None]
    sigma = sde.std(tc)
    xt = sde.mean_coeff(tc) * x0 + sigma * z
    s = model(xt, t)
    if weighting == "sigma2":
        return ((sigma * s + z) ** 2).mean()
    lam = sde.diffusion_sq(tc) if weighting == "likelihood" else torch.ones_like(tc)
    return (lam * (s + z / sigma) ** 2).mean()


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
) -> list[float]:
    """Fit `model` to `data` [N, dim] by denoising score matching with Adam; returns the loss
    of every step. Batches, times and noise come from a generator seeded by `seed`, so the
    same initial model, data and seed give the same history."""
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
    eps = check_eps(eps, sde)
    p = next(model.parameters())
    data = data.to(p.dtype).to(p.device)
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for k in tqdm(range(steps), disable=not progress, desc="train", mininterval=1.0):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        t = eps + (sde.T - eps) * torch.rand(batch_size, generator=gen, dtype=p.dtype)
        z = torch.randn(batch_size, dim, generator=gen, dtype=p.dtype)
        loss = dsm_loss(model, sde, data[idx], t.to(p.device), z.to(p.device), weighting)
        if not torch.isfinite(loss):  # a diverged model: stop before the optimiser spreads NaN into the weights
            raise FloatingPointError(f"the loss is not finite at step {k} ({loss.item()}); lower lr or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
    model.eval()
    return history
