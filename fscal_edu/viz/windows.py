"""Figures of long queries read as windows (notebook 09).

A strided feature file of a long video has many more rows than the model's ``T``. In
``data.query_mode = "window"`` the query is read as windows of ``T`` rows every ``stride`` rows
(:func:`~fscal_edu.data.episodes.window_starts`), the last one padded past the video's end and
masked; the detections of all windows are merged on the video's axis before one Soft-NMS
(:func:`fscal_edu.inference.predict`). Everything here is drawn on that axis, in snippets.
Every function returns a ``go.Figure`` and is tested in pytest.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import COMMON, SUPPORT, VIDEO
from .marks import legend_above

WINDOW, PADDING, DETECTION, CUT = "#9ecae1", "#fdd0a2", "#2ca02c", "#d62728"
LENGTH_COLOURS = {"windowed": SUPPORT, "resampled": COMMON}


def _segments(x, columns: int, what: str) -> np.ndarray:
    """``x`` as a float array of ``columns`` columns (an empty one for ``None`` or ``()``)."""
    a = np.asarray([] if x is None else x, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, columns))
    if a.ndim != 2 or a.shape[1] != columns:
        raise ValueError(f"windows_figure: {what} must have shape (n, {columns}), got {a.shape}")
    return a


def window_rows(starts) -> list[str]:
    """The row names of :func:`windows_figure`'s windows: ``"window 1"``, ``"window 2"``, ..."""
    return [f"window {i + 1}" for i in range(len(starts))]


def windows_figure(length: int, starts, T: int, instances=(), detections=None, *,
                snippet_seconds: float | None = None, top_k: int = 10, title: str | None = None,
                pieces: bool = False) -> go.Figure:
    """One long video read as windows, on its snippet axis ``[0, length]``.

    Rows, top to bottom: ``video`` (the whole axis); one row per window, the band
    ``[start, start + T)`` (trace ``window``), and past the video's end the padding that the
    query's ``mask`` hides (trace ``padding (masked)``, hatched; only when a window sticks out);
    ``ground truth``: ``instances (G, 2)`` in snippets; with ``detections`` (``(M, 3)`` rows
    ``start, end, score`` on the video's axis, e.g. the merged detections of all windows), the
    ``top_k`` best on a row ``detections``, opacity following the score. A dotted line marks the
    video's end. ``snippet_seconds``: the seconds one snippet covers, shown in the hover text.
    ``pieces``: on each window's row, what the window sees of each instance: whole (trace
    ``instance, whole in the window``) or cut by the window's edge (``instance, cut by an edge``),
    the case of instances longer than ``T - stride`` rows.
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    if length < 1 or T < 1 or len(starts) == 0:
        raise ValueError(f"windows_figure: need length >= 1, T >= 1 and one window at least "
                         f"(length {length}, T {T}, {len(starts)} windows)")
    inst = _segments(instances, 2, "instances")
    det = _segments(detections, 3, "detections")
    sec = (lambda v: np.round(np.asarray(v, float) * snippet_seconds, 1)) if snippet_seconds else None

    def bars(rows, lo, hi, name, colour, width=0.6, text=None, **kw):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        span = np.stack([lo, hi], 1)
        data = np.round(np.concatenate([span, sec(span)], 1) if sec else span, 2)
        template = ("snippets %{customdata[0]:.1f}-%{customdata[1]:.1f}"
                    + (" (%{customdata[2]:.0f}-%{customdata[3]:.0f} s)" if sec else "") + "<extra>%{y}</extra>")
        return go.Bar(y=list(rows), base=np.round(lo, 2), x=np.round(hi - lo, 2), orientation="h", name=name,
                      marker_color=colour, width=width, customdata=data, hovertemplate=template,
                      text=text, textposition="inside", insidetextanchor="middle", **kw)

    names = window_rows(starts)
    ends = np.minimum(starts + T, length)
    traces = [bars(["video"], [0.0], [float(length)], "video", VIDEO, width=0.8),
              bars(names, starts, ends, "window", WINDOW,
                   text=[f"{int(s)}-{int(s) + T}" for s in starts])]
    out = starts + T > length
    if out.any():
        traces.append(bars([n for n, o in zip(names, out) if o], np.full(out.sum(), float(length)),
                           starts[out] + T, "padding (masked)", PADDING, marker_pattern_shape="/"))
    if pieces and len(inst):
        for cut, name, colour in ((False, "instance, whole in the window", COMMON), (True, "instance, cut by an edge", CUT)):
            part = [(n, max(s, a), min(e, a + T)) for n, a in zip(names, starts) for s, e in inst
                    if min(e, a + T) > max(s, a) and ((s < a or e > a + T) == cut)]
            if part:
                rows_, lo, hi = zip(*part)
                traces.append(bars(rows_, lo, hi, name, colour, width=0.3))
    rows = ["video", *names, "ground truth"]
    if len(inst):
        traces.append(bars(["ground truth"] * len(inst), inst[:, 0], inst[:, 1], "ground truth", COMMON))
    if detections is not None:
        rows.append("detections")
        top = det[np.argsort(-det[:, 2], kind="stable")[:top_k]]
        if len(top):
            traces.append(bars(["detections"] * len(top), top[:, 0], top[:, 1], f"detections (top {len(top)})",
                               DETECTION, marker_opacity=np.round(0.2 + 0.8 * np.clip(top[:, 2], 0, 1), 2),
                               text=[f"{s:.2f}" for s in top[:, 2]]))
    fig = go.Figure(traces)
    fig.add_vline(x=length, line_dash="dot", line_color="black")
    unit = f" (1 snippet = {snippet_seconds:g} s)" if snippet_seconds else ""
    fig.update_layout(barmode="overlay", height=170 + 28 * len(rows),
                      title=title or f"{len(starts)} windows of T = {T} over {length} snippets",
                      xaxis_title=f"snippet{unit}", margin=dict(l=10, r=10, b=10))
    legend_above(fig)
    fig.update_xaxes(range=[0, max(float(length), float((starts + T).max())) * 1.01])
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1])
    return fig


def window_mask_figure(X_Q, mask, *, start: int = 0, title: str | None = None) -> go.Figure:
    """One query window as the model gets it: its features ``X_Q (T, C)`` (top; the padding rows
    are zeros) and its ``mask (T,)`` (bottom: 1 = a snippet of the video, 0 = padding), against
    the window's own positions ``0..T-1`` (``start``: where the window begins on the video, for
    the hover text)."""
    X_Q = np.asarray(X_Q, dtype=np.float32)
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if X_Q.ndim != 2 or len(X_Q) != len(m):
        raise ValueError(f"window_mask_figure: X_Q must be (T, C) and mask (T,), got {X_Q.shape} and {m.shape}")
    T = len(m)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2], vertical_spacing=0.05)
    fig.add_trace(go.Heatmap(z=np.round(X_Q.T, 2), colorscale="RdBu", zmid=0, name="X_Q", showscale=False,
                             customdata=np.broadcast_to(start + np.arange(T), X_Q.T.shape),
                             hovertemplate="position %{x} (snippet %{customdata} of the video), "
                                           "channel %{y}: %{z}<extra>X_Q</extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=m[None].astype(np.int8), colorscale=[[0, PADDING], [1, WINDOW]], zmin=0, zmax=1,
                             name="mask", showscale=False, y=["mask"],
                             hovertemplate="position %{x}: mask %{z}<extra></extra>"), row=2, col=1)
    span = int(m.sum())
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=50, b=10),
                      title=title or f"one window: {span} snippets of the video, {T - span} of padding (mask = 0)")
    fig.update_xaxes(title_text="position in the window", row=2, col=1)
    fig.update_yaxes(title_text="channel", row=1, col=1)
    return fig


def instance_lengths_figure(lengths: dict, *, marks: dict | None = None, bins=None,
                         title: str | None = None) -> go.Figure:
    """Histogram of instance lengths in snippets, one bar trace per reading (e.g. ``{"windowed":
    native lengths, "resampled": lengths after resampling the video to T}``), counts per bin
    (bins: edges, default 0, 0.5, ..., up to the longest); ``marks``: ``{label: x}`` drawn as
    dashed vertical lines (e.g. 2 snippets, the smallest anchor)."""
    values = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in lengths.items()}
    top = max((float(v.max()) for v in values.values() if v.size), default=1.0)
    edges = np.asarray(bins if bins is not None else np.arange(0.0, np.ceil(top) + 0.5, 0.5), dtype=np.float64)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure([go.Bar(x=np.round(centres, 3), y=np.histogram(v, edges)[0], width=widths, name=k,
                            marker_color=LENGTH_COLOURS.get(k), opacity=0.7,
                            hovertemplate="%{x} snippets: %{y} instances<extra>" + k + "</extra>")
                     for k, v in values.items()])
    for label, x in (marks or {}).items():
        fig.add_vline(x=x, line_dash="dash", line_color="black", annotation_text=label,
                      annotation_position="top right")
    fig.update_layout(barmode="overlay", height=330, margin=dict(l=10, r=10, t=50, b=10),
                      title=title or "instance lengths in snippets", xaxis_title="instance length (snippets)",
                      yaxis_title="instances")
    return legend_above(fig)
