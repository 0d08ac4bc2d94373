"""Figures, widgets and exercise checkers of notebooks 00-01 (task, data and episodes)."""
import numpy as np
import plotly.graph_objects as go
import pytest

from fscal_edu import exercises, widgets
from fscal_edu.data.episodes import episode_tensors, load_world
from fscal_edu.data.features import FeatureMeta, seconds_to_index
from fscal_edu.viz import data as viz

from conftest import DATA


@pytest.fixture(scope="module")
def world():
    return load_world(DATA / "anet_like")


@pytest.fixture(scope="module")
def episode(world):
    return world.episodes("test", 5)[0]


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def floats(v):
    return np.asarray(v, dtype=float)       # plotly keeps a bar's base as an object array


def test_episode_timeline_figure(world, episode):
    fig = viz.episode_timeline_figure(episode, world.annotations)
    assert [t.name for t in fig.data] == ["video", "other classes", "common class (query)", "support clip"]
    db = world.annotations["database"]
    rows = list(fig.data[0].y)
    assert len(rows) == 1 + len(episode["support"]) and rows[0] == f"query: {episode['query']}"
    np.testing.assert_allclose(fig.data[0].x, [db[r.split(": ")[1]]["duration"] for r in rows])
    common = trace(fig, "common class (query)")
    truth = [a["segment"] for a in db[episode["query"]]["annotations"] if a["label"] == episode["label"]]
    assert set(common.y) == {rows[0]}
    np.testing.assert_allclose(np.stack([floats(common.base), floats(common.base) + common.x], 1),
                               truth, atol=1e-3)
    cuts = trace(fig, "support clip")
    np.testing.assert_allclose(floats(cuts.base), [s["segment"][0] for s in episode["support"]], atol=1e-3)
    assert list(cuts.y) == rows[1:]
    n_instances = sum(len(db[r.split(": ")[1]]["annotations"]) for r in rows)
    assert len(common.y) + len(cuts.y) + len(trace(fig, "other classes").y) == n_instances
    assert episode["label"] in fig.layout.title.text


def test_timeline_of_a_hand_made_episode():
    ann = {"database": {"q": {"duration": 10.0, "annotations": [{"label": "x", "segment": [1.0, 2.0]}]},
                        "s": {"duration": 5.0, "annotations": []}}}
    ep = {"id": "e", "label": "y", "query": "q", "support": [{"video": "s", "segment": [0.5, 1.5]}]}
    fig = viz.episode_timeline_figure(ep, ann, title="mine")
    assert len(trace(fig, "common class (query)").y) == 0        # the query has no "y": no ground truth
    assert len(trace(fig, "other classes").y) == 1
    assert list(floats(trace(fig, "support clip").base)) == [0.5]
    assert fig.layout.title.text == "mine"


def test_instances_in_snippets(world, episode):
    q = episode["query"]
    segments = viz.instances_in_snippets(world.annotations, q, 128)
    entry = world.annotations["database"][q]
    assert [s[2] for s in segments] == [a["label"] for a in entry["annotations"]]
    want = seconds_to_index(np.array([a["segment"] for a in entry["annotations"]]),
                            duration=entry["duration"], num_snippets=128)
    np.testing.assert_allclose([s[:2] for s in segments], want)


def test_feature_heatmap_figure():
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    fig = viz.feature_heatmap_figure(x, segments=[(2.0, 5.5, "a"), (9.0, 12.0, "b")], highlight="b")
    (h,) = fig.data
    assert isinstance(h, go.Heatmap) and np.shape(h.z) == (6, 20)          # channels x snippets
    np.testing.assert_allclose(h.x, np.arange(20) + 0.5)                    # snippet centres
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(2.0, 5.5), (9.0, 12.0)]
    assert fig.layout.shapes[1].line.color == viz.COMMON and fig.layout.shapes[0].line.color == viz.OTHER
    assert fig.layout.shapes[0].fillcolor == "rgba(0,0,0,0)"                 # outline only: features stay visible
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax == pytest.approx(-np.abs(x).max(), abs=1e-6)
    assert "(20, 6)" in fig.layout.title.text


def test_episode_heatmaps_figure(world, episode):
    x = episode_tensors(world, episode, 64, 8)
    segments = viz.instances_in_snippets(world.annotations, episode["query"], 64)
    fig = viz.episode_heatmaps_figure(x["query"].numpy(), x["support"].numpy(), segments=segments,
                                      highlight=episode["label"])
    K = len(episode["support"])
    assert len(fig.data) == 1 + K and all(isinstance(t, go.Heatmap) for t in fig.data)
    assert np.shape(fig.data[0].z) == (64, 64) and np.shape(fig.data[1].z) == (64, 8)
    assert len(fig.layout.shapes) == len(segments)
    assert {s.xref for s in fig.layout.shapes} == {"x"}                     # boxes on the query only
    assert "5 supports" in fig.layout.title.text


def test_feature_grid_and_score_curves():
    rng = np.random.default_rng(1)
    panels = {f"knob {k}": rng.normal(size=(16, 4)) for k in range(3)}
    fig = viz.feature_grid_figure(panels, segments=[(1.0, 3.0, "c")], highlight="c")
    assert len(fig.data) == 3 and [a.text for a in fig.layout.annotations][:3] == list(panels)
    assert len(fig.layout.shapes) == 3                                      # one box per panel
    fig = viz.score_curve_figure({"a": np.arange(16.0), "b": -np.arange(16.0)}, segments=[(1.0, 3.0, "c")],
                                 highlight="c")
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].y) == list(-np.arange(16.0))
    assert fig.layout.shapes[0].fillcolor == viz.COMMON and fig.layout.shapes[0].layer == "below"  # shaded band


def test_knob_sweep_figure():
    fig = viz.knob_sweep_figure("scene_norm", [0, 1.6, 6], {"target": [0.2, 0.16, 0.05], "twin": [0.2, 0.16, 0.04]})
    assert [t.name for t in fig.data] == ["target", "twin"] and list(fig.data[0].x) == [0, 1.6, 6]
    assert fig.layout.xaxis.title.text == "scene_norm" and "scene_norm" in fig.layout.title.text


def test_resample_figure():
    x = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    fig = viz.resample_figure(x, 4, channel=2)
    orig, new = fig.data
    np.testing.assert_allclose(orig.x, (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(new.x, (np.arange(4) + 0.5) / 4)
    # a ramp stays a ramp: each new sample lies on the line through the old ones
    np.testing.assert_allclose(new.y, new.x * 10 - 0.5, atol=1e-5)


def test_snippet_axis_figure_resized_and_strided():
    fig = viz.snippet_axis_figure(30.0, 12, (7.5, 16.0))
    cells = fig.data[0]
    np.testing.assert_allclose(cells.x, 2.5)                                  # 12 snippets of 2.5 s
    np.testing.assert_allclose(fig.data[1].x, (np.arange(12) + 0.5) * 2.5)   # centres
    assert "snippets 3.00-6.40" in fig.data[2].text[0]                        # 7.5/30*12, 16/30*12
    meta = FeatureMeta(feature_dim=1, fps=30.0, feat_stride=4, num_frames=16)
    fig = viz.snippet_axis_figure(3.0, 20, (1.0, 2.0), meta=meta)
    assert fig.data[1].x[0] == pytest.approx(8 / 30)                          # centre of window 0
    np.testing.assert_allclose(fig.data[0].x, 4 / 30)                         # one stride per snippet
    assert "snippets 6.00-13.50" in fig.data[2].text[0]


def test_class_split_figure(world):
    fig = viz.class_split_figure(world.annotations, world.splits)
    assert [t.name.split()[0] for t in fig.data] == ["base", "val", "test"]
    assert sum(sum(t.y) for t in fig.data) == sum(len(e["annotations"])
                                                  for e in world.annotations["database"].values())


def test_episode_browser_redraws_on_change(world, monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    episodes = world.episodes("val", 1)[:3]
    box = widgets.episode_browser(world, episodes, T=32, T_S=4)
    slider = box.children[0]
    assert slider.max == 2 and len(shown) == 2                                # timeline + heatmaps
    slider.value = 2
    assert len(shown) == 4 and episodes[2]["id"] in shown[2].layout.title.text


def test_knob_explorer(monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    box = widgets.knob_explorer(lambda scale: [go.Figure(go.Scatter(y=[scale]))], scale=(0.0, 2.0, 0.5, 1.0))
    box.children[0].value = 1.5
    assert [f.data[0].y[0] for f in shown] == [1.0, 1.5]


# --- exercise checkers: a correct answer passes, a wrong one fails -----------------------------

def test_check_supports_outside_query():
    assert exercises.check_supports_outside_query(
        lambda ep: all(s["video"] != ep["query"] for s in ep["support"]))
    assert not exercises.check_supports_outside_query(lambda ep: True)
    assert not exercises.check_supports_outside_query(                        # only checks the first
        lambda ep: ep["support"][0]["video"] != ep["query"])


def test_check_query_ground_truth():
    def right(ep, ann):
        return [a["segment"] for a in ann["database"][ep["query"]]["annotations"] if a["label"] == ep["label"]]

    def every_instance(ep, ann):
        return [a["segment"] for a in ann["database"][ep["query"]]["annotations"]]
    assert exercises.check_query_ground_truth(right)
    assert not exercises.check_query_ground_truth(every_instance)


def test_check_seconds_to_index():
    assert exercises.check_seconds_to_index(lambda t, duration, T: t / duration * T)
    assert not exercises.check_seconds_to_index(lambda t, duration, T: t / duration * (T - 1))


def test_check_strided_seconds_to_index():
    assert exercises.check_strided_seconds_to_index(
        lambda t, fps, stride, frames: (t * fps - frames / 2) / stride + 0.5)
    assert not exercises.check_strided_seconds_to_index(                      # forgets the centre
        lambda t, fps, stride, frames: (t * fps - frames / 2) / stride)
