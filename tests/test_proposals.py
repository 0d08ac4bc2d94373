import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from einops import einsum, rearrange

from fscal_edu.proposals import (RoIAlign, assign_labels, average_recall, decode, encode, make_anchors,
                                 roi_align_1d, roi_align_mlp, roi_positions, tiou)
from fscal_edu.utils import FscalError


def random_segments(n, T=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g) * T
    w = torch.rand(n, generator=g) * T / 3 + 0.5
    return torch.stack([s, (s + w).clamp(max=T)], 1)


# --- anchors ------------------------------------------------------------------------------------

def test_anchors_default_count_inside_and_order():
    a = make_anchors(128)
    assert a.dtype == torch.float32 and a.shape == (361, 2)
    assert (a[:, 0] >= 0).all() and (a[:, 1] <= 128).all()
    lengths = a[:, 1] - a[:, 0]
    assert (lengths[1:] >= lengths[:-1]).all()                         # by length ...
    for L in lengths.unique():
        starts = a[lengths == L, 0]
        assert (starts[1:] > starts[:-1]).all()                          # ... then by start
        assert torch.allclose(starts[1:] - starts[:-1], starts.new_tensor(max(1, round(L.item() / 4))))


def test_anchors_skip_lengths_longer_than_query_and_reject_nonsense():
    a = make_anchors(10, lengths=(4, 16), stride_frac=0.5)
    assert a.tolist() == [[0, 4], [2, 6], [4, 8], [6, 10]]
    with pytest.raises(FscalError, match="T"):
        make_anchors(0)
    with pytest.raises(FscalError, match="fits"):
        make_anchors(3, lengths=(4, 8))


# --- tIoU ---------------------------------------------------------------------------------------

def test_tiou_properties():
    a, b = random_segments(20, seed=1), random_segments(30, seed=2)
    ab = tiou(a, b)
    assert ab.shape == (20, 30)
    assert torch.allclose(ab, tiou(b, a).T)                              # symmetry
    assert (ab >= 0).all() and (ab <= 1).all()                           # bounds
    assert torch.allclose(torch.diagonal(tiou(a, a)), torch.ones(20))    # identical -> 1
    disjoint = torch.tensor([[0.0, 1.0], [5.0, 6.0]])
    assert tiou(disjoint, torch.tensor([[2.0, 4.0], [1.0, 2.0]])).max() == 0  # disjoint / touching -> 0
    assert tiou(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 3.0]])).item() == pytest.approx(1 / 3)


def test_tiou_numpy_and_broadcasting():
    a, b = random_segments(5, seed=3), random_segments(4, seed=4)
    out = tiou(a.numpy(), b.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, tiou(a, b).numpy(), atol=1e-6)
    batched = tiou(a, torch.stack([b, b.flip(0)]))                        # (2, 5, 4)
    assert batched.shape == (2, 5, 4) and torch.allclose(batched[1], tiou(a, b).flip(1))
    assert tiou(np.zeros((1, 2)), np.zeros((1, 2)))[0, 0] == 0           # empty union -> 0, not NaN


def test_tiou_bad_inputs():
    with pytest.raises(FscalError, match="inverted"):
        tiou(torch.tensor([[3.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(FscalError, match="NaN"):
        tiou(np.array([[0.0, np.nan]]), np.array([[0.0, 1.0]]))
    with pytest.raises(FscalError, match="shape"):
        tiou(torch.zeros(3, 3), torch.zeros(2, 2))


# --- RoIAlign -----------------------------------------------------------------------------------

def slow_roi_align(feats, segments, inside, context, frac):
    """One point at a time, straight from the definition."""
    B, T, C = feats.shape
    out = torch.zeros(B, segments.shape[1], inside + 2 * context, C, dtype=feats.dtype)
    for b in range(B):
        for n, (s, e) in enumerate(segments[b].tolist()):
            w = e - s
            pts = ([s - frac * w + (k + 0.5) * frac * w / context for k in range(context)]
                   + [s + (k + 0.5) * w / inside for k in range(inside)]
                   + [e + (k + 0.5) * frac * w / context for k in range(context)])
            for p, x in enumerate(pts):
                u = min(max(x - 0.5, 0.0), T - 1)
                lo = int(math.floor(u))
                hi = min(lo + 1, T - 1)
                out[b, n, p] = feats[b, lo] * (1 - (u - lo)) + feats[b, hi] * (u - lo)
    return out


def test_roi_positions_by_hand():
    pos = roi_positions(torch.tensor([[2.0, 10.0]]), inside=4, context=2, context_frac=0.25)
    # w = 8: left context [0, 2] -> 0.5, 1.5; inside bins of 2 -> 3, 5, 7, 9; right [10, 12] -> 10.5, 11.5
    assert pos.tolist() == [[0.5, 1.5, 3.0, 5.0, 7.0, 9.0, 10.5, 11.5]]


def test_roi_align_matches_loop_reference():
    torch.manual_seed(0)
    feats = torch.randn(2, 16, 3, dtype=torch.float64)
    segs = torch.stack([random_segments(5, T=16, seed=5), random_segments(5, T=16, seed=6)]).double()
    segs[0, 0] = torch.tensor([0.0, 2.0])                                 # context runs off the start
    segs[1, 0] = torch.tensor([14.0, 16.0])                               # and off the end
    out = roi_align_1d(feats, segs, inside=8, context=2, context_frac=0.25)
    assert out.shape == (2, 5, 12, 3)
    assert torch.allclose(out, slow_roi_align(feats, segs, 8, 2, 0.25))
    shared = roi_align_1d(feats, segs[0])                                 # (N, 2) shared by the batch
    assert torch.allclose(shared[1], slow_roi_align(feats[1:], segs[:1], 8, 2, 0.25)[0])


def test_roi_align_gradients():
    torch.manual_seed(1)
    feats = torch.randn(1, 12, 2, dtype=torch.float64, requires_grad=True)
    # (no sample point may sit exactly on a snippet centre, where the interpolation has a kink)
    segs = torch.tensor([[[2.3, 7.3], [4.2, 9.7]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, s: roi_align_1d(f, s, inside=4, context=1), (feats, segs))


def test_roi_align_rejects_inverted_segments():
    with pytest.raises(FscalError, match="inverted"):
        roi_align_1d(torch.zeros(1, 8, 2), torch.tensor([[5.0, 2.0]]))


def some_segments(n, T, seed):
    """``n`` segments of a ``T``-snippet axis, float64, some reaching past either end."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64) * (T + 4) - 2
    w = torch.rand(n, generator=g, dtype=torch.float64) * T / 2
    return torch.stack([s, s + w], 1)                                    # (n, 2)


@pytest.mark.parametrize("T, n", [(16, 1), (16, 5), (32, 31), (16, 16), (16, 40), (32, 200)])
def test_roi_align_mlp_is_roi_align_then_mlp(T, n):
    """The fold of RoIAlign into the MLP's first layer gives the numbers and the gradients of
    RoIAlign, then the MLP: few segments (n < T, RoIAlign first) and many (first layer first)."""
    torch.manual_seed(n)
    d, inside, context = 3, 4, 2
    roi = RoIAlign(some_segments(n, T, seed=T + n), T, inside=inside, context=context, context_frac=0.5)
    P = inside + 2 * context
    mlp = nn.Sequential(nn.Linear(P * d, 5), nn.GELU(), nn.Linear(5, 4)).double()
    E = torch.randn(2, T, d, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, n, 4, dtype=torch.float64)

    def run(fn):
        E.grad = None
        mlp.zero_grad()
        out = fn()
        (out * upstream).sum().backward()
        return out.detach(), [E.grad.clone()] + [p.grad.clone() for p in mlp.parameters()]

    plain, plain_grads = run(lambda: mlp(rearrange(roi(E), "b n p d -> b n (p d)")))     # (B, N, 4)
    fast, fast_grads = run(lambda: roi_align_mlp(E, roi, mlp))
    assert fast.shape == plain.shape == (2, n, 4)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    for a, b in zip(fast_grads, plain_grads):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_roi_align_operator_reads_as_roi_align_1d():
    T = 20
    segments = torch.cat([make_anchors(T, (4, 8)), torch.tensor([[-3.0, 2.0], [T - 2.0, T + 5.0]])])
    roi = RoIAlign(segments, T, inside=4, context=1, context_frac=0.25)
    E = torch.randn(2, T, 3)
    assert torch.equal(roi(E), roi_align_1d(E, segments, inside=4, context=1, context_frac=0.25))
    # the folded matrix: entry (n, t * P + p) is the weight of snippet t in point p of segment n
    folded = rearrange(roi.matrix().to_dense(), "n (t p) -> n p t", p=roi.P)          # (N, P, T)
    assert torch.allclose(folded.sum(-1), torch.ones(len(segments), roi.P))
    assert torch.allclose(einsum(folded, E, "n p t, b t c -> b n p c"), roi(E), atol=1e-6)
    # fixed by the config, so not saved with a model
    assert roi.state_dict() == {} and roi.double().matrix().dtype == torch.float64


# --- encode / decode / labels ------------------------------------------------------------------

def test_encode_decode_round_trip_and_clamp():
    anchors = make_anchors(64)
    gt = random_segments(len(anchors), T=64, seed=7)
    deltas = encode(anchors, gt)
    assert deltas.shape == anchors.shape
    assert torch.allclose(decode(anchors, deltas), gt, atol=1e-4)
    assert torch.allclose(encode(anchors, anchors), torch.zeros_like(anchors))
    huge = decode(anchors[:2], torch.tensor([[0.0, 1e4], [0.0, -1e4]]))
    assert torch.isfinite(huge).all() and (huge[:, 1] > huge[:, 0]).all()


def test_assign_labels_by_hand():
    anchors = torch.tensor([[0.0, 10.0], [0.0, 4.0], [20.0, 30.0], [40.0, 50.0], [22.0, 32.0]])
    gt = torch.tensor([[[0.0, 10.0], [21.0, 31.0], [0.0, 0.0]],              # third is padding
                       [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])                 # a query with none
    mask = torch.tensor([[True, True, False], [False, False, False]])
    labels, targets, best = assign_labels(anchors, gt, mask)
    # anchor 1 has tIoU 0.4 with [0, 10]: ignored; anchor 2 and 4 have 9/11 with [21, 31]
    assert labels.tolist() == [[1, -1, 1, 0, 1], [0, 0, 0, 0, 0]]
    assert best[0, 1].item() == pytest.approx(0.4) and (best[1] == 0).all()
    assert torch.allclose(targets[0, 2], encode(anchors[2], gt[0, 1]))
    assert (targets[0, [1, 3]] == 0).all() and (targets[1] == 0).all()


def test_assign_labels_short_instance_gets_its_best_anchor():
    anchors = make_anchors(32, lengths=(8, 16))
    gt = torch.tensor([[[10.0, 13.0]]])                                   # 3 snippets: best tIoU 3/8
    labels, targets, best = assign_labels(anchors, gt, torch.tensor([[True]]))
    assert best.max().item() == pytest.approx(3 / 8)
    pos = (labels[0] == 1).nonzero().flatten()
    assert len(pos) >= 1 and torch.allclose(best[0, pos], best.max())
    assert torch.allclose(decode(anchors[pos], targets[0, pos]), gt[0].expand(len(pos), 2))


# --- AR@AN --------------------------------------------------------------------------------------

def test_average_recall_perfect_empty_and_monotone():
    gt = {"a": np.array([[0.0, 10.0], [20.0, 40.0]]), "b": np.array([[5.0, 6.0]])}
    perfect = {"a": np.array([[0.0, 10.0], [20.0, 40.0]] * 50), "b": np.array([[5.0, 6.0]] * 100)}
    r = average_recall(perfect, gt)
    assert r["ar"][0] == pytest.approx(2 / 3) and (r["ar"][1:] == 1).all()   # video a needs 2
    assert r["auc"] == pytest.approx(100 * (2 / 3 * 0.5 + 0.5 + 98) / 100)
    assert (average_recall({}, gt)["ar"] == 0).all()
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 40, (2, 100))
    noisy = {v: np.stack([s, s + rng.uniform(1, 20, 100)], 1) for v, s in zip("ab", starts)}
    r = average_recall(noisy, gt, num_proposals=(1, 5, 20, 100))
    assert (np.diff(r["ar"]) >= 0).all() and r["recall"].shape == (4, 10)
    assert (np.diff(r["recall"], axis=1) <= 0).all()                    # stricter θ, lower recall


# --- figures and exercise (notebook 02) ---------------------------------------------------------

def test_anchors_figure():
    from fscal_edu.viz.proposals import anchors_figure
    fig = anchors_figure(make_anchors(64, lengths=(4, 16)), 64, gt=[[10.0, 20.0]])
    assert [t.name for t in fig.data] == ["length 4 (61)", "length 16 (13)"]
    assert np.nanmax(np.asarray(fig.data[1].x, float)) == 64 and len(fig.layout.shapes) == 1
    assert "74 multi-scale anchors" in fig.layout.title.text


def test_ar_an_and_roi_align_figures():
    from fscal_edu.viz.proposals import ar_an_figure, roi_align_figure
    gt = {"a": np.array([[0.0, 10.0]])}
    r = average_recall({"a": np.array([[0.0, 10.0]])}, gt, num_proposals=(1, 2))
    fig = ar_an_figure({"perfect": r})
    assert fig.data[0].name == "perfect (AUC 50.0)" and list(fig.data[0].y) == [1.0, 1.0]
    curve = torch.arange(16.0)
    seg = torch.tensor([[4.0, 12.0]])
    pos = roi_positions(seg, inside=4, context=2)[0]
    vals = roi_align_1d(curve[None, :, None], seg, inside=4, context=2)[0, 0, :, 0]
    fig = roi_align_figure(curve, seg[0], pos, vals, context=2)
    assert [len(t.x) for t in fig.data] == [16, 4, 4]
    assert list(fig.data[1].x) == [5.0, 7.0, 9.0, 11.0] and list(fig.data[1].y) == [4.5, 6.5, 8.5, 10.5]
    assert [round(s.x0, 3) for s in fig.layout.shapes] == [4.0, 2.0, 12.0]


def test_check_tiou_exercise():
    from fscal_edu.exercises import check_tiou
    assert check_tiou(tiou)

    def union_instead(a, b):  # a classic slip: forgets to subtract the intersection
        inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
        return inter / ((a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :])
    assert not check_tiou(union_instead)
