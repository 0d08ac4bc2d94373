"""Figures of the attention stages (notebooks 03-05).

Every function returns a ``go.Figure`` (or the slice of a matrix it draws) and is tested in
pytest. A stage's title and the way its attention matrix is laid out come from the stage registry
(:mod:`fscal_edu.stages`), read at call time, so a newly registered stage with a known layout draws.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from einops import rearrange, reduce
from plotly.subplots import make_subplots

from .. import stages
from ..diagnostics import attention_entropy  # noqa: F401  (the panels' titles; computed there)
from ..utils import FscalError, where

# QtoS's joint ablation attends to all supports at once: (B, N_Q, K*T_S)
JOINT = "query_to_all_supports"


def stage_layout(stage: str) -> str:
    """How the attention matrix of ``stage`` (a ``StageAttention.stage``) is laid out: the
    registry's ``layout`` (a key of ``stages.LAYOUTS``), or :data:`JOINT` for ``"qtos_joint"``."""
    return JOINT if stage == "qtos_joint" else stages.get(stage).layout


def proposals_are_sources(stage: str) -> bool:
    """True when the proposals attend (the rows of A), False when they are attended to (columns)."""
    return stage_layout(stage) in ("query_to_support", JOINT)


class AttentionView(NamedTuple):
    """One support's slice of a stage's attention: ``A (sources, targets)`` and axis labels."""

    A: np.ndarray
    sources: list
    targets: list
    source_name: str
    target_name: str


def coarse_names(coarse) -> list:
    """Labels ``S<l> k=<k> [a, b)`` of Dynamics-CA's coarse tokens (a ``CoarseTokens``)."""
    return [f"S{l} k={k} [{s}, {s + k})" for l, k, s in
            zip(coarse.support.tolist(), coarse.granularity.tolist(), coarse.start.tolist())]


def attention_view(att, *, batch: int = 0, support: int | None = 0, granularity: int | None = None,
                   proposal_labels=None) -> AttentionView:
    """Cut what concerns support ``support`` out of a ``StageAttention`` as a numpy matrix, by
    the layout of its stage (:func:`stage_layout`):

    - ``query_to_support`` (QtoS) and :data:`JOINT`: proposals (rows) -> the T_S snippets of the
      support (columns).
    - ``coarse_to_support`` (Dynamics-CA): coarse tokens of all supports (rows; only granularity
      ``granularity`` if given) -> the snippets of the support.
    - ``support_to_query`` (StoQ): the snippets of the support (all K*T_S rows if ``support`` is
      None) -> proposals.
    """
    A = att.A.detach().float().cpu().numpy()[batch]
    K, T_S = att.K, att.T_S
    if support is not None and not 0 <= support < K:
        raise FscalError(f"{where(field='support')}: {support} is out of range, this episode "
                         f"has K = {K}")
    snippets = [f"t{j}" for j in range(T_S)]
    kind = stage_layout(att.stage)
    N_Q = A.shape[-1] if kind == "support_to_query" else A.shape[-2]
    proposals = list(proposal_labels) if proposal_labels is not None else [f"p{n}" for n in range(N_Q)]
    own = slice(None) if support is None else slice(support * T_S, (support + 1) * T_S)
    if kind == "query_to_support":
        return AttentionView(A[support], proposals, snippets, "proposal", f"support {support} snippet")
    if kind == JOINT:
        return AttentionView(A[:, own], proposals, snippets, "proposal", f"support {support} snippet")
    if kind == "coarse_to_support":
        keep = np.ones(A.shape[-2], dtype=bool) if granularity is None else \
            att.coarse.granularity.numpy() == granularity
        names = [n for n, k in zip(coarse_names(att.coarse), keep) if k]
        return AttentionView(A[support][keep], names, snippets, "coarse token",
                             f"support {support} snippet")
    if kind == "support_to_query":
        rows = [f"S{l} t{j}" for l in range(K) for j in range(T_S)][own]
        return AttentionView(A[own], rows, proposals, "support snippet", "proposal")
    raise FscalError(f"{where(field='stage')}: no view for the layout {kind!r} of stage {att.stage!r}")


def attention_matrix_figure(A, *, sources=None, targets=None, title: str = "attention A",
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


def proposal_marks(fig, view: AttentionView, segments, marked=(), *, rows: bool, row: int = 1, col: int = 1,
                   legend: bool = True) -> None:
    """On a heatmap's proposal axis (its rows when ``rows``, else its columns; proposals in anchor order,
    by length then start): a white line between two anchor lengths, and a red triangle beside each
    proposal of ``marked`` (e.g. those that overlap an instance of the common action)."""
    seg = np.asarray(segments, dtype=float).reshape(-1, 2)
    for i in np.flatnonzero(np.diff(seg[:, 1] - seg[:, 0]) != 0):        # the last proposal of a length
        if rows:
            fig.add_hline(y=i + 0.5, line_color="white", line_width=1, row=row, col=col)
        else:
            fig.add_vline(x=i + 0.5, line_color="white", line_width=1, row=row, col=col)
    names = [(view.sources if rows else view.targets)[i] for i in marked]
    if names:
        edge = [(view.targets if rows else view.sources)[0]] * len(names)
        fig.add_trace(go.Scatter(x=edge if rows else names, y=names if rows else edge, mode="markers",
                                 marker=dict(symbol="triangle-right" if rows else "triangle-down", color="red", size=8),
                                 name="overlaps the common action", showlegend=legend, cliponaxis=False,
                                 hovertemplate="%{y}<extra>overlaps the common action</extra>" if rows else
                                               "%{x}<extra>overlaps the common action</extra>"), row, col)


def stage_attention_figure(att, *, batch: int = 0, support: int | None = 0,
                        granularity: int | None = None, proposal: int | None = None,
                        proposal_labels=None, segments=None, marked=()) -> go.Figure:
    """A stage's attention for one support (heatmap) and the mass each target receives (bars).

    The bars are ``sum_i A[i, j]``: how many units of attention target j gathers, the weight of
    what eq. (2)/(5)/(6) adds to it. ``proposal`` (stages that attend from or to the proposals)
    outlines one proposal: its row (QtoS, where it is a source) or its column (StoQ, where it is a
    target). ``segments`` (the proposals' ``(N_Q, 2)``) separates the anchor lengths on the proposal
    axis and marks the proposals of ``marked`` (:func:`proposal_marks`).
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
    source_row = proposals_are_sources(att.stage)
    if proposal is not None and stage_layout(att.stage) != "coarse_to_support":
        name = (view.sources if source_row else view.targets)[proposal]
        if source_row:                       # a source: its row, and where its unit goes
            fig.add_trace(go.Scatter(x=view.targets, y=[name] * len(view.targets), mode="lines",
                                     line=dict(color="red"), name=f"proposal {name}"), 1, 1)
            fig.add_trace(go.Bar(x=view.targets, y=view.A[proposal].round(4),
                                 name=f"from proposal {name}", marker_color="red"), 2, 1)
        else:                                # a target: its column
            fig.add_trace(go.Scatter(x=[name] * len(view.sources), y=view.sources, mode="lines",
                                     line=dict(color="red"), name=f"proposal {name}"), 1, 1)
    if segments is not None and stage_layout(att.stage) != "coarse_to_support":
        proposal_marks(fig, view, segments, marked, rows=source_row)
    stage = stages.title(att.stage)
    what = "all supports" if support is None else f"support {support}"
    if granularity is not None:
        what += f", granularity k={granularity}"
    fig.update_layout(title=f"{stage}: {what}", height=560, showlegend=proposal is not None or len(marked) > 0,
                      barmode="overlay", margin=dict(t=50, b=40),
                      legend=dict(x=1.02, xanchor="left", y=0.0, yanchor="bottom"))   # beside the bars, below the colorbar
    fig.update_yaxes(title_text=f"source: {view.source_name}", autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="mass received", row=2, col=1)
    fig.update_xaxes(title_text=f"target: {view.target_name}", row=2, col=1)
    return fig


def query_mass_figure(att, segments, *, batch: int = 0, gt=None, others=None) -> go.Figure:
    """StoQ Context-CA (or any stage laid out ``support_to_query``) on the query's time line: each
    proposal ``[start, end)`` drawn at the height of the mass it receives from all support
    snippets. ``att`` is such a ``StageAttention`` or ``{name: StageAttention}`` (one line each, e.g. the start and the trained stage). ``gt (G,
    2)``, the instances of the common action, are shaded green; ``others``, instances of other
    classes, red."""
    atts = att if isinstance(att, dict) else {"proposals": att}
    for a in atts.values():
        if stage_layout(a.stage) != "support_to_query":
            raise FscalError(f"{where(field='stage')}: query_mass_figure draws a stage whose support "
                             f"snippets attend to the proposals (StoQ Context-CA), got {a.stage!r}")
    seg = np.asarray(segments, dtype=float)
    gap = np.full(len(seg), np.nan)                 # NaN breaks the line between two proposals
    fig = go.Figure()
    for name, a in atts.items():
        mass = a.A.detach().float().cpu().numpy()[batch].sum(0)                    # (N_Q,)
        fig.add_trace(go.Scatter(x=np.stack([seg[:, 0], seg[:, 1], gap], 1).ravel(),
                                 y=np.stack([mass, mass, gap], 1).ravel().round(4), mode="lines",
                                 name=name, hoverinfo="x+y"))
    for spans, color, text in [(gt, "green", "common action"), (others, "red", "other class")]:
        for s, e in ([] if spans is None else np.asarray(spans, dtype=float).reshape(-1, 2)):
            fig.add_vrect(x0=s, x1=e, fillcolor=color, opacity=0.15, line_width=0,
                          annotation_text=text, annotation_position="top left")
    fig.update_layout(title=f"{stages.title(next(iter(atts.values())).stage)}: mass each proposal "
                            f"receives from the supports",
                      xaxis_title="query time (snippets)", yaxis_title="mass received", height=360,
                      showlegend=len(atts) > 1)
    return fig


def attention_pair_figure(start, trained, *, batch: int = 0, support: int | None = 0,
                       granularity: int | None = None, proposal: int | None = None,
                       proposal_labels=None, names=("start (W = I)", "trained"), segments=None,
                       marked=()) -> go.Figure:
    """One stage on one episode twice, side by side: ``start`` and ``trained`` (two
    ``StageAttention`` of the same stage, e.g. from :func:`fscal_edu.diagnostics.stage_attention`).

    Top: the two heatmaps of :func:`attention_view` on one colour scale (0 to the larger maximum),
    each panel titled with :func:`attention_entropy` of its rows; bottom: the mass each target
    receives. ``proposal`` (stages that attend from or to the proposals) outlines one proposal,
    its row or its column, in red; ``segments`` and ``marked`` as in :func:`stage_attention_figure`.
    """
    if start.stage != trained.stage:
        raise FscalError(f"{where(field='stage')}: the two attentions must be of one stage, got "
                         f"{start.stage!r} and {trained.stage!r}")
    views = [attention_view(a, batch=batch, support=support, granularity=granularity,
                            proposal_labels=proposal_labels) for a in (start, trained)]
    zmax = float(max(v.A.max() for v in views))
    titles = [f"{name}: entropy / max {attention_entropy(v.A):.2f}" for name, v in zip(names, views)]
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, shared_yaxes=True, row_heights=[0.75, 0.25],
                        vertical_spacing=0.06, horizontal_spacing=0.04, subplot_titles=titles)
    source_row = proposals_are_sources(start.stage)
    draws_proposal = proposal is not None and stage_layout(start.stage) != "coarse_to_support"
    for col, v in enumerate(views, start=1):
        fig.add_trace(go.Heatmap(z=v.A.round(3), x=v.targets, y=v.sources, coloraxis="coloraxis",
                                 name=names[col - 1],
                                 hovertemplate=f"{v.source_name} %{{y}}<br>{v.target_name} "
                                               f"%{{x}}<br>A = %{{z:.3f}}<extra></extra>"), 1, col)
        fig.add_trace(go.Bar(x=v.targets, y=v.A.sum(0).round(3), marker_color="gray",
                             name=f"{names[col - 1]}: mass received", showlegend=False), 2, col)
        if draws_proposal:
            label = (v.sources if source_row else v.targets)[proposal]
            xs, ys = (v.targets, [label] * len(v.targets)) if source_row else ([label] * len(v.sources), v.sources)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="red"),
                                     name=f"proposal {label}", showlegend=col == 1), 1, col)
        if segments is not None and stage_layout(start.stage) != "coarse_to_support":
            proposal_marks(fig, v, segments, marked, rows=source_row, col=col, legend=col == 1)
    stage = stages.title(start.stage)
    what = "all supports" if support is None else f"support {support}"
    if granularity is not None:
        what += f", granularity k={granularity}"
    fig.update_layout(title=f"{stage}, {what}: at its start and trained", height=600,
                      coloraxis=dict(colorscale="Viridis", cmin=0.0, cmax=round(zmax, 3),
                                     colorbar=dict(title="A", len=0.7, y=0.65)),
                      showlegend=draws_proposal or len(marked) > 0, margin=dict(t=80, b=40),
                      legend=dict(x=1.02, xanchor="left", y=0.0, yanchor="bottom"))   # beside the bars, below the colorbar
    fig.update_yaxes(title_text=f"source: {views[0].source_name}", autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_yaxes(title_text="mass received", row=2, col=1)
    for col in (1, 2):
        fig.update_xaxes(title_text=f"target: {views[0].target_name}", row=2, col=col)
    return fig


def granularity_mass_figure(mass: dict, *, support: int = 0) -> go.Figure:
    """Dynamics-CA: one line per granularity k, the mass the snippets of a support receive.

    ``mass = {k: (T_S,) array}``, e.g. :func:`fscal_edu.solutions.granularity_mass` of a
    Dynamics-CA ``StageAttention``."""
    fig = go.Figure()
    for k, m in mass.items():
        m = np.asarray(m, dtype=float)
        fig.add_trace(go.Scatter(x=list(range(len(m))), y=m.round(4), mode="lines+markers", name=f"k = {k}"))
    fig.update_layout(title=f"{stages.title('dynamics')}: mass received by the snippets of support "
                            f"{support}, by granularity", xaxis_title="snippet t of the support",
                      yaxis_title="mass received", height=360)
    return fig


# ---------------------------------------------------------------------------------------------
# Attention on the query's time line
# ---------------------------------------------------------------------------------------------

class QueryTimeline(NamedTuple):
    """A stage's attention moved onto the query's time axis (:func:`query_timeline`).

    ``M (T, R)``: what each query snippet t exchanges with each support snippet r (R = K * T_S rows,
    support after support); ``curve (T,)``: the one number per query snippet that the top panel
    draws; ``curve_name`` says what it is."""

    M: np.ndarray
    curve: np.ndarray
    curve_name: str
    K: int
    T_S: int


def spread_over_time(segments, values, T: int) -> np.ndarray:
    """Spread each proposal's ``values (N, R)`` evenly over the snippets of its span ``segments (N,
    2)`` (snippet units, ``[start, end)``) and add them up: ``(T, R)``. A proposal's total is kept."""
    seg = np.asarray(segments, dtype=float).reshape(-1, 2)
    centre = np.arange(T) + 0.5                                                    # (T,)
    # w[i, t] = 1[start_i <= t + 1/2 < end_i] / (end_i - start_i)
    cover = (centre[None] >= seg[:, :1]) & (centre[None] < seg[:, 1:])              # (N, T)
    w = cover / np.maximum(cover.sum(1, keepdims=True), 1)
    return w.T @ np.asarray(values, dtype=float).reshape(len(seg), -1)            # (T, R)


def query_timeline(att, segments, T: int, *, batch: int = 0) -> QueryTimeline:
    """The attention of a stage that involves the query's proposals, on the query's time line.

    - ``support_to_query`` (StoQ): ``M[t, r]`` is the mass support snippet r sends to the proposals
      that cover t (each proposal's share spread over its span); the curve is the mass each query
      snippet receives from all supports, ``sum_r M[t, r]`` (an even spread gives K*T_S / T).
    - ``query_to_support`` (QtoS) and the joint ablation: every proposal sends one unit to each
      support, so what varies is *where* it goes: ``M[t, r]`` is the share of the unit of the
      proposals covering t that goes to support snippet r (each support's row of M sums to one);
      the curve is how concentrated that is, ``T_S * max_r M[t, r]`` averaged over the supports
      (1: an even spread over the support's snippets, T_S: all on one).
    """
    kind = stage_layout(att.stage)
    A = att.A.detach().float().cpu().numpy()[batch]
    K, T_S = att.K, att.T_S
    if kind == "support_to_query":
        M = spread_over_time(segments, A.T, T)                                      # (T, K*T_S)
        return QueryTimeline(M, M.sum(1), "mass received", K, T_S)
    if kind in ("query_to_support", JOINT):
        # (K, N_Q, T_S) -> (N_Q, K*T_S); the joint layout is already (N_Q, K*T_S)
        values = rearrange(A, "k n s -> n (k s)") if kind == "query_to_support" else A
        M = rearrange(spread_over_time(segments, values, T), "t (k s) -> t k s", k=K)  # (T, K, T_S)
        # share of each support's unit: M[t, k, s] / sum_s M[t, k, s]
        M = M / np.maximum(M.sum(-1, keepdims=True), 1e-12)
        curve = (T_S * M.max(-1)).mean(-1)                                           # (T,)
        return QueryTimeline(rearrange(M, "t k s -> t (k s)"), curve, "concentration (1: even)", K, T_S)
    raise FscalError(f"{where(field='stage')}: {att.stage!r} does not attend from or to the query's "
                     f"proposals; draw it with stage_attention_figure")


def support_ticks(K: int, T_S: int) -> tuple:
    """Tick values and labels of a support-snippet axis read as clips (support l's snippet j sits at
    ``l + j / T_S``): ``S<l> start`` at each clip's start and ``middle`` halfway through it."""
    vals = [v for l in range(K) for v in (l, l + 0.5)]
    text = [t for l in range(K) for t in (f"S{l} start", "middle")]
    return vals, text


def _instances(fig, spans, colour, name, rows) -> None:
    """Shade ``spans (G, 2)`` over all ``rows`` of a subplot figure, one legend entry for all."""
    spans = np.asarray(spans if spans is not None else [], dtype=float).reshape(-1, 2)
    for s, e in spans:
        for r in rows:                       # over a heatmap (row 2): an outline, the colours stay readable
            fill = dict(fillcolor=colour, opacity=0.18, line_width=0, layer="below") if r != 2 else \
                dict(line=dict(color=colour, width=2, dash="dot"), layer="above")
            fig.add_vrect(x0=s, x1=e, row=r, col=1, **fill)
    if len(spans):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol="square", size=12, color=colour, opacity=0.5)), 1, 1)


def attention_timeline_figure(att, segments, T: int, *, batch: int = 0, duration: float | None = None,
                              gt=None, others=None, detections=(), verdict_colours=None,
                              support_notes: dict | None = None, title: str | None = None,
                              rows_per_support: int | None = None) -> go.Figure:
    """Where in the query a stage's attention lands (:func:`query_timeline`), on the query's time axis.

    Top: the curve (StoQ: mass received per query snippet; QtoS: how concentrated the attention
    sent from there is). Middle: ``M`` as a heatmap, one row per support snippet, the supports read
    as clips (``S<l> start`` and the clip's middle, a white line between two supports;
    ``support_notes = {l: "outlier"}`` names a loose or outlier support). Bottom: ``detections`` (``[{"segment",
    "score"}]``), coloured by ``verdict_colours`` if given. ``gt`` (the common action) and ``others``
    (other classes) shade all three panels. x is in seconds when ``duration`` is given (``gt``,
    ``others`` and detections too), else in snippets. ``rows_per_support`` (a divisor of T_S) averages
    each clip's snippets into that many rows, a lighter figure.
    """
    view = query_timeline(att, segments, T, batch=batch)
    n = rows_per_support or view.T_S
    if view.T_S % n:
        raise FscalError(f"{where(field='rows_per_support')}: {n} does not divide T_S = {view.T_S}")
    # (T, K*T_S) -> (T, K*n): the mean over each run of T_S / n snippets of a clip
    M = reduce(view.M, "t (r g) -> t r", "mean", g=view.T_S // n)
    dt = (duration / T) if duration else 1.0
    x = np.round((np.arange(T) + 0.5) * dt, 3)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.28, 0.52, 0.2], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=x, y=view.curve.round(4), mode="lines", fill="tozeroy", line=dict(color="#1f77b4"),
                             name=view.curve_name, hovertemplate="%{x}: %{y:.3f}<extra></extra>"), 1, 1)
    y_domain = fig.layout.yaxis2.domain
    # float32: plotly stores it as a typed array, a few bytes a value
    fig.add_trace(go.Heatmap(z=M.T.round(4).astype(np.float32), x=x.astype(np.float32), y=np.arange(M.shape[1]) / n,
                             colorscale="Viridis", hovertemplate="query %{x}<br>support clip %{y:.2f}<br>"
                                                                 "%{z:.3f}<extra></extra>",
                             colorbar=dict(title=dict(text="M", side="right"), len=y_domain[1] - y_domain[0],
                                           y=sum(y_domain) / 2, thickness=14)), 2, 1)
    for l in range(1, view.K):
        fig.add_hline(y=l - 0.5 / n, line_color="white", line_width=2, row=2, col=1)
    for l, note in (support_notes or {}).items():
        fig.add_annotation(x=x[-1], y=l + 0.5, text=note, showarrow=False, xanchor="right",
                           font=dict(color="white"), row=2, col=1)
    dets = sorted(detections, key=lambda d: -d["score"])
    colours = verdict_colours or ["#555555"] * len(dets)
    for rank, (d, c) in enumerate(zip(dets, colours)):
        fig.add_trace(go.Scatter(x=list(d["segment"]), y=[rank, rank], mode="lines+text", line=dict(color=c, width=6),
                                 text=[f"{d['score']:.2f}", ""], textposition="middle left", showlegend=False,
                                 hovertemplate=f"detection #{rank + 1}, score {d['score']:.2f}<extra></extra>"), 3, 1)
    _instances(fig, gt, "#d62728", "common action", (1, 2, 3))
    _instances(fig, others, "#8c8c8c", "other classes", (1, 2, 3))
    vals, text = support_ticks(view.K, view.T_S)
    fig.update_yaxes(title_text=view.curve_name.split(" (")[0], rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="support clip", tickvals=vals, ticktext=text, autorange="reversed", row=2, col=1)
    fig.update_yaxes(title_text="detections", showticklabels=False, autorange="reversed",
                     range=None, row=3, col=1)
    fig.update_xaxes(title_text="query time (s)" if duration else "query time (snippets)", row=3, col=1)
    fig.update_xaxes(range=[0, T * dt])
    fig.update_layout(title=dict(text=title or f"{stages.title(att.stage)} on the query's time line"),
                      height=620, margin=dict(l=60, r=20, t=100, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return fig
