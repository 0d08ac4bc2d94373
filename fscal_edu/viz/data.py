"""Figures of the task, the data and the episodes (notebooks 00-01).

Every function returns a ``go.Figure`` (or the data one draws) and is tested in pytest.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..data.features import instances_in_snippets  # noqa: F401  (computed there)
from .marks import COMMON, OTHER, SUPPORT, VIDEO, bars  # noqa: F401  (the colours, re-exported)


def episode_timeline_figure(episode: dict, annotations: dict, *, title: str | None = None) -> go.Figure:
    """One episode on a time axis (seconds): the query video and the video of every support clip.

    Query row: the instances of the episode's class (the ground truth that counts, red) and of
    other classes (distractors, grey). Support rows: the clip that was cut out (blue) inside its
    source video, among that video's other instances.
    """
    db = annotations["database"]
    rows = [("query", episode["query"], None)] + [(f"support {k + 1}", s["video"], s["segment"])
                                                    for k, s in enumerate(episode["support"])]
    names = [f"{role}: {video}" for role, video, _ in rows]
    fig = go.Figure(bars(names, [0.0] * len(rows), [db[v]["duration"] for _, v, _ in rows],
                          [""] * len(rows), "video", VIDEO, width=0.8, hoverinfo="skip",
                          hovertemplate=None, customdata=None))
    common, other = [], []
    for name, (role, video, cut) in zip(names, rows):
        for a in db[video]["annotations"]:
            if cut is not None and list(a["segment"]) == list(cut):
                continue                                   # drawn below as the support clip
            target = common if role == "query" and a["label"] == episode["label"] else other
            target.append((name, *a["segment"], a["label"]))
    cuts = [(name, *cut, episode["label"]) for name, (_, _, cut) in zip(names, rows) if cut is not None]
    for items, legend, colour in ((other, "other classes", OTHER), (common, "common class (query)", COMMON),
                                  (cuts, "support clip", SUPPORT)):
        fig.add_trace(bars(*zip(*items), legend, colour) if items else
                      go.Bar(y=[], x=[], orientation="h", name=legend, marker_color=colour))
    fig.update_layout(barmode="overlay", title=title or f"episode {episode['id']}: "
                      f"{len(episode['support'])}-shot, hidden class {episode['label']}",
                      xaxis_title="time (s)", height=140 + 45 * len(rows), legend_orientation="h",
                      legend_y=-0.25, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(categoryorder="array", categoryarray=names[::-1])
    return fig


def _segment_boxes(fig, segments, highlight=None, fill=False, **where):
    """Mark ``(start, end, label)`` segments (snippet coordinates) across a subplot: outlined boxes
    (over heatmaps) or shaded bands (``fill``, behind curves)."""
    for s, e, label in segments:
        colour = COMMON if label == highlight else OTHER
        fig.add_vrect(x0=s, x1=e, line_color=colour, line_width=0 if fill else 2,
                      fillcolor=colour if fill else "rgba(0,0,0,0)", opacity=0.2 if fill else 0.9,
                      layer="below" if fill else "above", annotation_text=label,
                      annotation_position="top left", annotation_font_color=colour,
                      annotation_font_size=10, **where)


def _heatmap(x, x0=0.0, dx=1.0, **kw):
    """``(T, C)`` features as a heatmap: snippet i spans [i, i+1) on x, channels on y."""
    x = np.asarray(x, dtype=np.float32)
    return go.Heatmap(z=np.round(x.T, 2), x=x0 + (np.arange(len(x)) + 0.5) * dx,
                      coloraxis="coloraxis", hovertemplate="snippet %{x:.1f}, channel %{y}: "
                      "%{z}<extra></extra>", **kw)


def _colour_scale(fig, arrays):
    zmax = float(max(np.abs(np.asarray(a)).max() for a in arrays))
    fig.update_layout(coloraxis=dict(colorscale="RdBu_r", cmin=-zmax, cmax=zmax,
                                     colorbar=dict(title="value", thickness=12)))


def feature_heatmap_figure(x, *, segments=(), highlight: str | None = None,
                           title: str | None = None) -> go.Figure:
    """One video's ``(T, C)`` features: snippets left to right, channels bottom to top.

    ``segments`` are ``(start, end, label)`` in snippet coordinates, outlined on top; the one
    whose label is ``highlight`` (the common class) in red.
    """
    fig = go.Figure(_heatmap(x))
    _colour_scale(fig, [x])
    _segment_boxes(fig, segments, highlight)
    fig.update_layout(title=title or f"features {tuple(np.shape(x))} (T, C)", height=330,
                      xaxis_title="snippet (snippet coordinates)", yaxis_title="channel",
                      margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(range=[0, len(x)])
    return fig


def episode_heatmaps_figure(query, supports, *, segments=(), highlight: str | None = None,
                            title: str | None = None) -> go.Figure:
    """What the model sees: the query ``(T, C)`` and the K support clips ``(K, T_S, C)``, one colour scale."""
    from plotly.subplots import make_subplots
    K = len(supports)
    T, T_S = len(query), len(supports[0])
    fig = make_subplots(rows=1, cols=1 + K, shared_yaxes=True, horizontal_spacing=0.01,
                        column_widths=[T] + [T_S] * K,
                        subplot_titles=[f"query ({T}, {query.shape[1]})"] + [f"S{k + 1}" for k in range(K)])
    fig.add_trace(_heatmap(query), 1, 1)
    for k in range(K):
        fig.add_trace(_heatmap(supports[k]), 1, 2 + k)
    _colour_scale(fig, [query, supports])
    _segment_boxes(fig, segments, highlight, row=1, col=1)
    fig.update_layout(title=title or f"one episode as tensors: query (T={T}) and {K} supports (T_S={T_S})",
                      height=330, margin=dict(l=10, r=10, t=70, b=10))
    fig.update_yaxes(title_text="channel", row=1, col=1)
    return fig


def feature_grid_figure(panels: dict, *, segments=(), highlight: str | None = None, cols: int = 2,
                        title: str | None = None) -> go.Figure:
    """Several ``(T, C)`` feature maps side by side (e.g. one video under different world knobs)."""
    from plotly.subplots import make_subplots
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(panels), shared_xaxes=True,
                        horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, x in enumerate(panels.values()):
        fig.add_trace(_heatmap(x), 1 + i // cols, 1 + i % cols)
        _segment_boxes(fig, segments, highlight, row=1 + i // cols, col=1 + i % cols)
    _colour_scale(fig, list(panels.values()))
    fig.update_layout(title=title, height=260 * rows + 60, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def score_curve_figure(curves: dict, *, segments=(), highlight: str | None = None,
                       title: str | None = None, yaxis_title: str = "score") -> go.Figure:
    """Per-snippet curves ``{name: (T,)}`` over the query, with its instances shaded behind them."""
    fig = go.Figure([go.Scatter(x=np.arange(len(y)) + 0.5, y=np.round(np.asarray(y, float), 4),
                                mode="lines", name=name) for name, y in curves.items()])
    _segment_boxes(fig, segments, highlight, fill=True)
    fig.update_layout(title=title, xaxis_title="query snippet", yaxis_title=yaxis_title, height=330,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def knob_sweep_figure(knob: str, values, curves: dict, *, yaxis_title: str = "score",
                      title: str | None = None) -> go.Figure:
    """How measurements ``{name: [one per value]}`` change as one world knob takes ``values``."""
    fig = go.Figure([go.Scatter(x=list(values), y=np.round(np.asarray(y, float), 4), mode="lines+markers",
                                name=name) for name, y in curves.items()])
    fig.update_layout(title=title or f"effect of {knob}", xaxis_title=knob, yaxis_title=yaxis_title,
                      height=330, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def resample_figure(x, length: int, *, channel: int = 0) -> go.Figure:
    """One channel before and after :func:`~fscal_edu.data.features.resample`, on the [0, 1] video axis.

    Every sample is drawn at its snippet centre, ``(i + 0.5) / T``: that is where the resampler
    reads the old features.
    """
    from ..data.features import resample
    x = np.asarray(x, dtype=np.float32)
    y = resample(x, length)
    T = len(x)
    fig = go.Figure([
        go.Scatter(x=(np.arange(T) + 0.5) / T, y=x[:, channel], mode="lines+markers",
                   name=f"original, T = {T}", marker_size=7),
        go.Scatter(x=(np.arange(length) + 0.5) / length, y=y[:, channel], mode="markers",
                   name=f"resampled, T = {length}", marker=dict(size=9, symbol="x")),
    ])
    fig.update_layout(title=f"resampling channel {channel}: {T} -> {length} snippets",
                      xaxis_title="position in the video (fraction)", yaxis_title="feature value",
                      height=330, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def snippet_axis_figure(duration: float, num_snippets: int, segment, *, meta=None,
                        feat_len: int | None = None) -> go.Figure:
    """Seconds above, snippets below: where each snippet sits in time, and one segment on both.

    Snippet ``i`` covers ``[i, i + 1)`` on the snippet line; its edges are drawn at the seconds
    :func:`~fscal_edu.data.features.index_to_seconds` gives them, so the picture is the conversion.
    """
    from ..data.features import index_to_seconds, seconds_to_index
    kw = dict(duration=duration, num_snippets=num_snippets, meta=meta, feat_len=feat_len)
    edges = index_to_seconds(np.arange(num_snippets + 1, dtype=float), **kw)     # (T + 1,) s
    centres = index_to_seconds(np.arange(num_snippets) + 0.5, **kw)                 # (T,) s
    s, e = (float(v) for v in segment)
    i_s, i_e = (float(v) for v in seconds_to_index(np.array([s, e]), **kw))
    idx = np.arange(num_snippets)
    fig = go.Figure([
        go.Bar(y=["snippets"] * num_snippets, base=edges[:-1], x=np.diff(edges), orientation="h",
               name="snippet i covers [i, i+1)", marker_color=np.where(idx % 2, "#c6dbef", "#9ecae1"),
               marker_line_color="white", marker_line_width=1, text=idx.astype(str),
               textposition="inside", insidetextanchor="start", hovertemplate="snippet %{text}<extra></extra>"),
        go.Scatter(x=centres, y=["snippets"] * num_snippets, mode="markers", name="centre i + 0.5",
                   marker=dict(color="black", size=5)),
        go.Bar(y=["seconds"], base=[s], x=[e - s], orientation="h", name="segment", marker_color=COMMON,
               text=[f"{s:g}-{e:g} s  ->  snippets {i_s:.2f}-{i_e:.2f}"], textposition="inside"),
    ])
    for t in (s, e):
        fig.add_vline(x=t, line_dash="dot", line_color=COMMON)
    fig.update_layout(barmode="overlay", height=260, xaxis_title="time (s)", showlegend=True,
                      title=f"{num_snippets} snippets over a {duration:g} s video", legend_orientation="h",
                      legend_y=-0.4, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(categoryorder="array", categoryarray=["snippets", "seconds"])
    return fig


def class_split_figure(annotations: dict, splits: dict) -> go.Figure:
    """Instances per class, one colour per split: the model trains on base classes only."""
    from ..data.annotations import instances_by_class
    by = instances_by_class(annotations)
    fig = go.Figure([go.Bar(x=list(classes), y=[len(by.get(c, [])) for c in classes],
                            name=f"{split} ({len(classes)} classes)")
                     for split, classes in splits.items()])
    fig.update_layout(title="class splits: disjoint base / val / test classes", xaxis_title="class",
                      yaxis_title="instances", height=330, margin=dict(l=10, r=10, t=50, b=10))
    return fig
