"""Figures, widgets and exercise checkers of notebooks 06 (relation classifier) and 07 (training)."""
import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F

from fscal_edu import exercises as ex
from fscal_edu.config import get_config
from fscal_edu.evaluation import detection_verdicts
from fscal_edu.losses import balanced_bce
from fscal_edu.model import FSCAL, count_parameters
from fscal_edu.proposals import assign_labels, make_anchors
from fscal_edu.train import lr_factor
from fscal_edu.viz.training import (
    detections_timeline_figure, label_assignment_figure,
    loss_curve_figure, loss_terms_figure, lr_schedule_figure, metrics_by_tiou_figure, model_diagram_figure,
    model_edges, model_nodes, parameter_counts, parameters_figure, relation_scores_figure, relation_timeline_figure, run_curves_figure,
)
from fscal_edu.widgets import detections_browser, label_assignment_explorer, live_loss_plot

from conftest import DATA

# ---------------------------------------------------------------------------------------------
# A tiny world: one query with the common class, its twin and another class
# ---------------------------------------------------------------------------------------------

ANNOTATIONS = {
    "taxonomy": [{"nodeName": "jump_a", "twin": "jump_b"}, {"nodeName": "jump_b", "twin": "jump_a"},
                 {"nodeName": "run", "twin": "walk"}],
    "database": {"q": {"duration": 100.0, "annotations": [
        {"label": "jump_a", "segment": [10.0, 30.0]}, {"label": "jump_b", "segment": [50.0, 70.0]},
        {"label": "run", "segment": [80.0, 90.0]}]}}}
EPISODE = {"id": "e0", "label": "jump_a", "query": "q", "support": []}
DETECTIONS = [{"segment": [11.0, 29.0], "score": 0.9},     # hit
              {"segment": [52.0, 70.0], "score": 0.8},     # the twin
              {"segment": [0.0, 5.0], "score": 0.7},       # nothing
              {"segment": [30.0, 60.0], "score": 0.1}]


def records(n=20, val_every=10, rel=True):
    out = []
    for i in range(n):
        r = {"step": i + 1, "lr": 1e-3, "loss": 1.0 / (i + 1), "cls": 0.5, "reg": 0.1}
        if rel:
            r["rel"] = 0.3
        if (i + 1) % val_every == 0:
            r["val_mAP@0.5"] = 0.1 * (i + 1) / val_every
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# Notebook 06 figures
# ---------------------------------------------------------------------------------------------

def test_label_assignment_figure_counts_each_label():
    anchors = make_anchors(32, (4, 8, 16))
    gt = torch.tensor([[[3.0, 11.0], [20.0, 22.0]]])
    labels, _, best = assign_labels(anchors, gt, torch.ones(1, 2, dtype=torch.bool))
    fig = label_assignment_figure(anchors, labels[0], best[0], gt=gt[0], others=[[12.0, 18.0]])
    names = [t.name for t in fig.data]
    for lab, word in ((1, "positive"), (-1, "ignored"), (0, "negative")):
        n = int((labels == lab).sum())
        assert f"{word} ({n})" in names
        trace = fig.data[names.index(f"{word} ({n})")]
        assert np.sum(~np.isnan(np.asarray(trace.y, float))) == 2 * n          # two points per anchor
    assert len(fig.layout.shapes) == 2 + 1 + 2            # gt boxes, the other instance, two thresholds
    assert "positives" in fig.layout.title.text


def test_relation_scores_figure_normalises_each_group():
    fig = relation_scores_figure({"own": [0.9, 0.95, 0.7, 0.1], "other": [0.2, 0.25], "none": []}, bins=10)
    assert [t.name for t in fig.data] == ["own (n = 4, mean 0.662)", "other (n = 2, mean 0.225)", "none (n = 0)"]
    assert sum(fig.data[0].y) == pytest.approx(1.0) and sum(fig.data[2].y) == 0
    assert len(fig.data[0].x) == 10 and fig.data[1].y[2] == pytest.approx(1.0)     # both in [0.2, 0.3)


def test_relation_scores_figure_in_columns():
    groups = {"untrained": {"own": [0.5, 0.52], "other": [0.49]},
              "trained": {"own": [0.9, 0.8, 0.1], "other": [0.05, 0.1], "background": [0.0]}}
    fig = relation_scores_figure(groups, bins=10)
    assert len(fig.data) == 3 * 2                                    # every group in every column
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["untrained: own (n = 2, mean 0.510)", "trained: own (n = 3, mean 0.600)"]
    assert "untrained: background (n = 0)" in titles
    assert sum(fig.data[1].y) == pytest.approx(1.0, abs=1e-3) and sum(fig.data[4].y) == 0


def test_relation_timeline_figure_one_row_per_model():
    anchors = make_anchors(32, (4, 8, 16))
    gt = torch.tensor([[[3.0, 11.0]]])
    labels = assign_labels(anchors, gt, torch.ones(1, 1, dtype=torch.bool))[0][0]
    n = len(anchors)
    fig = relation_timeline_figure(anchors, {"untrained": np.full(n, 0.5), "trained": np.linspace(0, 1, n)},
                                   labels, gt=gt[0], others=[[20.0, 24.0]])
    assert len(fig.data) == 2 * 3 and [a.text for a in fig.layout.annotations] == ["untrained", "trained"]
    assert sum(t.showlegend for t in fig.data) == 3                  # one legend entry per label
    pos = [t for t in fig.data if t.name.startswith("positive")]
    assert np.nanmax(np.asarray(pos[0].y, float)) == pytest.approx(0.5)
    assert len(fig.layout.shapes) == 2 * 2                           # gt and the other instance, per row


def test_loss_terms_figure_adds_up_to_the_loss():
    fig = loss_terms_figure({"cls": 0.5, "reg": 0.1, "rel": 0.6, "loss": 0.9}, lambda_reg=1.0, lambda_rel=0.5)
    w = fig.data[0]
    assert list(w.x) == ["L_cls", "1 x L_reg", "0.5 x L_rel", "L"] and w.measure[-1] == "total"
    assert sum(w.y[:-1]) == pytest.approx(w.y[-1])
    blind = loss_terms_figure({"cls": 0.5, "reg": 0.1, "loss": 0.6})
    assert list(blind.data[0].x) == ["L_cls", "1 x L_reg", "L"]


def test_parameter_counts_cover_the_model():
    full, blind = FSCAL(get_config("tiny")), FSCAL(get_config("tiny", ablate="blind"))
    counts = parameter_counts(full)
    assert sum(counts.values()) == count_parameters(full)
    assert {"embed", "proposal_mlp", "qtos", "dynamics", "stoq", "head"} <= set(counts)
    b = parameter_counts(blind)
    assert sum(b.values()) == count_parameters(blind) and "blind_s" in b and "qtos" not in b
    fig = parameters_figure({"full": full, "blind": blind})
    assert fig.data[0].name == f"full ({count_parameters(full):,} in all)" and len(fig.data) == 2


def test_parameter_counts_split_a_part():
    model = FSCAL(get_config("tiny"))
    counts = parameter_counts(model, split=("head",))
    assert sum(counts.values()) == count_parameters(model) and "head" not in counts
    assert {"head.cls", "head.reg", "head.g"} <= set(counts)
    assert counts["head.cls"] == count_parameters(model.head.cls)


def test_model_diagram_figure_draws_every_node_and_edge():
    shapes = {"query": "(1, 128, 64)", "stoq": "X~_Q (1, 361, 64)"}
    fig = model_diagram_figure(shapes, {"embed": 1234})
    assert len(fig.layout.shapes) == len(model_nodes())
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == len(model_edges())
    texts = {a.name: a.text for a in fig.layout.annotations if not a.showarrow}
    assert set(texts) == set(model_nodes())
    assert "(1, 128, 64)" in texts["query"] and "X~_Q (1, 361, 64)" in texts["stoq"]
    assert "1,234 parameters" in texts["embed"] and "parameters" not in texts["qtos"]
    dashed = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(dashed) == 1                                          # the training-only relation module
    with pytest.raises(ValueError, match="unknown node"):
        model_diagram_figure({"decoder": "(1,)"})


def test_model_diagram_places_the_stages_by_the_registry():
    nodes, edges = model_nodes(), model_edges()
    # stage 1 and 2 rewrite the supports (bottom row), stage 3 the proposals (top row), in that order
    assert [nodes[n][:2] for n in ("qtos", "dynamics", "stoq")] == [(3.75, 0.0), (5.0, 0.0), (6.25, 2.0)]
    assert "stage 2<br>Dynamics-CA" == nodes["dynamics"][2]
    assert set(edges) >= {("embed", "qtos"), ("proposals", "qtos"), ("qtos", "dynamics"), ("dynamics", "stoq"),
                          ("proposals", "stoq"), ("dynamics", "summary"), ("stoq", "head"), ("stoq", "relation")}
    assert len(edges) == 13 and nodes["summary"][0] == nodes["stoq"][0] < nodes["head"][0]


# ---------------------------------------------------------------------------------------------
# Notebook 07 figures
# ---------------------------------------------------------------------------------------------

def test_loss_curve_figure_smooths_and_shows_validation():
    fig = loss_curve_figure(records(20), smooth=5)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["loss", "cls", "reg", "rel", "val mAP@0.5"]
    assert len(by_name["loss"].x) == 16 and by_name["loss"].x[0] == 5
    assert by_name["loss"].y[0] == pytest.approx(np.mean([1 / k for k in range(1, 6)]), abs=1e-4)
    assert list(by_name["val mAP@0.5"].x) == [10, 20] and by_name["val mAP@0.5"].yaxis == "y2"
    assert "mean over 5 steps" in fig.layout.title.text
    blind = loss_curve_figure(records(6, rel=False))
    assert [t.name for t in blind.data] == ["loss", "cls", "reg", "val mAP@0.5"]
    empty = loss_curve_figure([])
    assert len(empty.data) == 5 and all(len(t.x) == 0 for t in empty.data)


def test_run_curves_figure_smooths_thins_and_compares():
    fig = run_curves_figure({"full": records(40), "blind": records(40, rel=False)}, key="cls", smooth=5,
                            every=10, chance=math.log(2))
    names = [t.name for t in fig.data]
    assert names == ["full", "full: val mAP@0.5", "blind", "blind: val mAP@0.5"]
    full = fig.data[0]
    assert list(full.x) == [5, 15, 25, 35, 40]                       # every 10th smoothed step and the last
    assert list(fig.data[1].x) == [10, 20, 30, 40] and fig.data[1].xaxis == "x2"
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].y0 == pytest.approx(math.log(2))
    assert "mean over 5 steps" in fig.layout.annotations[0].text


def test_shipped_runs_follow_the_shipped_recipe():
    """data_samples/checkpoints/runs: the quick preset, seed 0, one record per step, a summary
    whose best step is the best validation of its log (notebook 07 plots them)."""
    from fscal_edu.config import Config
    for name, ablate in (("full", ()), ("blind", "blind")):
        run = DATA / "checkpoints" / "runs" / name
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == 0 and config["threads"] == 1 and config["preset"] == "quick"
        want = get_config("quick", ablate=ablate).to_dict()
        assert Config.from_dict({k: config[k] for k in want}).to_dict() == want
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, 701))
        val = {r["step"]: r["val_mAP@0.5"] for r in log if "val_mAP@0.5" in r}
        summary = json.loads((run / "summary.json").read_text())
        assert summary["best_step"] == max(val, key=val.get)
        assert summary["train"]["best_val_mAP@0.5"] == pytest.approx(max(val.values()))
        assert 0 < summary["test_best"]["mAP@0.5"] < 1 and summary["test_best"]["shots"] == 5


def test_lr_schedule_figure_follows_lr_factor():
    cfg = get_config("tiny")
    fig = lr_schedule_figure({"tiny": cfg, "quick": get_config("quick")})
    tiny = fig.data[0]
    assert list(tiny.x) == list(range(1, cfg.optim.steps + 1))
    assert tiny.y[cfg.optim.warmup - 1] == pytest.approx(cfg.optim.lr)                        # warm-up ends at lr
    assert tiny.y[-1] == pytest.approx(cfg.optim.lr * lr_factor(cfg.optim.steps - 1, cfg))
    assert len(fig.data[1].x) <= 400


def test_metrics_by_tiou_figure():
    t = [0.5, 0.75, 0.95]
    m = {"mAP": [0.6, 0.3, 0.0], "average_mAP": 0.3, "tiou_thresholds": t,
         "per_class": {"mAP": [0.5, 0.2, 0.0], "average_mAP": 0.2333}}
    fig = metrics_by_tiou_figure({"full": m})
    assert fig.data[0].name == "full (average 0.300)" and list(fig.data[0].y) == [0.6, 0.3, 0.0]
    assert metrics_by_tiou_figure({"full": m}, per_class=True).data[0].name == "full (average 0.233)"


def test_detection_verdicts():
    v = detection_verdicts(EPISODE, ANNOTATIONS, DETECTIONS)
    assert [k for k, _ in v] == ["hit", "jump_b", "miss", "miss"]
    assert v[0][1] == pytest.approx(18 / 20) and v[1][1] == pytest.approx(18 / 20)


def test_detections_timeline_figure_rows_and_colours():
    fig = detections_timeline_figure(EPISODE, ANNOTATIONS, {"full": DETECTIONS, "blind": DETECTIONS[1:]}, top=2)
    rows = list(fig.layout.yaxis.categoryarray)
    assert rows == ["blind #2", "blind #1", "full #2", "full #1", "ground truth"]
    texts = {t.y[0]: t.text[0] for t in fig.data if t.name.startswith("detection")}
    assert texts == {"full #1": "0.90 hit (0.90)", "full #2": "0.80 twin", "blind #1": "0.80 twin",
                     "blind #2": "0.70 miss"}
    others = next(t for t in fig.data if t.name == "other classes")
    assert list(others.text) == ["twin", "run"]
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend.count("detection: on a distractor") == 1            # one legend entry per kind


# ---------------------------------------------------------------------------------------------
# Widgets
# ---------------------------------------------------------------------------------------------

def test_label_assignment_explorer_redraws():
    anchors = make_anchors(32, (4, 8, 16))
    box = label_assignment_explorer(anchors, [[3.0, 11.0]])
    sliders = box.children[:-1]
    assert [s.description for s in sliders] == ["pos_iou", "neg_iou"]
    sliders[0].value = 0.8                                           # must not raise


def test_live_loss_plot_collects_records():
    widget, callback = live_loss_plot(every=3)
    for r in records(7):
        callback(r)
    assert len(callback.records) == 7 and callback.records[-1]["step"] == 7
    assert widget is not None


def test_detections_browser():
    preds = {"full": {"results": {"e0": DETECTIONS}}}
    box = detections_browser(type("W", (), {"annotations": ANNOTATIONS})(), [EPISODE], preds)
    assert box.children[0].description == "episode"


# ---------------------------------------------------------------------------------------------
# Checkers: the right answer passes, wrong ones fail
# ---------------------------------------------------------------------------------------------

def test_check_balanced_bce():
    assert ex.check_balanced_bce(balanced_bce)
    assert not ex.check_balanced_bce(lambda l, t, v: F.binary_cross_entropy_with_logits(l[v], t[v]))
    # positives and negatives balanced, but ignoring `valid`
    assert not ex.check_balanced_bce(lambda l, t, v: balanced_bce(l, t, torch.ones_like(v)))


def relation_targets(labels, episode_label):
    other = torch.roll(torch.arange(len(episode_label)), 1)
    own = torch.where(labels >= 0, (labels == 1).float(), -1.0)
    return own, (labels == 1) & (episode_label != episode_label[other])[:, None]


@pytest.mark.parametrize("wrong", [
    lambda l, y: (relation_targets(l, y)[0], l == 1),                         # same class counted as negative
    lambda l, y: ((l == 1).float(), relation_targets(l, y)[1]),               # ignored proposals as negatives
    lambda l, y: (relation_targets(l, y)[0], torch.zeros_like(l, dtype=torch.bool)),   # no cross negatives
])
def test_check_relation_targets_fails_wrong_targets(wrong):
    assert not ex.check_relation_targets(wrong)


def test_check_relation_targets_passes_the_right_ones():
    assert ex.check_relation_targets(relation_targets)


def test_check_lr_factor():
    assert ex.check_lr_factor(lr_factor)
    assert not ex.check_lr_factor(lambda s, cfg: 0.5 * (1 + math.cos(math.pi * s / cfg.optim.steps)))   # no warm-up
    assert not ex.check_lr_factor(lambda s, cfg: min(1.0, (s + 1) / cfg.optim.warmup) if cfg.optim.warmup else 1.0)


def test_check_winner():
    preds = {"full": {"results": {"e0": DETECTIONS[:1]}}, "blind": {"results": {"e0": DETECTIONS[1:]}}}
    assert ex.check_winner("full", EPISODE, ANNOTATIONS, preds)
    assert not ex.check_winner("blind", EPISODE, ANNOTATIONS, preds)
    same = {"a": preds["full"], "b": preds["full"]}
    assert ex.episode_winner(EPISODE, ANNOTATIONS, same)[0] == "tie"
    assert ex.check_winner("full", [EPISODE], ANNOTATIONS, preds)


# ---------------------------------------------------------------------------------------------
# The shipped checkpoint (skipped in a clone without it)
# ---------------------------------------------------------------------------------------------

def test_shipped_relation_module_separates_own_from_other_supports():
    path = DATA / "checkpoints" / "full.pt"
    if not path.is_file():
        pytest.skip("data_samples/checkpoints/full.pt is not there yet")
    from fscal_edu.data.episodes import World, collate, episode_tensors
    from fscal_edu.checkpoints import load_model
    model = load_model(path, device="cpu")
    world = World(DATA / "anet_like")
    eps = world.episodes("test", 5)[:8]
    batch = collate([episode_tensors(world, e, model.cfg.data.T, model.cfg.data.T_S) for e in eps])
    with torch.no_grad():
        out = model(batch["query"], batch["support"], relation=True)
        labels = assign_labels(out.anchors, batch["gt"], batch["gt_mask"])[0]
        other = torch.roll(torch.arange(len(eps)), 1)
        cross = (batch["label"] != batch["label"][other])[:, None] & (labels == 1)
        own = torch.sigmoid(out.relation)[labels == 1].mean()
        alien = torch.sigmoid(out.relation_cross)[cross].mean()
    assert own > alien + 0.1
