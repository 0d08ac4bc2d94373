"""The ``fscal-edu`` command line: one argparse subcommand per job.

Each subcommand's work lives in the module that teaches it; this file only wires arguments.
"""
from __future__ import annotations

import argparse
import sys


def _generate(args):
    from .data.synthetic import main_generate
    return main_generate(args)


def _demo(args):
    from .demo import main_demo
    return main_demo(args)


def _score(args):
    from .evaluation import main_score
    return main_score(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fscal-edu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the synthetic feature world")
    g.add_argument("--profile", choices=["anet", "thumos"], default="anet")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_generate)

    d = sub.add_parser("demo", help="the main job: a tour of the shipped world and the model")
    d.add_argument("--data", default=None, help="world directory (default: the shipped anet_like)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    s = sub.add_parser("score", help="score an ActivityNet results JSON against ground truth")
    s.add_argument("ground_truth")
    s.add_argument("predictions")
    s.add_argument("--subset", default=None)
    s.set_defaults(func=_score)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except ValueError as e:  # FscalError and friends: a clear message, no traceback
        print(f"fscal-edu {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
