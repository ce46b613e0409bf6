"""The solver bench's outputs: bench.md (a table with the machine described), bench.json (the
same numbers, and every timed round) and bench.png (error against NFE and against time)."""

from __future__ import annotations

import json
import math
from pathlib import Path

#: metric key -> column / axis title
METRICS = {"sw2": "SW2", "energy": "energy", "kl": "KL"}
COLUMNS = ("method", "grid", "steps / tol", "NFE mean", "NFE max", "time (s)")


def _metric_keys(result) -> list[str]:
    return [k for k in METRICS if k != "kl" or result.settings["analytic"]]


def _number(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _load(averages, cores: int) -> str:
    """The load averages at the end of the run and what they say about the times (the bench's
    own threads count toward them, so only a load above the core count shows competition)."""
    if averages is None:
        return "load average unknown"
    verdict = (f"above the {cores} cores: other work competed for the CPU and slowed the times"
               if max(averages) > cores else f"within the {cores} cores: no sign of competing work")
    return "load average " + " / ".join(f"{v:.2f}" for v in averages) + f" (1, 5, 15 min, at the end; {verdict})"


def _budget(row: dict) -> str:
    if row["tol"] is not None:
        return f"tol {row['tol']:g}"
    return "" if row["steps"] is None else str(row["steps"])


def markdown(result) -> str:
    s, m = result.settings, result.machine
    keys = _metric_keys(result)
    what = ("the target itself (denoise)" if s["denoise"] else "the target diffused to eps") + (
        ", exactly (analytic target: exact score, float64)" if s["analytic"] else ", as reference draws")
    lines = [
        f"# Solver bench: {s['target']} ({s['dim']}-D), {s['sde']}",
        "",
        f"- machine: {m['cpu_model']}, {m['cores']} cores ({m['affinity']} usable); torch {m['torch']} "
        f"({m['torch_threads']} threads), numba {m['numba'] or 'not installed'}, numpy {m['numpy']}, "
        f"python {m['python']}, fastscore {m['fastscore']}; {_load(m['load_avg'], m['cores'])}",
        f"- run: backend `{s['backend']}`, n = {s['n']:,} samples per cell, seed {s['seed']} (the same for every "
        f"cell: every method starts from the same prior draws), eps = {s['eps']:g}; time = median of {s['rounds']} "
        "calls after one untimed warm-up call",
        f"- law to reproduce: {what}; compared with n draws of it on a seed of their own",
        f"- metrics: SW2 = sliced Wasserstein-2 (POT, {s['projections']} fixed directions); energy = square root of "
        "the energy distance (all pairs)" + (
            f"; KL = KL(samples || law): exact cross-entropy minus a k-NN entropy estimate (k = {s['knn_k']}), "
            "biased by the dimension" if s["analytic"] else "") + ". The target row is an independent draw of the "
        "law: each metric's noise floor (and bias) at this n",
        "",
        "| " + " | ".join(COLUMNS + tuple(METRICS[k] for k in keys)) + " |",
        "|---|---|" + "---:|" * (len(COLUMNS) - 2 + len(keys)),
    ]
    failures = []
    for row in result.rows:
        cells = [row["method"], row["grid"] or "", _budget(row)]
        if "error" in row:
            failures.append(f"- {row['method']} ({row['grid']}), {_budget(row)}: {row['error']}")
            cells += [f"failed [{len(failures)}]"] + [""] * (len(COLUMNS) - 4 + len(keys))
        else:
            cells += [_number(row["nfe_mean"]), _number(row["nfe_max"]), _number(row["time_s"])]
            cells += [_number(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    if failures:
        lines += ["", "Failed runs:", *failures]
    lik = result.likelihood
    if lik is not None:
        lines += ["", f"PF-ODE likelihood (fastscore.log_prob, {lik['method']}, rtol = atol = {lik['rtol']:g}, "
                      f"{lik['points']} points of the law at eps, against its exact log-density): mean |error| "
                      f"{lik['mean_abs_error']:.3g} nats, max {lik['max_abs_error']:.3g}; NFE {lik['nfe_mean']:.4g}; "
                      f"{lik['time_s']:.3g} s"]
    return "\n".join(lines) + "\n"


def _finite(value):
    """JSON has no inf or nan: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(result) -> str:
    return json.dumps(_finite({"settings": result.settings, "machine": result.machine, "rows": result.rows,
                               "likelihood": result.likelihood}), indent=2, allow_nan=False)


def _lines(result) -> dict:
    """(method, grid) -> its successful rows in order of NFE."""
    lines: dict = {}
    for row in result.rows[1:]:
        if "error" not in row:
            lines.setdefault((row["method"], row["grid"]), []).append(row)
    return {key: sorted(rows, key=lambda r: r["nfe_mean"]) for key, rows in lines.items()}


def plot(result, path: Path) -> None:
    """Each metric against mean NFE and against wall time, log-log, one line per method and grid,
    the target row as a dashed line. A metric with values <= 0 (KL can be) gets a symlog axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _metric_keys(result)
    lines = _lines(result)
    floor = result.rows[0]
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.6 * len(keys)), squeeze=False)
    for ax_row, key in zip(axes, keys):
        values = [r[key] for rows in lines.values() for r in rows] + [floor[key]]
        positive = all(v > 0 for v in values if math.isfinite(v))
        for ax, (x_key, x_label) in zip(ax_row, (("nfe_mean", "NFE (mean per sample)"), ("time_s", "wall time (s)"))):
            for (method, grid), rows in lines.items():
                pts = [(r[x_key], r[key]) for r in rows if math.isfinite(r[key])]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=f"{method} ({grid})" if grid else method)
            if math.isfinite(floor[key]):
                ax.axhline(floor[key], color="gray", ls="--", label="target (noise floor)")
            ax.set_xscale("log")
            if positive:
                ax.set_yscale("log")
            else:  # linear within the noise floor, where differences are not resolved anyway
                ax.set_yscale("symlog", linthresh=max(abs(floor[key]), 1e-3))
            ax.set_xlabel(x_label)
            ax.set_ylabel(METRICS[key])
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    s = result.settings
    fig.suptitle(f"{s['target']} ({s['dim']}-D), {s['sde']}: n = {s['n']:,}, backend {s['backend']}, "
                 f"{result.machine['cpu_model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result, folder: Path) -> dict:
    """Writes bench.md, bench.json and bench.png into folder (created if needed); their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"md": folder / "bench.md", "json": folder / "bench.json", "png": folder / "bench.png"}
    files["md"].write_text(markdown(result))
    files["json"].write_text(to_json(result) + "\n")
    plot(result, files["png"])
    return files
