"""Score matching (denoising and sliced): the loss it minimises, reproducibility, what it
learns, and conditional training."""

import math

import pytest
import torch

import fastscore as fs
from fastscore.train import dsm_loss, ssm_loss

from fastscore.targets import ExactGMMScore

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


def _mixture():
    return fs.datasets.GaussianMixture([[-1.5, 0.5], [1.0, -0.5], [0.5, 2.0]],
                                       [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.5]], [[0.1, -0.05], [-0.05, 0.1]]],
                                       [0.3, 0.5, 0.2])


@pytest.mark.parametrize("variance_reduced", [False, True], ids=["ssm", "ssm_vr"])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_ssm_is_explicit_score_matching_up_to_a_constant(sde, variance_reduced):
    """For any network s', E[ssm(s')] - E[ssm(s)] = E[lambda ||s' - s||^2] / (2 dim) with s the
    true diffused score of a Gaussian mixture (integration by parts, Song et al. 2019), so the
    true score minimises it. Checked on the same draws for s' a scaled and a shifted true
    score: the mean over 50 chunks of 1,000 points is within 5 standard errors of the
    identity (a wrong sign, factor or term moves it by many)."""
    gmm = _mixture()
    true = ExactGMMScore(gmm, sde)
    g = torch.Generator().manual_seed(0)
    chunks = []
    for _ in range(50):
        n = 1000
        x0 = gmm.sample(n, seed=int(torch.randint(2**31, (1,), generator=g))).double()
        t = 0.05 + 0.9 * sde.T * torch.rand(n, generator=g, dtype=torch.float64)
        z, v = (torch.randn(n, 2, generator=g, dtype=torch.float64) for _ in range(2))
        xt = sde.mean_coeff(t[:, None]) * x0 + sde.std(t[:, None]) * z
        lam = sde.std(t) ** 2
        base = ssm_loss(true, sde, x0, t, z, v, "sigma2", variance_reduced).item()
        row = []
        for other in (lambda x, tt: 0.8 * true(x, tt), lambda x, tt: true(x, tt) + torch.tensor([0.3, -0.2])):
            gap = ssm_loss(other, sde, x0, t, z, v, "sigma2", variance_reduced).item() - base
            with torch.no_grad():
                esm = (lam * ((other(xt, t) - true(xt, t)) ** 2).sum(1)).mean().item() / (2 * 2)
            row.append((gap, esm))
        chunks.append(row)
    c = torch.tensor(chunks, dtype=torch.float64)  # [chunk, other, (gap, esm)]
    d = c[..., 0] - c[..., 1]
    assert torch.all(c[..., 0].mean(0) > 0)  # the true score wins
    assert torch.all(d.mean(0).abs() <= 5 * d.std(0) / 50**0.5), (d.mean(0), d.std(0))


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


def test_sliced_training_learns():
    data = fs.datasets.gmm(5000, seed=0)
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 32, 2, "silu")
    history = fs.train(model, fs.VPSDE(), data, steps=300, batch_size=256, lr=3e-3, seed=5, progress=False,
                       loss="ssm_vr")
    assert sum(history[-50:]) < sum(history[:50])  # SSM has no floor at 0: it falls, possibly below it


def test_conditional_training_learns_the_condition():
    """Two classes, N(+-2 (1, 1), 0.25 I), the label as the condition: the trained conditional
    model samples each class's mean under its label (data std 0.5; 400 samples' mean within
    0.5 of the target is far outside what one unconditional model could give both labels)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4000, 1), generator=g).double() * 2 - 1
    data = 2 * labels * torch.ones(1, 2) + 0.5 * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 64, 3, "silu", cond_dim=1)
    fs.train(model, fs.VPSDE(), data, steps=600, batch_size=512, lr=3e-3, seed=1, progress=False, cond=labels)
    for label in (-1.0, 1.0):
        x = fs.sample(model, fs.VPSDE(), 400, "ode_heun", 50, backend="torch", seed=2, cond=torch.tensor([label]))
        assert (x.mean(0).double() - 2 * label).abs().max() < 0.5, (label, x.mean(0))


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
    with pytest.raises(ValueError, match="loss"):
        fs.train(model, sde, data, steps=1, loss="nce")
    with pytest.raises(ValueError, match="takes no condition"):
        fs.train(model, sde, data, steps=1, cond=torch.randn(100, 1))
    with pytest.raises(ValueError, match=r"cond must have shape \[n, 2\] = \[100, 2\]"):
        fs.train(fs.ScoreMLP(2, 8, 1, cond_dim=2), sde, data, steps=1, cond=torch.randn(99, 2))
