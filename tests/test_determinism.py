"""Sample i depends only on (seed, i, plan): bit-identical across OpenMP thread counts
(each run in a fresh process, since the thread count is fixed when OpenMP starts)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastscore as fs

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="extension not built")

SCRIPT = """
import sys, numpy as np, torch, fastscore as fs
torch.manual_seed(0)
model = fs.ScoreMLP(2, 48, 3, "silu", "fourier")
sde = fs.VESDE()
out = [fs.sample(model, sde, 333, m, 15, backend="cpu", seed=9).numpy().ravel() for m in ("em", "pc", "ode_heun")]
logp, info = fs.log_prob(model, sde, torch.randn(77, 2), "rk45", backend="cpu", return_info=True)
np.savez(sys.argv[1], samples=np.concatenate(out), logp=logp.numpy(), nfe=info["nfe"].numpy())
"""


def test_bit_identical_across_thread_counts(tmp_path):
    results = []
    for threads in ("1", "2"):
        path = tmp_path / f"out{threads}.npz"
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, check=True, cwd=tmp_path)
        results.append(np.load(path))
    for key in ("samples", "logp", "nfe"):
        assert np.array_equal(results[0][key], results[1][key]), key
