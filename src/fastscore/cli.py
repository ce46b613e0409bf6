"""The ``fastscore`` console script."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .sde import EDMSDE, CosineVPSDE, GeometricVESDE, SubVPSDE, VESDE, VPSDE


def _count(minimum: int):
    """argparse type: an int >= minimum, so a bad value stops at the command line, not after
    minutes of training."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is < {minimum}")
        return value

    return parse


def _list(item, what: str):
    """argparse type: a comma-separated list of items, each checked by item(text)."""

    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [item(p) for p in parts]

    return parse


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"tolerance {value} is not in (0, 1)")
    return value


#: --sde: each with its default parameters
_SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "cosine": CosineVPSDE, "geometric-ve": GeometricVESDE,
         "edm": EDMSDE}

_BENCH_HELP = """\
Time samplers against a target law: for each method and NFE budget, the wall time, the network
evaluations (NFE) and the distance of n samples from the law they should reproduce (sliced
Wasserstein-2, energy distance and, for analytic targets, a KL estimate), next to the same
distances for an independent draw of the law itself (the noise floor). Writes bench.md,
bench.json and bench.png into --out.

Analytic targets (exact score and density; they run on the reference backend "torch"):
  gmm2d        seed 003's 2-D mixture         mixture1d   seed 000's kind of 1-D mixture
  mixtureKd    fastscore.datasets.mixture(K), K = 2..16, e.g. mixture8d
A trained network: a model file (`fastscore train`, fastscore.save_model) or a file saved with
torch.save(model) (any module with a `dim`; it is unpickled, so load only files you trust), and
--data, the dataset of fastscore.datasets it was trained on.

Methods: fastscore.samplers.RULES (em, pc, ald, ode_euler, ode_heun, ...) take --nfe budgets
(steps = budget // evaluations per step); adaptive methods (ode_rk45, em_adaptive) take --tol.
Write method:grid for a grid other than the sampler's default (uniform, logsnr, karras).

examples:
  fastscore bench                                   # gmm2d, em / ode_euler / ode_heun, NFE 10..100
  fastscore bench --target mixture8d --methods em,ode_heun,dpmpp_2m:karras --nfe 10,20,50 --out b8
  fastscore bench --target ring.pt --data ring --backend cpu --n 20000

Needs POT and matplotlib: pip install "fastscore[bench]".
"""


def _add_bench(sub) -> argparse.ArgumentParser:
    bench = sub.add_parser("bench", help="time samplers against a target law: error vs NFE and time (md, json, png)",
                           description=_BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--target", default="gmm2d", help="an analytic target name or a torch-saved network file "
                       "(default: gmm2d)")
    bench.add_argument("--data", help="with a network file: the dataset of fastscore.datasets it should reproduce")
    bench.add_argument("--sde", choices=tuple(_SDES), default="vp", help="the SDE, with its default parameters "
                       "(default: vp, beta 0.1 to 20)")
    bench.add_argument("--methods", type=_list(str, "methods"), default=["em", "ode_euler", "ode_heun"],
                       help="comma-separated methods, each method or method:grid (default: em,ode_euler,ode_heun)")
    bench.add_argument("--nfe", type=_list(_count(1), "NFE budgets"), default=[10, 20, 50, 100],
                       help="NFE budgets of the fixed-step methods (default: 10,20,50,100)")
    bench.add_argument("--tol", type=_list(_tolerance, "tolerances"), default=[1e-2, 1e-3, 1e-4],
                       help="rtol = atol of the adaptive methods (default: 1e-2,1e-3,1e-4)")
    bench.add_argument("--n", type=_count(2), default=10_000, help="samples per cell (default: 10000)")
    bench.add_argument("--rounds", type=_count(1), default=3, help="timed calls per cell after a warm-up (default: 3)")
    bench.add_argument("--seed", type=_count(0), default=0, help="the sampler's seed, the same for every cell")
    bench.add_argument("--eps", type=float, default=1e-3, help="end time of sampling (default: 1e-3)")
    bench.add_argument("--denoise", action="store_true", help="finish with the Tweedie step; the law is then the "
                       "target itself, not the target at eps")
    bench.add_argument("--backend", help="for a network: auto (default), cpu, numba, cuda or torch; analytic "
                       "targets run on torch")
    bench.add_argument("--likelihood-points", type=_count(0), default=256,
                       help="points of the PF-ODE likelihood check, analytic targets (0 skips it; default: 256)")
    bench.add_argument("--projections", type=_count(1), default=256, help="directions of the sliced Wasserstein "
                       "distance (default: 256)")
    bench.add_argument("--out", default="bench_out", help="folder for bench.md, bench.json, bench.png "
                       "(default: bench_out)")
    return bench


_TRAIN_HELP = """\
Train a ScoreMLP by denoising score matching on your data and write a model file (weights, SDE
and network description; load it in Python with fastscore.load_model(path), no training code
needed).

DATA: a .npy array [n, dim], or a .csv of n rows and dim numeric columns (one header line is
skipped). Training shows a progress bar.

examples:
  fastscore train points.npy --out model.fsm                       # VP SDE, 5 x 64 ReLU, 8000 steps
  fastscore train points.csv --out model.fsm --sde ve --width 128 --depth 4 --activation silu
"""

_SAMPLE_HELP = """\
Draw samples from a model file and write them to a .npy file (memory-mapped and written in
chunks, so n may exceed RAM; a progress bar shows on long runs; Ctrl-C stops it).

examples:
  fastscore sample model.fsm -n 1000000 --out samples.npy                    # em, 1000 steps
  fastscore sample model.fsm -n 100000 --method dpmpp_2m --steps 20 --out x.npy
  fastscore sample model.fsm -n 5000 --method ode_rk45 --tol 1e-4 --out x.npy
  fastscore sample cond_model.fsm -n 500 --cond obs.npy --out x.npy           # one row of cond per sample
"""

_LOGP_HELP = """\
Exact log-likelihoods (nats) of points under a model file, by the probability-flow ODE with the
exact trace. POINTS: .npy [n, dim] or .csv. Prints a summary; --out writes the values (.npy).

examples:
  fastscore logp model.fsm points.npy --out logp.npy
  fastscore logp model.fsm points.csv --method heun --steps 200
"""


def _read_points(path: str, parser: argparse.ArgumentParser, what: str):
    """A float array [n, d] from a .npy or .csv file, or a clean exit naming the problem."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        parser.error(f"{what} file {path!r} not found")
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            try:
                a = np.loadtxt(p, delimiter=",", ndmin=2)
            except ValueError:  # a header line
                a = np.loadtxt(p, delimiter=",", ndmin=2, skiprows=1)
        else:
            parser.error(f"{what} file {path!r}: expected .npy or .csv")
    except (ValueError, OSError) as err:
        parser.error(f"cannot read {what} file {path!r}: {err}")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        parser.error(f"{what} file {path!r} must hold finite numbers [n, d], got {a.dtype} {a.shape}")
    return a


def _load_model_file(path: str, parser: argparse.ArgumentParser):
    from .modelfile import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as err:
        parser.error(str(err))


def _run_train(args, parser) -> int:
    import numpy as np
    import torch

    from .modelfile import save_model
    from .nn import ScoreMLP
    from .train import train

    data = torch.from_numpy(np.ascontiguousarray(_read_points(args.data, parser, "data"), dtype=np.float32))
    if data.shape[0] < 2:
        parser.error("data needs at least 2 rows")
    if Path(args.out).suffix in (".npy", ".csv"):
        parser.error(f"--out {args.out!r} would overwrite a data file; model files are usually named *.fsm")
    torch.manual_seed(args.seed)
    try:
        sde = _SDES[args.sde]()
        model = ScoreMLP(data.shape[1], args.width, args.depth, args.activation, args.time_embedding)
        history = train(model, sde, data, steps=args.steps, batch_size=min(args.batch_size, data.shape[0]),
                        lr=args.lr, seed=args.seed)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    settings = {k: getattr(args, k) for k in ("data", "steps", "batch_size", "lr", "seed")}
    save_model(args.out, model, sde, meta={"trained": settings, "final_loss": float(np.mean(history[-100:]))})
    print(f"wrote {args.out}: ScoreMLP {data.shape[1]}-D, {args.depth} x {args.width} {args.activation}, "
          f"{type(sde).__name__}; final loss {np.mean(history[-100:]):.4g}")
    return 0


def _run_sample(args, parser) -> int:
    import numpy as np

    from .sampling import sample

    model, sde = _load_model_file(args.model, parser)
    if Path(args.out).suffix != ".npy":
        parser.error("--out must be a .npy path")
    cond = None if args.cond is None else _read_points(args.cond, parser, "cond")
    options = {"rtol": args.tol, "atol": args.tol} if args.tol is not None else {}
    if args.grid:
        options["grid"] = args.grid
    try:
        sample(model, sde, args.n, args.method, args.steps, backend=args.backend, seed=args.seed, cond=cond,
               out=args.out, progress=None if not args.quiet else False, **options)
    except (ValueError, TypeError, FloatingPointError) as err:
        parser.error(str(err))
    x = np.load(args.out, mmap_mode="r")
    print(f"wrote {args.out}: {x.shape[0]:,} samples of dim {x.shape[1]} ({args.method}, backend {args.backend})")
    return 0


def _run_logp(args, parser) -> int:
    import numpy as np
    import torch

    from .likelihood import log_prob

    model, sde = _load_model_file(args.model, parser)
    x = torch.from_numpy(np.ascontiguousarray(_read_points(args.points, parser, "points"), dtype=np.float32))
    cond = None if args.cond is None else _read_points(args.cond, parser, "cond")
    try:
        logp = log_prob(model, sde, x, args.method, args.steps, rtol=args.tol, atol=args.tol, backend=args.backend,
                        cond=cond, progress=None if not args.quiet else False).numpy()
    except (ValueError, TypeError, FloatingPointError) as err:
        parser.error(str(err))
    if args.out:
        np.save(args.out, logp)
    print(f"log p of {len(logp):,} points (nats): mean {logp.mean():.4f}, min {logp.min():.4f}, max {logp.max():.4f}"
          + (f"; wrote {args.out}" if args.out else ""))
    return 0


def _add_model_commands(sub) -> dict:
    from .samplers import RULES

    raw = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser("train", help="train a ScoreMLP on .npy / .csv data, write a model file",
                           description=_TRAIN_HELP, formatter_class=raw)
    train.add_argument("data", help="training data: .npy [n, dim] or .csv")
    train.add_argument("--out", required=True, help="the model file to write (e.g. model.fsm)")
    train.add_argument("--sde", choices=tuple(_SDES), default="vp", help="the SDE, default parameters (default: vp)")
    train.add_argument("--width", type=_count(1), default=64, help="hidden width (default: 64)")
    train.add_argument("--depth", type=_count(1), default=5, help="hidden layers (default: 5)")
    train.add_argument("--activation", default="relu", help="relu, tanh, silu, leaky_relu, softplus (default: relu)")
    train.add_argument("--time-embedding", default="concat", choices=("concat", "fourier"))
    train.add_argument("--steps", type=_count(1), default=8000, help="optimiser steps (default: 8000)")
    train.add_argument("--batch-size", type=_count(1), default=2000, help="(default: 2000)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    train.add_argument("--seed", type=_count(0), default=0)

    methods = ", ".join((*RULES, "ode_rk45", "em_adaptive"))
    smp = sub.add_parser("sample", help="draw samples from a model file into a .npy file", description=_SAMPLE_HELP,
                         formatter_class=raw)
    smp.add_argument("model", help="a model file written by `fastscore train` or fastscore.save_model")
    smp.add_argument("-n", type=_count(0), required=True, help="number of samples")
    smp.add_argument("--out", required=True, help="the .npy file to write")
    smp.add_argument("--method", default="em", help=f"one of {methods} (default: em)")
    smp.add_argument("--steps", type=_count(1), default=1000, help="steps of a fixed-step method (default: 1000)")
    smp.add_argument("--grid", choices=("uniform", "logsnr", "karras"), help="time grid (default: the method's)")
    smp.add_argument("--tol", type=_tolerance, help="rtol = atol of an adaptive method")
    smp.add_argument("--cond", help="a conditional model's conditions: .npy / .csv, one row per sample or one row")
    smp.add_argument("--seed", type=_count(0), default=0)
    smp.add_argument("--backend", default="auto", help="auto, cpu, numba, cuda or torch (default: auto)")
    smp.add_argument("--quiet", action="store_true", help="no progress bar")

    logp = sub.add_parser("logp", help="exact log-likelihoods of points under a model file",
                          description=_LOGP_HELP, formatter_class=raw)
    logp.add_argument("model", help="a model file")
    logp.add_argument("points", help="points: .npy [n, dim] or .csv")
    logp.add_argument("--method", default="rk45", choices=("euler", "heun", "rk4", "rk45"), help="(default: rk45)")
    logp.add_argument("--steps", type=_count(1), default=100, help="steps of a fixed-step method (default: 100)")
    logp.add_argument("--tol", type=_tolerance, default=1e-5, help="rtol = atol of rk45 (default: 1e-5)")
    logp.add_argument("--cond", help="a conditional model's conditions, one row per point or one row")
    logp.add_argument("--out", help="write the values to this .npy file")
    logp.add_argument("--backend", default="auto", help="auto, cpu, numba, cuda or torch (default: auto)")
    logp.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"train": (train, _run_train), "sample": (smp, _run_sample), "logp": (logp, _run_logp)}


def _load_network(path: Path, parser: argparse.ArgumentParser):
    import torch

    from .modelfile import ModelFileError, load_model

    try:
        return load_model(path)[0]  # a fastscore model file: plain data, validated
    except ModelFileError:
        pass

    try:
        model = torch.load(path, weights_only=False, map_location="cpu")  # a whole module: the user's own file
    except Exception as err:  # any unpickling failure is the file's, and the user's to fix
        parser.error(f"cannot load the network {str(path)!r}: {err}")
    if not isinstance(model, torch.nn.Module):
        parser.error(f"{str(path)!r} holds a {type(model).__name__}, not a network: save it with torch.save(model)")
    return model.eval()


def _run_bench(args, parser: argparse.ArgumentParser) -> int:
    from .datasets import DATASETS
    from .solver_bench import configure, run

    target, reference = args.target, None
    if Path(target).suffix in (".pt", ".pth") or Path(target).exists():  # a file, not a target name
        if not Path(target).is_file():
            parser.error(f"network file {target!r} not found")
        if args.data not in DATASETS:
            parser.error(f"a network needs --data, the dataset it should reproduce: one of {', '.join(DATASETS)}")
        target = _load_network(Path(target), parser)
        # numpy's generator, unrelated to the sampler's Philox stream of the same seed
        reference = DATASETS[args.data](2 * args.n, seed=args.seed)
    elif args.data is not None:
        parser.error("--data is for a network file; an analytic target draws from its exact law")
    try:
        config = configure(target, _SDES[args.sde](), args.methods, args.nfe, args.tol, n=args.n, backend=args.backend,
                           seed=args.seed, eps=args.eps, denoise=args.denoise, rounds=args.rounds, reference=reference,
                           projections=args.projections, likelihood_points=args.likelihood_points)
    except ImportError as err:
        parser.exit(2, f"fastscore bench: {err}\n")
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    result = run(config, progress=print)
    files = result.write(args.out)
    print()
    print(files["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastscore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a ring model (the seed-002 network), sample it fast, write a PNG")
    demo.add_argument("--out", default=".", help="folder for fastscore_demo.png (default: .)")
    demo.add_argument("--train-steps", type=_count(1), default=8000)
    demo.add_argument("--batch-size", type=_count(1), default=2000)
    demo.add_argument("--n", type=_count(1), default=100_000, help="samples to draw")
    demo.add_argument("--steps", type=_count(1), default=500, help="Euler–Maruyama steps")
    demo.add_argument("--seed", type=_count(0), default=0)
    demo.add_argument("--no-reference", action="store_true", help="skip timing the reference backend")
    sub.add_parser("backends", help="print what each backend can do here")
    bench = _add_bench(sub)
    model_commands = _add_model_commands(sub)
    args = parser.parse_args(argv)

    if args.command == "bench":
        return _run_bench(args, bench)
    if args.command in model_commands:
        command, run = model_commands[args.command]
        return run(args, command)
    if args.command == "backends":
        from .backends import backends

        print(json.dumps(backends(), indent=2))
        return 0
    from .demo import run

    run(args.out, args.train_steps, args.batch_size, args.n, args.steps, args.seed, not args.no_reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
