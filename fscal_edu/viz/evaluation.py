"""Figures of evaluation, ablations and the attention explorer (notebook 08).

Every function returns a ``go.Figure`` (or the data one draws) and is tested in pytest.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import stages
from ..report_stages import BAR, mechanism_sweeps, sweep_title
from ..evaluation import detection_verdicts
from ..utils import FscalError, where
from .attention import attention_timeline_figure, stage_attention_figure, stage_layout
from .marks import OTHER, SUPPORT
from .training import HIT, MISS, ON_DISTRACTOR, detections_timeline_figure


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


def explorer_figures(outputs: dict, episode: dict, annotations: dict, *, model: str = "model",
                     stage: str | None = None, support: int | None = 0, granularity: int | None = None,
                     top: int = 5) -> tuple:
    """The attention explorer's two panels for one episode and one model (``outputs`` from
    :func:`episode_outputs`): the attention of ``stage`` (default: the first registered stage) for
    ``support`` (``None``: all supports, for a stage laid out ``support_to_query`` such as StoQ),
    with the best-scored proposal outlined, and the model's ``top`` detections on the query's time
    line. A model without that stage (the blind control, an ablation) gets an empty panel that
    says so."""
    stage = stage or stages.names()[0]
    att = outputs["attention"].get(stage)
    if att is None:
        left = go.Figure().update_layout(
            title=f"{model}: no {stages.title(stage)} (this model switches it off; the blind control "
                  f"never reads the supports)", height=200)
    else:
        kind = stage_layout(att.stage)
        coarse = kind == "coarse_to_support"
        support = 0 if support is None and kind != "support_to_query" else support
        left = stage_attention_figure(att, support=support, granularity=granularity if coarse else None,
                                      proposal=None if coarse else outputs["top"],
                                      proposal_labels=outputs["proposals"])
        left.update_layout(title=f"{model}: {left.layout.title.text}")
    right = detections_timeline_figure(episode, annotations, {model: outputs["detections"]}, top=top)
    return left, right


BAR_COLOUR = "#d62728"


def mechanisms_figure(mechanisms: dict, *, columns: int = 3) -> go.Figure:
    """When does each stage matter? One panel per sweep of ``bench/results/mechanisms.json``
    (:func:`fscal_edu.report_stages.mechanism_sweeps`): x = the knob's settings, weakest to
    strongest; y = Δ = full − stage off (mean over seeds), with the standard error of that
    difference as an error bar (none below 2 seeds a side); each seed's own difference as a light
    grey point behind it; a line at 0 and, dashed, our bar Δ ≥ BAR at the strongest
    setting. A setting with no runs yet keeps its place on the axis, marked "no runs"."""
    sweeps = mechanism_sweeps(mechanisms)
    if not sweeps:
        raise FscalError(f"{where(field='sweeps')}: the mechanisms results hold no sweep")
    cols = min(columns, len(sweeps))
    rows = -(-len(sweeps) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[sweep_title(sw).replace(" (", "<br>(") for sw in sweeps],
                        horizontal_spacing=0.07, vertical_spacing=0.3 / rows)
    for i, sw in enumerate(sweeps):
        r, c = i // cols + 1, i % cols + 1
        labels = [s["label"] for s in sw["settings"]]
        seeds = [(s["label"], round(a - b, 4)) for s in sw["settings"] for a, b in zip(s["full"], s["off"])]
        fig.add_trace(go.Scatter(
            x=[x for x, _ in seeds], y=[y for _, y in seeds], mode="markers", name="one seed: full − off",
            marker=dict(color=OTHER, size=6, opacity=0.4), legendgroup="seed", showlegend=i == 0,
            hovertemplate="%{x}: seed Δ %{y:+.3f}<extra></extra>"), row=r, col=c)
        fig.add_trace(go.Scatter(
            x=labels, y=[None if s["delta"] is None else round(s["delta"], 4) for s in sw["settings"]],
            mode="lines+markers", name="Δ = full − stage off (mean ± se)", marker=dict(color=SUPPORT, size=9),
            line=dict(color=SUPPORT), legendgroup="delta", showlegend=i == 0,
            error_y=dict(type="data", visible=True,
                         array=[None if s["se"] is None else round(s["se"], 4) for s in sw["settings"]]),
            customdata=[[len(s["full"]), len(s["off"]), f"{s['welch'].p:.2g}" if s["welch"] else "-"]
                        for s in sw["settings"]],
            hovertemplate="%{x}: Δ %{y:+.3f}<br>seeds %{customdata[0]} / %{customdata[1]}, "
                          "p %{customdata[2]}<extra></extra>"), row=r, col=c)
        missing = [s["label"] for s in sw["settings"] if s["delta"] is None]
        if missing:
            fig.add_trace(go.Scatter(x=missing, y=[0.0] * len(missing), mode="text", text=["no runs"] * len(missing),
                                     textposition="top center", cliponaxis=False, showlegend=False, hoverinfo="skip"),
                          row=r, col=c)
        fig.add_hline(y=0.0, line_color="black", line_width=1, row=r, col=c)
        fig.add_hline(y=BAR, line_dash="dash", line_color=BAR_COLOUR, row=r, col=c)
        values = [0.0, BAR] + [y for _, y in seeds] + [s["delta"] + sign * (s["se"] or 0.0) for s in sw["settings"]
                                                        if s["delta"] is not None for sign in (-1, 1)]
        pad = 0.1 * (max(values) - min(values))
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels,
                         title_text=f"{sw['knob']} (weakest → strongest)", row=r, col=c)
        fig.update_yaxes(title_text="Δ mAP@0.5" if c == 1 else None, zeroline=False, row=r, col=c,
                         range=[min(values) - pad, max(values) + pad])
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=BAR_COLOUR, dash="dash"),
                             name=f"the bar: Δ ≥ {BAR:.2f} at the strongest setting"), row=1, col=1)
    for title in fig.layout.annotations[:len(sweeps)]:
        title.font.size = 12
    fig.update_layout(title="When does each stage matter?", height=330 * rows + 80, legend_orientation="h",
                      legend_y=-0.25 if rows == 1 else -0.12, margin=dict(l=10, r=10, t=80, b=10))
    return fig


# ---------------------------------------------------------------------------------------------
# The attention on the query's time line, one episode, and the explorer that needs no kernel
# ---------------------------------------------------------------------------------------------

def timeline_stages() -> tuple:
    """The registered stages that attend from or to the query's proposals (they draw on its time line)."""
    return tuple(s.name for s in stages.registered() if s.layout in ("query_to_support", "support_to_query"))


def episode_attention_figure(att, segments, T: int, episode: dict, annotations: dict, detections=(), *,
                            top: int = 5, title: str | None = None, rows_per_support: int | None = None) -> go.Figure:
    """:func:`~fscal_edu.viz.attention.attention_timeline_figure` of one episode, in seconds: its
    instances of the common action and of other classes, and its ``top`` detections coloured as in
    :func:`~fscal_edu.viz.training.detections_timeline_figure` (hit, on a distractor, miss)."""
    video = annotations["database"][episode["query"]]
    gt = [a["segment"] for a in video["annotations"] if a["label"] == episode["label"]]
    others = [a["segment"] for a in video["annotations"] if a["label"] != episode["label"]]
    dets = sorted(detections, key=lambda d: -d["score"])[:top]
    verdicts = [v for v, _ in detection_verdicts(episode, annotations, dets)]
    colours = [HIT if v == "hit" else MISS if v == "miss" else ON_DISTRACTOR for v in verdicts]
    return attention_timeline_figure(att, segments, T, duration=video["duration"], gt=gt, others=others,
                                     detections=dets, verdict_colours=colours, title=title,
                                     rows_per_support=rows_per_support)


def _controls(fig, views: list, combos: list, episodes: list) -> None:
    """One dropdown over ``combos`` (model · stage) and, for each, a slider over ``episodes``; each
    entry shows the traces of one view (``views[i] = (combo, episode, trace indices, layout)``)."""
    n = len(fig.data)

    def show(view):
        visible = [False] * n
        for i in view[2]:
            visible[i] = True
        return [{"visible": visible}, view[3]]

    sliders = []
    for c, combo in enumerate(combos):
        steps = [dict(method="update", label=str(e), args=show(v)) for v in views if v[0] == c for e in [v[1]]]
        sliders.append(dict(active=0, visible=c == 0, steps=steps, currentvalue=dict(prefix="episode "),
                            x=0.0, len=1.0, y=0, yanchor="top", pad=dict(t=40)))
    buttons = []
    for c, combo in enumerate(combos):
        first = next(v for v in views if v[0] == c)
        args = show(first)
        args[1] = {**args[1], **{f"sliders[{s}].visible": s == c for s in range(len(combos))},
                   f"sliders[{c}].active": 0}
        buttons.append(dict(method="update", label=combo, args=args))
    fig.update_layout(sliders=sliders, updatemenus=[dict(buttons=buttons, active=0, x=0.0, xanchor="left",
                                                         y=1.0, yanchor="bottom", pad=dict(b=8),
                                                         direction="down", showactive=True)])


def attention_explorer_figure(runs: dict, episodes: list, annotations: dict, *, segments, T: int,
                              top: int = 5, stage_names=None, rows_per_support: int | None = 4) -> go.Figure:
    """ONE figure that switches, without a kernel, between precomputed views of the attention on the
    query's time line (:func:`episode_attention_figure`): a dropdown picks the model and the stage, a
    slider the episode. ``runs = {model: [episode_outputs(...) for each of episodes]}``. The stages
    are those drawn on the query's time line (:func:`timeline_stages`, or ``stage_names``); a model
    without a stage (switched off, blind) offers no entry for it. Heatmaps travel as float32, each
    support clip averaged into ``rows_per_support`` rows (``None``: every snippet), so that a handful
    of episodes stays light (about 25 kB a view)."""
    stage_names = tuple(stage_names or timeline_stages())
    fig, views, combos = None, [], []
    for model, outs in runs.items():
        for stage in stage_names:
            if any(o["attention"].get(stage) is None for o in outs):
                continue
            combos.append(f"{model} · {stages.get(stage).short}")
            for e, (ep, out) in enumerate(zip(episodes, outs)):
                one = episode_attention_figure(out["attention"][stage], segments, T, ep, annotations, out["detections"],
                                              top=top, title=f"{model}: {stages.title(stage)}, episode {ep['id']} "
                                                             f"(class {ep['label']})", rows_per_support=rows_per_support)
                if fig is None:
                    fig = go.Figure(layout=one.layout)
                start = len(fig.data)
                fig.add_traces(list(one.data))
                views.append((len(combos) - 1, e, range(start, len(fig.data)),
                              {"shapes": list(one.layout.shapes), "title.text": one.layout.title.text}))
    if fig is None:
        raise FscalError(f"{where(field='runs')}: no model has a stage among {list(stage_names)}")
    first = views[0]
    for i, trace in enumerate(fig.data):
        trace.visible = i in first[2]
    fig.update_layout(shapes=first[3]["shapes"], title_text=first[3]["title.text"], height=720,
                      margin=dict(t=130, b=130))
    fig.update_layout(legend=dict(y=1.02, x=1.0, xanchor="right"))
    _controls(fig, views, combos, episodes)
    return fig
