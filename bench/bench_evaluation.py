"""Time ``evaluate_detection`` on an ActivityNet-sized case and record it in docs/benchmarks.md.

The case: 5,000 videos of 200 classes (1-3 instances of one class each, ActivityNet-1.3's
validation has 4,926 videos and 7,654 instances), 100 predictions per video (the challenge's
limit; 70 of them carry the video's class, 30 a random one), 10 tIoU thresholds 0.5:0.05:0.95.
Timed: the whole call on parsed JSON dicts (flattening, ranking, matching, AP), best of 3.
For scale, the per-prediction loop of the official evaluator (its line-by-line port in
bench/_official.py) runs on the first 500 videos, and both must give the same numbers.

    python bench/bench_evaluation.py            # prints and updates docs/benchmarks.md
    python bench/bench_evaluation.py --no-write # prints only
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import DOC, ROOT, machine, replace_section
from _official import official_evaluate

from fscal_edu.evaluation import evaluate_detection
from fscal_edu.postprocess import results_json

SECTION = "## Evaluation speed"


def activitynet_sized(n_videos=5000, n_classes=200, per_video=100, seed=0):
    """Ground truth and predictions shaped like an ActivityNet-1.3 validation submission."""
    rng = np.random.default_rng(seed)
    database, results = {}, {}
    for v in range(n_videos):
        vid, cls, duration = f"v_{v:05d}", f"class_{rng.integers(n_classes):03d}", rng.uniform(30, 240)
        anns = []
        for _ in range(rng.integers(1, 4)):
            length = duration * rng.uniform(0.05, 0.6)
            start = rng.uniform(0, duration - length)
            anns.append({"label": cls, "segment": [start, start + length]})
        database[vid] = {"subset": "validation", "duration": duration, "annotations": anns}
        starts = rng.uniform(0, duration * 0.9, per_video)
        ends = np.minimum(starts + duration * rng.uniform(0.02, 0.7, per_video), duration)
        labels = np.where(rng.uniform(size=per_video) < 0.7, cls, [f"class_{c:03d}" for c in
                                                                  rng.integers(n_classes, size=per_video)])
        results[vid] = [{"label": str(lab), "score": float(sc), "segment": [float(s), float(e)]}
                        for lab, sc, s, e in zip(labels, rng.uniform(size=per_video), starts, ends)]
    return {"version": "bench", "taxonomy": [], "database": database}, results_json(results)


def reference_check(gt, pred, n_videos=500):
    """Time the official per-prediction loop and ours on the first ``n_videos``; same numbers."""
    keep = list(gt["database"])[:n_videos]
    gt = {"database": {v: gt["database"][v] for v in keep}}
    pred = {"results": {v: pred["results"][v] for v in keep}}
    classes = {a["label"] for v in gt["database"].values() for a in v["annotations"]}
    pred["results"] = {v: [r for r in lst if r["label"] in classes] for v, lst in pred["results"].items()}
    t0 = time.perf_counter()
    want = official_evaluate(gt, pred)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = evaluate_detection(gt, pred)
    t_ours = time.perf_counter() - t0
    same = np.array_equal(np.array(list(got["ap_per_class"].values())).T, want)
    n = sum(len(v) for v in pred["results"].values())
    return (f"On the first {n_videos} videos ({n} predictions), the official per-prediction loop "
            f"(its port in `bench/_official.py`) takes {t_ref:.1f} s and `evaluate_detection` "
            f"{t_ours:.3f} s; per-class APs identical: {same}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    here = machine()                              # measured before the timing starts
    gt, pred = activitynet_sized()
    n_pred = sum(len(v) for v in pred["results"].values())
    times, result = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = evaluate_detection(gt, pred)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"evaluate_detection: {len(gt['database'])} videos, {result['num_ground_truth']} instances, "
          f"{n_pred} predictions, {len(result['tiou_thresholds'])} thresholds: best {best:.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); average mAP {result['average_mAP']:.4f}")
    check = reference_check(gt, pred)
    print(check)
    if not args.no_write:
        replace_section(DOC, SECTION, (
            f"\n`evaluate_detection` (ActivityNet-exact mAP) on an ActivityNet-sized synthetic case: "
            f"{len(gt['database'])} videos, 200 classes, {result['num_ground_truth']} ground-truth "
            f"instances, {n_pred} predictions (100 per video), {len(result['tiou_thresholds'])} tIoU "
            f"thresholds. Whole call on parsed JSON, best of {args.repeats}: **{best:.2f} s** "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)}).\n\n{check}\n\n"
            f"Machine: {here}, numpy {np.__version__}.\n\n"
            f"Reproduce: `python bench/bench_evaluation.py`\n"))
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
