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
A trained network: a file saved with torch.save(model) (a whole ScoreMLP or any module with a
`dim`; it is unpickled, so load only files you trust) and --data, the dataset it was trained on.

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


def _load_network(path: Path, parser: argparse.ArgumentParser):
    import torch

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
    args = parser.parse_args(argv)

    if args.command == "bench":
        return _run_bench(args, bench)
    if args.command == "backends":
        from .backends import backends

        print(json.dumps(backends(), indent=2))
        return 0
    from .demo import run

    run(args.out, args.train_steps, args.batch_size, args.n, args.steps, args.seed, not args.no_reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
