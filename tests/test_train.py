"""Denoising score matching: the loss it minimises, reproducibility, and what it learns."""

import math

import pytest
import torch

import fastscore as fs
from fastscore.train import dsm_loss

SDES = [fs.VPSDE(), fs.VESDE(sigma=10.0), fs.SubVPSDE()]


class TrueGaussianScore(torch.nn.Module):
    """The exact score of N(0, v I) data diffused by `sde`: -x / (m^2 v + sigma^2)."""

    def __init__(self, sde, v, dim=2):
        super().__init__()
        self.sde, self.v, self.dim = sde, v, dim
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return -x / (self.sde.mean_coeff(t) ** 2 * self.v + self.sde.std(t) ** 2) + 0 * self.dummy


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_dsm_loss_is_minimised_by_the_true_score(sde):
    # DSM = explicit score matching + a constant: the true score has a lower loss than any
    # perturbation of it, on the same draws (a common-random-numbers comparison)
    torch.manual_seed(0)
    v, n = 0.7, 200_000
    x0 = math.sqrt(v) * torch.randn(n, 2, dtype=torch.float64)
    t = 0.05 + 0.95 * torch.rand(n, dtype=torch.float64)
    z = torch.randn(n, 2, dtype=torch.float64)
    true = TrueGaussianScore(sde, v)
    for weighting in ("sigma2", "likelihood", "none"):
        best = dsm_loss(true, sde, x0, t, z, weighting)
        for scale in (0.9, 1.1):
            worse = dsm_loss(lambda x, tt: scale * true(x, tt), sde, x0, t, z, weighting)
            assert worse > best, (weighting, scale)


def test_sigma2_weighting_is_seed002_loss():
    # seed 002: MSE(-noise, B(t) s(x_t, t)) with x_t = A x0 + B noise
    sde = fs.VPSDE()
    torch.manual_seed(1)
    model = fs.ScoreMLP(2, 16, 2)
    x0, t, z = torch.randn(64, 2), torch.rand(64), torch.randn(64, 2)
    B = sde.std(t)[:, None]
    xt = sde.mean_coeff(t)[:, None] * x0 + B * z
    want = torch.nn.functional.mse_loss(-z, B * model(xt, t))
    torch.testing.assert_close(dsm_loss(model, sde, x0, t, z, "sigma2"), want)


def test_train_is_reproducible_and_learns():
    data = fs.datasets.gmm(5000, seed=0)
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        model = fs.ScoreMLP(2, 32, 2)
        histories.append(fs.train(model, fs.VPSDE(), data, steps=300, batch_size=256, lr=3e-3, seed=5,
                                  progress=False))
    assert histories[0] == histories[1] and len(histories[0]) == 300
    # loss falls (averages over 50 steps to see through the minibatch noise)
    assert sum(histories[0][-50:]) < 0.8 * sum(histories[0][:50])
    torch.manual_seed(0)
    other = fs.train(fs.ScoreMLP(2, 32, 2), fs.VPSDE(), data, steps=300, batch_size=256, lr=3e-3, seed=6,
                     progress=False)
    assert other != histories[0]


def test_train_bad_input():
    model, sde, data = fs.ScoreMLP(2, 8, 1), fs.VPSDE(), torch.randn(100, 2)
    with pytest.raises(ValueError, match="weighting"):
        fs.train(model, sde, data, steps=1, weighting="snr")
    with pytest.raises(ValueError, match="steps"):
        fs.train(model, sde, data, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        fs.train(model, sde, data, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        fs.train(model, sde, data, steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="shape"):
        fs.train(model, sde, torch.randn(100, 3), steps=1)
    with pytest.raises(ValueError, match="non-finite"):
        fs.train(model, sde, torch.full((10, 2), float("nan")), steps=1)
    with pytest.raises(ValueError, match="empty"):
        fs.train(model, sde, torch.zeros(0, 2), steps=1)
