import json
import sys

import numpy as np
import pytest

from fscal_edu.cli import main as cli_main
from fscal_edu.evaluation import (evaluate_detection, evaluate_fscal, fscal_ground_truth, fscal_predictions,
                                  interpolated_ap, ranking_table)
from fscal_edu.utils import FscalError

from conftest import ROOT


# --- the official ActivityNet eval_detection.py, ported line by line (pandas removed): bench/_official.py,
# which bench/bench_evaluation.py times our evaluator against; here it is the reference for correctness
sys.path.insert(0, str(ROOT / "bench"))
from _official import official_evaluate  # noqa: E402


def random_case(seed, n_videos=25, n_classes=4, grid=True):
    """Small random files; on an integer grid with coarse scores there are many ties."""
    rng = np.random.default_rng(seed)

    def segment():
        s, w = (rng.integers(0, 20), rng.integers(1, 10)) if grid else (rng.uniform(0, 20), rng.uniform(0.5, 10))
        return [float(s), float(s + w)]

    database = {f"v{v}": {"subset": "validation" if v % 3 else "training",
                          "annotations": [{"label": f"c{rng.integers(n_classes)}", "segment": segment()}
                                          for _ in range(rng.integers(0, 4))]} for v in range(n_videos)}
    for c in range(n_classes):                        # every class occurs in both subsets
        database["v1"]["annotations"].append({"label": f"c{c}", "segment": segment()})
        database["v0"]["annotations"].append({"label": f"c{c}", "segment": segment()})
    results = {f"v{v}": [{"label": f"c{rng.integers(n_classes)}", "segment": segment(),
                          "score": float(rng.integers(0, 5) / 4 if grid else rng.uniform())}
                         for _ in range(rng.integers(0, 15))] for v in range(n_videos + 3)}
    return {"database": database}, {"results": results}


@pytest.mark.parametrize("seed", range(12))
def test_same_numbers_as_the_official_evaluator(seed):
    gt, pred = random_case(seed, grid=seed % 2 == 0)
    subset = "validation" if seed % 3 == 1 else None
    thr = np.linspace(0.5, 0.95, 10) if seed % 4 else np.array([0.1, 0.3, 0.5, 0.7])
    want = official_evaluate(gt, pred, thr, subset)
    got = evaluate_detection(gt, pred, tiou_thresholds=thr, subset=subset)
    assert np.array_equal(np.array(list(got["ap_per_class"].values())).T, want)      # bit for bit
    assert got["mAP"] == want.mean(axis=1).tolist()
    assert got["average_mAP"] == want.mean(axis=1).mean()


# --- hand-computed cases ------------------------------------------------------------------------

def files(gt: dict, preds: dict):
    """{video: [(label, start, end)]}, {video: [(label, score, start, end)]} -> the two JSON dicts."""
    return ({"database": {v: {"subset": "validation", "annotations": [{"label": l, "segment": [s, e]}
                                                                         for l, s, e in anns]}
                          for v, anns in gt.items()}},
            {"results": {v: [{"label": l, "score": sc, "segment": [s, e]} for l, sc, s, e in lst]
                         for v, lst in preds.items()}})


GT = {"v1": [("jump", 10.0, 20.0), ("jump", 40.0, 60.0)], "v2": [("jump", 5.0, 15.0)]}
FIVE = {"v1": [("jump", 0.9, 11.0, 21.0),      # tIoU 9/11 with [10, 20]: TP
               ("jump", 0.8, 12.0, 19.0),      # [10, 20] already taken: FP (a duplicate)
               ("jump", 0.6, 30.0, 50.0),      # tIoU 1/3 with [40, 60]: FP at 0.5
               ("jump", 0.5, 42.0, 61.0)],     # tIoU 18/21: TP
        "v2": [("jump", 0.7, 4.0, 16.0)]}      # tIoU 10/12: TP


def test_five_predictions_by_hand():
    # ranking TP FP TP FP TP: precision 1, 1/2, 2/3, 1/2, 3/5; recall 1/3, 1/3, 2/3, 2/3, 1
    # interpolated: 1, 2/3, 2/3, 3/5, 3/5 -> AP = (1 + 2/3 + 3/5) / 3
    out = evaluate_detection(*files(GT, FIVE), tiou_thresholds=[0.5])
    assert out["mAP@0.5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    table = ranking_table(*files(GT, FIVE), "jump", 0.5)
    assert table["tp"].tolist() == [True, False, True, False, True]
    assert table["precision"] == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    assert table["ap"] == out["mAP@0.5"]


def test_perfect_duplicates_empty_and_missing_classes():
    perfect = {v: [(l, 1.0, s, e) for l, s, e in anns] for v, anns in GT.items()}
    out = evaluate_detection(*files(GT, perfect))
    assert out["mAP"] == [1.0] * 10 and out["average_mAP"] == 1.0
    dup = {"v1": [("jump", 0.9, 10.0, 20.0), ("jump", 0.8, 10.0, 20.0), ("jump", 0.7, 40.0, 60.0)],
           "v2": [("jump", 0.6, 5.0, 15.0)]}
    # TP FP TP TP: precision 1, 1/2, 2/3, 3/4 -> AP = 1/3 + (3/4) * 2/3
    assert evaluate_detection(*files(GT, dup))["mAP@0.5"] == pytest.approx(1 / 3 + 0.75 * 2 / 3)
    assert evaluate_detection(*files(GT, {}))["average_mAP"] == 0.0
    assert evaluate_detection(*files(GT, {"v1": []}))["average_mAP"] == 0.0
    two_classes = {**GT, "v3": [("run", 0.0, 5.0)]}
    out = evaluate_detection(*files(two_classes, perfect))                # "run" has no prediction
    assert out["ap_per_class"]["run"] == [0.0] * 10 and out["average_mAP"] == 0.5


def test_predictions_in_videos_without_that_label_are_false_positives():
    gt = {**GT, "v3": [("run", 0.0, 5.0)]}
    preds = {"v3": [("jump", 0.95, 0.0, 5.0)], "v9": [("jump", 0.99, 1.0, 2.0)],
             "v1": [("jump", 0.5, 10.0, 20.0)]}
    table = ranking_table(*files(gt, preds), "jump")
    assert table["tp"].tolist() == [False, False, True] and table["n_gt"] == 3


def test_subset_keeps_only_its_videos():
    gt, pred = files(GT, FIVE)
    gt["database"]["v2"]["subset"] = "training"
    out = evaluate_detection(gt, pred, tiou_thresholds=[0.5], subset="validation")
    # v2's prediction becomes a false positive: TP FP FP FP TP over 2 instances
    assert out["num_ground_truth"] == 2 and out["mAP@0.5"] == pytest.approx(0.5 + 0.5 * 2 / 5)


def test_interpolated_ap_by_hand():
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 1 / 3)
    assert interpolated_ap(np.array([]), np.array([])) == 0.0


# --- bad inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda g, p: g.pop("database"), "'database'"),
    (lambda g, p: p.pop("results"), "'results'"),
    (lambda g, p: g["database"]["v1"].pop("annotations"), "video 'v1', field 'annotations'"),
    (lambda g, p: g["database"]["v2"]["annotations"][0].pop("segment"), "video 'v2', field 'segment'"),
    (lambda g, p: p["results"]["v1"][1].pop("score"), "video 'v1', field 'score'"),
    (lambda g, p: p["results"]["v2"][0].update(score=float("nan")), "video 'v2', field 'score'.*NaN"),
    (lambda g, p: p["results"]["v2"][0].update(score="high"), "video 'v2', field 'score'"),
    (lambda g, p: p["results"]["v1"][2].update(segment=[50.0, 30.0]), "video 'v1', field 'segment'.*inverted"),
    (lambda g, p: g["database"]["v1"]["annotations"][0].update(segment=[20.0, 10.0]), "inverted"),
    (lambda g, p: p["results"]["v1"][0].update(segment=[1.0]), "video 'v1', field 'segment'"),
    (lambda g, p: p["results"]["v2"][0].update(label="swim"), "video 'v2', field 'label'.*'swim'"),
])
def test_bad_inputs_raise_clear_errors(mutate, message):
    gt, pred = files(GT, FIVE)
    mutate(gt, pred)
    with pytest.raises(FscalError, match=message):
        evaluate_detection(gt, pred)


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "pred.json"
    bad.write_text("{not json")
    with pytest.raises(FscalError, match="pred.json"):
        evaluate_detection(files(GT, FIVE)[0], bad)


# --- FS-CAL protocol ----------------------------------------------------------------------------

ANNOTATIONS = {"database": {
    "q1": {"subset": "test", "duration": 100.0, "annotations": [{"label": "a", "segment": [10.0, 20.0]},
                                                                {"label": "b", "segment": [50.0, 60.0]}]},
    "q2": {"subset": "test", "duration": 100.0, "annotations": [{"label": "b", "segment": [30.0, 40.0]}]}}}
EPISODES = [{"id": "e1", "label": "a", "query": "q1", "support": []},
            {"id": "e2", "label": "b", "query": "q1", "support": []},
            {"id": "e3", "label": "b", "query": "q2", "support": []}]


def test_fscal_ground_truth_and_relabelled_predictions():
    gt = fscal_ground_truth(EPISODES, ANNOTATIONS)
    assert gt["database"]["e2"]["annotations"] == [{"label": "common", "segment": [50.0, 60.0]}]
    per_class = fscal_ground_truth({"episodes": EPISODES}, ANNOTATIONS, pooled=False)
    assert per_class["database"]["e1"]["annotations"] == [{"label": "a", "segment": [10.0, 20.0]}]
    res = {"results": {"e3": [{"label": "whatever", "score": 0.3, "segment": [30.0, 40.0]}]}}
    assert fscal_predictions(res, EPISODES, pooled=False)["results"]["e3"][0]["label"] == "b"
    assert fscal_predictions(res, EPISODES)["results"]["e3"][0]["label"] == "common"


def test_evaluate_fscal_pooled_and_per_class():
    # e1 and e3 perfect; e2 (class b) localises class a instead: the distractor, with top score
    res = {"results": {"e1": [{"label": "x", "score": 0.5, "segment": [10.0, 20.0]}],
                       "e2": [{"label": "x", "score": 0.9, "segment": [10.0, 20.0]}],
                       "e3": [{"label": "x", "score": 0.4, "segment": [30.0, 40.0]}]}}
    out = evaluate_fscal(EPISODES, ANNOTATIONS, res)
    # pooled ranking FP TP TP over 3 instances: AP = 2/3 * 2/3
    assert out["mAP@0.5"] == pytest.approx(4 / 9) and out["num_episodes"] == 3
    # per class: a -> 1; b: ranking FP TP over 2 instances -> 1/2 * 1/2
    assert out["per_class"]["ap_per_class"]["a"][0] == 1.0
    assert out["per_class"]["mAP@0.5"] == pytest.approx((1 + 0.25) / 2)
    assert len(out["mAP"]) == 10 and out["average_mAP"] == pytest.approx(4 / 9)


def test_fscal_bad_inputs():
    with pytest.raises(FscalError, match="no instance of its class"):
        fscal_ground_truth([{"id": "e", "label": "b", "query": "q1x", "support": []}],
                           {"database": {"q1x": {"annotations": []}}})
    with pytest.raises(FscalError, match="lack"):
        fscal_ground_truth([{"id": "e", "label": "b", "query": "nope"}], ANNOTATIONS)
    with pytest.raises(FscalError, match="twice"):
        fscal_ground_truth(EPISODES + EPISODES[:1], ANNOTATIONS)
    with pytest.raises(FscalError, match="not among"):
        fscal_predictions({"results": {"e9": []}}, EPISODES)


# --- CLI ----------------------------------------------------------------------------------------

def test_score_cli(tmp_path, capsys):
    gt, pred = files(GT, FIVE)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    assert cli_main(["score", str(tmp_path / "gt.json"), str(tmp_path / "pred.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["mAP@0.5"] == pytest.approx(evaluate_detection(gt, pred)["mAP@0.5"])
    assert len(last["mAP"]) == 10 and "0.50" in out[2]
    assert cli_main(["score", str(tmp_path / "gt.json"), str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


# --- figure and exercise (notebook 02) ----------------------------------------------------------

def test_pr_curve_figure():
    from fscal_edu.viz.proposals import pr_curve_figure
    t = ranking_table(*files(GT, FIVE), "jump")
    fig = pr_curve_figure(t["precision"], t["recall"])
    assert f"AP = {t['ap']:.4f}" in fig.layout.title.text
    assert list(fig.data[0].y) == [1.0, 1.0, 0.6667, 0.6667, 0.6, 0.6, 0.0]   # the envelope
    assert list(fig.data[1].y) == [1.0, 0.5, 0.6667, 0.5, 0.6]


def test_check_interpolated_ap_exercise():
    from fscal_edu.exercises import check_interpolated_ap
    assert check_interpolated_ap(interpolated_ap)
    # a classic slip: raw precision instead of the non-increasing envelope
    raw = lambda p, r: float(np.sum(np.diff(np.r_[0.0, r]) * p))  # noqa: E731
    assert not check_interpolated_ap(raw)
