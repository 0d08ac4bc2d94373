import numpy as np
import pytest
import torch

from fscal_edu.data.features import FeatureMeta, seconds_to_index
from fscal_edu.evaluation import evaluate_detection
from fscal_edu.postprocess import nms_1d, predictions_to_results, soft_nms_1d, to_seconds
from fscal_edu.proposals import make_anchors, tiou
from fscal_edu.utils import FscalError


def scored_anchors(seed=0, T=64):
    a = make_anchors(T, lengths=(4, 8, 16))
    g = torch.Generator().manual_seed(seed)
    return a, torch.rand(len(a), generator=g)


def test_nms_invariants():
    segs, scores = scored_anchors()
    for thr in (0.1, 0.3, 0.5, 0.7):
        keep = nms_1d(segs, scores, iou_threshold=thr)
        assert keep.dtype == torch.long
        assert (scores[keep][1:] <= scores[keep][:-1]).all()              # score order
        assert keep[0] == scores.argmax()
        iou = tiou(segs[keep], segs[keep])
        assert (iou.triu(1) <= thr).all()                                 # kept ones overlap little
        # every dropped segment overlaps a better kept one by more than the threshold
        dropped = torch.tensor(sorted(set(range(len(segs))) - set(keep.tolist())), dtype=torch.long)
        assert (tiou(segs[dropped], segs[keep]) > thr).any(1).all()
    assert len(nms_1d(segs, scores, 0.5, top_k=3)) == 3


def test_nms_by_hand():
    segs = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms_1d(segs, scores, 0.5).tolist() == [0, 2, 3]               # [1, 11] has tIoU 9/11
    assert nms_1d(segs, scores, 0.4).tolist() == [0, 2]                  # [0, 5] has tIoU 0.5


def test_soft_nms_with_tiny_sigma_is_hard_nms():
    # on an integer grid every overlap is >= 1/(2*16), so exp(-iou^2 / 1e-6) kills it
    segs, scores = scored_anchors(seed=1, T=32)
    hard = nms_1d(segs, scores, iou_threshold=0.0)
    soft_segs, soft_scores = soft_nms_1d(segs, scores, sigma=1e-6, score_floor=1e-3, top_k=1000)
    assert torch.equal(soft_segs, segs[hard])
    assert torch.allclose(soft_scores, scores[hard])


def test_soft_nms_decay_order_and_limits():
    segs = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.5])
    out_segs, out_scores = soft_nms_1d(segs, scores, sigma=0.5)
    decayed = 0.8 * np.exp(-(9 / 11) ** 2 / 0.5)                          # 0.209: falls behind 0.5
    assert out_segs.tolist() == [[0, 10], [20, 30], [1, 11]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.5, decayed], rel=1e-5)
    assert len(soft_nms_1d(segs, scores, top_k=2)[0]) == 2
    assert len(soft_nms_1d(segs, scores, score_floor=0.3)[0]) == 2      # the decayed one is dropped
    many_segs, many_scores = scored_anchors(seed=2)
    _, s = soft_nms_1d(many_segs, many_scores, top_k=50)
    assert len(s) == 50 and (s[1:] <= s[:-1]).all()


def test_postprocess_bad_inputs():
    segs = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    with pytest.raises(FscalError, match="score"):
        nms_1d(segs, torch.tensor([0.5, float("nan")]))
    with pytest.raises(FscalError, match="inverted"):
        soft_nms_1d(torch.tensor([[0.0, 1.0], [3.0, 2.0]]), torch.tensor([0.5, 0.4]))
    with pytest.raises(FscalError, match="sigma"):
        soft_nms_1d(segs, torch.tensor([0.5, 0.4]), sigma=0)
    with pytest.raises(FscalError, match="shape|scores"):
        nms_1d(segs, torch.tensor([0.5]))


def test_to_seconds_resized_and_strided():
    got = to_seconds(torch.tensor([[0.0, 64.0], [-3.0, 140.0]]), duration=90.0, num_snippets=128)
    assert isinstance(got, np.ndarray) and got.tolist() == [[0.0, 45.0], [0.0, 90.0]]   # clipped
    meta = FeatureMeta(feature_dim=8, fps=30.0, feat_stride=4, num_frames=16)
    seconds = np.array([[3.0, 7.5]])
    idx = seconds_to_index(seconds, duration=20.0, num_snippets=100, meta=meta, feat_len=150)
    back = to_seconds(idx, duration=20.0, num_snippets=100, meta=meta, feat_len=150)
    np.testing.assert_allclose(back, seconds)


def test_predictions_to_results_is_scorable():
    res = predictions_to_results({"ep1": (np.array([[1.0, 2.0], [5.0, 9.0]]), torch.tensor([0.9, 0.4]))})
    assert res["results"]["ep1"][0] == {"label": "common", "score": pytest.approx(0.9), "segment": [1.0, 2.0]}
    gt = {"database": {"ep1": {"annotations": [{"label": "common", "segment": [5.0, 9.0]}]}}}
    assert evaluate_detection(gt, res)["mAP@0.5"] == pytest.approx(0.5)   # FP first, then TP


# --- figure and widget (notebook 02) ------------------------------------------------------------

def test_nms_figure_and_explorer():
    from fscal_edu.viz.proposals import nms_figure
    from fscal_edu.widgets import nms_explorer
    segs = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.5])
    keep = nms_1d(segs, scores, 0.5)
    fig = nms_figure(segs, scores, keep, *soft_nms_1d(segs, scores), gt=[[0.0, 10.0]], iou_threshold=0.5, sigma=0.5)
    assert [t.name for t in fig.data] == ["proposals (score)"] * 2 + ["kept by hard NMS", "Soft-NMS (new score)"]
    assert np.nanmax(np.asarray(fig.data[2].x, float)) == 30 and len(fig.data[3].x) == 9   # 2 kept, 3 soft
    assert "2 kept" in fig.layout.annotations[0].text and "sigma 0.5" in fig.layout.annotations[1].text
    ui = nms_explorer(segs, scores)
    assert [c.description for c in ui.children[:3]] == ["NMS tIoU", "sigma", "top k"]
