"""Test-split mAP of every shipped checkpoint (1 and 5 shots), as one JSON object.

    python bench/shipped_map.py [--compare BEFORE.json]

One thread, CPU: the numbers repeat exactly. ``--compare`` prints the largest absolute
difference with an earlier output of this script (a refactoring must not move them).
"""
from __future__ import annotations

import argparse
import json

from _common import ROOT

from fscal_edu.checkpoints import load_model
from fscal_edu.data.episodes import World
from fscal_edu.inference import evaluate_model
from fscal_edu.runtime import configure_process
from fscal_edu.utils import read_json


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", default=None, help="an earlier output of this script")
    args = p.parse_args(argv)
    configure_process(threads=1)
    world = World(ROOT / "data_samples" / "anet_like")
    out = {}
    for path in sorted((ROOT / "data_samples" / "checkpoints").rglob("*.pt")):
        model = load_model(path, device="cpu")
        for shots in (1, 5):
            metrics, _ = evaluate_model(model, world, "test", shots)
            out[f"{path.relative_to(ROOT)}:{shots}"] = [metrics["mAP@0.5"], metrics["average_mAP"]]
    print(json.dumps(out, indent=1))
    if args.compare:
        before = read_json(args.compare, "the earlier output")
        diff = max(abs(a - b) for k in before for a, b in zip(before[k], out[k]))
        print(f"max |after - before| over {len(before)} rows x 2 metrics: {diff:.3g}")


if __name__ == "__main__":
    main()
