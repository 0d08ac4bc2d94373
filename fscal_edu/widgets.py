"""Thin ipywidgets wrappers around the figures of ``fscal_edu.viz``: they only pick what to draw.

Every explorer draws into its ``ipywidgets.Output`` areas by setting their ``outputs`` (:func:`_show`),
never inside ``with out:``, so that a cell that builds one returns under any front-end or none
(``jupyter nbconvert --execute``, nbclient, nbval) as it does in JupyterLab.
"""
from __future__ import annotations

import traceback

# ---------------------------------------------------------------------------------------------
# Drawing into an output area without a front-end's help
# ---------------------------------------------------------------------------------------------

def _show(out, draw, *, catch: bool = False) -> None:
    """Replace what ``out`` (an ``ipywidgets.Output``) shows by the figures ``draw()`` returns
    (each drawn with its ``show()``) and whatever drawing them printed, in one update of
    ``out.outputs``.

    ``with out:`` is not used: it asks the front-end to collect the kernel's messages into the
    area, and nbclient (the client behind ``jupyter nbconvert --execute``), which plays that
    front-end, sends the area's new state back to the kernel on the shell channel for each of them
    while it waits on that same channel for the cell's reply; such a send can swallow the wake-up
    of the reply, and the cell then waits until its timeout (forever by default). Setting
    ``outputs`` is one state change that JupyterLab draws and a headless client only stores. With
    ``catch`` (a redraw asked for by a control), an error is shown in the area instead of raised."""
    from IPython.utils.capture import capture_output

    try:
        with capture_output() as captured:
            for fig in draw():
                fig.show()
    except Exception as e:
        if not catch:
            raise
        return _error(out, e)
    printed = [{"output_type": "stream", "name": name, "text": text}
               for name, text in (("stdout", captured.stdout), ("stderr", captured.stderr)) if text]
    shown = [{"output_type": "display_data", "data": o.data, "metadata": o.metadata or {}}
             for o in captured.outputs]
    out.outputs = tuple(printed + shown)


def _error(out, e: Exception) -> None:
    """Show the error ``e`` and its traceback in the output area ``out``."""
    out.outputs = ({"output_type": "error", "ename": type(e).__name__, "evalue": str(e),
                    "traceback": traceback.format_exception(e)},)


# ---------------------------------------------------------------------------------------------
# Task, data and episodes (notebooks 00-01)
# ---------------------------------------------------------------------------------------------

def _figures_view(controls, draw) -> "ipywidgets.VBox":
    """Controls above an output area that shows ``draw(**values)``'s figures whenever one changes;
    ``controls`` is a list (each passed under its ``description``) or ``{keyword: control}``."""
    import ipywidgets

    named = controls if isinstance(controls, dict) else {c.description: c for c in controls}
    out = ipywidgets.Output()

    def refresh(change=None):
        _show(out, lambda: draw(**{name: c.value for name, c in named.items()}), catch=change is not None)

    for c in named.values():
        c.observe(refresh, names="value")
    refresh()
    return ipywidgets.VBox([*named.values(), out])


def episode_browser(world, episodes: list, *, T: int = 128, T_S: int = 16) -> "ipywidgets.VBox":
    """Step through episodes: the timeline (seconds) and the tensors the model gets (heatmaps)."""
    import ipywidgets

    from .data.episodes import episode_tensors
    from .data.features import instances_in_snippets
    from .viz.data import episode_heatmaps_figure, episode_timeline_figure

    def draw(episode):
        ep = episodes[episode]
        x = episode_tensors(world, ep, T, T_S)
        segments = instances_in_snippets(world.annotations, ep["query"], T)
        return [episode_timeline_figure(ep, world.annotations),
                episode_heatmaps_figure(x["query"].numpy(), x["support"].numpy(), segments=segments,
                                        highlight=ep["label"])]

    return _figures_view([ipywidgets.IntSlider(0, 0, len(episodes) - 1, description="episode")], draw)


def knob_explorer(draw, **sliders) -> "ipywidgets.VBox":
    """Sliders named after the keyword arguments of ``draw`` (one ``(min, max, step, value)`` each);
    ``draw(**values)`` returns the figures to show."""
    import ipywidgets

    controls = [ipywidgets.FloatSlider(value=v, min=lo, max=hi, step=st, description=name)
                for name, (lo, hi, st, v) in sliders.items()]
    return _figures_view(controls, draw)

# ---------------------------------------------------------------------------------------------
# Proposals, NMS and evaluation (notebook 02)
# ---------------------------------------------------------------------------------------------

def nms_explorer(segments, scores, *, gt=()) -> "ipywidgets.VBox":
    """Sliders for the hard-NMS threshold and the Soft-NMS sigma / top-k; redraws
    :func:`fscal_edu.viz.proposals.nms_figure` on the same scored proposals."""
    import ipywidgets as w

    from .postprocess import nms_1d, soft_nms_1d
    from .viz.proposals import nms_figure

    def draw(iou_threshold, sigma, top_k):
        soft = soft_nms_1d(segments, scores, sigma=sigma, top_k=top_k)
        return [nms_figure(segments, scores, nms_1d(segments, scores, iou_threshold, top_k=top_k), *soft,
                           gt=gt, iou_threshold=iou_threshold, sigma=sigma)]

    return _figures_view({"iou_threshold": w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05,
                                                         description="NMS tIoU"),
                          "sigma": w.FloatLogSlider(value=0.5, base=10, min=-2, max=1, step=0.1,
                                                    description="sigma"),
                          "top_k": w.IntSlider(value=10, min=1, max=50, description="top k")}, draw)


# ---------------------------------------------------------------------------------------------
# Attention stages (notebooks 03-05)
# ---------------------------------------------------------------------------------------------

def attention_explorer(att, proposal_labels=None, *, proposal: int | None = None,
                       support: int | None = 0) -> "ipywidgets.VBox":
    """Pick the episode, the support, the granularity (Dynamics-CA) or the proposal (the other
    stages) and redraw :func:`fscal_edu.viz.attention.stage_attention_figure`; the controls follow
    the layout of the stage's attention (:func:`fscal_edu.viz.attention.stage_layout`). The proposal
    dropdown opens on ``proposal``, by default the one the attention singles out most in episode 0
    (QtoS: the proposal with the largest single weight; StoQ: the one that receives the most mass), and
    the support dropdown on ``support`` (``None``: all supports, for StoQ)."""
    import ipywidgets

    from .viz.attention import stage_attention_figure, stage_layout

    def dropdown(name, labels, none=None, value=None):
        options = ([(none, None)] if none else []) + [(str(v), i) for i, v in enumerate(labels)]
        return ipywidgets.Dropdown(options=options, description=name, value=value if none or value is not None else 0)

    kind = stage_layout(att.stage)
    controls = [dropdown("batch", range(att.A.shape[0])),
                dropdown("support", range(att.K), "all" if kind == "support_to_query" else None, support)]
    if kind == "coarse_to_support":
        ks = sorted(set(att.coarse.granularity.tolist()))
        controls.append(ipywidgets.Dropdown(options=[("all", None)] + [(str(k), k) for k in ks],
                                            description="granularity"))
    else:
        A = att.A[0].detach().float()
        N_Q = A.shape[-1] if kind == "support_to_query" else A.shape[-2]
        if proposal is None:               # (K*T_S, N_Q): the most mass received; (K, N_Q, T_S): the largest weight
            proposal = int(A.sum(0).argmax()) if kind == "support_to_query" else int(A.amax(dim=(0, -1)).argmax())
        controls.append(dropdown("proposal", proposal_labels if proposal_labels is not None
                                 else range(N_Q), "none", proposal))
    return _figures_view(controls, lambda **kw: [stage_attention_figure(
        att, proposal_labels=proposal_labels, **kw)])


# ---------------------------------------------------------------------------------------------
# Relation classifier and training (notebooks 06-07)
# ---------------------------------------------------------------------------------------------

def label_assignment_explorer(anchors, gt, *, others=()) -> "ipywidgets.VBox":
    """Sliders for ``pos_iou`` and ``neg_iou``: reassign the labels of ``anchors (N, 2)`` against
    the instances ``gt (G, 2)`` and redraw :func:`fscal_edu.viz.training.label_assignment_figure`."""
    import torch

    from .proposals import assign_labels
    from .viz.training import label_assignment_figure

    gt = torch.as_tensor(gt, dtype=torch.float32).reshape(1, -1, 2)

    def draw(pos_iou, neg_iou):
        labels, _, best = assign_labels(anchors, gt, torch.ones(gt.shape[:2], dtype=torch.bool),
                                        pos_iou=pos_iou, neg_iou=neg_iou)
        return [label_assignment_figure(anchors, labels[0], best[0], gt=gt[0], others=others,
                                        pos_iou=pos_iou, neg_iou=neg_iou)]

    return knob_explorer(draw, pos_iou=(0.3, 0.9, 0.05, 0.5), neg_iou=(0.05, 0.5, 0.05, 0.3))


def live_loss_plot(keys=None, *, every: int = 5, smooth: int = 1):
    """A loss curve that grows while :func:`fscal_edu.train.train` runs.

    Returns ``(widget, callback)``: display the widget, pass ``callback`` as ``train(...,
    callback=callback)``; ``callback.records`` keeps every record. The figure is redrawn every
    ``every`` records and at each validation. It is plotly's ``FigureWidget`` (updated in place)
    when ``anywidget`` is installed, else a figure redrawn in an ``ipywidgets.Output`` area.
    """
    import ipywidgets
    import plotly.graph_objects as go

    from .viz.training import LOSS_KEYS, loss_curve_figure

    keys, records = list(keys or LOSS_KEYS), []
    try:
        widget = go.FigureWidget(loss_curve_figure([], keys=keys, smooth=smooth))
    except ImportError:                       # plotly >= 6 needs anywidget for FigureWidget
        widget = ipywidgets.Output()

    def callback(record):
        records.append(record)
        if len(records) % every and "val_mAP@0.5" not in record:
            return
        fig = loss_curve_figure(records, keys=keys, smooth=smooth)
        if isinstance(widget, go.FigureWidget):
            with widget.batch_update():
                for old, new in zip(widget.data, fig.data):
                    old.x, old.y = new.x, new.y
        else:
            _show(widget, lambda: [fig])

    callback.records = records
    return widget, callback


def detections_browser(world, episodes: list, predictions: dict, *, top: int = 3) -> "ipywidgets.VBox":
    """Step through ``episodes`` and draw :func:`fscal_edu.viz.training.detections_timeline_figure` with
    the detections of every model in ``predictions = {name: results JSON}``."""
    import ipywidgets

    from .viz.training import detections_timeline_figure

    def draw(episode):
        ep = episodes[episode]
        return [detections_timeline_figure(ep, world.annotations, {name: p["results"][ep["id"]]
                                                                   for name, p in predictions.items()}, top=top)]

    return _figures_view([ipywidgets.IntSlider(0, 0, len(episodes) - 1, description="episode")], draw)


# ---------------------------------------------------------------------------------------------
# Evaluation, ablations and the attention explorer (notebook 08)
# ---------------------------------------------------------------------------------------------

def model_attention_explorer(models: dict, world, episodes: list) -> "ipywidgets.VBox":
    """Pick an episode, a model ``{name: FSCAL}``, a stage (every registered stage, read from
    :mod:`fscal_edu.stages` when the explorer is built), a support and a granularity: the
    stage's attention (:func:`fscal_edu.viz.attention.stage_attention_figure`) beside the model's detections
    (:func:`fscal_edu.viz.training.detections_timeline_figure`). Each (episode, model) runs once, then is cached."""
    import ipywidgets

    from . import stages
    from .inference import episode_outputs
    from .viz.evaluation import episode_attention_figure, explorer_figures

    K = len(episodes[0]["support"])
    to_query = [s.short for s in stages.registered() if s.layout == "support_to_query"]
    controls = [ipywidgets.IntSlider(0, 0, len(episodes) - 1, description="episode"),
                ipywidgets.Dropdown(options=list(models), description="model"),
                ipywidgets.Dropdown(options=[(s.title, s.name) for s in stages.registered()], description="stage"),
                ipywidgets.Dropdown(options=[(str(l), l) for l in range(K)]
                                    + ([(f"all ({', '.join(to_query)})", None)] if to_query else []),
                                    description="support"),
                ipywidgets.Dropdown(options=[("all", None)] + [(str(k), k) for k in sorted(
                    {k for m in models.values() for k in m.cfg.model.granularities})], description="granularity")]
    panels = [ipywidgets.Output(layout=ipywidgets.Layout(width="50%")) for _ in range(2)]
    timeline = ipywidgets.Output()
    cache = {}

    def refresh(change=None):
        kw = {c.description: c.value for c in controls}
        try:
            key = (kw["episode"], kw["model"])
            if key not in cache:
                cache[key] = episode_outputs(models[kw["model"]], world, episodes[kw["episode"]])
            out, ep, model = cache[key], episodes[kw["episode"]], models[kw["model"]]
            figs = explorer_figures(out, ep, world.annotations, model=kw["model"],
                                    stage=kw["stage"], support=kw["support"], granularity=kw["granularity"])
            att = out["attention"].get(kw["stage"])
            line = ([] if att is None or stages.get(kw["stage"]).layout == "coarse_to_support" else
                    [episode_attention_figure(att, model.anchors, model.cfg.data.T, ep, world.annotations,
                                              out["detections"], title=f"{kw['model']}: {stages.title(kw['stage'])} "
                                                                       f"on the query's time line")])
        except Exception as e:                # a control's redraw shows the error, the first draw raises it
            if change is None:
                raise
            return _error(timeline, e)
        if line:                              # where in the query the stage's attention lands
            _show(timeline, lambda: line)
        for panel, fig in zip(panels, figs):
            _show(panel, lambda fig=fig: [fig])

    for c in controls:
        c.observe(refresh, names="value")
    refresh()
    return ipywidgets.VBox([ipywidgets.HBox(controls[:3]), ipywidgets.HBox(controls[3:]), timeline,
                            ipywidgets.HBox(panels)])
