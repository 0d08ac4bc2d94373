"""Attention on the query's time line (notebooks 03, 05, 08), the explorer that needs no kernel, and the
one-sentence readings of those pictures, checked against what they draw."""
import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from fscal_edu.attention import QtoSContextCA, StoQContextCA
from fscal_edu.checkpoints import load_model
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.inference import episode_outputs
from fscal_edu.model import FSCAL
from fscal_edu.report import on_instances, timeline_sentence
from fscal_edu.viz.attention import attention_timeline_figure, query_timeline, spread_over_time
from fscal_edu.viz.evaluation import attention_explorer_figure, episode_attention_figure

from conftest import DATA

B, K, T_S, d, T = 1, 3, 4, 8, 12
SEGMENTS = np.array([[0, 4], [4, 8], [8, 12], [0, 6], [6, 12]], dtype=float)   # (N_Q, 2)


def test_spread_over_time_keeps_each_proposals_total_on_its_span():
    values = np.array([[1.0], [2.0], [0.0], [3.0], [0.0]])
    M = spread_over_time(SEGMENTS, values, T)[:, 0]
    np.testing.assert_allclose(M[:4], 1 / 4 + 3 / 6)
    np.testing.assert_allclose(M[4:6], 2 / 4 + 3 / 6)
    np.testing.assert_allclose(M[6:8], 2 / 4)
    np.testing.assert_allclose(M[8:], 0.0)
    assert M.sum() == pytest.approx(values.sum())


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    X_Q, X_S = torch.randn(B, len(SEGMENTS), d), torch.randn(B, K, T_S, d)
    return {"qtos": QtoSContextCA(d)(X_Q, X_S)[1], "stoq": StoQContextCA(d)(X_S, X_Q)[1]}


def test_stoq_on_the_time_line_is_the_mass_each_snippet_receives(toy):
    view = query_timeline(toy["stoq"], SEGMENTS, T)
    assert view.M.shape == (T, K * T_S)
    # every support snippet sends one unit to the proposals, all of it lands on the time line
    assert view.curve.sum() == pytest.approx(K * T_S, rel=1e-5)
    A = toy["stoq"].A[0].detach().numpy()                                     # (K*T_S, N_Q)
    np.testing.assert_allclose(view.curve[0], A[:, 0].sum() / 4 + A[:, 3].sum() / 6, rtol=1e-5)


def test_qtos_on_the_time_line_is_each_supports_share(toy):
    view = query_timeline(toy["qtos"], SEGMENTS, T)
    shares = view.M.reshape(T, K, T_S).sum(-1)
    np.testing.assert_allclose(shares, 1.0, rtol=1e-5)                # each support's share sums to one
    assert np.all(view.curve >= 1 - 1e-6) and np.all(view.curve <= T_S + 1e-6)


@pytest.mark.parametrize("stage", ["qtos", "stoq"])
def test_attention_timeline_figure_draws_instances_and_detections(toy, stage):
    dets = [{"segment": [1.0, 5.0], "score": 0.9}, {"segment": [7.0, 9.0], "score": 0.3}]
    fig = attention_timeline_figure(toy[stage], SEGMENTS, T, gt=[[2, 5]], others=[[8, 10]], detections=dets,
                                    support_notes={1: "outlier"})
    heat = next(t for t in fig.data if isinstance(t, go.Heatmap))
    assert np.asarray(heat.z).shape == (K * T_S, T) and heat.yaxis == "y2"
    assert [t.name for t in fig.data if isinstance(t, go.Scatter) and t.showlegend is not False][1:] == ["common action", "other classes"]
    assert {(s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect"} == {(2, 5), (8, 10)}
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == K - 1                                        # a white line between two supports
    assert list(fig.layout.yaxis2.ticktext) == [t for l in range(K) for t in (f"S{l} start", "middle")]
    assert [a.text for a in fig.layout.annotations] == ["outlier"]
    dets_drawn = [t for t in fig.data if t.yaxis == "y3"]
    assert [list(t.x) for t in dets_drawn] == [[1.0, 5.0], [7.0, 9.0]]


def test_dynamics_has_no_time_line():
    from fscal_edu.attention import DynamicsCA
    torch.manual_seed(0)
    att = DynamicsCA(d)(torch.randn(B, K, T_S, d))[1]
    with pytest.raises(ValueError, match="stage_attention_figure"):
        query_timeline(att, SEGMENTS, T)


def test_on_instances_reads_the_direction():
    x = np.arange(10) + 0.5
    assert on_instances(np.r_[np.ones(5), 3 * np.ones(5)], x, [[0, 5]])["direction"] == "off"
    assert on_instances(np.r_[np.ones(5), 3 * np.ones(5)], x, [[5, 10]])["direction"] == "on"
    assert on_instances(np.ones(10), x, [[5, 10]])["direction"] == "even"
    assert on_instances(np.ones(10), x, [])["ratio"] is None
    assert "avoids" in timeline_sentence("stoq", on_instances(np.r_[np.ones(5), 3 * np.ones(5)], x, [[0, 5]]))


@pytest.fixture(scope="module")
def shipped():
    world = World(DATA / "anet_like")
    model = load_model(DATA / "checkpoints" / "full.pt", device="cpu")
    return world, model


def _reading(world, model, ep, stage):
    out = episode_outputs(model, world, ep)
    video = world.annotations["database"][ep["query"]]
    T = model.cfg.data.T
    x = (np.arange(T) + 0.5) * video["duration"] / T
    gt = [a["segment"] for a in video["annotations"] if a["label"] == ep["label"]]
    return on_instances(query_timeline(out["attention"][stage], model.anchors, T).curve, x, gt)


def test_the_shipped_models_readings_in_notebooks_03_and_05(shipped):
    """The sentences under the pictures of 03 and 05 (test episode 0): StoQ's mass avoids the common
    action's instances; QtoS's attention is about as concentrated there as elsewhere."""
    world, model = shipped
    ep = world.episodes("test", 5)[0]
    stoq, qtos = _reading(world, model, ep, "stoq"), _reading(world, model, ep, "qtos")
    assert stoq["direction"] == "off" and stoq["ratio"] < 0.5
    assert "avoids the common action's instances" in timeline_sentence("stoq", stoq)
    assert qtos["direction"] == "even"


def test_the_shipped_models_stoq_avoids_the_common_action_more_often_than_not(shipped):
    world, model = shipped
    found = [_reading(world, model, ep, "stoq")["direction"] for ep in world.episodes("test", 5)[:12]]
    assert found.count("off") > found.count("on")


def _menu_targets(fig):
    """Every (label, visible list, layout update) of the figure's dropdowns and sliders."""
    for menu in fig.layout.updatemenus:
        for b in menu.buttons:
            yield b.label, b.args[0]["visible"], b.args[1]
    for s in fig.layout.sliders:
        for st in s.steps:
            yield st.label, st.args[0]["visible"], st.args[1]


def test_attention_explorer_figure_every_control_shows_one_valid_view():
    torch.manual_seed(0)
    world = World(DATA / "anet_like")
    cfg = get_config("tiny", feature_dim=world.meta.feature_dim)
    models = {"full": FSCAL(cfg).eval(), "blind": FSCAL(cfg.replace(blind=True)).eval(),
              "no_stoq": FSCAL(get_config("tiny", feature_dim=world.meta.feature_dim, ablate=["no_stoq"])).eval()}
    eps = world.episodes("test", 5)[:3]
    runs = {m: [episode_outputs(model, world, ep) for ep in eps] for m, model in models.items()}
    fig = attention_explorer_figure(runs, eps, world.annotations, segments=models["full"].anchors, T=cfg.data.T)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["full · QtoS", "full · StoQ", "no_stoq · QtoS"]          # blind: no stage at all
    assert len(fig.layout.sliders) == len(labels) and [s.visible for s in fig.layout.sliders] == [True, False, False]
    n, seen = len(fig.data), set()
    for label, visible, layout in _menu_targets(fig):
        assert len(visible) == n, label
        shown = tuple(i for i, v in enumerate(visible) if v)
        assert shown and sum(isinstance(fig.data[i], go.Heatmap) for i in shown) == 1, label
        assert layout["title.text"] and all(s["type"] in ("rect", "line") for s in layout["shapes"])
        seen.add(shown)
    assert len(seen) == len(labels) * len(eps)                        # each view reachable, none twice
    assert tuple(i for i, t in enumerate(fig.data) if t.visible) in seen   # it opens on a view
    for c, button in enumerate(fig.layout.updatemenus[0].buttons):
        assert [button.args[1][f"sliders[{s}].visible"] for s in range(len(labels))] == [s == c for s in range(len(labels))]
    size = len(fig.to_json())
    assert size < 200_000 * len(seen), size


def test_episode_attention_figure_colours_detections_by_verdict(shipped):
    world, model = shipped
    ep = world.episodes("test", 5)[0]
    out = episode_outputs(model, world, ep)
    fig = episode_attention_figure(out["attention"]["stoq"], model.anchors, model.cfg.data.T, ep, world.annotations,
                                  out["detections"], top=3)
    colours = [t.line.color for t in fig.data if t.yaxis == "y3"]
    assert len(colours) == 3 and colours[0] == "#2ca02c"           # the shipped model's top detection hits
    assert fig.layout.xaxis3.title.text == "query time (s)"
    assert json.loads(fig.to_json())["layout"]["title"]["text"].startswith("StoQ")


def test_rows_per_support_averages_each_clip(toy):
    full = attention_timeline_figure(toy["stoq"], SEGMENTS, T)
    light = attention_timeline_figure(toy["stoq"], SEGMENTS, T, rows_per_support=2)
    z, z2 = (np.asarray(next(t for t in f.data if isinstance(t, go.Heatmap)).z) for f in (full, light))
    assert z2.shape == (K * 2, T)
    np.testing.assert_allclose(z2[0], z[:2].mean(0), atol=2e-4)
    with pytest.raises(ValueError, match="does not divide"):
        attention_timeline_figure(toy["stoq"], SEGMENTS, T, rows_per_support=3)
