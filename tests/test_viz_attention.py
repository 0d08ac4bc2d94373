"""Figures, the explorer widget and the exercise checkers of notebooks 03-05."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from einops import rearrange

from fscal_edu import exercises as ex
from fscal_edu.attention import DynamicsCA, QtoSContextCA, StoQContextCA, cross_correlation
from fscal_edu.proposals import proposal_names
from fscal_edu.solutions import granularity_mass
from fscal_edu.viz.attention import (
    attention_entropy, attention_matrix_figure, attention_pair_figure, attention_view, granularity_mass_figure,
    query_mass_figure, stage_attention_figure, stage_layout,
)
from fscal_edu.widgets import attention_explorer

B, K, T_S, N_Q, d = 2, 3, 8, 10, 16


@pytest.fixture(scope="module")
def atts():
    torch.manual_seed(0)
    X_Q, X_S = torch.randn(B, N_Q, d), torch.randn(B, K, T_S, d)
    X_S_tilde, qtos = QtoSContextCA(d)(X_Q, X_S)
    _, joint = QtoSContextCA(d, joint=True)(X_Q, X_S)
    Y_S, dynamics = DynamicsCA(d)(X_S_tilde)
    _, stoq = StoQContextCA(d)(Y_S, X_Q)
    return {"qtos": qtos, "qtos_joint": joint, "dynamics": dynamics, "stoq": stoq}


def test_attention_view_slices_one_support(atts):
    v = attention_view(atts["qtos"], batch=1, support=2)
    np.testing.assert_allclose(v.A, atts["qtos"].A[1, 2].detach().numpy())
    assert (len(v.sources), len(v.targets)) == (N_Q, T_S) and v.source_name == "proposal"
    v = attention_view(atts["qtos_joint"], support=1)
    np.testing.assert_allclose(v.A, atts["qtos_joint"].A[0, :, T_S:2 * T_S].detach().numpy())
    v = attention_view(atts["dynamics"], support=0, granularity=4)
    assert v.A.shape == (K * T_S // 4, T_S) and v.sources[1] == "S0 k=4 [4, 8)"
    v = attention_view(atts["stoq"], support=None)
    assert v.A.shape == (K * T_S, N_Q) and v.sources[T_S] == "S1 t0"
    with pytest.raises(ValueError, match="K = 3"):
        attention_view(atts["qtos"], support=3)


@pytest.mark.parametrize("stage", ["qtos", "qtos_joint", "dynamics", "stoq"])
def test_stage_attention_figure(atts, stage):
    fig = stage_attention_figure(atts[stage], support=1, proposal=4,
                              proposal_labels=proposal_names([[n, n + 2] for n in range(N_Q)]))
    assert isinstance(fig, go.Figure)
    heat, mass = fig.data[0], fig.data[1]
    assert isinstance(heat, go.Heatmap) and isinstance(mass, go.Bar)
    np.testing.assert_allclose(mass.y, np.asarray(heat.z).sum(0), atol=1e-3)
    assert "support 1" in fig.layout.title.text
    if stage == "dynamics":
        assert len(fig.data) == 2                      # no proposal in Dynamics-CA
    else:
        assert len(fig.data) >= 3 and fig.data[2].name == "proposal [4, 6)"


def test_stage_attention_figure_granularity_filter(atts):
    fig = stage_attention_figure(atts["dynamics"], support=2, granularity=2)
    assert np.asarray(fig.data[0].z).shape == (K * T_S // 2, T_S)
    assert "k=2" in fig.layout.title.text


def test_attention_matrix_figure():
    fig = attention_matrix_figure(np.eye(3), source_name="proposal", target_name="snippet")
    assert fig.data[0].texttemplate == "%{z:.2f}" and list(fig.data[0].y) == [
        "proposal 0", "proposal 1", "proposal 2"]


def test_granularity_mass(atts):
    mass = granularity_mass(atts["dynamics"], support=1)
    assert sorted(mass) == [2, 4] and mass[2].shape == (T_S,)
    A = atts["dynamics"].A[0, 1].detach().numpy()
    np.testing.assert_allclose(mass[2] + mass[4], A.sum(0), atol=1e-5)
    with pytest.raises(ValueError, match="support"):
        granularity_mass(atts["dynamics"], support=K)
    fig = granularity_mass_figure(mass, support=1)                 # the figure draws the numbers it is given
    assert [t.name for t in fig.data] == ["k = 2", "k = 4"]
    np.testing.assert_allclose(fig.data[1].y, mass[4].round(4))
    assert "support 1" in fig.layout.title.text


def test_stage_layouts_come_from_the_registry():
    assert [stage_layout(s) for s in ("qtos", "qtos_joint", "dynamics", "stoq")] == [
        "query_to_support", "query_to_all_supports", "coarse_to_support", "support_to_query"]
    with pytest.raises(ValueError, match="unknown stage"):
        stage_layout("fifth")


def test_query_mass_figure(atts):
    segments = [[n, n + 3] for n in range(N_Q)]
    fig = query_mass_figure(atts["stoq"], segments, batch=1, gt=[[2.0, 5.5]], others=[[7, 9], [1, 2]])
    mass = atts["stoq"].A[1].detach().sum(0).numpy()
    y = np.asarray(fig.data[0].y, dtype=float)
    np.testing.assert_allclose(y[1::3], mass, atol=1e-4)      # each proposal at its mass
    assert np.isnan(y[2::3]).all() and list(fig.data[0].x[3:5]) == [1.0, 4.0]
    assert len(fig.layout.shapes) == 3 and fig.layout.shapes[0].x1 == 5.5
    assert [s.fillcolor for s in fig.layout.shapes] == ["green", "red", "red"]
    with pytest.raises(ValueError, match="StoQ"):
        query_mass_figure(atts["qtos"], segments)


def test_query_mass_figure_several(atts):
    segments = [[n, n + 3] for n in range(N_Q)]
    sharp = atts["stoq"]._replace(A=atts["stoq"].A * 2)
    fig = query_mass_figure({"start": atts["stoq"], "trained": sharp}, segments, gt=[[2.0, 5.5]])
    assert [t.name for t in fig.data] == ["start", "trained"] and fig.layout.showlegend
    y0, y1 = (np.asarray(t.y, dtype=float)[1::3] for t in fig.data)
    np.testing.assert_allclose(y1, 2 * y0, atol=2e-4)
    with pytest.raises(ValueError, match="StoQ"):
        query_mass_figure({"a": atts["stoq"], "b": atts["qtos"]}, segments)


def test_attention_entropy():
    assert attention_entropy(np.full((3, 4), 0.25)) == pytest.approx(1.0)
    assert attention_entropy(np.eye(4)) == pytest.approx(0.0)
    # rows are read as distributions (a row of mass 2 counts like one of mass 1); empty rows are left out
    A = np.array([[0.5, 0.5, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert attention_entropy(A) == pytest.approx(0.5 * np.log(2) / np.log(4))
    with pytest.raises(ValueError, match="entropy"):
        attention_entropy(np.zeros((2, 3)))


@pytest.mark.parametrize("stage", ["qtos", "dynamics", "stoq"])
def test_attention_pair_figure(atts, stage):
    start = atts[stage]
    sharp = start._replace(A=start.A ** 4 / (start.A ** 4).sum(-1, keepdim=True))   # rows sharpened
    labels = proposal_names([[n, n + 2] for n in range(N_Q)])
    fig = attention_pair_figure(start, sharp, support=1, proposal=4, proposal_labels=labels)
    heats = [t for t in fig.data if isinstance(t, go.Heatmap)]
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(heats) == 2 and len(bars) == 2
    for heat, bar, att in zip(heats, bars, (start, sharp)):
        view = attention_view(att, support=1, proposal_labels=labels)
        np.testing.assert_allclose(heat.z, view.A, atol=5e-4)
        np.testing.assert_allclose(bar.y, view.A.sum(0), atol=5e-3)
        assert list(heat.y) == list(view.sources) and heat.coloraxis == "coloraxis"
    # one colour scale for both panels, up to the larger maximum
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == pytest.approx(
        max(np.max(h.z) for h in heats), abs=1e-3)
    # the panel titles carry each panel's entropy; the sharpened one is lower
    e = [attention_entropy(attention_view(a, support=1).A) for a in (start, sharp)]
    titles = [a.text for a in fig.layout.annotations[:2]]
    assert titles == [f"start (W = I): entropy / max {e[0]:.2f}", f"trained: entropy / max {e[1]:.2f}"]
    assert e[1] < e[0]
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    if stage == "dynamics":
        assert not lines
    else:
        assert len(lines) == 2 and lines[0].name == "proposal [4, 6)"
        # QtoS: the proposal is a source (a row); StoQ: a target (a column)
        assert set(lines[0].y if stage == "qtos" else lines[0].x) == {"[4, 6)"}
    assert "support 1" in fig.layout.title.text


def test_attention_pair_figure_needs_one_stage(atts):
    with pytest.raises(ValueError, match="one stage"):
        attention_pair_figure(atts["qtos"], atts["stoq"])


@pytest.mark.parametrize("stage", ["qtos", "dynamics", "stoq"])
def test_attention_explorer(atts, stage, monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    box = attention_explorer(atts[stage])
    names = [c.description for c in box.children[:-1]]
    assert names == ["batch", "support", "granularity" if stage == "dynamics" else "proposal"]
    assert len(shown) == 1 and "support 0" in shown[0].layout.title.text          # it opens on support 0
    if stage == "stoq":                        # "all" is offered too
        box.children[1].value = None
        assert "all supports" in shown[-1].layout.title.text
        shown.pop()
    if stage != "dynamics":                     # it opens on a proposal, the one the attention singles out most
        A = atts[stage].A[0].detach()
        most = int(A.sum(0).argmax()) if stage == "stoq" else int(A.amax(dim=(0, -1)).argmax())
        assert box.children[2].value == most and len(shown[0].data) > 2
        box.children[2].value = None            # "none" is still offered
        shown.pop()
    box.children[1].value = 2
    assert len(shown) == 2 and shown[1].layout.title.text.endswith("support 2")
    box.children[2].value = 4 if stage == "dynamics" else 3
    assert len(shown) == 3 and ("k=4" in shown[2].layout.title.text or len(shown[2].data) > 2)


# --- exercise checkers: a correct answer passes, a wrong one fails --------------------------

def eqs_1_2(X_a, X_b, W, dim=-1):
    A = cross_correlation(X_a, X_b, W).softmax(dim)
    return X_b + torch.einsum("bij,bid->bjd", A, X_a), A


def test_check_cross_attend():
    assert ex.check_cross_attend(eqs_1_2)
    assert not ex.check_cross_attend(lambda X_a, X_b, W: eqs_1_2(X_a, X_b, W, dim=-2))


def test_check_column_softmax():
    assert ex.check_column_softmax(lambda X_a, X_b, W: eqs_1_2(X_a, X_b, W, dim=-2)[1])
    assert not ex.check_column_softmax(lambda X_a, X_b, W: eqs_1_2(X_a, X_b, W)[1])


def test_check_support_mass():
    assert ex.check_support_mass(lambda A, K: rearrange(A, "b n (k t) -> b k n t", k=K).sum((2, 3)))
    assert not ex.check_support_mass(lambda A, K: rearrange(A, "b n (t k) -> b k n t", k=K).sum((2, 3)))


def test_check_coarse_tokens():
    def coarse(X, w, bias=True):       # eq. (3): one convolution per granularity, kernel = stride = k
        x = rearrange(X, "b l t d -> (b l) d t")
        out = [torch.nn.functional.conv1d(x, W, b if bias else None, stride=k) for k, (W, b) in w.items()]
        return rearrange(torch.cat(out, -1), "(b l) d n -> b l n d", b=X.shape[0])
    assert ex.check_coarse_tokens(coarse)
    assert not ex.check_coarse_tokens(lambda X, w: coarse(X, w, bias=False))


def test_check_granularity_mass():
    assert ex.check_granularity_mass(lambda A, g, k: A[g == k].sum(0))
    assert not ex.check_granularity_mass(lambda A, g, k: A[g == k].mean(0))


def test_check_stoq():
    def eq6(Y_S, X_Q, W, mask_Q, attend):       # all K*T_S support snippets as one source
        return attend(rearrange(Y_S, "b k t d -> b (k t) d"), X_Q, W, mask_b=mask_Q)
    assert ex.check_stoq(eq6)
    assert not ex.check_stoq(lambda Y_S, X_Q, W, mask_Q, attend: eq6(Y_S, X_Q, W.T, mask_Q, attend))


# --- notebooks 03-05: the trained model's stages beside their start, and the results files ----

def _trained_like(seed=0):
    """A tiny model whose stage weights have moved away from their start (a stand-in for training)."""
    from fscal_edu.config import get_config
    from fscal_edu.model import FSCAL
    torch.manual_seed(seed)
    model = FSCAL(get_config("tiny", shots=K)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("qtos.", "dynamics.", "stoq.")):
                p.add_(0.3 * torch.randn_like(p))
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, cfg.data.T, cfg.data.feature_dim, generator=g)
    support = torch.randn(2, K, cfg.data.T_S, cfg.data.feature_dim, generator=g)
    return model, query, support


def test_stage_inputs_are_what_each_stage_receives():
    from fscal_edu.diagnostics import stage_inputs
    model, query, support = _trained_like()
    inputs = stage_inputs(model, query, support)
    assert list(inputs) == ["qtos", "dynamics", "stoq"]
    with torch.no_grad():
        out = model(query, support)
        X_Q = model.proposals(query)
        X_Q_in, X_S_in = inputs["qtos"][0][:2]
        torch.testing.assert_close(X_Q_in, X_Q)
        assert X_S_in.shape == support.shape[:3] + (model.cfg.model.d,)
        # each stage on its captured input gives the attention of the model's forward
        for name, (args, kwargs) in inputs.items():
            torch.testing.assert_close(getattr(model, name)(*args, **kwargs)[1].A, out.attention[name].A)
        # the chain: what QtoS returns is what Dynamics-CA receives
        torch.testing.assert_close(model.qtos(X_Q_in, X_S_in)[0], inputs["dynamics"][0][0])
    assert not any(m._forward_pre_hooks for m in (model.qtos, model.dynamics, model.stoq))   # hooks removed
    assert list(stage_inputs(model, query, support, skip=("stoq",))) == ["qtos", "dynamics"]


def test_stage_attention_start_and_trained():
    from fscal_edu.diagnostics import stage_attention, start_stages
    model, query, support = _trained_like()
    state = torch.random.get_rng_state()
    starts = start_stages(model)
    assert torch.equal(torch.random.get_rng_state(), state)          # the random state is left as it was
    d = model.cfg.model.d
    assert torch.equal(starts["qtos"].W_QtoS, torch.eye(d)) and torch.equal(starts["stoq"].W_StoQ, torch.eye(d))
    assert not torch.equal(model.qtos.W_QtoS, torch.eye(d))
    atts = stage_attention(model, query, support)
    with torch.no_grad():
        out = model(query, support)
    for name in ("qtos", "dynamics", "stoq"):
        pair = atts[name]
        torch.testing.assert_close(pair["trained"].A, out.attention[name].A)
        assert pair["start"].A.shape == pair["trained"].A.shape
        assert not torch.allclose(pair["start"].A, pair["trained"].A)
    # the start is the stage with W = I on the trained stage's input: QtoS by hand
    from fscal_edu.attention import cross_attend
    X_Q = model.proposals(query).detach()
    X_S = model.embed(support.flatten(0, 1)).unflatten(0, support.shape[:2]).detach()
    _, A = cross_attend(X_Q[:, None], X_S, torch.eye(d), scale=d ** -0.5, mass_norm=True)
    torch.testing.assert_close(atts["qtos"]["start"].A, A)


def test_probe_results_and_ablation_tests():
    from fscal_edu.diagnostics import ablation_tests, probe_results
    from fscal_edu.utils import FscalError
    rows = [{"probe": "as trained", "draw": 0, "mAP@0.5": 0.5, "ci95_delta": None},
            {"probe": "skip qtos", "draw": 0, "mAP@0.5": 0.45, "ci95_delta": [-0.1, 0.0]},
            {"probe": "shuffled", "draw": 0, "mAP@0.5": 0.3, "ci95_delta": [-0.3, -0.1]},
            {"probe": "shuffled", "draw": 1, "mAP@0.5": 0.2, "ci95_delta": None}]
    probes = {"checkpoints": [{"checkpoint": "a.pt", "probes": rows}]}
    got = probe_results(probes, "a.pt")
    assert got["skip qtos"]["delta"] == pytest.approx(-0.05) and got["skip qtos"]["ci95_delta"] == [-0.1, 0.0]
    assert got["shuffled"]["mAP@0.5"] == pytest.approx(0.25) and got["shuffled"]["ci95_delta"] == [-0.3, -0.1]
    assert got["shuffled"]["draws"] == [0.3, 0.2]
    assert got["skip qtos"]["reading"] == "no change detectable (interval holds 0)"
    assert got["shuffled"]["reading"] == "lower (interval below 0)" and got["as trained"]["reading"] == "-"
    with pytest.raises(FscalError, match="b.pt"):
        probe_results(probes, "b.pt")

    runs = [{"model": "full", "shots": 5, "steps": 700, "mAP@0.5": v} for v in (0.50, 0.52, 0.54)]
    runs += [{"model": "full", "shots": 5, "steps": 350, "mAP@0.5": 0.1}]                 # not the longest
    runs += [{"model": "no_x", "shots": 5, "steps": 700, "mAP@0.5": v} for v in (0.60, 0.61, 0.62)]
    runs += [{"model": "same", "shots": 5, "steps": 700, "mAP@0.5": v, "same_as": "full"} for v in (1, 2)]
    runs += [{"model": "no_y", "shots": 5, "steps": 700, "mAP@0.5": v} for v in (0.51, 0.53)]
    runs += [{"model": "no_x", "shots": 1, "steps": 700, "mAP@0.5": 0.0}]
    tests = ablation_tests({"runs": runs}, shots=5)
    assert sorted(tests) == ["no_x", "no_y"]
    w = tests["no_x"]["welch"]
    assert w.diff == pytest.approx(0.09) and w.p < 0.05 and tests["no_x"]["steps"] == 700
    assert tests["no_y"]["welch"].diff == pytest.approx(0.0) and tests["no_y"]["welch"].p > 0.5
    assert tests["no_x"]["p_holm"] == pytest.approx(min(1.0, 2 * w.p))
    assert tests["no_x"]["verdict"].startswith("the variant is better")
    assert tests["no_y"]["verdict"] == "no difference the seeds can show"
    with pytest.raises(FscalError, match="seed"):
        ablation_tests({"runs": runs}, shots=1)


def test_shipped_results_files_read():
    """The numbers the notebooks print come from the shipped files: spot-check against docs/benchmarks.md."""
    import json
    from pathlib import Path
    from fscal_edu.diagnostics import ablation_tests, probe_results
    root = Path(__file__).resolve().parents[1] / "bench" / "results"
    probes = probe_results(json.loads((root / "probes.json").read_text()))
    assert {"as trained", "skip qtos", "skip dynamics", "skip stoq", "reversed"} <= set(probes)
    tests = ablation_tests(json.loads((root / "ablations.json").read_text()))
    assert {"no_qtos", "no_dynamics", "no_stoq", "joint"} <= set(tests)
    assert all(0.0 <= t["welch"].p <= t["p_holm"] <= 1.0 for t in tests.values())
    for t in tests.values():               # the verdict follows the p-values, whatever the file holds
        assert (t["welch"].p >= 0.05) == (t["verdict"] == "no difference the seeds can show")
        assert ("Holm" in t["verdict"]) == (t["welch"].p < 0.05 <= t["p_holm"])
    for p in probes.values():
        if p["ci95_delta"] is not None:
            assert (p["reading"] == "no change detectable (interval holds 0)") == (
                p["ci95_delta"][0] <= 0 <= p["ci95_delta"][1])


def test_mass_on_segments():
    from fscal_edu.attention import StageAttention
    from fscal_edu.diagnostics import mass_on_segments
    anchors = torch.tensor([[0.0, 4.0], [4.0, 8.0], [8.0, 12.0], [0.0, 8.0], [8.0, 16.0]])   # lengths 4, 4, 4, 8, 8
    # 2 support snippets; they give proposal 1 (on the span) 0.5 + 0.1, the rest spread
    A = torch.tensor([[[0.1, 0.5, 0.1, 0.2, 0.1], [0.3, 0.1, 0.2, 0.2, 0.2]]])              # (1, 2, 5)
    att = StageAttention("stoq", A, 1, 2)
    got = mass_on_segments(att, anchors, [[[4.0, 8.0]]], iou=0.6)      # [0, 8) has tIoU 0.5 only
    assert got["episodes"] == 1 and got["fraction"] == pytest.approx(1 / 5)
    assert got["share"] == pytest.approx(0.6 / 2.0)
    # proposal 1 against the mean of the length-4 proposals (0.4, 0.6, 0.3)
    assert got["vs_same_length"] == pytest.approx(0.6 / (1.3 / 3))
    # an episode without a span, or whose span no proposal overlaps enough, does not count
    assert mass_on_segments(att, anchors, [[[4.0, 8.0]]])["fraction"] == pytest.approx(2 / 5)
    assert mass_on_segments(att, anchors, [[]])["episodes"] == 0
    assert mass_on_segments(att, anchors, [[[5.0, 6.0]]], iou=0.5)["episodes"] == 0
    with pytest.raises(ValueError, match="StoQ"):
        mass_on_segments(att._replace(stage="qtos"), anchors, [[[4.0, 8.0]]])


def test_coarse_window_share(atts):
    from fscal_edu.attention import coarse_index, StageAttention
    from fscal_edu.diagnostics import coarse_window_share
    K_, T = 2, 4
    coarse = coarse_index(K_, T, (2,))                   # per support: [0, 2), [2, 4)
    A = torch.zeros(1, K_, 4, T)
    A[0, 0, 2] = torch.tensor([1.0, 0, 0, 0])            # support 1's [0, 2) -> support 0's t0: inside
    A[0, 0, 3] = torch.tensor([1.0, 0, 0, 0])            # support 1's [2, 4) -> t0: outside
    A[0, 1, 0] = torch.tensor([0, 0.5, 0.5, 0])          # support 0's [0, 2) -> support 1: half inside
    A[0, 1, 1] = torch.tensor([0, 0, 0.25, 0.75])        # support 0's [2, 4) -> inside
    A[0, 0, :2] = 7.0                                    # own tokens are left out
    got = coarse_window_share(StageAttention("dynamics", A, K_, T, coarse))
    assert got == {2: pytest.approx((1 + 0 + 0.5 + 1) / 4)}
    even = coarse_window_share(atts["dynamics"]._replace(A=torch.full_like(atts["dynamics"].A, 1 / T_S)))
    assert even == {2: pytest.approx(2 / T_S), 4: pytest.approx(4 / T_S)}
    with pytest.raises(ValueError, match="Dynamics"):
        coarse_window_share(atts["stoq"])


@pytest.mark.parametrize("stage", ["qtos", "stoq"])
def test_proposal_axis_separates_lengths_and_marks_instances(atts, stage):
    segments = np.array([[0, 2], [2, 4], [4, 6], [0, 4], [2, 6], [4, 8], [0, 6], [2, 8], [0, 8], [0, 10]])
    fig = stage_attention_figure(atts[stage], support=None if stage == "stoq" else 0, segments=segments, marked=[3, 4])
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    where = [s.y0 for s in lines] if stage == "qtos" else [s.x0 for s in lines]
    assert where == [2.5, 5.5, 7.5, 8.5]                                 # between the lengths 2 | 4 | 6 | 8 | 10
    marks = next(t for t in fig.data if t.name == "overlaps the common action")
    assert list(marks.y if stage == "qtos" else marks.x) == ["p3", "p4"] and fig.layout.showlegend
    pair = attention_pair_figure(atts[stage], atts[stage], support=0, segments=segments, marked=[3])
    assert sum(t.name == "overlaps the common action" for t in pair.data) == 2
