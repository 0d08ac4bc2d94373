"""Thin ipywidgets wrappers around the figures of ``viz.py``: they only pick what to draw."""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Task, data and episodes (notebooks 00-01)
# ---------------------------------------------------------------------------------------------

def _figures_view(controls: list, draw) -> "ipywidgets.VBox":
    """Controls above an output area that shows ``draw(**values)``'s figures whenever one changes."""
    import ipywidgets

    out = ipywidgets.Output()

    def refresh(_=None):
        out.clear_output(wait=True)
        with out:
            for fig in draw(**{c.description: c.value for c in controls}):
                fig.show()

    for c in controls:
        c.observe(refresh, names="value")
    refresh()
    return ipywidgets.VBox([*controls, out])


def episode_browser(world, episodes: list, *, T: int = 128, T_S: int = 16) -> "ipywidgets.VBox":
    """Step through episodes: the timeline (seconds) and the tensors the model gets (heatmaps)."""
    import ipywidgets

    from .data.episodes import episode_tensors
    from .viz import episode_heatmaps_figure, episode_timeline_figure, instances_in_snippets

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

def nms_explorer(segments, scores, *, gt=()):
    """Sliders for the hard-NMS threshold and the Soft-NMS sigma / top-k; redraws
    :func:`fscal_edu.viz.nms_figure` on the same scored proposals."""
    import ipywidgets as w
    from IPython.display import display

    from .postprocess import nms_1d, soft_nms_1d
    from .viz import nms_figure

    def draw(iou_threshold, sigma, top_k):
        soft = soft_nms_1d(segments, scores, sigma=sigma, top_k=top_k)
        display(nms_figure(segments, scores, nms_1d(segments, scores, iou_threshold, top_k=top_k), *soft,
                           gt=gt, iou_threshold=iou_threshold, sigma=sigma))

    return w.interactive(draw, iou_threshold=w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05,
                                                           description="NMS tIoU"),
                         sigma=w.FloatLogSlider(value=0.5, base=10, min=-2, max=1, step=0.1,
                                                description="sigma"),
                         top_k=w.IntSlider(value=10, min=1, max=50, description="top k"))


# ---------------------------------------------------------------------------------------------
# Attention stages (notebooks 03-05)
# ---------------------------------------------------------------------------------------------

def attention_explorer(att, proposal_labels=None) -> "ipywidgets.VBox":
    """Pick the episode, the support, the granularity (Dynamics-CA) or the proposal (QtoS,
    StoQ) and redraw :func:`fscal_edu.viz.fig_stage_attention`."""
    import ipywidgets

    from .viz import fig_stage_attention

    def dropdown(name, labels, none=None):
        options = ([(none, None)] if none else []) + [(str(v), i) for i, v in enumerate(labels)]
        return ipywidgets.Dropdown(options=options, description=name)

    controls = [dropdown("batch", range(att.A.shape[0])),
                dropdown("support", range(att.K), "all" if att.stage == "stoq" else None)]
    if att.stage == "dynamics":
        ks = sorted(set(att.coarse.granularity.tolist()))
        controls.append(ipywidgets.Dropdown(options=[("all", None)] + [(str(k), k) for k in ks],
                                            description="granularity"))
    else:
        N_Q = att.A.shape[-1] if att.stage == "stoq" else att.A.shape[-2]
        controls.append(dropdown("proposal", proposal_labels if proposal_labels is not None
                                 else range(N_Q), "none"))
    return _figures_view(controls, lambda **kw: [fig_stage_attention(
        att, proposal_labels=proposal_labels, **kw)])


# ---------------------------------------------------------------------------------------------
# Relation classifier and training (notebooks 06-07)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Evaluation, ablations and the attention explorer (notebook 08)
# ---------------------------------------------------------------------------------------------
