"""Figures of anchors, RoIAlign, NMS and evaluation curves (notebook 02).

Every function returns a ``go.Figure`` (or the data one draws) and is tested in pytest.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .marks import gt_boxes, segment_lines


PROPOSAL, KEPT, SOFT = "#9e9e9e", "#d62728", "#1f77b4"


def anchors_figure(anchors, T: int, *, gt=(), title: str | None = None) -> go.Figure:
    """Every anchor as a horizontal line, one colour per length, stacked in anchor order; the
    query's ground truth (snippet coordinates) shaded red behind them."""
    anchors = np.asarray(anchors, float)
    lengths = anchors[:, 1] - anchors[:, 0]
    fig = go.Figure()
    for L in np.unique(lengths):
        rows = np.flatnonzero(lengths == L)
        x, y = segment_lines(anchors[rows], rows)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"length {L:g} ({len(rows)})",
                                 line_width=2, hoverinfo="skip"))
    gt_boxes(fig, gt)
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
        x, y = segment_lines(segments, scores)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=PROPOSAL, width=1),
                                 opacity=0.35, name="proposals (score)", showlegend=row == 1,
                                 hoverinfo="skip"), row, 1)
        gt_boxes(fig, gt, row=row, col=1)
    x, y = segment_lines(segments[keep], scores[keep])
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=KEPT, width=4), name="kept by hard NMS"), 1, 1)
    x, y = segment_lines(soft_segments, soft_scores)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=SOFT, width=3),
                             name="Soft-NMS (new score)"), 2, 1)
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=60, b=10))     # legend on the right: no colorbar there
    fig.update_xaxes(title_text="snippet coordinates", row=2, col=1)
    fig.update_yaxes(title_text="score")
    return fig


def pr_curve_figure(precision, recall, *, title: str | None = None) -> go.Figure:
    """A ranking's precision/recall points, the VOC-2011 interpolated envelope and, shaded, the AP."""
    from ..evaluation import interpolated_ap
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
