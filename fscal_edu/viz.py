"""Plotly figures for the notebooks. Every function returns a ``go.Figure`` and is tested in pytest.

Sections follow the notebooks; the ipywidgets wrappers around these live in ``widgets.py``.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# ---------------------------------------------------------------------------------------------
# Task, data and episodes (notebooks 00-01)
# ---------------------------------------------------------------------------------------------

COMMON, OTHER, SUPPORT, VIDEO = "#d62728", "#8c8c8c", "#1f77b4", "#e8e8e8"


def _bars(rows, starts, ends, texts, name, colour, width=0.55, **kw):
    """Horizontal bars ``[start, end]`` on categorical rows (one legend entry for all of them)."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    kw = {"hovertemplate": "%{text}: %{customdata[0]:.1f}-%{customdata[1]:.1f} s<extra>%{y}</extra>",
          "customdata": np.round(np.stack([starts, ends], 1), 3), **kw}
    return go.Bar(y=list(rows), base=np.round(starts, 3), x=np.round(ends - starts, 3), orientation="h",
                  name=name, marker_color=colour, width=width, text=list(texts), textposition="inside",
                  insidetextanchor="middle", **kw)


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
    fig = go.Figure(_bars(names, [0.0] * len(rows), [db[v]["duration"] for _, v, _ in rows],
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
        fig.add_trace(_bars(*zip(*items), legend, colour) if items else
                      go.Bar(y=[], x=[], orientation="h", name=legend, marker_color=colour))
    fig.update_layout(barmode="overlay", title=title or f"episode {episode['id']}: "
                      f"{len(episode['support'])}-shot, hidden class {episode['label']}",
                      xaxis_title="time (s)", height=140 + 45 * len(rows), legend_orientation="h",
                      legend_y=-0.25, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(categoryorder="array", categoryarray=names[::-1])
    return fig


def instances_in_snippets(annotations: dict, video: str, num_snippets: int) -> list:
    """A video's instances as ``(start, end, label)`` on an axis of ``num_snippets`` (resized features)."""
    from .data.features import seconds_to_index
    duration = annotations["database"][video]["duration"]
    return [(*seconds_to_index(np.asarray(a["segment"], float), duration=duration,
                               num_snippets=num_snippets).tolist(), a["label"])
            for a in annotations["database"][video]["annotations"]]


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
    from .data.features import resample
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
    from .data.features import index_to_seconds, seconds_to_index
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
    from .data.annotations import instances_by_class
    by = instances_by_class(annotations)
    fig = go.Figure([go.Bar(x=list(classes), y=[len(by.get(c, [])) for c in classes],
                            name=f"{split} ({len(classes)} classes)")
                     for split, classes in splits.items()])
    fig.update_layout(title="class splits: disjoint base / val / test classes", xaxis_title="class",
                      yaxis_title="instances", height=330, margin=dict(l=10, r=10, t=50, b=10))
    return fig

# ---------------------------------------------------------------------------------------------
# Proposals, NMS and evaluation (notebook 02)
# ---------------------------------------------------------------------------------------------

PROPOSAL, KEPT, SOFT = "#9e9e9e", "#d62728", "#1f77b4"


def _segment_lines(segments, y):
    """x, y for one Scatter drawing every ``[start, end]`` as a horizontal line at its own height."""
    segments, y = np.asarray(segments, float).reshape(-1, 2), np.asarray(y, float).reshape(-1)
    xs = np.stack([segments[:, 0], segments[:, 1], np.full(len(y), np.nan)], 1).reshape(-1)
    ys = np.repeat(y, 3)
    ys[2::3] = np.nan
    return np.round(xs, 3), np.round(ys, 4)


def _gt_boxes(fig, gt, **where):
    for s, e in np.asarray(gt, float).reshape(-1, 2):
        fig.add_vrect(x0=s, x1=e, fillcolor=COMMON, opacity=0.12, line_width=0, **where)


def anchors_figure(anchors, T: int, *, gt=(), title: str | None = None) -> go.Figure:
    """Every anchor as a horizontal line, one colour per length, stacked in anchor order; the
    query's ground truth (snippet coordinates) shaded red behind them."""
    anchors = np.asarray(anchors, float)
    lengths = anchors[:, 1] - anchors[:, 0]
    fig = go.Figure()
    for L in np.unique(lengths):
        rows = np.flatnonzero(lengths == L)
        x, y = _segment_lines(anchors[rows], rows)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"length {L:g} ({len(rows)})",
                                 line_width=2, hoverinfo="skip"))
    _gt_boxes(fig, gt)
    fig.update_layout(title=title or f"{len(anchors)} multi-scale anchors over a query of T = {T} snippets",
                      xaxis_title="snippet coordinates", yaxis_title="anchor index", height=480,
                      margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(range=[0, T])
    return fig


def ar_an_figure(curves: dict, *, title: str = "average recall vs number of proposals (AR@AN)") -> go.Figure:
    """AR@AN curves ``{name: average_recall(...) result}``; the legend carries each AUC."""
    fig = go.Figure([go.Scatter(x=r["an"], y=np.round(r["ar"], 4), mode="lines",
                                name=f"{name} (AUC {r['auc']:.1f})") for name, r in curves.items()])
    fig.update_layout(title=title, xaxis_title="proposals per query (AN)",
                      yaxis_title="average recall, tIoU 0.5:0.05:0.95", yaxis_range=[0, 1], height=380,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def roi_align_figure(curve, segment, positions, values, *, context: int = 2, context_frac: float = 0.25,
                     title: str | None = None) -> go.Figure:
    """1-D RoIAlign on one proposal: a per-snippet signal ``(T,)`` at the snippet centres, the
    proposal (shaded red) and its context windows (blue), and the sampled points with their values."""
    curve, positions, values = (np.asarray(v, float).reshape(-1) for v in (curve, positions, values))
    s, e = (float(v) for v in segment)
    side = np.r_[0:context, len(positions) - context:len(positions)]
    mid = np.r_[context:len(positions) - context]
    fig = go.Figure([
        go.Scatter(x=np.arange(len(curve)) + 0.5, y=np.round(curve, 4), mode="lines+markers",
                   name="signal at snippet centres", line_color=PROPOSAL, marker_size=4),
        go.Scatter(x=np.round(positions[mid], 3), y=np.round(values[mid], 4), mode="markers",
                   name="inside points", marker=dict(color=KEPT, size=10, symbol="diamond")),
        go.Scatter(x=np.round(positions[side], 3), y=np.round(values[side], 4), mode="markers",
                   name="context points", marker=dict(color=SOFT, size=10, symbol="square"))])
    pad = context_frac * (e - s)
    fig.add_vrect(x0=s, x1=e, fillcolor=KEPT, opacity=0.1, line_width=0)
    for x0, x1 in ((s - pad, s), (e, e + pad)):
        fig.add_vrect(x0=x0, x1=x1, fillcolor=SOFT, opacity=0.08, line_width=0)
    fig.update_layout(title=title or f"RoIAlign on the proposal [{s:g}, {e:g}]: {len(mid)} inside "
                      f"+ 2 x {context} context points", xaxis_title="snippet coordinates",
                      yaxis_title="value", height=360, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(range=[max(0.0, s - (e - s)), min(len(curve), e + (e - s))])
    return fig


def nms_figure(segments, scores, keep, soft_segments, soft_scores, *, gt=(), iou_threshold=None,
               sigma=None) -> go.Figure:
    """Hard NMS (top) against Soft-NMS (bottom): every proposal as a grey line at the height of its
    score; the segments hard NMS keeps in red; Soft-NMS's output in blue at its decayed score."""
    from plotly.subplots import make_subplots
    segments, scores = np.asarray(segments, float), np.asarray(scores, float)
    keep = np.asarray(keep, dtype=int)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=[
        f"hard NMS (tIoU > {iou_threshold:g} suppressed): {len(keep)} kept" if iou_threshold is not None
        else f"hard NMS: {len(keep)} kept",
        f"Soft-NMS (sigma {sigma:g}): top {len(soft_scores)}" if sigma is not None
        else f"Soft-NMS: top {len(soft_scores)}"])
    for row in (1, 2):
        x, y = _segment_lines(segments, scores)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=PROPOSAL, width=1),
                                 opacity=0.35, name="proposals (score)", showlegend=row == 1,
                                 hoverinfo="skip"), row, 1)
        _gt_boxes(fig, gt, row=row, col=1)
    x, y = _segment_lines(segments[keep], scores[keep])
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=KEPT, width=4), name="kept by hard NMS"), 1, 1)
    x, y = _segment_lines(soft_segments, soft_scores)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=SOFT, width=3),
                             name="Soft-NMS (new score)"), 2, 1)
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=60, b=10), legend_orientation="h", legend_y=-0.1)
    fig.update_xaxes(title_text="snippet coordinates", row=2, col=1)
    fig.update_yaxes(title_text="score")
    return fig


def pr_curve_figure(precision, recall, *, title: str | None = None) -> go.Figure:
    """A ranking's precision/recall points, the VOC-2011 interpolated envelope and, shaded, the AP."""
    from .evaluation import interpolated_ap
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    mrec = np.r_[0.0, recall, 1.0]
    mprec = np.maximum.accumulate(np.r_[0.0, precision, 0.0][::-1])[::-1]
    ap = interpolated_ap(precision, recall)
    fig = go.Figure([
        go.Scatter(x=np.round(mrec, 4), y=np.round(mprec, 4), mode="lines", line_shape="vh",
                   fill="tozeroy", name=f"interpolated (area = AP = {ap:.4f})", line_color=SOFT),
        go.Scatter(x=np.round(recall, 4), y=np.round(precision, 4), mode="lines+markers",
                   name="precision after k predictions", line=dict(color=KEPT, dash="dot"))])
    fig.update_layout(title=title or f"precision-recall, AP = {ap:.4f}", xaxis_title="recall",
                      yaxis_title="precision", xaxis_range=[0, 1.02], yaxis_range=[0, 1.05], height=380,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


# ---------------------------------------------------------------------------------------------
# Attention stages (notebooks 03-05)
# ---------------------------------------------------------------------------------------------
from typing import NamedTuple  # noqa: E402

from plotly.subplots import make_subplots  # noqa: E402

from .utils import FscalError, where  # noqa: E402


class AttentionView(NamedTuple):
    """One support's slice of a stage's attention: ``A (sources, targets)`` and axis labels."""

    A: np.ndarray
    sources: list
    targets: list
    source_name: str
    target_name: str


def proposal_names(segments) -> list:
    """``[start, end)`` labels for proposals given as ``(N, 2)`` snippet coordinates."""
    return [f"[{s:.0f}, {e:.0f})" for s, e in np.asarray(segments, dtype=float)]


def coarse_names(coarse) -> list:
    """Labels ``S<l> k=<k> [a, b)`` of Dynamics-CA's coarse tokens (a ``CoarseTokens``)."""
    return [f"S{l} k={k} [{s}, {s + k})" for l, k, s in
            zip(coarse.support.tolist(), coarse.granularity.tolist(), coarse.start.tolist())]


def attention_view(att, *, batch: int = 0, support: int | None = 0, granularity: int | None = None,
                   proposal_labels=None) -> AttentionView:
    """Cut what concerns support ``support`` out of a ``StageAttention`` as a numpy matrix.

    - QtoS (also joint): proposals (rows) -> the T_S snippets of the support (columns).
    - Dynamics: coarse tokens of all supports (rows; only granularity ``granularity`` if given)
      -> the snippets of the support.
    - StoQ: the snippets of the support (all K*T_S rows if ``support`` is None) -> proposals.
    """
    A = att.A.detach().float().cpu().numpy()[batch]
    K, T_S = att.K, att.T_S
    if support is not None and not 0 <= support < K:
        raise FscalError(f"{where(field='support')}: {support} is out of range, this episode "
                         f"has K = {K}")
    snippets = [f"t{j}" for j in range(T_S)]
    N_Q = A.shape[-1] if att.stage == "stoq" else A.shape[-2]
    proposals = list(proposal_labels) if proposal_labels is not None else [f"p{n}" for n in range(N_Q)]
    own = slice(None) if support is None else slice(support * T_S, (support + 1) * T_S)
    if att.stage == "qtos":
        return AttentionView(A[support], proposals, snippets, "proposal", f"support {support} snippet")
    if att.stage == "qtos_joint":
        return AttentionView(A[:, own], proposals, snippets, "proposal", f"support {support} snippet")
    if att.stage == "dynamics":
        keep = np.ones(A.shape[-2], dtype=bool) if granularity is None else \
            att.coarse.granularity.numpy() == granularity
        names = [n for n, k in zip(coarse_names(att.coarse), keep) if k]
        return AttentionView(A[support][keep], names, snippets, "coarse token",
                             f"support {support} snippet")
    if att.stage == "stoq":
        rows = [f"S{l} t{j}" for l in range(K) for j in range(T_S)][own]
        return AttentionView(A[own], rows, proposals, "support snippet", "proposal")
    raise FscalError(f"{where(field='stage')}: unknown stage {att.stage!r}")


def fig_attention_matrix(A, *, sources=None, targets=None, title: str = "attention A",
                         source_name: str = "source", target_name: str = "target",
                         annotate: bool = True) -> go.Figure:
    """A small attention matrix with its numbers: rows are sources i, columns are targets j."""
    A = np.asarray(A, dtype=float)
    sources = sources if sources is not None else [f"{source_name} {i}" for i in range(A.shape[0])]
    targets = targets if targets is not None else [f"{target_name} {j}" for j in range(A.shape[1])]
    fig = go.Figure(go.Heatmap(z=A.round(4), x=targets, y=sources, colorscale="Viridis",
                               texttemplate="%{z:.2f}" if annotate else None,
                               hovertemplate="A[%{y}, %{x}] = %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=f"target: {target_name}",
                      yaxis_title=f"source: {source_name}", yaxis_autorange="reversed",
                      height=120 + 30 * len(sources), margin=dict(t=50, b=40))
    return fig


def fig_stage_attention(att, *, batch: int = 0, support: int | None = 0,
                        granularity: int | None = None, proposal: int | None = None,
                        proposal_labels=None) -> go.Figure:
    """A stage's attention for one support (heatmap) and the mass each target receives (bars).

    The bars are ``sum_i A[i, j]``: how many units of attention target j gathers, the weight of
    what eq. (2)/(5)/(6) adds to it. ``proposal`` (QtoS, StoQ) outlines one proposal: its row
    (QtoS, where it is a source) or its column (StoQ, where it is a target).
    """
    view = attention_view(att, batch=batch, support=support, granularity=granularity,
                          proposal_labels=proposal_labels)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25],
                        vertical_spacing=0.05)
    fig.add_trace(go.Heatmap(z=view.A.round(4), x=view.targets, y=view.sources,
                             colorscale="Viridis", colorbar=dict(title="A", len=0.7, y=0.65),
                             hovertemplate=f"{view.source_name} %{{y}}<br>{view.target_name} "
                                           f"%{{x}}<br>A = %{{z:.3f}}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=view.targets, y=view.A.sum(0).round(4), name="mass received",
                         marker_color="gray"), 2, 1)
    if proposal is not None and att.stage != "dynamics":
        name = (view.sources if att.stage.startswith("qtos") else view.targets)[proposal]
        if att.stage.startswith("qtos"):     # a source: its row, and where its unit goes
            fig.add_trace(go.Scatter(x=view.targets, y=[name] * len(view.targets), mode="lines",
                                     line=dict(color="red"), name=f"proposal {name}"), 1, 1)
            fig.add_trace(go.Bar(x=view.targets, y=view.A[proposal].round(4),
                                 name=f"from proposal {name}", marker_color="red"), 2, 1)
        else:                                # a target: its column
            fig.add_trace(go.Scatter(x=[name] * len(view.sources), y=view.sources, mode="lines",
                                     line=dict(color="red"), name=f"proposal {name}"), 1, 1)
    stage = {"qtos": "QtoS Context-CA", "qtos_joint": "QtoS Context-CA (joint)",
             "dynamics": "Dynamics-CA", "stoq": "StoQ Context-CA"}[att.stage]
    what = "all supports" if support is None else f"support {support}"
    if granularity is not None:
        what += f", granularity k={granularity}"
    fig.update_layout(title=f"{stage}: {what}", height=560, showlegend=proposal is not None,
                      barmode="overlay", margin=dict(t=50, b=40))
    fig.update_yaxes(title_text=f"source: {view.source_name}", autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="mass received", row=2, col=1)
    fig.update_xaxes(title_text=f"target: {view.target_name}", row=2, col=1)
    return fig


def fig_query_mass(att, segments, *, batch: int = 0, gt=None, others=None) -> go.Figure:
    """StoQ Context-CA on the query's time line: each proposal ``[start, end)`` drawn at the
    height of the mass it receives from all support snippets. ``gt (G, 2)``, the instances of
    the common action, are shaded green; ``others``, instances of other classes, red."""
    if att.stage != "stoq":
        raise FscalError(f"{where(field='stage')}: fig_query_mass draws StoQ Context-CA, got "
                         f"{att.stage!r}")
    mass = att.A.detach().float().cpu().numpy()[batch].sum(0)                        # (N_Q,)
    seg = np.asarray(segments, dtype=float)
    gap = np.full(len(seg), np.nan)                 # NaN breaks the line between two proposals
    fig = go.Figure(go.Scatter(x=np.stack([seg[:, 0], seg[:, 1], gap], 1).ravel(),
                               y=np.stack([mass, mass, gap], 1).ravel().round(4), mode="lines",
                               name="proposals", hoverinfo="x+y"))
    for spans, color, text in [(gt, "green", "common action"), (others, "red", "other class")]:
        for s, e in ([] if spans is None else np.asarray(spans, dtype=float).reshape(-1, 2)):
            fig.add_vrect(x0=s, x1=e, fillcolor=color, opacity=0.15, line_width=0,
                          annotation_text=text, annotation_position="top left")
    fig.update_layout(title="StoQ Context-CA: mass each proposal receives from the supports",
                      xaxis_title="query time (snippets)", yaxis_title="mass received", height=360)
    return fig


def granularity_mass(att, *, batch: int = 0, support: int = 0) -> dict:
    """Dynamics-CA: for each granularity k, the mass each snippet of ``support`` receives from
    the coarse tokens of granularity k (of all supports): ``{k: (T_S,) array}``."""
    return {k: attention_view(att, batch=batch, support=support, granularity=k).A.sum(0)
            for k in sorted(set(att.coarse.granularity.tolist()))}


def fig_granularity_mass(att, *, batch: int = 0, support: int = 0) -> go.Figure:
    """Dynamics-CA: one line per granularity k, the mass the snippets of a support receive."""
    fig = go.Figure()
    for k, mass in granularity_mass(att, batch=batch, support=support).items():
        fig.add_trace(go.Scatter(x=list(range(att.T_S)), y=mass.round(4), mode="lines+markers",
                                 name=f"k = {k}"))
    fig.update_layout(title=f"Dynamics-CA: mass received by the snippets of support {support}, "
                            f"by granularity", xaxis_title="snippet t of the support",
                      yaxis_title="mass received", height=360)
    return fig

# ---------------------------------------------------------------------------------------------
# Relation classifier and training (notebooks 06-07)
# ---------------------------------------------------------------------------------------------

LABEL_COLOURS = {1: COMMON, -1: "#ff7f0e", 0: OTHER}    # positive, ignored, negative
LABEL_NAMES = {1: "positive", -1: "ignored", 0: "negative"}
HIT, ON_DISTRACTOR, MISS = "#2ca02c", "#ff7f0e", "#7f7f7f"
LOSS_KEYS = ("loss", "cls", "reg", "rel")


def label_assignment_figure(anchors, labels, best_iou, *, gt=(), others=(), pos_iou: float = 0.5,
                            neg_iou: float = 0.3, title: str | None = None) -> go.Figure:
    """Label assignment on one query's time line (snippet coordinates).

    Every anchor is a horizontal line ``[start, end]`` at the height of its best tIoU with an
    instance of the common class, coloured by its label (``fscal_edu.proposals.assign_labels``):
    positive (red), ignored (orange, between the two dashed thresholds), negative (grey).
    ``gt`` (the common class) is shaded red, ``others`` (instances of other classes, which are
    negatives too) grey. Positives below ``pos_iou`` are the best anchors of short instances.
    """
    anchors, labels = np.asarray(anchors, float).reshape(-1, 2), np.asarray(labels).reshape(-1)
    best_iou = np.asarray(best_iou, float).reshape(-1)
    fig = go.Figure()
    for lab in (0, -1, 1):
        rows = np.flatnonzero(labels == lab)
        x, y = _segment_lines(anchors[rows], best_iou[rows])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{LABEL_NAMES[lab]} ({len(rows)})",
                                 line=dict(color=LABEL_COLOURS[lab], width=2 if lab == 1 else 1),
                                 hoverinfo="skip"))
    for s, e in np.asarray(others, float).reshape(-1, 2):
        fig.add_vrect(x0=s, x1=e, fillcolor=OTHER, opacity=0.15, line_width=0)
    _gt_boxes(fig, gt)
    for t, text in ((pos_iou, f"pos_iou {pos_iou:g}"), (neg_iou, f"neg_iou {neg_iou:g}")):
        fig.add_hline(y=t, line_dash="dash", line_color="black", annotation_text=text,
                      annotation_position="top left")
    fig.update_layout(title=title or f"label assignment: {int((labels == 1).sum())} positives, "
                      f"{int((labels == -1).sum())} ignored, {int((labels == 0).sum())} negatives",
                      xaxis_title="query time (snippets)", yaxis_title="best tIoU with the common class",
                      yaxis_range=[-0.02, 1.02], height=420, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def relation_scores_figure(groups: dict, *, bins: int = 20, title: str | None = None) -> go.Figure:
    """Histograms of relation scores ``rho`` in [0, 1], one row per group ``{name: scores}`` (e.g.
    foreground proposals with their own supports, with another episode's supports, background
    with their own). Each histogram sums to one; a dashed line marks the group's mean."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    groups = {name: np.asarray(v, float).reshape(-1) for name, v in groups.items()}
    names = [f"{name} (n = {len(v)}" + (f", mean {v.mean():.3f})" if len(v) else ")") for name, v in groups.items()]
    fig = make_subplots(rows=len(groups), cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=names)
    for row, (name, scores) in enumerate(zip(names, groups.values()), start=1):
        counts = np.histogram(scores, bins=edges)[0] / max(1, len(scores))
        fig.add_trace(go.Bar(x=np.round((edges[:-1] + edges[1:]) / 2, 4), y=np.round(counts, 4),
                             width=1.0 / bins, name=name), row, 1)
        if len(scores):
            fig.add_vline(x=float(scores.mean()), line_dash="dash", line_color="black", row=row, col=1)
    fig.update_layout(title=title or "relation scores rho", height=140 + 150 * len(groups), showlegend=False,
                      margin=dict(l=10, r=10, t=60, b=10))
    fig.update_xaxes(range=[0, 1])
    fig.update_xaxes(title_text="rho (dashed: the mean)", row=len(groups), col=1)
    fig.update_yaxes(title_text="share")
    return fig


def loss_terms_figure(terms: dict, *, lambda_reg: float = 1.0, lambda_rel: float = 0.5) -> go.Figure:
    """One batch's loss ``L = L_cls + lambda_reg L_reg + lambda_rel L_rel`` as a waterfall: each
    weighted term adds its bar, the last bar is the total (``terms`` from ``fscal_loss``)."""
    parts = [("L_cls", 1.0, "cls"), (f"{lambda_reg:g} x L_reg", lambda_reg, "reg"),
             (f"{lambda_rel:g} x L_rel", lambda_rel, "rel")]
    parts = [(name, w * float(terms[k])) for name, w, k in parts if k in terms]
    fig = go.Figure(go.Waterfall(
        x=[n for n, _ in parts] + ["L"], y=[round(v, 4) for _, v in parts] + [round(float(terms["loss"]), 4)],
        measure=["relative"] * len(parts) + ["total"], texttemplate="%{y:.3f}", textposition="outside"))
    fig.update_layout(title="the loss of one batch, term by term", yaxis_title="loss", height=360,
                      showlegend=False, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def parameter_counts(model) -> dict:
    """Trainable parameters of each top-level part of a model, ``{name: count}`` (parts with none left out)."""
    from .model import count_parameters
    return {name: n for name, part in model.named_children() if (n := count_parameters(part))} | \
        {name: p.numel() for name, p in model.named_parameters(recurse=False) if p.requires_grad}


def parameters_figure(models: dict) -> go.Figure:
    """Grouped bars: trainable parameters of each part, one group per model ``{name: model}``."""
    fig = go.Figure([go.Bar(x=list(counts), y=list(counts.values()),
                            name=f"{name} ({sum(counts.values()):,} in all)")
                     for name, counts in ((n, parameter_counts(m)) for n, m in models.items())])
    fig.update_layout(title="trainable parameters by part", yaxis_title="parameters", yaxis_type="log",
                      barmode="group", height=420, legend_orientation="h", legend_y=-0.3,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def loss_curve_figure(records, *, keys=None, smooth: int = 1, title: str = "training") -> go.Figure:
    """Training curves from ``train``'s records (its ``callback`` or the lines of ``metrics.jsonl``).

    One line per loss term in ``keys`` (default: those of ``LOSS_KEYS`` that the records hold)
    against the step, as a trailing mean over ``smooth`` steps; the validation mAP@0.5 (right
    axis) where it was logged. Every key gets a trace even with no record yet, so a live plot
    can fill the traces in place.
    """
    records = list(records)
    keys = keys or [k for k in LOSS_KEYS if any(k in r for r in records)] or list(LOSS_KEYS)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for k in keys:
        steps = np.array([r["step"] for r in records if k in r], float)
        y = np.array([r[k] for r in records if k in r], float)
        w = max(1, min(smooth, len(y)))
        if len(y):
            steps, y = steps[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid")
        fig.add_trace(go.Scatter(x=steps, y=np.round(y, 4), mode="lines", name=k), secondary_y=False)
    val = [r for r in records if "val_mAP@0.5" in r]
    fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[round(r["val_mAP@0.5"], 4) for r in val],
                             mode="lines+markers", name="val mAP@0.5", line=dict(color="black", dash="dot")),
                  secondary_y=True)
    fig.update_layout(title=title + (f" (mean over {smooth} steps)" if smooth > 1 else ""), height=380,
                      legend_orientation="h", legend_y=-0.2, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="val mAP@0.5", range=[0, 1], tickmode="auto", showgrid=False, secondary_y=True)
    return fig


def lr_schedule_figure(configs: dict) -> go.Figure:
    """The learning rate at every step of each config ``{name: Config}``: linear warm-up, then
    cosine decay to 5% (``fscal_edu.train.lr_factor`` times ``cfg.lr``)."""
    from .train import lr_factor
    fig = go.Figure()
    for name, cfg in configs.items():
        steps = np.unique(np.linspace(0, cfg.steps - 1, min(cfg.steps, 400)).astype(int))
        fig.add_trace(go.Scatter(x=steps + 1, y=[round(cfg.lr * lr_factor(int(s), cfg), 10) for s in steps],
                                 mode="lines", name=f"{name}: {cfg.steps} steps, warm-up {cfg.warmup}"))
    fig.update_layout(title="learning rate: linear warm-up, cosine decay to 5%", xaxis_title="step",
                      yaxis_title="learning rate", height=360, legend_orientation="h", legend_y=-0.25,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def metrics_by_tiou_figure(metrics: dict, *, per_class: bool = False) -> go.Figure:
    """mAP against the tIoU threshold, one line per model ``{name: evaluate_fscal result}``
    (pooled protocol, or the per-class variant); the legend carries each average mAP."""
    fig = go.Figure()
    for name, m in metrics.items():
        m_ = m["per_class"] if per_class else m
        fig.add_trace(go.Scatter(x=m["tiou_thresholds"], y=np.round(m_["mAP"], 4), mode="lines+markers",
                                 name=f"{name} (average {m_['average_mAP']:.3f})"))
    fig.update_layout(title=f"{'per-class' if per_class else 'pooled'} mAP by tIoU threshold",
                      xaxis_title="tIoU threshold", yaxis_title="mAP", yaxis_range=[0, 1], height=360,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def detection_verdicts(episode: dict, annotations: dict, detections: list, *, iou: float = 0.5) -> list:
    """For each detection ``{"segment", "score"}``: ``("hit", tIoU)`` if it covers an instance of
    the episode's class at ``iou`` or more, else ``("<label>", tIoU)`` of the other instance it
    covers best at ``iou`` or more, else ``("miss", best tIoU with the common class)``."""
    import torch

    from .proposals import tiou
    inst = annotations["database"][episode["query"]]["annotations"]
    segs = torch.tensor([a["segment"] for a in inst], dtype=torch.float64).reshape(-1, 2)
    dets = torch.tensor([d["segment"] for d in detections], dtype=torch.float64).reshape(-1, 2)
    overlap = tiou(dets, segs).numpy()                                        # (D, I)
    common = np.array([a["label"] == episode["label"] for a in inst])
    out = []
    for row in overlap:
        best_c = row[common].max(initial=0.0)
        best_o = int(np.argmax(np.where(common, -1.0, row)))
        if best_c >= iou:
            out.append(("hit", float(best_c)))
        elif not common[best_o] and row[best_o] >= iou:
            out.append((inst[best_o]["label"], float(row[best_o])))
        else:
            out.append(("miss", float(best_c)))
    return out


def detections_timeline_figure(episode: dict, annotations: dict, detections: dict, *, top: int = 3,
                               iou: float = 0.5, title: str | None = None) -> go.Figure:
    """One query on a time axis (seconds): its instances, then each model's ``top`` detections.

    ``detections = {model name: [{"segment", "score"}, ...]}`` (a results JSON's entry for this
    episode). Ground-truth row: the common class (red) and other classes (grey; the common
    class's twin is named "twin"). Each detection gets its own row, labelled with its score and
    coloured green when it hits an instance of the common class (tIoU >= ``iou``), orange when it
    lands on a distractor instead, grey otherwise.
    """
    db = annotations["database"]
    video = db[episode["query"]]
    twins = {t.get("nodeName"): t.get("twin") for t in annotations.get("taxonomy", []) if isinstance(t, dict)}
    gt_row = "ground truth"
    fig = go.Figure(_bars([gt_row], [0.0], [video["duration"]], [""], "query video", VIDEO, width=0.8,
                          hoverinfo="skip", hovertemplate=None, customdata=None))
    for legend, colour, keep in (("common class", COMMON, True), ("other classes", OTHER, False)):
        items = [(gt_row, *a["segment"], "twin" if a["label"] == twins.get(episode["label"]) else a["label"])
                 for a in video["annotations"] if (a["label"] == episode["label"]) == keep]
        if items:
            fig.add_trace(_bars(*zip(*items), legend, colour))
    rows = [gt_row]
    shown = {}
    for name, dets in detections.items():
        dets = sorted(dets, key=lambda d: -d["score"])[:top]
        for rank, (d, (verdict, t)) in enumerate(zip(dets, detection_verdicts(episode, annotations, dets, iou=iou))):
            row = f"{name} #{rank + 1}"
            rows.append(row)
            kind = "hit" if verdict == "hit" else "miss" if verdict == "miss" else "on a distractor"
            colour = {"hit": HIT, "miss": MISS, "on a distractor": ON_DISTRACTOR}[kind]
            text = f"{d['score']:.2f} " + (f"hit ({t:.2f})" if verdict == "hit" else
                                           "miss" if verdict == "miss" else
                                           "twin" if verdict == twins.get(episode["label"]) else verdict)
            fig.add_trace(_bars([row], [d["segment"][0]], [d["segment"][1]], [text], f"detection: {kind}",
                                colour, showlegend=kind not in shown, legendgroup=kind))
            shown[kind] = True
    fig.update_layout(barmode="overlay", title=title or f"episode {episode['id']}: top {top} detections "
                      f"(hidden class {episode['label']})", xaxis_title="time (s)", height=120 + 32 * len(rows),
                      legend_orientation="h", legend_y=-0.15, margin=dict(l=10, r=90, t=50, b=10))
    fig.update_traces(textposition="outside", cliponaxis=False, selector=lambda t: t.name.startswith("detection"))
    fig.update_xaxes(range=[0, video["duration"]])
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1])
    return fig


# ---------------------------------------------------------------------------------------------
# Evaluation, ablations and the attention explorer (notebook 08)
# ---------------------------------------------------------------------------------------------

ABLATION_COLOURS = {"full": SUPPORT, "blind": OTHER, "prototype": OTHER}


def ablation_figure(summary: list, *, shots: int = 5, metric: str = "mAP@0.5", title: str | None = None) -> go.Figure:
    """One bar per model of ``bench/ablations.py``'s ``summary`` at ``shots``: the mean of ``metric``
    (``"mAP@0.5"`` or ``"average_mAP"``) over seeds, the standard deviation as an error bar, the
    full model's mean as a dashed line. Blue: the full model; grey: the controls (support-blind,
    prototype matching); orange: the ablations. A bar below the line is a switch that hurts."""
    rows = [s for s in summary if s["shots"] == shots]
    if not rows:
        raise FscalError(f"{where(field='shots')}: the summary has no {shots}-shot rows "
                         f"(it has {sorted({s['shots'] for s in summary})})")
    several = len({s["steps"] for s in rows if s["steps"]}) > 1
    names = [s["model"] + (f" ({s['steps']} steps)" if several and s["steps"] else "") for s in rows]
    fig = go.Figure(go.Bar(
        x=names, y=[round(s[metric]["mean"], 4) for s in rows],
        error_y=dict(type="data", array=[round(s[metric]["sd"], 4) for s in rows], visible=True),
        marker_color=[ABLATION_COLOURS.get(s["model"], "#ff7f0e") for s in rows],
        customdata=[[s["what"], s[metric]["n"], round(s[metric]["sd"], 4)] for s in rows],
        hovertemplate="%{x}: %{customdata[0]}<br>" + metric + " %{y:.3f} ± %{customdata[2]:.3f} "
                      "(%{customdata[1]} seeds)<extra></extra>"))
    full = [s for s in rows if s["model"] == "full"]
    if full:
        fig.add_hline(y=full[0][metric]["mean"], line_dash="dash", line_color=SUPPORT,
                      annotation_text=f"full {full[0][metric]['mean']:.3f}", annotation_position="top right")
    fig.update_layout(title=title or f"ablations, {shots}-shot: test {metric} (mean ± sd over seeds)",
                      yaxis_title=metric, yaxis_range=[0, 1], height=400, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def episode_ap(episodes, annotations: dict, results: dict, *, tiou: float = 0.5) -> dict:
    """AP of every episode on its own, ``{episode id: AP}`` at one tIoU threshold.

    Each episode becomes its own "class" in the ActivityNet evaluator, so its AP ranks only its
    own detections against its own instances: 1.0 when the best-scored detections find every
    instance before any false positive, 0.0 when none reaches the threshold.
    """
    from .evaluation import evaluate_detection, fscal_ground_truth, fscal_predictions
    gt = fscal_ground_truth(episodes, annotations)
    for eid, video in gt["database"].items():
        video["annotations"] = [{**a, "label": eid} for a in video["annotations"]]
    preds = fscal_predictions(results, episodes)
    preds["results"] = {eid: [{**d, "label": eid} for d in dets] for eid, dets in preds["results"].items()}
    ap = evaluate_detection(gt, preds, [tiou])["ap_per_class"]
    return {eid: ap[eid][0] for eid in gt["database"]}


def per_class_ap_figure(ap_per_class: dict, tiou_thresholds, *, title: str | None = None) -> go.Figure:
    """AP of each hidden test class (the per-class variant of the protocol, ``evaluate_fscal(...)
    ["per_class"]["ap_per_class"]``): AP at tIoU 0.5 and averaged over all thresholds, classes
    sorted by AP@0.5. Twins sit next to each other in name (``..a`` / ``..b``)."""
    thr = np.asarray(tiou_thresholds, float)
    at_05 = int(np.argmin(np.abs(thr - 0.5)))
    names = sorted(ap_per_class, key=lambda c: -ap_per_class[c][at_05])
    fig = go.Figure([go.Bar(x=names, y=[round(ap_per_class[c][at_05], 4) for c in names], name="AP@0.5",
                            marker_color=SUPPORT),
                     go.Bar(x=names, y=[round(float(np.mean(ap_per_class[c])), 4) for c in names],
                            name=f"average AP (tIoU {thr[0]:.2f}:{thr[-1]:.2f})", marker_color="#9ecae1")])
    fig.update_layout(title=title or "AP per hidden test class", yaxis_title="AP", yaxis_range=[0, 1],
                      barmode="group", height=380, legend_orientation="h", legend_y=-0.3,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def episode_outputs(model, world, episode: dict) -> dict:
    """Run ``model`` on one episode: ``{"attention": {stage: StageAttention}, "detections": [...]
    (its results-JSON entry, Soft-NMS applied), "proposals": names of the N_Q anchors, "top":
    index of the best-scored proposal}``."""
    import torch

    from .data.episodes import episode_tensors
    from .inference import predict
    cfg = model.cfg
    t = episode_tensors(world, episode, cfg.T, cfg.T_S)
    with torch.no_grad():
        out = model.eval()(t["query"][None], t["support"][None])
    return {"attention": out.attention, "detections": predict(model, world, [episode])["results"][episode["id"]],
            "proposals": proposal_names(out.anchors), "top": int(out.logits[0].argmax())}


def stoq_added_term(model, query, support) -> dict:
    """What StoQ Context-CA adds to the proposal tokens (eq. 6, before its LayerNorm), on a batch.

    ``relative_size``: ``|Y~_S A_{S->Q}| / |X_Q|``, mean norms over all proposals;
    ``shared_energy``: the share of the added term's energy that is one vector for every proposal of
    the episode (its mean over the proposals), averaged over the episodes. Near 1: StoQ adds a
    per-episode constant that cannot help to rank the proposals of one query.
    """
    import torch
    from einops import rearrange

    from .attention import cross_attend
    stoq = model.stoq
    with torch.no_grad():
        X_Q = model.proposals(query)                                                # (B, N_Q, d)
        Y_S = rearrange(model(query, support).support_tokens, "b k t d -> b (k t) d")  # (B, K*T_S, d)
        X_Q_new, _ = cross_attend(Y_S, X_Q, stoq.W_StoQ, axis=stoq.axis, scale=stoq.scale,
                                  mass_norm=stoq.mass_norm)
    added = X_Q_new - X_Q                                                           # (B, N_Q, d)
    shared = added.mean(dim=1, keepdim=True)                                        # (B, 1, d)
    return {"relative_size": float(added.norm(dim=-1).mean() / X_Q.norm(dim=-1).mean()),
            "shared_energy": float((shared.pow(2).sum(-1) / added.pow(2).sum(-1).mean(1, keepdim=True)).mean())}


STAGE_TITLES = {"qtos": "QtoS Context-CA", "dynamics": "Dynamics-CA", "stoq": "StoQ Context-CA"}


def explorer_figures(outputs: dict, episode: dict, annotations: dict, *, model: str = "model",
                     stage: str = "qtos", support: int | None = 0, granularity: int | None = None,
                     top: int = 5) -> tuple:
    """The attention explorer's two panels for one episode and one model (``outputs`` from
    :func:`episode_outputs`): the stage's attention for ``support`` (``None``: all supports, StoQ
    only), with the best-scored proposal outlined, and the model's ``top`` detections on the
    query's time line. A model without that stage (the blind control, an ablation) gets an empty
    panel that says so."""
    att = outputs["attention"].get(stage)
    if att is None:
        left = go.Figure().update_layout(
            title=f"{model}: no {STAGE_TITLES[stage]} (this model switches it off; the blind control "
                  f"never reads the supports)", height=200)
    else:
        support = 0 if support is None and stage != "stoq" else support
        left = fig_stage_attention(att, support=support, granularity=granularity if stage == "dynamics" else None,
                                   proposal=None if stage == "dynamics" else outputs["top"],
                                   proposal_labels=outputs["proposals"])
        left.update_layout(title=f"{model}: {left.layout.title.text}")
    right = detections_timeline_figure(episode, annotations, {model: outputs["detections"]}, top=top)
    return left, right
