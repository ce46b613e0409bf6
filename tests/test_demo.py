"""The `fastscore` console script, end to end at a small size."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_and_writes_png(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fastscore.cli", "demo", "--out", str(tmp_path), "--train-steps", "200",
         "--batch-size", "256", "--n", "2000", "--steps", "50"],
        capture_output=True, text=True, timeout=600, check=True, cwd=tmp_path,  # not the source tree
    )
    png = tmp_path / "fastscore_demo.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "faster" in out.stdout and "radial W1" in out.stdout, out.stdout


def test_backends_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastscore.cli", "backends"], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    for name in ("cpu", "cuda", "numba", "torch"):
        assert f'"{name}"' in out.stdout
