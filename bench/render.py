"""Render a pytest-benchmark JSON of bench/test_bench_em.py as a markdown table and a plot
(and the tables of the likelihood and call-overhead suites, where they ran).

    python bench/render.py bench/results/em_cpu.json

writes em_cpu.md and em_cpu.png next to the JSON (or under --out-dir; a JSON of the other
suites alone gives the .md only). Speed-ups compare
throughput per sample-step (GFLOP/s), measured in the same run, so cases whose step counts
differ between backends still compare fairly.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

BACKEND_ORDER = ("torch", "seed", "cpu", "numba", "cuda")
LABELS = {
    "torch": 'reference (backend="torch")',
    "seed": "seed-002 loop",
    "cpu": 'fused C++ (backend="cpu")',
    "numba": 'Numba (backend="numba")',
}
NOISY_SPREAD = 0.10  # (max - min) / median above this is flagged as noisy
BUSY_FOREIGN = 0.05  # other processes' CPU share during the rounds above this is flagged


def is_noisy(r: dict) -> bool:
    return (r["max"] - r["min"]) / r["median"] > NOISY_SPREAD or (r.get("foreign") or 0.0) > BUSY_FOREIGN


def load(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    rows = []
    for b in data["benchmarks"]:
        e, s = b["extra_info"], b["stats"]
        if "gflops" not in e or "backend" not in e:  # another suite's, or one that failed before recording
            continue
        rows.append({
            "name": b["name"], "backend": e["backend"], "n": e["n"], "width": e["width"], "steps": e["steps"],
            "flops": e["flops"], "median": s["median"], "min": s["min"], "max": s["max"],
            "iqr": s["iqr"], "rounds": s["rounds"], "gflops": e["gflops"], "pct_peak": e["pct_peak"],
            "peak": e["peak_gflops"], "load": (e.get("loadavg_before"), e.get("loadavg_after")),
            "foreign": e.get("foreign_cpu"),
        })
    return data, rows


def heading(title: str, columns: list[str], left: tuple[int, ...] = ()) -> list[str]:
    """A section title and a table head: the columns numbered in `left` left-aligned, the rest right."""
    return [f"## {title}", "", "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" if i in left else "---:" for i in range(len(columns))) + "|"]


def log_prob_table(data: dict) -> list[str]:
    """Markdown table of the likelihood suite (bench/test_bench_log_prob.py), if it ran."""
    rows = [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "log_prob"
            and b["extra_info"].get("kind") != "rate"]
    if not rows:
        return []
    base = next((b["stats"]["median"] for b in rows if b["extra_info"]["backend"] == "seed000"), None)
    lines = [""] + heading("Log-likelihood of 200 points, rk45 at equal or better accuracy",
                           ["backend", "points", "rtol = atol", "median", "speed-up vs seed 000",
                            "max abs error (nats)", "mean abs error", "mean nfe"], left=(0,))
    for b in rows:
        e, med = b["extra_info"], b["stats"]["median"]
        lines.append(f"| {e['backend']} | {e['n']} | {e['tol']:.0e} | {fmt_time(med)} | {fmt_speedup(base / med if base else None)} "
                     f"| {e['max_abs_err']:.2e} | {e['mean_abs_err']:.2e} | {e['mean_nfe']:.0f} |")
    lines += ["", "Errors against reference rk4 with 2,000 steps in float64. seed000: scipy RK45 on the batch "
              "with autograd divergence (seed 000's likelihood_ode); nfe there is the batch's count."]
    return lines


def overhead_table(data: dict) -> list[str]:
    """Markdown table of the call-overhead suite (bench/test_bench_overhead.py), if it ran."""
    runs = [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "overhead"]
    if not runs:
        return []
    cases: dict = {}
    for b in runs:
        e = b["extra_info"]
        cases.setdefault((e["n"], e["steps"]), {"info": e})[e["way"]] = b["stats"]["median"]
    us = lambda t: "" if t is None else f"{t * 1e6:,.1f}"  # noqa: E731
    info = runs[0]["extra_info"]
    lines = ["", "## Fixed cost of a call (seed-002 network, `em`, backend `cpu`), median µs", "",
             f"One-thread FMA peak {info['thread_peak_gflops']:.1f} GFLOP/s; a lone sample's matrix-vector rows "
             f"through the four 64 x 64 layers {info['matvec_gflops']:.1f} GFLOP/s (both measured in this run).", "",
             "| n | steps | arithmetic | bound | kernel | Sampler | Python overhead | Sampler / arithmetic "
             "| Sampler / bound | fs.sample (cached) | fresh Sampler per call |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (n, steps), c in sorted(cases.items()):
        arith, bound = c["info"]["arithmetic_s"], c["info"]["bound_s"]
        kernel, prepared = c.get("kernel"), c.get("Sampler")
        overhead = None if kernel is None or prepared is None else prepared - kernel
        ratio = lambda t: "" if prepared is None else f"{prepared / t:.1f}x"  # noqa: E731
        lines.append(f"| {n} | {steps} | {us(arith)} | {us(bound)} | {us(kernel)} | {us(prepared)} | {us(overhead)} "
                     f"| {ratio(arith)} | {ratio(bound)} | {us(c.get('sample'))} | {us(c.get('fresh'))} |")
    lines += ["", "arithmetic = FLOPs / (one-thread peak x threads the call can use: one per tile of samples); "
              "bound = FLOPs / the matrix-vector rate for a call of fewer than half a tile (run one sample at a "
              "time: every multiply-add loads its own weight), else the arithmetic; kernel = "
              "`_core.PreparedSampler.run` alone; Python overhead = Sampler - kernel."]
    return lines


def log_prob_rate_table(data: dict) -> list[str]:
    """Markdown table of the likelihood kernel's share of the FMA peak (test_log_prob_rate), if it ran."""
    rows = [b for b in data["benchmarks"] if b["extra_info"].get("kind") == "rate"]
    if not rows:
        return []
    peak = rows[0]["extra_info"]["peak_gflops"]
    lines = [""] + heading(f"Likelihood kernel rate (cpu, 4,096 points, 5 x 64 SiLU), FMA peak {peak:.0f} GFLOP/s",
                           ["method", "dim", "median", "mean nfe", "GFLOP/s", "% of peak"], left=(0,))
    for b in sorted(rows, key=lambda b: (b["extra_info"]["method"], b["extra_info"]["dim"])):
        e = b["extra_info"]
        lines.append(f"| {e['method']} | {e['dim']} | {fmt_time(b['stats']['median'])} | {e['mean_nfe']:.0f} "
                     f"| {e['gflops']:.0f} | {e['pct_peak']:.0f}% |")
    lines += ["", "GFLOP/s = evaluations x (1 + dim) passes x the network's FLOPs / median round."]
    return lines


def fmt_time(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def fmt_speedup(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def peak_line(peak: dict) -> str:
    """The measured FMA peak (fastscore.machine.fma_peak) as a report line: GFLOP/s, the chain
    counts it was the best of, and the FLOP per nominal cycle it implies."""
    if "gflops" not in peak:
        return "- measured FP32 FMA peak: ?"
    chains = ", ".join(f"{c}: {g:.0f}" for c, g in peak["by_chains"].items())
    per_cycle = peak.get("flop_per_nominal_cycle")
    cycle = "" if per_cycle is None else (
        f"; {per_cycle:.0f} FLOP per nominal {peak['nominal_ghz']:.2f} GHz cycle per thread, one full-width FMA "
        f"per cycle being {peak['one_fma_per_cycle']}")
    return (f"- measured FP32 FMA peak: **{peak['gflops']:.0f} GFLOP/s** on {peak['threads']} threads (chains per "
            f"thread: GFLOP/s, median of 5 each: {chains}{cycle})")


def machine_lines(data: dict) -> list[str]:
    """The run's date, machine, fastscore build and measured FMA peak, and its commit, as report lines."""
    mi = data.get("machine_info", {})
    fsi = mi.get("fastscore", {})
    build = fsi.get("build_info", {})
    lines = [
        f"- date: {data.get('datetime', '?')}",
        f"- machine: {fsi.get('cpu_model', mi.get('cpu', {}).get('brand_raw', '?'))}, "
        f"{fsi.get('cores', '?')} cores; python {mi.get('python_version', '?')}, torch {fsi.get('torch', '?')} "
        f"({fsi.get('torch_threads', '?')} threads)",
        f"- fastscore build: {build.get('isa', '?')}, {build.get('openmp_threads', '?')} OpenMP threads, "
        f"tile {build.get('tile', '?')}",
        peak_line(fsi.get("fma_peak", {})),
    ]
    commit = data.get("commit_info", {})
    if commit.get("id"):
        lines.append(f"- commit: {commit['id'][:12]}{' (dirty tree)' if commit.get('dirty') else ''}")
    return lines


def header(data: dict) -> list[str]:
    return ["# fastscore: Euler–Maruyama sampler throughput (CPU)", "", *machine_lines(data),
            "- network: ScoreMLP dim 2, depth 5, concat time, ReLU (width 64 = seed 002's basic_net, "
            "33,408 FLOP/eval); VP SDE beta 0.1..20",
            "- GFLOP/s = n x steps x flops_per_eval / median round; speed-ups are ratios of GFLOP/s "
            "(time per sample-step) within this run"]


def table(rows: list[dict]) -> list[str]:
    by_case = {(r["backend"], r["n"], r["width"]): r for r in rows}
    out = [
        "| backend | n | width | steps | median | GFLOP/s | % of peak | vs reference | vs seed loop | spread | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    key = lambda r: (r["width"], r["n"], BACKEND_ORDER.index(r["backend"]) if r["backend"] in BACKEND_ORDER else 99)
    for r in sorted(rows, key=key):
        ref = by_case.get(("torch", r["n"], r["width"]))
        seed = by_case.get(("seed", r["n"], r["width"]))
        spread = (r["max"] - r["min"]) / r["median"]
        flag = " ⚠" if is_noisy(r) else ""
        other = "–" if r.get("foreign") is None else f"{100 * r['foreign']:.0f}%"
        out.append(
            f"| {r['backend']} | {r['n']:,} | {r['width']} | {r['steps']:,} | {fmt_time(r['median'])} | "
            f"{r['gflops']:.1f} | {r['pct_peak']:.1f}% | "
            f"{fmt_speedup(r['gflops'] / ref['gflops'] if ref else None)} | "
            f"{fmt_speedup(r['gflops'] / seed['gflops'] if seed else None)} | {100 * spread:.0f}% | {other}{flag} |"
        )
    return out


def summary(rows: list[dict]) -> list[str]:
    cpu = [r for r in rows if r["backend"] == "cpu"]
    if not cpu:
        return []
    best = max(cpu, key=lambda r: r["gflops"])
    seed64 = [r for r in cpu if r["width"] == 64]
    lines = ["", "## Summary", ""]
    lines.append(f"- best fused CPU case: {best['gflops']:.0f} GFLOP/s = {best['pct_peak']:.0f}% of peak "
                 f"(n {best['n']:,}, width {best['width']})")
    if seed64:
        lines.append("- seed-002 network (width 64), % of peak by n: "
                     + ", ".join(f"n {r['n']:,}: {r['pct_peak']:.0f}%" for r in sorted(seed64, key=lambda r: r["n"])))
    ratios = []
    by_case = {(r["backend"], r["n"], r["width"]): r for r in rows}
    for r in cpu:
        ref = by_case.get(("torch", r["n"], r["width"]))
        if ref:
            ratios.append(r["gflops"] / ref["gflops"])
    if ratios:
        geo = math.exp(statistics.fmean(math.log(x) for x in ratios))
        lines.append(f"- speed-up of cpu over the reference: {min(ratios):.1f}x to {max(ratios):.0f}x "
                     f"(geometric mean {geo:.1f}x)")
    numba = [(r, by_case.get(("cpu", r["n"], r["width"]))) for r in rows if r["backend"] == "numba"]
    numba = [r["gflops"] / c["gflops"] for r, c in numba if c]
    if numba:
        lines.append(f"- numba / cpu throughput: {min(numba):.2f} to {max(numba):.2f}")
    noisy = [r["name"] for r in rows if is_noisy(r)]
    if noisy:
        lines.append(f"- ⚠ noisy (rounds spread over {NOISY_SPREAD:.0%} of the median, or other processes used over "
                     f"{BUSY_FOREIGN:.0%} of the CPU while it ran): " + ", ".join(noisy))
    return lines


def plot(rows: list[dict], peak: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r["width"] for r in rows})
    backends = [b for b in BACKEND_ORDER if any(r["backend"] == b for r in rows)]
    fig, axes = plt.subplots(1, len(widths), figsize=(3.6 * len(widths), 3.8), sharey=True, squeeze=False)
    colors = {"torch": "tab:blue", "seed": "tab:orange", "cpu": "tab:green", "numba": "tab:purple", "cuda": "tab:red"}
    markers = {"torch": "o", "seed": "s", "cpu": "D", "numba": "^", "cuda": "v"}
    ymin = min(r["gflops"] for r in rows)
    for ax, w in zip(axes[0], widths):
        for b in backends:
            pts = sorted((r["n"], r["gflops"]) for r in rows if r["backend"] == b and r["width"] == w)
            if pts:
                ax.plot(*zip(*pts), marker=markers.get(b, "o"), color=colors.get(b), label=LABELS.get(b, b))
        ax.axhline(peak, color="black", linestyle="--", linewidth=1, label=f"FMA peak ({peak:.0f})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["n"] for r in rows}))
        ax.set_xticklabels([f"{n:,}" for n in sorted({r["n"] for r in rows})])
        ax.set_ylim(max(ymin / 2, 0.1), peak * 1.6)
        ax.set_title(f"width {w}" + (" (seed 002)" if w == 64 else ""))
        ax.set_xlabel("batch n")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("GFLOP/s (log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = len(labels) if len(widths) >= 3 else 2
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    fig.suptitle("Euler–Maruyama sampling throughput, ScoreMLP depth 5, dim 2")
    fig.tight_layout(rect=(0, 0.08 if ncol == len(labels) else 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json=...)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where to write .md and .png (default: beside the JSON)")
    args = ap.parse_args(argv)
    data, rows = load(args.json)
    out_dir = args.out_dir or args.json.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    md, png = out_dir / f"{args.json.stem}.md", out_dir / f"{args.json.stem}.png"
    others = log_prob_table(data) + log_prob_rate_table(data) + overhead_table(data)
    if not rows:
        if not others:
            raise SystemExit(f"{args.json}: no benchmarks of a known suite")
        md.write_text("\n".join([f"# {args.json.stem}", "", *machine_lines(data), *others, ""]))
        print(f"wrote {md}")
        return
    peak = data.get("machine_info", {}).get("fastscore", {}).get("fma_peak", {}).get("gflops", rows[0]["peak"])
    lines = header(data) + ["", f"![throughput]({png.name})", ""] + table(rows) + summary(rows)
    lines += others
    lines += ["", "Columns: see bench/README.md. spread = (slowest - fastest round) / median; "
              "other load = CPU used by other processes during the rounds, as a share of all cores; "
              f"⚠ marks spread > {NOISY_SPREAD:.0%} or other load > {BUSY_FOREIGN:.0%}.", ""]
    md.write_text("\n".join(lines))
    plot(rows, peak, png)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
