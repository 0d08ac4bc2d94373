"""Figures of notebook 09 (long queries read as windows): fscal_edu.viz.windows."""
import numpy as np
import plotly.graph_objects as go
import pytest

from fscal_edu import viz
from fscal_edu.data.episodes import World, episode_tensors, window_starts
from fscal_edu.viz import windows as vw

from conftest import DATA


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def floats(v):
    return np.asarray(v, dtype=float)       # plotly keeps a bar's base as an object array


@pytest.fixture(scope="module")
def world():
    return World(DATA / "thumos_like")


def test_reexported():
    assert viz.windows_figure is vw.windows_figure and viz.window_mask_figure is vw.window_mask_figure
    assert viz.instance_lengths_figure is vw.instance_lengths_figure


def test_windows_figure_bands_padding_and_rows():
    length, T = 300, 128
    starts = window_starts(length, T, 64)                          # [0, 64, 128, 172]
    assert starts == [0, 64, 128, 172]
    inst = np.array([[10.0, 20.0], [250.0, 262.5]])
    fig = vw.windows_figure(length, starts, T, inst)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["video", "window", "ground truth"]     # no window sticks out
    win = trace(fig, "window")
    assert list(win.y) == ["window 1", "window 2", "window 3", "window 4"]
    np.testing.assert_allclose(floats(win.base), starts)
    np.testing.assert_allclose(floats(win.x), [128, 128, 128, 128])             # every band inside the video
    gt = trace(fig, "ground truth")
    np.testing.assert_allclose(floats(gt.base), [10, 250])
    np.testing.assert_allclose(floats(gt.x), [10, 12.5])
    assert list(fig.layout.yaxis.categoryarray) == ["ground truth", "window 4", "window 3", "window 2",
                                                    "window 1", "video"]
    assert fig.layout.shapes[0].x0 == length                                    # the video's end


def test_windows_figure_padding_of_a_short_video_and_of_a_long_stride():
    fig = vw.windows_figure(100, window_starts(100, 128, 64), 128)                 # one padded window
    pad = trace(fig, "padding (masked)")
    assert list(pad.y) == ["window 1"]
    np.testing.assert_allclose(floats(pad.base), [100])
    np.testing.assert_allclose(floats(pad.x), [28])
    np.testing.assert_allclose(floats(trace(fig, "window").x), [100])
    assert [t.name for t in fig.data] == ["video", "window", "padding (masked)"]  # no instance: no trace
    fig = vw.windows_figure(300, [0, 200], 128)                                    # a window past the end
    np.testing.assert_allclose(floats(trace(fig, "window").x), [128, 100])
    assert list(trace(fig, "padding (masked)").y) == ["window 2"]
    assert fig.layout.xaxis.range[1] >= 328


def test_windows_figure_detections_top_k_by_score_and_seconds():
    det = np.array([[0, 5, 0.1], [10, 20, 0.9], [30, 40, 0.5], [50, 60, 0.7]])
    fig = vw.windows_figure(200, [0, 72], 128, [[10, 20]], det, top_k=2, snippet_seconds=2.0)
    d = trace(fig, "detections (top 2)")
    np.testing.assert_allclose(floats(d.base), [10, 50])                        # best first: 0.9, 0.7
    assert list(d.text) == ["0.90", "0.70"]
    assert d.marker.opacity[0] > d.marker.opacity[1]
    assert fig.layout.yaxis.categoryarray[0] == "detections"
    np.testing.assert_allclose(np.asarray(trace(fig, "ground truth").customdata)[0], [10, 20, 20, 40])
    assert "2 s" in fig.layout.xaxis.title.text
    fig = vw.windows_figure(200, [0, 72], 128, detections=np.zeros((0, 3)))        # none left: the row stays
    assert "detections" in fig.layout.yaxis.categoryarray and len(fig.data) == 2
    with pytest.raises(ValueError, match="instances"):
        vw.windows_figure(200, [0], 128, [1, 2, 3])
    with pytest.raises(ValueError, match="one window"):
        vw.windows_figure(200, [], 128)


def test_window_mask_figure_on_the_last_window_of_a_real_query(world):
    ep = world.episodes("test", 5)[0]
    length = len(world.raw_features(ep["query"]))
    T = 128
    last = window_starts(length, T, 60)[-1]
    t = episode_tensors(world, ep, T, 16, mode="window", start=last)
    assert bool(t["mask"].all())                                   # the last window ends at the video's end
    t = episode_tensors(world, ep, T, 16, mode="window", start=length - 100)   # one that sticks out
    fig = vw.window_mask_figure(t["query"].numpy(), t["mask"].numpy(), start=length - 100)
    feats, mask = fig.data
    assert np.asarray(feats.z).shape == (world.meta.feature_dim, T)
    np.testing.assert_array_equal(np.asarray(mask.z)[0], np.arange(T) < 100)
    assert np.all(np.asarray(feats.z)[:, 100:] == 0) and np.any(np.asarray(feats.z)[:, :100] != 0)
    assert "100 snippets of the video, 28 of padding" in fig.layout.title.text
    with pytest.raises(ValueError):
        vw.window_mask_figure(np.zeros((5, 3)), np.ones(4))


def test_instance_lengths_figure_counts_and_marks():
    fig = vw.instance_lengths_figure({"windowed": [1.2, 3.0, 9.9], "resampled": [0.3, 0.4, 2.6]},
                                  marks={"2 snippets": 2, "smallest anchor": 4})
    assert [t.name for t in fig.data] == ["windowed", "resampled"]
    assert sum(fig.data[0].y) == 3 and sum(fig.data[1].y) == 3
    centres = floats(fig.data[1].x)
    assert fig.data[1].y[int(np.argmin(abs(centres - 0.25)))] == 2            # 0.3, 0.4 in [0, 0.5)
    assert [s.x0 for s in fig.layout.shapes] == [2, 4]
    fig = vw.instance_lengths_figure({"a": [1, 2]}, bins=[0, 1.5, 3])
    assert list(fig.data[0].y) == [1, 1]
