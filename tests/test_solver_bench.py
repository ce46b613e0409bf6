"""The solver bench (fs.bench, `fastscore bench`): its metrics on cases with known answers,
its cells, outputs and seed stream, and its command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

import fastscore as fs
from fastscore import bench_report, cli, metrics, targets
from fastscore.datasets import GMM_SEED003, MIXTURE1D, GaussianMixture
from fastscore.solver_bench import Cell, MethodSpec, configure, evals_per_step

TINY = dict(n=300, rounds=1, projections=32, likelihood_points=8)  # a bench that runs in about a second
PNG = b"\x89PNG\r\n\x1a\n"
# subprocesses run outside the source tree and import the fastscore this test imported
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join([str(Path(fs.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


# -- metrics ----------------------------------------------------------------------------------


def test_sliced_wasserstein_of_a_shift():
    """y = x + d: every projection moves by theta.d exactly, so W_2^2 of a direction is
    (theta.d)^2 and SW_2^2 = E (theta.d)^2 = |d|^2 / dim (E theta theta^T = I / dim). The mean
    over P random directions has relative error sqrt(Var(theta_1^2) / P) / (1 / dim) =
    sqrt(2 (dim - 1) / ((dim + 2) P)) in SW_2^2, half that in SW_2: < 1.9 % at P = 1000, and
    zero in 1-D. We allow 4 of those."""
    rng = np.random.default_rng(0)
    for dim in (1, 3, 8):
        x = rng.standard_normal((400, dim))
        d = rng.standard_normal(dim)
        got = metrics.sliced_wasserstein(x, x + d, projections=1000, seed=1)
        rel = 0.5 * math.sqrt(2 * (dim - 1) / ((dim + 2) * 1000))
        assert abs(got / (np.linalg.norm(d) / math.sqrt(dim)) - 1) <= 4 * rel + 1e-12, dim
        assert metrics.sliced_wasserstein(x, x.copy(), projections=50) == 0.0


def _mean_abs_normal(mu: float, sd: float) -> float:
    """E|N(mu, sd^2)|."""
    return sd * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sd * sd)) + mu * (1 - 2 * norm.cdf(-mu / sd))


def test_energy_distance_of_gaussians():
    """Unit-variance 1-D Gaussians shifted by d: energy^2 = 2 E|N(d, 2)| - 2 E|N(0, 2)|; the
    all-pairs estimate adds E|X - X'| / n + E|Y - Y'| / n = 2 c / n, c = 2 / sqrt(pi), in
    expectation. Means over 4 draws of n = 2000 are within 10 % of that; equal laws stay
    within sqrt(10) times the bias's root (the square is chi-square-like: skewed)."""
    n, c = 2000, 2 / math.sqrt(math.pi)
    rng = np.random.default_rng(2)
    draws = [(rng.standard_normal((n, 1)), rng.standard_normal((n, 1))) for _ in range(4)]
    for d in (0.5, 2.0):
        want = 2 * _mean_abs_normal(d, math.sqrt(2)) - 2 * _mean_abs_normal(0, math.sqrt(2)) + 2 * c / n
        got = np.mean([metrics.energy_distance(x, y + d) ** 2 for x, y in draws])
        assert abs(got / want - 1) < 0.1, d
    for x, y in draws:
        assert metrics.energy_distance(x, y) < math.sqrt(10 * 2 * c / n)
        assert metrics.energy_distance(x, x) == 0.0


def test_knn_entropy_of_a_gaussian():
    for dim in (1, 2, 4):
        x = np.random.default_rng(dim).standard_normal((4000, dim))
        assert abs(metrics.knn_entropy(x) - 0.5 * dim * math.log(2 * math.pi * math.e)) < 0.03 * dim


def test_kl_of_p_itself_is_near_zero():
    """Samples of p: KL(p || p) = 0 up to the estimator's bias and noise (measured at n = 4000
    over seeds: within 0.02 nats in 1-D and 2-D); we allow 0.05."""
    for g in (GMM_SEED003, MIXTURE1D):
        x = g.sample(4000, seed=3)
        assert abs(metrics.kl_divergence(x, g.log_prob(x))) < 0.05


def test_kl_of_two_gaussians_matches_the_closed_form():
    """KL(N(m1, S1) || N(m2, S2)) = (tr(S2^-1 S1) + (m2 - m1)^T S2^-1 (m2 - m1) - D
    + log det S2 / det S1) / 2; the estimate is within 0.05 nats (its noise and bias at
    n = 4000 in 2-D, as above)."""
    m1, s1 = np.array([0.0, 0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])
    m2, s2 = np.array([0.4, -0.2]), np.array([[1.5, -0.2], [-0.2, 0.8]])
    q, p = GaussianMixture([m1], [s1], [1.0]), GaussianMixture([m2], [s2], [1.0])
    inv = np.linalg.inv(s2)
    log_det_ratio = math.log(np.linalg.det(s2) / np.linalg.det(s1))
    exact = 0.5 * (np.trace(inv @ s1) + (m2 - m1) @ inv @ (m2 - m1) - 2 + log_det_ratio)
    x = q.sample(4000, seed=4)
    assert exact > 0.3 and abs(metrics.kl_divergence(x, p.log_prob(x)) - exact) < 0.05


def test_metrics_refuse_bad_points():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="same dimension"):
        metrics.energy_distance(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"shape \[n, dim\]"):
        metrics.sliced_wasserstein(np.zeros(10), x)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.energy_distance(x, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="log_p must have shape"):
        metrics.kl_divergence(np.random.default_rng(0).random((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="k must be"):
        metrics.knn_entropy(np.random.default_rng(0).random((10, 2)), k=10)
    assert metrics.kl_divergence(x, np.zeros(10)) == math.inf  # every point an atom


# -- targets ----------------------------------------------------------------------------------


def test_named_targets():
    assert targets.target("gmm2d") is GMM_SEED003 and targets.target("mixture1d") is MIXTURE1D
    g = targets.target("mixture16d")
    assert g.dim == 16 and np.array_equal(g.means, fs.datasets.mixture(16).means)
    for bad in ("mixture17d", "mixture0d", "mixtured", "gmm3d"):
        with pytest.raises(ValueError, match="unknown target"):
            targets.target(bad)


# -- the bench --------------------------------------------------------------------------------


def test_bench_writes_table_json_and_plot(tmp_path):
    result = fs.bench("gmm2d", fs.VPSDE(), ["em", "ode_heun"], budgets=[4, 10], out=tmp_path, **TINY)
    md = (tmp_path / "bench.md").read_text()
    header = "| method | grid | steps / tol | NFE mean | NFE max | time (s) | SW2 | energy | KL |"
    assert header in md and "cores" in md and "load average" in md
    assert md.count("\n| em |") == 2 and md.count("\n| ode_heun |") == 2 and "\n| target |" in md
    assert "PF-ODE likelihood" in md
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["settings"]["n"] == 300 and data["settings"]["backend"] == "torch" and data["machine"]["cores"] >= 1
    rows = data["rows"]
    assert [(r["method"], r["steps"], r["nfe_max"]) for r in rows] == [
        ("target", None, None), ("em", 4, 4), ("em", 10, 10), ("ode_heun", 2, 4), ("ode_heun", 5, 10)]
    for row in rows:
        assert {"sw2", "energy", "kl"} <= set(row) and row["sw2"] > 0
        assert row["method"] == "target" or (row["time_s"] > 0 and len(row["times_s"]) == 1)
    assert data["likelihood"]["max_abs_error"] < 0.1 and result.likelihood == data["likelihood"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG


def test_error_decreases_with_nfe_for_heun_on_the_exact_score():
    """On the exact score only discretisation is left, and every cell starts from the same prior
    draws: 1, 3 and 10 Heun steps are far enough apart (SW2 0.84, 0.17, 0.08 against a noise
    floor of 0.09 at n = 1000) that every metric orders them."""
    result = fs.bench("gmm2d", fs.VPSDE(), ["ode_heun"], budgets=[2, 6, 20], n=1000, rounds=1, projections=64,
                      likelihood_points=0)
    cells = result.rows[1:]
    assert [c["steps"] for c in cells] == [1, 3, 10]
    for key in ("sw2", "energy", "kl"):
        values = [c[key] for c in cells]
        assert values[0] > values[1] > values[2], (key, values)
    assert result.likelihood is None


class Recorder(torch.nn.Module):
    """The exact score, recording the points of its first evaluation of every call (t = T)."""

    def __init__(self, score):
        super().__init__()
        self.score, self.dim, self.starts = score, score.dim, []

    def forward(self, x, t):
        if float(t) == self.score.sde.T:
            self.starts.append(x.clone())
        return self.score(x, t)


def test_every_method_starts_from_the_same_prior_draws():
    """The same seed stream for every cell: the first network evaluation of every call, of
    either method and any step count, sees the same points (the prior draws), sample by sample."""
    sde = fs.VPSDE()
    model = Recorder(targets.ExactGMMScore(GMM_SEED003, sde))
    reference = GMM_SEED003.diffused(sde, 1e-3).sample(600, seed=9)
    fs.bench(model, sde, ["em", "ode_heun"], budgets=[2, 6], reference=reference, backend="torch", **TINY)
    starts = model.starts  # per method: 2 samples to check the request, then a warm-up and a round per cell
    assert len(starts) == 2 * (1 + 2 * 2) and {s.shape[0] for s in starts} == {2, 300}
    first = next(s for s in starts if s.shape[0] == 300)
    for s in starts:
        assert torch.equal(s, first[: s.shape[0]])


def test_budgets_map_to_steps():
    assert (evals_per_step("em"), evals_per_step("ode_heun"), evals_per_step("pc"), evals_per_step("ode_euler")) == (
        1, 2, 2, 1)
    config = configure("mixture1d", fs.VPSDE(), ["ode_heun", "em"], budgets=[1, 3, 10, 11], **TINY)
    assert [(c.spec.method, c.steps) for c in config.cells] == [
        ("ode_heun", 1), ("ode_heun", 5), ("em", 1), ("em", 3), ("em", 10), ("em", 11)]
    assert [c.kwargs() for c in config.cells[:1]] == [{"steps": 1}]
    spec = MethodSpec.parse("dpmpp_2m:karras")
    assert (spec.method, spec.grid, spec.label) == ("dpmpp_2m", "karras", "dpmpp_2m (karras)")
    rk45 = MethodSpec("ode_rk45")
    assert Cell(rk45, 1e-3, tol=1e-3).kwargs() == {"rtol": 1e-3, "atol": 1e-3}
    assert Cell(spec, 20, steps=20).kwargs() == {"grid": "karras", "steps": 20}


def test_bench_refuses_bad_requests():
    sde = fs.VPSDE()
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        configure("gmm2d", sde, ["nope"], **TINY)
    with pytest.raises(ValueError, match="unknown grid"):
        configure("gmm2d", sde, ["em:square"], **TINY)
    with pytest.raises(ValueError, match="adaptive"):
        configure("gmm2d", sde, ["ode_rk45:karras"], **TINY)
    with pytest.raises(ValueError, match="only backend 'torch'"):
        configure("gmm2d", sde, ["em"], backend="cpu", **TINY)
    with pytest.raises(ValueError, match="methods must be a non-empty list"):
        configure("gmm2d", sde, [], **TINY)
    with pytest.raises(ValueError, match="NFE budget must be >= 1"):
        configure("gmm2d", sde, ["em"], budgets=[0], **TINY)
    with pytest.raises(ValueError, match="unknown target"):
        configure("ring", sde, ["em"], **TINY)
    with pytest.raises(TypeError, match="target must be"):
        configure(3, sde, ["em"], **TINY)
    net = fs.ScoreMLP(dim=2, width=8, depth=1)
    with pytest.raises(ValueError, match="needs reference draws"):
        configure(net, sde, ["em"], **TINY)
    with pytest.raises(ValueError, match=r"m >= 2 n = 600"):
        configure(net, sde, ["em"], reference=torch.zeros(599, 2), **TINY)


GEN = torch.Generator().manual_seed(0)


class Blowup(torch.nn.Module):
    """A network whose every evaluation overflows."""

    dim = 1

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(0, dtype=torch.float64), requires_grad=False)

    def forward(self, x, t):
        return x * math.inf


def test_a_run_that_blows_up_is_reported_not_raised(tmp_path):
    result = fs.bench(Blowup(), fs.VPSDE(), ["em"], budgets=[5], reference=torch.randn(600, 1, generator=GEN),
                      backend="torch", out=tmp_path, **TINY)
    assert "not finite" in result.rows[1]["error"]
    assert "failed [1]" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG


# -- the command line -------------------------------------------------------------------------

CLI_TINY = ["--n", "300", "--rounds", "1", "--projections", "32", "--likelihood-points", "8"]


def test_cli_bench_end_to_end(tmp_path, capsys):
    assert cli.main(["bench", "--target", "mixture2d", "--methods", "em,ode_heun", "--nfe", "4,10",
                     "--out", str(tmp_path / "b"), *CLI_TINY]) == 0
    out = capsys.readouterr().out
    assert "| ode_heun | uniform | 5 | 10 |" in out and "wrote" in out
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"bench.md", "bench.json", "bench.png"}


def test_cli_bench_of_a_saved_network(tmp_path, capsys):
    path = tmp_path / "net.pt"
    torch.save(fs.ScoreMLP(dim=2, width=8, depth=1), path)
    assert cli.main(["bench", "--target", str(path), "--data", "ring", "--methods", "em", "--nfe", "5",
                     "--out", str(tmp_path / "b"), *CLI_TINY]) == 0
    data = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert data["settings"]["target"] == "ScoreMLP" and "kl" not in data["rows"][1] and data["likelihood"] is None


@pytest.mark.parametrize("args,message", [
    (["--target", "nope"], "unknown target 'nope'"),
    (["--methods", "em,nope"], "unknown method 'nope'"),
    (["--nfe", "10,x"], "'x' is not an integer"),
    (["--tol", "2"], "not in (0, 1)"),
    (["--n", "1"], "1 is < 2"),
    (["--eps", "2"], "eps must be < T"),
    (["--target", "missing.pt"], "not found"),
    (["--data", "ring"], "--data is for a network file"),
])
def test_cli_bench_user_errors_exit_2(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", *args, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bench_without_pot_names_the_extra(tmp_path):
    """In a fresh interpreter, as a user would meet it: exit code 2, the extra named, no traceback.
    ("import ot" fails when sys.modules holds None for it, as on an install without POT.)"""
    code = "import sys; sys.modules['ot'] = None; from fastscore.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code, "bench", "--n", "10"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=ENV)
    assert out.returncode == 2
    assert 'pip install "fastscore[bench]"' in out.stderr and "Traceback" not in out.stderr


def test_load_verdict_names_competing_work_only_above_the_core_count():
    assert "above the 2 cores" in bench_report._load((2.5, 1.0, 0.5), 2)
    assert "within the 2 cores" in bench_report._load((2.0, 1.9, 1.0), 2)
    assert bench_report._load(None, 2) == "load average unknown"
