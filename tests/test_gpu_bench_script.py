"""bench/gpu_bench.py is ready to run: it imports, parses its options, and on a machine
without a CUDA backend stops with the reason instead of a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

import fastscore as fs

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_bench.py"


def test_gpu_bench_help_lists_its_options():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--steps", "--rounds", "--no-compile", "--json"):
        assert option in out


@pytest.mark.skipif(fs.backends()["cuda"]["available"], reason="a CUDA backend is available: the script would run")
def test_gpu_bench_without_cuda_says_why():
    run = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1"], capture_output=True, text=True)
    assert run.returncode != 0 and "no CUDA backend here" in run.stderr and "Traceback" not in run.stderr


def test_gpu_bench_reference_loop_runs_the_em_recursion():
    """The baseline loop on the CPU: from the prior to a finite [n, 2] batch whose spread
    matches the fused sampler's (same model and SDE, different noise: 8-sigma margin)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model, sde, n, steps = fs.ScoreMLP(2, 16, 2), fs.VPSDE(), 4000, 20
    x = gpu_bench.reference_loop(gpu_bench.em_step_fn(model, sde, steps), n, 2, sde, steps, device="cpu")()
    ref = fs.sample(model, sde, n, "em", steps, backend="torch")
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    se = ref.std(dim=0) * (2 / n) ** 0.5
    assert torch.all((x.std(dim=0) - ref.std(dim=0)).abs() < 8 * se)
