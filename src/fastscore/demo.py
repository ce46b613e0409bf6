"""``fastscore demo``: seed 002's ring, end to end.

Trains the seed-002 network (concat time, 5 x 64 ReLU) on the ring with the VP SDE,
samples with the fastest available backend, writes a PNG (data vs. samples, with the
radial and angular histograms of seed 002) and prints the fused sampler's time against
the reference backend on the same plan.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from . import datasets
from .backends import backends, resolve
from .plan import make_sample_plan
from .nn import ScoreMLP
from .sampling import sample
from .sde import VPSDE
from .train import train


def _polar(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])


def ring_distances(samples: torch.Tensor, data: torch.Tensor) -> dict:
    """Wasserstein-1 distances between the radial and the angular laws of two point sets."""
    from scipy.stats import wasserstein_distance

    rs, as_ = _polar(samples.double().numpy())
    rd, ad = _polar(data.double().numpy())
    return {"radius_w1": wasserstein_distance(rs, rd), "angle_w1": wasserstein_distance(as_, ad)}


def plot(data: torch.Tensor, samples: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, s = data.numpy(), samples.numpy()
    (rd, ad), (rs, as_) = _polar(d), _polar(s)
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.4))
    lim = [[-1.6, 1.6], [-1.6, 1.6]]
    ax[0].hist2d(d[:, 0], d[:, 1], bins=120, range=lim, cmap="magma")
    ax[0].set_title(f"data ({len(d):,})")
    ax[1].hist2d(s[:, 0], s[:, 1], bins=120, range=lim, cmap="magma")
    ax[1].set_title(f"samples ({len(s):,})")
    for a in ax[:2]:
        a.set_aspect("equal")
    bins_r = np.linspace(0.7, 1.3, 80)
    ax[2].hist(rd, bins=bins_r, density=True, histtype="step", lw=2, label="data")
    ax[2].hist(rs, bins=bins_r, density=True, histtype="step", lw=2, label="samples")
    ax[2].set_title("radius")
    ax[2].legend()
    bins_a = np.linspace(-math.pi, math.pi, 80)
    ax[3].hist(ad, bins=bins_a, density=True, histtype="step", lw=2, label="data")
    ax[3].hist(as_, bins=bins_a, density=True, histtype="step", lw=2, label="samples")
    ax[3].set_title("angle")
    ax[3].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


REFERENCE_SAMPLES = 10_000  # the reference's share of the demo: seconds, not minutes


def run(out_dir: str = ".", train_steps: int = 8000, batch_size: int = 2000, n: int = 100_000,
        steps: int = 500, seed: int = 0, reference: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sde = VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
    data = datasets.ring(100_000, seed=seed)
    model = ScoreMLP(dim=2, width=64, depth=5, activation="relu", time_embedding="concat")

    print(f"training the seed-002 network: {train_steps} steps of {batch_size} (denoising score matching, VP SDE)")
    t0 = time.perf_counter()
    history = train(model, sde, data, steps=train_steps, batch_size=batch_size, lr=1e-3, seed=seed)
    print(f"  {time.perf_counter() - t0:.1f} s, loss {np.mean(history[:100]):.3f} -> {np.mean(history[-500:]):.3f}")

    plan = make_sample_plan(model, sde, n, "em", steps, 1e-3, seed, 0, 0.16, 1, False)
    name = resolve("auto", "sample", "em", model, program=plan.program)
    gflop = n * steps * model.flops_per_eval() * 1e-9
    print(f"sampling {n:,} points: Euler–Maruyama, {steps} steps, backend '{name}' ({backends()[name]['detail']})")
    t0 = time.perf_counter()
    x = sample(model, sde, n, method="em", steps=steps, backend=name, seed=seed)
    t_fast = time.perf_counter() - t0
    fast_rate = n * steps / t_fast
    print(f"  {t_fast:.2f} s = {gflop / t_fast:.1f} GFLOP/s, {fast_rate:.3g} sample-steps/s")
    result = {"fused_s": t_fast, "backend": name, **ring_distances(x, data)}
    if reference and name != "torch":
        # the reference is timed on a subset (all n would take minutes) and compared per sample-step
        m = min(n, REFERENCE_SAMPLES)
        print(f"the same plan on the reference backend (PyTorch loop, float32), first {m:,} samples ...")
        t0 = time.perf_counter()
        x_ref = sample(model, sde, m, method="em", steps=steps, backend="torch", seed=seed)
        t_ref = time.perf_counter() - t0
        ref_rate = m * steps / t_ref
        agree = (x_ref - x[:m]).abs().max().item() / x_ref.abs().max().item()
        print(f"  {t_ref:.2f} s = {ref_rate:.3g} sample-steps/s; fused is {fast_rate / ref_rate:.1f}x faster per "
              f"sample-step; max difference {agree:.1e} of max |x| (same random stream)")
        result.update(reference_s=t_ref, reference_samples=m, speedup=fast_rate / ref_rate)
    print(f"radial W1 {result['radius_w1']:.4f}, angular W1 {result['angle_w1']:.4f} (samples vs data)")
    png = out / "fastscore_demo.png"
    plot(data, x, png, f"fastscore demo: ring (seed 002), EM {steps} steps, backend {name}")
    print(f"wrote {png}")
    result["png"] = str(png)
    return result
