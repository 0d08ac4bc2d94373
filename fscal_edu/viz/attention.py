"""Figures of the attention stages (notebooks 03-05).

Every function returns a ``go.Figure`` (or the slice of a matrix it draws) and is tested in
pytest. A stage's title and the way its attention matrix is laid out come from the stage registry
(:mod:`fscal_edu.stages`), read at call time, so a newly registered stage with a known layout draws.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import stages
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


def stage_attention_figure(att, *, batch: int = 0, support: int | None = 0,
                        granularity: int | None = None, proposal: int | None = None,
                        proposal_labels=None) -> go.Figure:
    """A stage's attention for one support (heatmap) and the mass each target receives (bars).

    The bars are ``sum_i A[i, j]``: how many units of attention target j gathers, the weight of
    what eq. (2)/(5)/(6) adds to it. ``proposal`` (stages that attend from or to the proposals)
    outlines one proposal: its row (QtoS, where it is a source) or its column (StoQ, where it is a
    target).
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
    stage = stages.title(att.stage)
    what = "all supports" if support is None else f"support {support}"
    if granularity is not None:
        what += f", granularity k={granularity}"
    fig.update_layout(title=f"{stage}: {what}", height=560, showlegend=proposal is not None,
                      barmode="overlay", margin=dict(t=50, b=40))
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


def attention_entropy(A) -> float:
    """The mean entropy of the rows of ``A (sources, targets)``, each read as a distribution
    (divided by its sum), over its maximum ``log(targets)``: 1 when every row is uniform, 0 when
    every row puts all its weight on one target. Rows without weight are left out."""
    A = np.asarray(A, dtype=float).reshape(-1, np.shape(A)[-1])
    total = A.sum(-1)
    P = A[total > 0] / total[total > 0, None]
    if len(P) == 0 or P.shape[-1] < 2:
        raise FscalError(f"{where(field='A')}: the entropy needs a row with weight over 2 or more "
                         f"targets, got shape {np.shape(A)}")
    H = -np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0).sum(-1)
    return float(H.mean() / np.log(P.shape[-1]))


def attention_pair_figure(start, trained, *, batch: int = 0, support: int | None = 0,
                       granularity: int | None = None, proposal: int | None = None,
                       proposal_labels=None, names=("start (W = I)", "trained")) -> go.Figure:
    """One stage on one episode twice, side by side: ``start`` and ``trained`` (two
    ``StageAttention`` of the same stage, e.g. from :func:`fscal_edu.diagnostics.stage_attention`).

    Top: the two heatmaps of :func:`attention_view` on one colour scale (0 to the larger maximum),
    each panel titled with :func:`attention_entropy` of its rows; bottom: the mass each target
    receives. ``proposal`` (stages that attend from or to the proposals) outlines one proposal,
    its row or its column, in red.
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
    stage = stages.title(start.stage)
    what = "all supports" if support is None else f"support {support}"
    if granularity is not None:
        what += f", granularity k={granularity}"
    fig.update_layout(title=f"{stage}, {what}: at its start and trained", height=600,
                      coloraxis=dict(colorscale="Viridis", cmin=0.0, cmax=round(zmax, 3),
                                     colorbar=dict(title="A", len=0.7, y=0.65)),
                      showlegend=draws_proposal,
                      margin=dict(t=80, b=40))
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
