"""The ``fscal-edu`` command line: one argparse subcommand per job.

Each subcommand's work lives in the module that teaches it; this file only wires arguments.
"""
from __future__ import annotations

import argparse
import sys

from .config import ABLATIONS, PRESETS
from .runtime import configure_process


def _generate(args):
    from .data.synthetic import main_generate
    return main_generate(args)


def _demo(args):
    from .demo import main_demo
    return main_demo(args)


def _train(args):
    from .train import main_train
    return main_train(args)


def _evaluate(args):
    from .inference import main_evaluate
    return main_evaluate(args)


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
    d.add_argument("--train", action="store_true", help="train from scratch even if checkpoints are shipped")
    d.add_argument("--out", default="runs/demo", help="where --train writes its runs")
    d.set_defaults(func=_demo)

    t = sub.add_parser("train", help="train the model on the base classes of a world")
    t.add_argument("--data", required=True, help="world directory (features, annotations, splits)")
    t.add_argument("--preset", choices=list(PRESETS), default="quick")
    t.add_argument("--shots", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="run directory for best.pt, last.pt, metrics.jsonl")
    t.add_argument("--ablate", choices=sorted(ABLATIONS), action="append", default=[],
                   help="switch a part off (repeatable)")
    t.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--resume", action="store_true", help="continue RUN/last.pt exactly")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint or a baseline on fixed episodes")
    e.add_argument("--data", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--baseline", choices=["prototype"])
    e.add_argument("--split", choices=["val", "test"], default="test")
    e.add_argument("--shots", type=int, default=5)
    e.add_argument("--out", default=None, help="write the predictions (ActivityNet results JSON)")
    e.add_argument("--device", default=None)
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("score", help="score an ActivityNet results JSON against ground truth")
    s.add_argument("ground_truth")
    s.add_argument("predictions")
    s.add_argument("--subset", default=None)
    s.set_defaults(func=_score)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    try:
        rc = args.func(args)
    except ValueError as e:  # FscalError and friends: a clear message, no traceback
        print(f"fscal-edu {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
