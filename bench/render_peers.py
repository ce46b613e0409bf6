"""Render bench/test_bench_peers.py's JSON: fastscore against the tools users would pick instead.

    python bench/render_peers.py bench/results/peers.json

writes peers.md (the machine, its measured FMA peak, one table per task) and peers.png (time
per sample-step against batch, one line per tool, one panel per sampling task) beside the JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from render import fmt_time, heading, peak_line

EM_TOOLS = ("fastscore", "eager", "torch.compile", "torchsde")
FLOW_FIXED = ("fastscore heun", "torchdiffeq heun2")
FLOW_ADAPTIVE = ("fastscore rk45", "torchdiffeq dopri5", "torchode dopri5")
LIKELIHOOD_TOOLS = ("fastscore", "torchdiffeq", "torchode", "torchdiffeq hutchinson")


def cases(data: dict) -> dict:
    """{task: {(tool, n): extra_info + median}} of the peers suite."""
    out: dict = defaultdict(dict)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e.get("suite") == "peers":
            out[e["task"]][(e["tool"], e["n"])] = {**e, "median": b["stats"]["median"]}
    return out


def per_eval(c: dict) -> float:
    """seconds per sample-step (one network evaluation of one sample)"""
    return c["median"] / c["evals"]


def slower(c: dict | None, base: dict | None, key=per_eval) -> str:
    if c is None or base is None:
        return "–"
    r = key(c) / key(base)
    return f"{r:.1f}x slower" if r >= 1.05 else f"{1 / r:.1f}x faster" if r <= 0.95 else "a tie"


def fused(c: dict | None, peak: float) -> str:
    """a fastscore cell: median, GFLOP/s and % of the peak"""
    return "–" if c is None else f"{fmt_time(c['median'])}, {c['gflops']:.0f} GFLOP/s ({100 * c['gflops'] / peak:.0f}% of peak)"


def em_table(em: dict, peak: float) -> list[str]:
    lines = heading("Reverse-SDE Euler–Maruyama (seed 002's network, 5 x 64 ReLU)",
                    ["batch", "steps", "fastscore `em`", "eager loop", "`torch.compile`d loop", "torchsde euler"])
    for n in sorted({n for _, n in em}):
        base = em.get(("fastscore", n))
        head = fused(base, peak)
        cells = [slower(em.get((t, n)), base) for t in EM_TOOLS[1:]]
        steps = base["steps"] if base else "?"
        lines.append(f"| {n:,} | {steps} | {head} | " + " | ".join(cells) + " |")
    lines += ["", "Peers: time per sample-step against fastscore's, same run (their random numbers come from "
              "torch's generator, so samples are not compared one by one)."]
    return lines


def flow_table(flow: dict, peak: float) -> list[str]:
    lines = heading("Probability-flow ODE (same network)",
                    ["batch", "fastscore `ode_heun`", "torchdiffeq heun2", "fastscore `ode_rk45` (NFE/sample)",
                     "torchdiffeq dopri5 (NFE/sample)", "torchode Dopri5 (NFE/sample)"])
    for n in sorted({n for _, n in flow}):
        heun = flow.get(("fastscore heun", n))
        cells = [fused(heun, peak), slower(flow.get(("torchdiffeq heun2", n)), heun)]
        rk = flow.get(("fastscore rk45", n))
        nfe = lambda c: "" if c is None else f" ({c['evals'] / c['n']:.0f})"  # noqa: E731
        cells.append("–" if rk is None else f"{fmt_time(rk['median'])}{nfe(rk)}")
        for tool in FLOW_ADAPTIVE[1:]:
            c = flow.get((tool, n))
            cells.append(slower(c, rk, key=lambda x: x["median"]) + nfe(c))
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    lines += ["", "Fixed step: time per sample-step against fastscore's; adaptive (rtol = atol = 1e-3, each tool's "
              "own error control): wall time of the whole solve against fastscore's, with each tool's network "
              "evaluations per sample."]
    return lines


def likelihood_table(lp: dict, peak: float) -> list[str]:
    lines = heading("Exact log-likelihood at matched accuracy (5 x 64 SiLU network trained on the ring)",
                    ["points", "target worst error (nats)", "tool", "rtol = atol", "worst error", "median",
                     "vs fastscore"], left=(2,))
    for n in sorted({n for _, n in lp}):
        base = lp.get(("fastscore", n))
        for tool in LIKELIHOOD_TOOLS:
            c = lp.get((tool, n))
            if c is None:
                continue
            ratio = "–" if base is None or tool == "fastscore" else slower(c, base, key=lambda x: x["median"])
            rate = "" if not c.get("gflops") else f", {100 * c['gflops'] / peak:.0f}% of peak"
            lines.append(f"| {n:,} | {c['target_error']:.1e} | {tool} | {c['tol']:.0e} | {c['worst_error']:.1e} "
                         f"| {fmt_time(c['median'])}{rate} | {ratio} |")
    lines += ["", "Worst error over the points against a float64 solve (fastscore's reference backend, rk45 at "
              "1e-9). Each exact tool runs at its loosest tolerance of 1e-2 .. 1e-6 (half decades) whose worst error is within "
              "the target, the largest of the tools' best errors; the Hutchinson row (one Rademacher probe) runs "
              "at torchdiffeq's tolerance and shows what the estimator costs in accuracy."]
    bounds = []
    for n in sorted({n for _, n in lp}):
        base, peer = lp.get(("fastscore", n)), lp.get(("torchdiffeq", n))
        if base and peer and base.get("gflops"):
            at_peak = base["median"] * base["gflops"] / peak  # fastscore's FLOPs at 100% of the peak
            bound = f"{n:,} points: {peer['median'] / at_peak:.1f}x"
            if base.get("lane_occupancy"):  # the lanes' schedule spends 1 / occupancy as many lane evaluations
                bound += (f", {peer['median'] * base['lane_occupancy'] / at_peak:.1f}x in tiles "
                          f"({100 * base['lane_occupancy']:.0f}% of the lane evaluations on points)")
            bounds.append(f"{bound} (measured {peer['median'] / base['median']:.1f}x)")
    if bounds:
        lines += ["", "The most a kernel with fastscore's evaluations could gain on torchdiffeq's exact solve, running "
                  "them (1 + dim passes of the network's FLOPs each) at 100% of the measured peak, and the same in "
                  "fastscore's tiles, whose lanes step together: the last points of a run leave lanes idle "
                  "(the schedule replayed from each point's evaluations): "
                  + "; ".join(bounds) + "."]
    return lines


def header(data: dict, peak: dict) -> list[str]:
    fsi = data.get("machine_info", {}).get("fastscore", {})
    build = fsi.get("build_info", {})
    some = next(iter(b["extra_info"] for b in data["benchmarks"] if b["extra_info"].get("suite") == "peers"), {})
    return ["# fastscore against the tools users would pick instead (CPU)", "",
            f"- date: {data.get('datetime', '?')}; commit {data.get('commit_info', {}).get('id', '?')[:12]}",
            f"- machine: {fsi.get('cpu_model', '?')}, {fsi.get('cores', '?')} cores; fastscore build "
            f"{build.get('isa', '?')} ({build.get('openmp_threads', '?')} OpenMP threads); torch "
            f"{fsi.get('torch', '?')} ({some.get('torch_threads', '?')} threads)",
            peak_line(peak), ""]


def plot(tasks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("em", "reverse-SDE Euler–Maruyama", EM_TOOLS), ("flow", "PF-ODE, fixed-step Heun", FLOW_FIXED)]
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4.2))
    for ax, (task, title, tools) in zip(axes, panels):
        for tool in tools:
            pts = sorted((n, per_eval(c)) for (t, n), c in tasks.get(task, {}).items() if t == tool)
            if pts:
                ax.loglog([p[0] for p in pts], [p[1] * 1e9 for p in pts], "o-", label=tool)
        ax.set(title=title, xlabel="batch", ylabel="ns per sample-step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    args = ap.parse_args(argv)
    data = json.loads(args.json.read_text())
    tasks = cases(data)
    if not tasks:
        raise SystemExit(f"{args.json}: no benchmarks of the peers suite")
    peak = data.get("machine_info", {}).get("fastscore", {}).get("fma_peak", {})
    gflops = peak.get("gflops", float("nan"))
    md, png = args.json.with_suffix(".md"), args.json.with_suffix(".png")
    lines = header(data, peak) + [f"![time per sample-step]({png.name})", ""]
    if "em" in tasks:
        lines += em_table(tasks["em"], gflops) + [""]
    if "flow" in tasks:
        lines += flow_table(tasks["flow"], gflops) + [""]
    if "log_prob" in tasks:
        lines += likelihood_table(tasks["log_prob"], gflops) + [""]
    md.write_text("\n".join(lines))
    plot(tasks, png)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
