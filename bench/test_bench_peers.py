"""fastscore against what a user would run instead, same network, same machine, same run.

Sampling (seed 002's network: ScoreMLP dim 2, 5 x 64 ReLU, concat time; VP SDE 0.1..20,
T = 1 to eps = 1e-3), batch n in BATCHES:
  em       reverse-SDE Euler–Maruyama, STEPS(n) steps: fastscore `em` (backend cpu), the PyTorch
           loop (eager), the loop's step under torch.compile, torchsde.sdeint(method="euler")
  flow     probability-flow ODE, fixed-step Heun, STEPS(n) steps (2 evaluations each): fastscore
           `ode_heun`, torchdiffeq `heun2`; adaptive at rtol = atol = FLOW_TOL: fastscore `ode_rk45`
           (per sample), torchdiffeq dopri5 (one error norm for the batch), torchode Dopri5 (per sample)
Exact log-likelihood (a 5 x 64 SiLU network trained on seed 002's ring for TRAIN_STEPS steps;
log p_eps at eps = 1e-5 of POINTS ring points), each tool's tolerance tuned to matched accuracy:
  fastscore `log_prob(method="rk45")` (exact trace by forward-mode tangents), torchdiffeq dopri5
  and torchode Dopri5 on the augmented ODE with the autograd divergence (one backward pass per
  dimension), and torchdiffeq with Hutchinson's estimator (one Rademacher probe), reported with
  its error. Matching: every tool's worst error over the points against a float64 solve is
  measured at each tolerance of TOLS; the common target is the largest of the tools' best
  errors (so every exact tool reaches it), and each runs at its loosest tolerance that does.

Sampling throughput is compared per sample-step (peers use torch's generator, not the Philox
stream, so samples are not compared one by one; tests/ holds fastscore's correctness).

Run (see bench/README.md; needs the bench extra, which brings the peers):
    python -m pytest bench/test_bench_peers.py -q --benchmark-json=bench/results/peers.json -p no:cacheprovider
    python bench/render.py bench/results/peers.json
"""

from __future__ import annotations

import pytest
import torch

import fastscore as fs
import peers
from lane_schedule import lane_occupancy

pytest.importorskip("torchsde")
pytest.importorskip("torchdiffeq")
pytest.importorskip("torchode")

# torch.compile's own import of torch.jit warns about itself
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

BATCHES = (1, 64, 1024, 16384, 100_000)
SDE = fs.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
EPS = 1e-3  # fs.sample's default
FLOW_TOL = 1e-3
POINTS = (200, 10_000)
LIKELIHOOD_EPS = 1e-5  # fs.log_prob's default
TOLS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
TRAIN_STEPS = 2000
SEED = 0


def steps_for(n: int) -> int:
    """About 2e5 sample-steps a call, 5 to 200 steps: rounds of a few tenths of a second."""
    return max(5, min(200, 200_000 // n))


def rounds_for(n: int) -> int:
    return 3 if n >= 16384 else 5


@pytest.fixture(scope="module")
def relu_net():
    torch.manual_seed(1064)
    return fs.ScoreMLP(dim=2, width=64, depth=5, activation="relu", time_embedding="concat").eval()


def em_runner(tool: str, model, n: int, steps: int):
    if tool == "fastscore":
        return lambda: fs.sample(model, SDE, n, "em", steps, backend="cpu", seed=SEED, eps=EPS)
    if tool == "torchsde":
        return peers.em_torchsde(model, SDE, n, steps, EPS)
    return peers.em_loop(model, SDE, n, steps, EPS, compiled=tool == "torch.compile")


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("tool", ["fastscore", "eager", "torch.compile", "torchsde"])
def test_em(benchmark, relu_net, machine, fma_peak, tool, n):
    steps = steps_for(n)
    run = em_runner(tool, relu_net, n, steps)
    out = benchmark.pedantic(run, rounds=rounds_for(n), iterations=1, warmup_rounds=1)
    assert out.shape == (n, 2) and torch.isfinite(out).all()
    note_case(benchmark, machine, fma_peak, relu_net, task="em", tool=tool, n=n, steps=steps, evals=n * steps)


def flow_runner(tool: str, model, n: int, steps: int):
    """A callable and the network evaluations of a call, summed over its samples (None: counted
    by count_evals)."""
    if tool == "fastscore heun":
        return (lambda: fs.sample(model, SDE, n, "ode_heun", steps, backend="cpu", seed=SEED, eps=EPS)), 2 * steps * n
    if tool == "torchdiffeq heun2":
        return peers.flow_torchdiffeq(model, SDE, n, EPS, method="heun2", steps=steps), 2 * steps * n
    if tool == "fastscore rk45":
        return (lambda: fs.sample(model, SDE, n, "ode_rk45", backend="cpu", seed=SEED, eps=EPS, rtol=FLOW_TOL,
                                  atol=FLOW_TOL, return_info=True)), None
    if tool == "torchdiffeq dopri5":
        return peers.flow_torchdiffeq(model, SDE, n, EPS, method="dopri5", rtol=FLOW_TOL, atol=FLOW_TOL), None
    return peers.flow_torchode(model, SDE, n, EPS, rtol=FLOW_TOL, atol=FLOW_TOL), None


FLOW_TOOLS = ["fastscore heun", "torchdiffeq heun2", "fastscore rk45", "torchdiffeq dopri5", "torchode dopri5"]


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("tool", FLOW_TOOLS)
def test_flow(benchmark, relu_net, machine, fma_peak, tool, n):
    steps = steps_for(n) // 2
    run, evals = flow_runner(tool, relu_net, n, steps)
    if evals is None:  # adaptive: count the evaluations of one call
        evals = count_evals(tool, relu_net, run)
    out = benchmark.pedantic(run, rounds=rounds_for(n), iterations=1, warmup_rounds=1)
    x = out[0] if isinstance(out, tuple) else out
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    note_case(benchmark, machine, fma_peak, relu_net, task="flow", tool=tool, n=n, steps=steps, evals=evals)


def count_evals(tool: str, model, run) -> float:
    """Network evaluations of one call, summed over its samples (a batch evaluation of m samples
    counts m): fastscore and torchode report them per sample; torchdiffeq's are counted."""
    if tool == "fastscore rk45":
        return float(run()[1]["nfe"].sum())
    if tool == "torchode dopri5":
        return float(run()[1].sum())
    calls = []
    hook = model.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
    try:
        run()
    finally:
        hook.remove()
    return float(sum(calls))


def note_case(benchmark, machine, fma_peak, model, *, task: str, tool: str, n: int, steps: int | None,
              evals: float | None, **info):
    """extra_info: the case, its network evaluations per call (if counted) and the GFLOP/s they make."""
    median = benchmark.stats.stats.median
    gflops = None if evals is None else evals * model.flops_per_eval() / median / 1e9
    benchmark.extra_info.update(suite="peers", task=task, tool=tool, n=n, steps=steps, evals=evals,
                                median_s=median, gflops=gflops,
                                peak_gflops=fma_peak, cpu_model=machine["cpu_model"],
                                torch_threads=torch.get_num_threads(), **info)


# -- exact log-likelihood at matched accuracy -----------------------------------------------------

@pytest.fixture(scope="module")
def silu_net():
    """A 5 x 64 SiLU network trained on seed 002's ring (a realistic, stiff score near the data)."""
    torch.manual_seed(2064)
    model = fs.ScoreMLP(dim=2, width=64, depth=5, activation="silu", time_embedding="concat")
    fs.train(model, SDE, fs.datasets.ring(20_000, seed=1), steps=TRAIN_STEPS, batch_size=1000, seed=SEED,
             progress=False)
    return model.eval()


LIKELIHOOD_TOOLS = ("fastscore", "torchdiffeq", "torchode")


def likelihood_runner(tool: str, model, x, tol: float, hutchinson: bool = False):
    if tool == "fastscore":
        trace = "hutchinson" if hutchinson else "exact"
        return lambda: fs.log_prob(model, SDE, x, "rk45", rtol=tol, atol=tol, eps=LIKELIHOOD_EPS, backend="cpu",
                                   trace=trace, seed=SEED)
    solve = peers.log_prob_torchdiffeq if tool == "torchdiffeq" else peers.log_prob_torchode
    return solve(model, SDE, x, LIKELIHOOD_EPS, rtol=tol, atol=tol, hutchinson=hutchinson, seed=SEED)


_matched: dict = {}


def matched(model, points: int) -> dict:
    """The points, the float64 log p, each exact tool's worst error at every tolerance of TOLS,
    the common target and each tool's loosest tolerance within it (computed once per size)."""
    if points not in _matched:
        x = fs.datasets.ring(points, seed=5)
        ref = peers.reference_log_prob(model, SDE, x, LIKELIHOOD_EPS)
        errors = {tool: {tol: (likelihood_runner(tool, model, x, tol)().double() - ref).abs().max().item()
                         for tol in TOLS} for tool in LIKELIHOOD_TOOLS}
        target = max(min(e.values()) for e in errors.values())
        chosen = {tool: max(tol for tol, err in e.items() if err <= target) for tool, e in errors.items()}
        _matched[points] = {"x": x, "ref": ref, "errors": errors, "target": target, "tol": chosen}
    return _matched[points]


CASES = [(tool, False) for tool in LIKELIHOOD_TOOLS] + [("torchdiffeq", True)]


@pytest.mark.parametrize("points", POINTS)
@pytest.mark.parametrize(("tool", "hutchinson"), CASES, ids=[t + ("-hutchinson" if h else "") for t, h in CASES])
def test_log_prob(benchmark, silu_net, machine, fma_peak, tool, hutchinson, points):
    m = matched(silu_net, points)
    tol = m["tol"][tool]
    run = likelihood_runner(tool, silu_net, m["x"], tol, hutchinson)
    logp = benchmark.pedantic(run, rounds=3 if points > 1000 else 5, iterations=1, warmup_rounds=1)
    worst = (logp.double() - m["ref"]).abs().max().item()
    evals = occupancy = None  # fastscore's exact solve: its evaluations x (1 + dim) passes, for its share of the peak
    if tool == "fastscore" and not hutchinson:
        _, info = fs.log_prob(silu_net, SDE, m["x"], "rk45", rtol=tol, atol=tol, eps=LIKELIHOOD_EPS, backend="cpu",
                              return_info=True)
        evals = float(info["nfe"].sum()) * (1 + m["x"].shape[1])
        build = machine["build_info"]
        occupancy = lane_occupancy(info["nfe"].tolist(), build["tile"], build["openmp_threads"])
    note_case(benchmark, machine, fma_peak, silu_net, task="log_prob", tool=tool + (" hutchinson" if hutchinson else ""),
              n=points, steps=None, evals=evals, tol=tol, worst_error=worst, target_error=m["target"],
              lane_occupancy=occupancy, errors_by_tol={f"{t:g}": e for t, e in m["errors"][tool].items()})
