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
out = [fs.sample(model, sde, 333, m, 15, backend="cpu", seed=9, corrector_steps=2, denoise=True).numpy().ravel()
       for m in fs.samplers.RULES]  # every sampler rule
x = torch.randn(77, 2)
runs = [fs.log_prob(model, sde, x, m, steps=6, backend="cpu", trace=tr, seed=4, return_info=True)
        for m in ("euler", "heun", "rk4", "rk45") for tr in ("exact", "hutchinson")]
np.savez(sys.argv[1], samples=np.concatenate(out), logp=np.concatenate([r[0].numpy() for r in runs]),
         nfe=np.concatenate([r[1]["nfe"].numpy() for r in runs]))
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
