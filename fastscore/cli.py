"""The ``fastscore`` console script."""

from __future__ import annotations

import argparse
import json


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
    args = parser.parse_args(argv)

    if args.command == "backends":
        from .backends import backends

        print(json.dumps(backends(), indent=2))
        return 0
    from .demo import run

    run(args.out, args.train_steps, args.batch_size, args.n, args.steps, args.seed, not args.no_reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
