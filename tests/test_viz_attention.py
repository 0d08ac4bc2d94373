"""Figures, the explorer widget and the exercise checkers of notebooks 03-05."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from einops import rearrange, reduce

from fscal_edu import exercises as ex
from fscal_edu.attention import DynamicsCA, QtoSContextCA, StoQContextCA, cross_correlation
from fscal_edu.proposals import proposal_names
from fscal_edu.viz.attention import (
    attention_view, fig_attention_matrix, fig_granularity_mass, fig_query_mass, fig_stage_attention,
    granularity_mass,
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
def test_fig_stage_attention(atts, stage):
    fig = fig_stage_attention(atts[stage], support=1, proposal=4,
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


def test_fig_stage_attention_granularity_filter(atts):
    fig = fig_stage_attention(atts["dynamics"], support=2, granularity=2)
    assert np.asarray(fig.data[0].z).shape == (K * T_S // 2, T_S)
    assert "k=2" in fig.layout.title.text


def test_fig_attention_matrix():
    fig = fig_attention_matrix(np.eye(3), source_name="proposal", target_name="snippet")
    assert fig.data[0].texttemplate == "%{z:.2f}" and list(fig.data[0].y) == [
        "proposal 0", "proposal 1", "proposal 2"]


def test_granularity_mass(atts):
    mass = granularity_mass(atts["dynamics"], support=1)
    assert sorted(mass) == [2, 4] and mass[2].shape == (T_S,)
    A = atts["dynamics"].A[0, 1].detach().numpy()
    np.testing.assert_allclose(mass[2] + mass[4], A.sum(0), atol=1e-5)
    fig = fig_granularity_mass(atts["dynamics"], support=1)
    assert [t.name for t in fig.data] == ["k = 2", "k = 4"]


def test_fig_query_mass(atts):
    segments = [[n, n + 3] for n in range(N_Q)]
    fig = fig_query_mass(atts["stoq"], segments, batch=1, gt=[[2.0, 5.5]], others=[[7, 9], [1, 2]])
    mass = atts["stoq"].A[1].detach().sum(0).numpy()
    y = np.asarray(fig.data[0].y, dtype=float)
    np.testing.assert_allclose(y[1::3], mass, atol=1e-4)      # each proposal at its mass
    assert np.isnan(y[2::3]).all() and list(fig.data[0].x[3:5]) == [1.0, 4.0]
    assert len(fig.layout.shapes) == 3 and fig.layout.shapes[0].x1 == 5.5
    assert [s.fillcolor for s in fig.layout.shapes] == ["green", "red", "red"]
    with pytest.raises(ValueError, match="StoQ"):
        fig_query_mass(atts["qtos"], segments)


@pytest.mark.parametrize("stage", ["qtos", "dynamics", "stoq"])
def test_attention_explorer(atts, stage, monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    box = attention_explorer(atts[stage])
    names = [c.description for c in box.children[:-1]]
    assert names == ["batch", "support", "granularity" if stage == "dynamics" else "proposal"]
    first = "all supports" if stage == "stoq" else "support 0"
    assert len(shown) == 1 and first in shown[0].layout.title.text
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
    assert ex.check_coarse_tokens(lambda X, k: reduce(X, "b l (n k) d -> b l n d", "mean", k=k))
    assert not ex.check_coarse_tokens(lambda X, k: reduce(X, "b l (k n) d -> b l n d", "mean", k=k))


def test_check_granularity_mass():
    assert ex.check_granularity_mass(lambda A, g, k: A[g == k].sum(0))
    assert not ex.check_granularity_mass(lambda A, g, k: A[g == k].mean(0))


def test_check_stoq():
    def eq6(Y_S, X_Q, W):
        return eqs_1_2(rearrange(Y_S, "b k t d -> b (k t) d"), X_Q, W)[0]
    assert ex.check_stoq(eq6)
    assert not ex.check_stoq(lambda Y_S, X_Q, W: eq6(Y_S, X_Q, W.T))
