"""GPU benchmark: the fused CUDA Euler–Maruyama sampler against the reference loop in eager
PyTorch and under torch.compile (mode "reduce-overhead": CUDA graphs), batch 1k to 1M,
widths 32-256 (2-D data, concat time, depth 5, ReLU: seed 002's network at width 64).

    python bench/gpu_bench.py [--steps 100] [--rounds 5] [--json bench/results/gpu_<device>.json]

Prints samples/s, GFLOP/s (network FLOPs only: 2 x in x out per layer and evaluation) and %
of the GPU's FP32 peak: the spec peak (SMs x FP32 lanes per SM x 2 x max SM clock from
nvidia-smi) where it can be read, and always a measured FP32 SGEMM (TF32 off) for scale.
Each figure is the median of --rounds timed runs after a warm-up, timed with CUDA events.
The loops are timing baselines: they draw torch.randn noise, not fastscore's stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

import torch

import fastscore as fs

FP32_LANES_PER_SM = {(7, 0): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128}
BATCHES = [1_000, 10_000, 100_000, 1_000_000]
WIDTHS = [32, 64, 128, 256]


def spec_peak_gflops() -> float | None:
    """FP32 FMA peak from the device's SM count, lanes per SM and max SM clock, if known."""
    props = torch.cuda.get_device_properties(0)
    lanes = FP32_LANES_PER_SM.get((props.major, props.minor))
    try:
        mhz = float(subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits",
                                    "-i", "0"], capture_output=True, text=True, check=True).stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None
    return None if lanes is None else props.multi_processor_count * lanes * 2 * mhz * 1e6 / 1e9


def timed(fn, rounds: int) -> float:
    """median seconds of fn() over `rounds` runs after one warm-up"""
    fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def sgemm_gflops(rounds: int, size: int = 8192) -> float:
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(size, size, device="cuda")
    b = torch.randn(size, size, device="cuda")
    return 2 * size**3 / timed(lambda: a @ b, rounds) / 1e9


def em_step_fn(model, sde: fs.SDE, steps: int, eps: float = 1e-3):
    """one reverse-SDE EM step x <- x + (-f x + g^2 s) h + g sqrt(h) z as a torch function of (x, t)"""
    h = (sde.T - eps) / steps

    def step(x, t):
        s = model(x, t)
        f, g2 = sde.drift_coeff(t), sde.diffusion_sq(t)
        return x + (-f * x + g2 * s) * h + (g2 * h) ** 0.5 * torch.randn_like(x)

    return step


def reference_loop(step, n: int, dim: int, sde: fs.SDE, steps: int, eps: float = 1e-3, device: str = "cuda"):
    def run():
        with torch.no_grad():
            x = sde.prior_std * torch.randn(n, dim, device=device)
            for k in range(steps):
                x = step(x, torch.tensor(sde.T - k * (sde.T - eps) / steps, device=device))
        return x

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if not fs.backends()["cuda"]["available"]:
        raise SystemExit(f"no CUDA backend here: {fs.backends()['cuda']['detail']}")

    name = torch.cuda.get_device_name(0)
    peak, sgemm = spec_peak_gflops(), sgemm_gflops(args.rounds)
    print(f"device: {name}; FP32 spec peak: {peak and f'{peak:.0f} GFLOP/s'}; measured SGEMM: {sgemm:.0f} GFLOP/s")
    print(f"EM, {args.steps} steps, 2-D, depth 5, ReLU, concat time; median of {args.rounds}")
    header = f"{'width':>5} {'batch':>9} {'loop':>9} {'samples/s':>11} {'GFLOP/s':>9} {'% peak':>7} {'fused/loop':>10}"
    print(header)
    sde = fs.VPSDE()
    rows = []
    for width in WIDTHS:
        torch.manual_seed(0)
        model = fs.ScoreMLP(2, width, 5).cuda().eval()
        flop = model.flops_per_eval()
        for n in BATCHES:
            loops = {"fused": lambda: fs.sample(model, sde, n, "em", args.steps, backend="cuda"),
                     "eager": reference_loop(em_step_fn(model, sde, args.steps), n, 2, sde, args.steps)}
            if not args.no_compile:
                compiled = torch.compile(em_step_fn(model, sde, args.steps), mode="reduce-overhead")
                loops["compiled"] = reference_loop(compiled, n, 2, sde, args.steps)
            secs = {k: timed(fn, args.rounds) for k, fn in loops.items()}
            for k, s in secs.items():
                gflops = flop * n * args.steps / s / 1e9
                row = {"device": name, "width": width, "batch": n, "loop": k, "seconds": s,
                       "samples_per_s": n / s, "gflops": gflops, "pct_spec_peak": peak and 100 * gflops / peak,
                       "pct_sgemm": 100 * gflops / sgemm, "fused_speedup": s / secs["fused"]}
                rows.append(row)
                pct = f"{row['pct_spec_peak']:.1f}" if peak else "n/a"
                print(f"{width:>5} {n:>9} {k:>9} {n / s:>11.3g} {gflops:>9.1f} {pct:>7} {s / secs['fused']:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "spec_peak_gflops": peak, "sgemm_gflops": sgemm, "steps": args.steps,
                       "rounds": args.rounds, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
