"""Figures of the whole model, the relation classifier, the losses and training (notebooks 06-07).

Every function returns a ``go.Figure`` (or the data one draws) and is tested in pytest.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..evaluation import detection_verdicts
from ..model import parameter_counts  # noqa: F401  (counted there)
from ..utils import FscalError, where
from .marks import COMMON, OTHER, VIDEO, bars, gt_boxes, legend_above, segment_lines


LABEL_COLOURS = {1: COMMON, -1: "#ff7f0e", 0: OTHER}    # positive, ignored, negative
LABEL_NAMES = {1: "positive", -1: "ignored", 0: "negative"}
HIT, ON_DISTRACTOR, MISS = "#2ca02c", "#ff7f0e", "#7f7f7f"
LOSS_KEYS = ("loss", "cls", "reg", "rel")
SCORE_COLOURS = ("#d62728", "#1f77b4", "#8c8c8c")        # the rows of relation_scores_figure


def _lines32(segments, y):
    """:func:`~fscal_edu.viz.marks.segment_lines` as float32 arrays: plotly stores them as typed arrays, half the bytes."""
    x, y = segment_lines(segments, y)
    return x.astype(np.float32), y.astype(np.float32)


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
        x, y = _lines32(anchors[rows], best_iou[rows])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{LABEL_NAMES[lab]} ({len(rows)})",
                                 line=dict(color=LABEL_COLOURS[lab], width=2 if lab == 1 else 1),
                                 hoverinfo="skip"))
    for s, e in np.asarray(others, float).reshape(-1, 2):
        fig.add_vrect(x0=s, x1=e, fillcolor=OTHER, opacity=0.15, line_width=0)
    gt_boxes(fig, gt)
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
    with their own). Each histogram sums to one; a dashed line marks the group's mean.

    ``groups`` may also be ``{column: {name: scores}}``: one column per model (e.g. freshly
    initialised and trained), the same groups in the rows, so the two can be read side by side.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    columns = groups if groups and all(isinstance(v, dict) for v in groups.values()) else {"": groups}
    rows = list(dict.fromkeys(name for col in columns.values() for name in col))
    cells = {(c, name): np.asarray(col.get(name, ()), float).reshape(-1)
             for c, col in columns.items() for name in rows}

    def caption(c, name):
        v = cells[c, name]
        return (f"{c}: " if c else "") + f"{name} (n = {len(v)}" + (f", mean {v.mean():.3f})" if len(v) else ")")

    fig = make_subplots(rows=len(rows), cols=len(columns), shared_xaxes=True, vertical_spacing=0.08,
                        horizontal_spacing=0.06,
                        subplot_titles=[caption(c, name) for name in rows for c in columns])
    for r, name in enumerate(rows, start=1):
        for k, c in enumerate(columns, start=1):
            scores = cells[c, name]
            counts = np.histogram(scores, bins=edges)[0] / max(1, len(scores))
            fig.add_trace(go.Bar(x=np.round((edges[:-1] + edges[1:]) / 2, 4), y=np.round(counts, 4),
                                 width=1.0 / bins, name=caption(c, name), marker_color=SCORE_COLOURS[(r - 1) % 3]),
                          r, k)
            if len(scores):
                fig.add_vline(x=float(scores.mean()), line_dash="dash", line_color="black", row=r, col=k)
    fig.update_layout(title=title or "relation scores rho", height=140 + 150 * len(rows), showlegend=False,
                      margin=dict(l=10, r=10, t=60, b=10))
    fig.update_annotations(font_size=12)
    fig.update_xaxes(range=[0, 1])
    for k in range(1, len(columns) + 1):
        fig.update_xaxes(title_text="rho (dashed: the mean)", row=len(rows), col=k)
    fig.update_yaxes(title_text="share", col=1)
    return fig


def relation_timeline_figure(anchors, scores: dict, labels, *, gt=(), others=(), title: str | None = None,
                             y_title: str = "rho") -> go.Figure:
    """Scores of every proposal of one query on its time line (snippet coordinates), one row per
    model ``{name: (N,) scores in [0, 1]}``: each anchor a horizontal line at the height of its
    score, coloured by its training label (``assign_labels``: positive red, ignored orange,
    negative grey). The common class's instances ``gt`` are shaded red, other instances grey."""
    anchors, labels = np.asarray(anchors, float).reshape(-1, 2), np.asarray(labels).reshape(-1)
    fig = make_subplots(rows=len(scores), cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=list(scores))
    for r, values in enumerate(scores.values(), start=1):
        values = np.asarray(values, float).reshape(-1)
        for lab in (0, -1, 1):
            rows = np.flatnonzero(labels == lab)
            x, y = _lines32(anchors[rows], values[rows])
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{LABEL_NAMES[lab]} ({len(rows)})",
                                     line=dict(color=LABEL_COLOURS[lab], width=2 if lab == 1 else 1),
                                     hoverinfo="skip", showlegend=r == 1, legendgroup=str(lab)), r, 1)
        for s, e in np.asarray(others, float).reshape(-1, 2):
            fig.add_vrect(x0=s, x1=e, fillcolor=OTHER, opacity=0.15, line_width=0, row=r, col=1)
        for s, e in np.asarray(gt, float).reshape(-1, 2):
            fig.add_vrect(x0=s, x1=e, fillcolor=COMMON, opacity=0.12, line_width=0, row=r, col=1)
        fig.update_yaxes(title_text=y_title, range=[-0.02, 1.02], row=r, col=1)
    fig.update_xaxes(title_text="query time (snippets)", row=len(scores), col=1)
    fig.update_layout(title=title or "proposal scores on the query's time line", height=120 + 230 * len(scores),
                      legend_orientation="h", legend_y=-0.12, margin=dict(l=10, r=10, t=60, b=10))
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


def parameters_figure(models: dict) -> go.Figure:
    """Grouped bars: trainable parameters of each part, one group per model ``{name: model}``."""
    fig = go.Figure([go.Bar(x=list(counts), y=list(counts.values()),
                            name=f"{name} ({sum(counts.values()):,} in all)")
                     for name, counts in ((n, parameter_counts(m)) for n, m in models.items())])
    fig.update_layout(title="trainable parameters by part", yaxis_title="parameters", yaxis_type="log",
                      barmode="group", height=420, legend_orientation="h", legend_y=-0.3,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


# The whole model on one page (notebook 06): boxes at (x, y), arrows from box to box. The stages
# come from the registry, in the order they run: a stage that rewrites the supports X_S sits on the
# support row (y = 0), one that rewrites the proposals X_Q on the query row (y = 2).
FIXED_NODES = {
    "query": (0.0, 2.0, "query features"),
    "support": (0.0, 0.0, "K support clips"),
    "embed": (1.25, 1.0, "TemporalEmbedding<br>(shared Conv1d stack)"),
    "proposals": (2.5, 2.0, "proposals: anchors,<br>RoIAlign, proposal MLP"),
}
TRAINING_ONLY = ("relation",)
_BOX = (0.56, 0.45)                     # half width, half height of a box
_STEP = 1.25                            # from one column of boxes to the next


def model_nodes() -> dict:
    """``{node: (x, y, label)}``: the fixed parts, one box per registered stage, then the support
    summary, the head and the training-only relation module after the last stage."""
    from .. import stages
    nodes = dict(FIXED_NODES)
    x = FIXED_NODES["proposals"][0]
    for i, stage in enumerate(stages.registered()):
        x += _STEP
        nodes[stage.name] = (x, 2.0 if stage.output == "X_Q" else 0.0, f"stage {i + 1}<br>{stage.title}")
    last = stages.registered()[-1] if stages.registered() else None
    x_summary = x + _STEP if last is None or last.output == "X_S" else x
    nodes["summary"] = (x_summary, 0.0, "support summary s<br>(RoIAlign, proposal MLP)")
    nodes["head"] = (x_summary + _STEP, 2.0, "relation classifier head<br>(action score, offsets)")
    nodes["relation"] = (x_summary + _STEP, 0.0, "relation module g<br>(training only)")
    return nodes


def model_edges() -> tuple:
    """``((from, to), ...)``: each stage reads its tokens from the last box that wrote them (X_S
    from the embedding, X_Q and its mask from the proposals, until a stage rewrites them); the
    summary reads the final X_S, the head and the relation module the final X_Q and the summary."""
    from .. import stages
    wrote = {"X_Q": "proposals", "X_S": "embed", "mask_Q": "proposals"}
    edges = [("query", "embed"), ("support", "embed"), ("embed", "proposals")]
    for stage in stages.registered():
        edges += [(src, stage.name) for src in dict.fromkeys(wrote[t] for t in ("X_S", "X_Q", "mask_Q")
                                                             if t in stage.inputs)]
        wrote[stage.output] = stage.name
    edges += [(wrote["X_S"], "summary"), (wrote["X_Q"], "head"), ("summary", "head"),
              (wrote["X_Q"], "relation"), ("summary", "relation")]
    return tuple(dict.fromkeys(edges))


def _box_edge(centre, towards):
    """The point where the ray from ``centre`` towards ``towards`` leaves the box around ``centre``."""
    c, v = np.asarray(centre, float), np.asarray(towards, float) - np.asarray(centre, float)
    t = min(_BOX[0] / abs(v[0]) if v[0] else np.inf, _BOX[1] / abs(v[1]) if v[1] else np.inf)
    return c + t * v


def model_diagram_figure(shapes: dict | None = None, params: dict | None = None, *,
                         title: str = "FSCAL on one page") -> go.Figure:
    """The whole model as boxes and arrows (:func:`model_nodes`, :func:`model_edges`): query and
    supports through the shared embedding, the proposal path, the registered stages in the order
    they run, the support summary, the head and the training-only relation module (dashed box,
    grey arrows).

    ``shapes = {node: text}`` writes a tensor shape under each box's name (e.g. traced on a real
    episode), ``params = {node: count}`` its trainable parameters; both keys must be nodes.
    """
    shapes, params, nodes = shapes or {}, params or {}, model_nodes()
    unknown = sorted(set(shapes) - set(nodes) | set(params) - set(nodes))
    if unknown:
        raise FscalError(f"{where(field='shapes')}: unknown node(s) {unknown}; the nodes are {list(nodes)}")
    fig = go.Figure()
    for src, dst in model_edges():
        a, b = nodes[src][:2], nodes[dst][:2]
        start, end = _box_edge(a, b), _box_edge(b, a)
        fig.add_annotation(x=end[0], y=end[1], ax=start[0], ay=start[1], xref="x", yref="y", axref="x",
                           ayref="y", showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, text="",
                           arrowcolor="#999999" if dst in TRAINING_ONLY else "#444444")
    for name, (x, y, label) in nodes.items():
        fig.add_shape(type="rect", x0=x - _BOX[0], x1=x + _BOX[0], y0=y - _BOX[1], y1=y + _BOX[1],
                      line=dict(color="#444444", width=1.5, dash="dash" if name in TRAINING_ONLY else "solid"),
                      fillcolor="#f4f4f4" if name in ("query", "support") else "#ffffff", layer="below")
        text = f"<b>{label}</b>"
        if name in shapes:
            text += f"<br><span style='color:#1f77b4'>{shapes[name]}</span>"
        if name in params:
            text += f"<br><i>{params[name]:,} parameters</i>"
        fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(size=10), name=name)
    xs = [x for x, _, _ in nodes.values()]
    fig.update_xaxes(visible=False, range=[min(xs) - 0.6, max(xs) + 0.6])
    fig.update_yaxes(visible=False, range=[-0.6, 2.6])
    fig.update_layout(title=title, height=430, plot_bgcolor="white", showlegend=False,
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


def run_curves_figure(runs: dict, *, key: str = "cls", smooth: int = 25, every: int = 5,
                      chance: float | None = None, title: str = "training runs") -> go.Figure:
    """Whole runs side by side, ``{name: records}`` (the lines of each run's ``metrics.jsonl``).

    Left: the loss term ``key`` against the step, a trailing mean over ``smooth`` steps, every
    ``every``-th step drawn (and the last); ``chance`` draws a dashed line at that loss (ln 2 for
    a balanced BCE that says 0.5 everywhere). Right: the validation mAP@0.5 where it was logged.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[f"training loss '{key}'" + (f" (mean over {smooth} steps)" if smooth > 1 else ""),
                                        "validation mAP@0.5"])
    colours = ("#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd")
    for i, (name, records) in enumerate(runs.items()):
        records, colour = list(records), colours[i % len(colours)]
        steps = np.array([r["step"] for r in records if key in r], float)
        y = np.array([r[key] for r in records if key in r], float)
        w = max(1, min(smooth, len(y)))
        if len(y):
            steps, y = steps[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid")
            keep = np.unique(np.r_[np.arange(0, len(y), max(1, every)), len(y) - 1])
            steps, y = steps[keep], y[keep]
        fig.add_trace(go.Scatter(x=steps, y=np.round(y, 4), mode="lines", name=name, legendgroup=name,
                                 line=dict(color=colour)), 1, 1)
        val = [r for r in records if "val_mAP@0.5" in r]
        fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[round(r["val_mAP@0.5"], 4) for r in val],
                                 mode="lines+markers", name=f"{name}: val mAP@0.5", legendgroup=name,
                                 showlegend=False, line=dict(color=colour, dash="dot")), 1, 2)
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="black", row=1, col=1,
                      annotation_text=f"chance level {chance:.3f}", annotation_position="top right")
    last = max((r["step"] for records in runs.values() for r in records), default=1)
    fig.update_xaxes(title_text="step", range=[0, last])
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="mAP@0.5", range=[0, 1], row=1, col=2)
    fig.update_layout(title=title, height=380, legend_orientation="h", legend_y=-0.2,
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def lr_schedule_figure(configs: dict) -> go.Figure:
    """The learning rate at every step of each config ``{name: Config}``: linear warm-up, then
    cosine decay to 5% (``fscal_edu.train.lr_factor`` times ``cfg.optim.lr``)."""
    from ..train import lr_factor
    fig = go.Figure()
    for name, cfg in configs.items():
        steps = np.unique(np.linspace(0, cfg.optim.steps - 1, min(cfg.optim.steps, 400)).astype(int))
        fig.add_trace(go.Scatter(x=steps + 1, y=[round(cfg.optim.lr * lr_factor(int(s), cfg), 10) for s in steps],
                                 mode="lines", name=f"{name}: {cfg.optim.steps} steps, warm-up {cfg.optim.warmup}"))
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


def detections_timeline_figure(episode: dict, annotations: dict, detections: dict, *, top: int = 3,
                               iou: float = 0.5, title: str | None = None) -> go.Figure:
    """One query on a time axis (seconds): its instances, then each model's ``top`` detections.

    ``detections = {model name: [{"segment", "score"}, ...]}`` (a results JSON's entry for this
    episode). Ground-truth row: the common class (red) and other classes (grey; the common
    class's twin is named "twin"). Each detection gets its own row, labelled with its score and
    coloured green when it hits an instance of the common class (tIoU >= ``iou``), orange when it
    lands on a distractor instead, grey otherwise (:func:`fscal_edu.evaluation.detection_verdicts`).
    """
    db = annotations["database"]
    video = db[episode["query"]]
    twins = {t.get("nodeName"): t.get("twin") for t in annotations.get("taxonomy", []) if isinstance(t, dict)}
    gt_row = "ground truth"
    fig = go.Figure(bars([gt_row], [0.0], [video["duration"]], [""], "query video", VIDEO, width=0.8,
                          hoverinfo="skip", hovertemplate=None, customdata=None))
    for legend, colour, keep in (("common class", COMMON, True), ("other classes", OTHER, False)):
        items = [(gt_row, *a["segment"], "twin" if a["label"] == twins.get(episode["label"]) else a["label"])
                 for a in video["annotations"] if (a["label"] == episode["label"]) == keep]
        if items:
            fig.add_trace(bars(*zip(*items), legend, colour))
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
            fig.add_trace(bars([row], [d["segment"][0]], [d["segment"][1]], [text], f"detection: {kind}",
                                colour, showlegend=kind not in shown, legendgroup=kind))
            shown[kind] = True
    fig.update_layout(barmode="overlay", title=title or f"episode {episode['id']}: top {top} detections<br>"
                      f"<sup>hidden class {episode['label']}</sup>", xaxis_title="time (s)", height=150 + 32 * len(rows),
                      margin=dict(l=10, r=90, b=10))
    legend_above(fig, title_lines=1 if title else 2)
    fig.update_traces(textposition="outside", cliponaxis=False, selector=lambda t: t.name.startswith("detection"))
    fig.update_xaxes(range=[0, video["duration"]])
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1])
    return fig
