"""Done-when of the foundation: a ring model trained with fs.train and sampled by the fused
kernel reproduces the ring's radial and angular laws at least as well as seed 002's own
recipe (its training loop and its sample_sde) at the same budget."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore.demo import ring_distances

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.seed_loops import sample_sde, train_seed002  # noqa: E402

BUDGET = dict(steps=6000, batch_size=1000, lr=1e-3)  # seed 002: 20k x 5000; CI-sized (~15 s each)
N, SAMPLE_STEPS = 20_000, 200  # seed 002: dt = 5e-3


def _distances(x, data):
    d = ring_distances(x, data)
    return np.array([d["radius_w1"], d["angle_w1"]])


def _seed_recipe(init, seed):
    net = copy.deepcopy(init)
    torch.manual_seed(seed)
    train_seed002(net, **BUDGET)
    torch.manual_seed(seed)
    return sample_sde(net, batch_size=N, steps=SAMPLE_STEPS)


SDE = fs.VPSDE(0.1, 20.0, 1.0)


def _our_sample(net, seed):
    return fs.sample(net, SDE, N, "em", SAMPLE_STEPS, backend="auto", seed=seed)


def _our_recipe(init, seed):
    net = copy.deepcopy(init)
    fs.train(net, SDE, fs.datasets.ring(100_000, seed=seed), weighting="sigma2", seed=seed, progress=False, **BUDGET)
    return _our_sample(net, seed)


@pytest.mark.slow
def test_trained_ring_matches_seed002_recipe():
    data = fs.datasets.ring(N, seed=123)  # held out from every training
    torch.manual_seed(0)
    init = fs.ScoreMLP(2, 64, 5)  # seed 002's basic_net; every run starts from these weights

    # seed 002's recipe, twice: its run-to-run spread is the noise "at least as well" is judged by
    d_seed = np.array([_distances(_seed_recipe(init, s), data) for s in (1, 2)])

    d_ours = np.array([_distances(_our_recipe(init, s), data) for s in (1, 2)])

    # The recipes are one algorithm with different random draws; "at least as well" is
    # judged up to their run-to-run variability, measured here: with two runs a, b per
    # recipe, var ~ (a - b)^2 / 2, and the difference of the two means has std
    # sqrt((var_seed + var_ours) / 2). Margin: 3 of those plus the sampling noise of a W1
    # estimate from 20k points (radius ~ std(r) / sqrt(N) ~ 5e-4, angle ~ 2 / sqrt(N) ~ 0.015).
    var = ((d_seed[0] - d_seed[1]) ** 2 + (d_ours[0] - d_ours[1]) ** 2) / 2
    margin = 3 * np.sqrt(var / 2) + np.array([5e-4, 0.015])
    assert np.all(d_ours.mean(0) <= d_seed.mean(0) + margin), f"fastscore W1 {d_ours} vs seed 002 recipe {d_seed}"

    # And it learned the ring: it beats a model that learned nothing, on the radius the prior
    # N(0, I) (W1 ~ 0.49; trained ~ 0.04), on the angle the untrained network sampled the same
    # way (~ 0.27; trained ~ 0.06-0.17). N(0, I) is no yardstick for the angle: its uniform
    # angles are already ~ 0.05 from this law, closer than either recipe gets at this budget.
    # Judged by the noise above: 3 std of a two-run mean, plus the sampling noise of the
    # baseline's one W1 estimate (radius std(r) ~ 0.52 for N(0, I): 0.52 / sqrt(N) ~ 4e-3).
    d_base = np.array([
        _distances(torch.from_numpy(np.random.default_rng(0).standard_normal((N, 2))).float(), data)[0],
        _distances(_our_sample(init, 0), data)[1],
    ])
    base_margin = 3 * np.sqrt(var / 2) + np.array([4e-3, 0.015])
    assert np.all(d_ours.mean(0) + base_margin < d_base), f"fastscore W1 {d_ours} vs untrained baselines {d_base}"
