"""The seed-002 loops (sampling and training), written from the seed text, as baselines to beat.

Seed 002 ("nano diffusion") samples its VP SDE with a Python loop over steps that calls the
network on the whole batch with ``torch.randn_like`` noise. Its ``basic_net`` (concat(x, t),
then 64 x 5 ReLU, then 2) is exactly ``fastscore.ScoreMLP(2, 64, 5, "relu", "concat")``, so
the benchmarks hand this loop the same torch module as every backend: all compare one
network, and only the loop around it differs.

Differences from the seed text, all in the seed's favour or neutral:
- ``torch.no_grad()`` around the loop. The seed text calls the net with autograd on, so
  every step's graph stays alive through ``xt`` (memory grows with the step count).
- ``dt = T / steps`` instead of ``steps = int(T / dt)``, so the step count is exact.
- the seed's global ``beta_min, beta_max, T`` are arguments (defaults from the seed).
It does NOT use fastscore's Philox stream or time grid (it runs t = T, T - dt, ..., dt,
to 0 rather than to eps), so its samples are not comparable to the backends' one by one;
it is a timing baseline only.
"""

from __future__ import annotations

import numpy as np
import torch

BETA_MIN, BETA_MAX, T = 0.1, 20.0, 1.0


def sample_sde(score_net, batch_size=128, steps=200, beta_min=BETA_MIN, beta_max=BETA_MAX, T=T, dim=2):
    """Seed 002's ``sample_sde``: reverse-time Euler–Maruyama from x(T) ~ N(0, I)."""
    dt = T / steps

    def beta(t):
        return beta_min + (beta_max - beta_min) * t / T

    def reverse_step(xt, t):
        tmat = (torch.ones_like(xt) * t)[..., :-1]
        xt_new = xt + (1 / 2 * beta(t) * xt + beta(t) * score_net(xt, tmat)) * dt
        xt_new += np.sqrt(beta(t)) * torch.randn_like(xt) * np.sqrt(dt)
        return xt_new

    with torch.no_grad():
        xt = torch.randn(batch_size, dim)
        for n in range(steps, 0, -1):
            xt = reverse_step(xt, n * dt)
    return xt


def gen_x0(n_samples, scale=200, dim=2):
    """Seed 002's ring: uniform square directions normalised to the circle, Gamma(scale, scale) radius."""
    x0 = 2 * torch.rand(n_samples, dim) - 1
    x0 /= torch.sqrt((x0**2).sum(axis=1, keepdim=True))
    x0 *= torch.distributions.gamma.Gamma(concentration=scale, rate=scale).sample((n_samples, 1))
    return x0


def train_seed002(score_net, steps=20_000, batch_size=5_000, lr=1e-3, beta_min=BETA_MIN, beta_max=BETA_MAX, T=T):
    """Seed 002's training loop: fresh ring data every epoch, t ~ U(0, T), loss
    MSE(-noise, B(t) s(x_t, t)) (the lambda = B(t)^2 weighting), Adam. Returns the losses."""

    def A(t):
        return torch.exp(-1 / 2 * (beta_min * t + 1 / (2 * T) * (beta_max - beta_min) * t**2))

    def B(t):
        return torch.sqrt(1 - A(t) ** 2)

    optimizer = torch.optim.Adam(score_net.parameters(), lr=lr)
    loss_f = torch.nn.MSELoss()
    losses = []
    for _ in range(steps):
        x0 = gen_x0(batch_size)
        t = T * torch.rand(batch_size, 1)
        noise = torch.randn_like(x0)
        xt = A(t) * x0 + B(t) * noise
        loss = loss_f(-noise, B(t) * score_net(xt, t))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
