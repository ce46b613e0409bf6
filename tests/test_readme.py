"""The README's "Bring your own network" example runs as written (with whatever backend is
fastest here) and does what it says."""

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_bring_your_own_network_example_runs():
    section = README[README.index("## Bring your own network"):README.index("## Backends")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)
    x, logp, model = env["x"], env["logp"], env["model"]
    assert x.shape == (1000, 2) and torch.isfinite(x).all()
    assert logp.shape == (10,) and torch.isfinite(logp).all()
    assert model.parity_error is None or 0 <= model.parity_error <= 1
