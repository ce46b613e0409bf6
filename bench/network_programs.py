"""Speed of the network-program kernels (issue 9): "no speed lost".

1. Before / after: seed 002's network (ScoreMLP dim 2, width 64, depth 5, concat time, ReLU)
   sampled with ``em`` on the ``cpu`` and ``numba`` backends by this tree and by a tree of
   the commit before network programs (built separately, ``--before``), alternating the two
   in fresh processes, several rounds; medians and their ratio.
2. LayerNorm + residual: an imported network of width 128 (pre-LayerNorm residual blocks,
   SiLU) against a plain ScoreMLP of width 128 with the same dense layers, GFLOP/s of the
   dense work on the ``cpu`` backend, in this tree.

    git worktree add /tmp/before 1d10ae0 && (cd /tmp/before && pip install --no-deps -e . )  # or a cmake build
    python bench/network_programs.py --before /tmp/before [--rounds 7]

Writes bench/results/network_programs.md. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one timing child: imports fastscore from sys.path[0], times CALLS calls after a warm-up
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import fastscore as fs
case = json.loads(sys.argv[2])
torch.manual_seed(0)
if case["net"] == "seed002":
    model = fs.ScoreMLP(2, 64, 5, "relu", "concat")
    flops = model.flops_per_eval()
elif case["net"] == "plain128":
    model = fs.ScoreMLP(2, 128, 4, "silu", "concat")
    flops = fs.pack(model).flops_per_eval
else:
    from torch import nn

    class Block(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.norm, self.lin = nn.LayerNorm(w), nn.Linear(w, w)

        def forward(self, h):
            return h + self.lin(nn.functional.silu(self.norm(h)))

    class Net(nn.Module):
        def __init__(self, w=128):
            super().__init__()
            self.inp = nn.Linear(3, w)
            self.blocks = nn.ModuleList(Block(w) for _ in range(3))
            self.out = nn.Linear(w, 2)

        def forward(self, x, t):
            h = self.inp(torch.cat([x, t], 1))
            for b in self.blocks:
                h = b(h)
            return self.out(h)

    model = fs.from_torch(Net(), 2, time_shape="column")
    flops = fs.pack(model).flops_per_eval
sde = fs.VPSDE()
run = lambda: fs.sample(model, sde, case["n"], "em", case["steps"], backend=case["backend"], seed=0)
run()
times = []
for _ in range(case["calls"]):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
print(json.dumps({"time": sorted(times)[len(times) // 2], "flops": flops}))
"""


def child(tree: Path, case: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), json.dumps(case)], capture_output=True, text=True,
                         check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(tree: Path, case: dict, rounds: int) -> tuple[float, float, list]:
    runs = [child(tree, case) for _ in range(rounds)]
    times = [r["time"] for r in runs]
    return statistics.median(times), runs[0]["flops"], times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="a tree of the commit before network programs, built")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/network_programs.md")
    args = ap.parse_args()
    lines = ["# Network programs: no speed lost (issue 9)", "",
             f"Medians of {args.rounds} fresh processes per side (each the median of 3 timed calls after a "
             "warm-up), before and after alternating; `em` on VPSDE, seed 0. Machine: "
             + subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                              text=True).stdout.strip() + f", {len(__import__('os').sched_getaffinity(0))} cores.", "",
             "## Seed 002's network (ScoreMLP 2-64x5-2, ReLU, concat time), before and after", "",
             "| backend | n | steps | before | after | after / before (time) | spread before / after |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for backend, n, steps in (("cpu", 16384, 200), ("cpu", 1024, 2000), ("cpu", 64, 5000), ("numba", 16384, 100),
                              ("numba", 1024, 1000)):
        case = {"net": "seed002", "backend": backend, "n": n, "steps": steps, "calls": 3}
        before, after = [], []
        for _ in range(args.rounds):  # alternate, so drifts in machine load hit both sides
            before.append(child(args.before, case)["time"])
            after.append(child(ROOT, case)["time"])
        b, a = statistics.median(before), statistics.median(after)
        spread = lambda v, m: (max(v) - min(v)) / m  # noqa: E731  (max - min) / median of the rounds
        lines.append(f"| {backend} | {n:,} | {steps:,} | {b * 1e3:.1f} ms | {a * 1e3:.1f} ms | {a / b:.2f} | "
                     f"{spread(before, b):.0%} / {spread(after, a):.0%} |")
        print(lines[-1], flush=True)
    lines += ["", "## LayerNorm + residual network of width 128 against a plain MLP of width 128 (cpu)", "",
              "Dense FLOP per evaluation as the kernels count them (the lane phase's matrix products); "
              "GFLOP/s = n x steps x FLOP / median time.", "",
              "| network | n | steps | dense FLOP / eval | median | GFLOP/s | share of plain |", "|---|---:|---:|---:|---:|---:|---:|"]
    rates = {}
    for net, label in (("plain128", "ScoreMLP 2-128x4-2, SiLU"), ("ln128", "3 pre-LN residual blocks of 128, SiLU")):
        case = {"net": net, "backend": "cpu", "n": 16384, "steps": 100, "calls": 3}
        t, flops, _ = median_of(ROOT, case, args.rounds)
        rates[net] = case["n"] * case["steps"] * flops / t / 1e9
        share = rates[net] / rates["plain128"]
        lines.append(f"| {label} | {case['n']:,} | {case['steps']} | {flops:,} | {t * 1e3:.1f} ms | "
                     f"{rates[net]:.1f} | {share:.0%} |")
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
