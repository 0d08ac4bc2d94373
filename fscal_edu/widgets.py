"""Thin ipywidgets wrappers around the figures of ``viz.py``: they only pick what to draw."""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Task, data and episodes (notebooks 00-01)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Proposals, NMS and evaluation (notebook 02)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Attention stages (notebooks 03-05)
# ---------------------------------------------------------------------------------------------

def attention_explorer(att, proposal_labels=None):
    """Pick the episode, the support, the granularity (Dynamics-CA) or the proposal (QtoS,
    StoQ) and redraw :func:`fscal_edu.viz.fig_stage_attention`."""
    import ipywidgets as w
    from IPython.display import display

    from .viz import fig_stage_attention

    controls = {"batch": w.Dropdown(options=list(range(att.A.shape[0])), description="episode"),
                "support": w.Dropdown(options=([("all", None)] if att.stage == "stoq" else [])
                                      + list(range(att.K)), description="support")}
    if att.stage == "dynamics":
        ks = sorted(set(att.coarse.granularity.tolist()))
        controls["granularity"] = w.Dropdown(options=[("all", None)] + ks, description="k")
    else:
        N_Q = att.A.shape[-1] if att.stage == "stoq" else att.A.shape[-2]
        names = proposal_labels if proposal_labels is not None else range(N_Q)
        controls["proposal"] = w.Dropdown(options=[("none", None)] + [(str(n), i) for i, n in
                                                                       enumerate(names)],
                                          description="proposal")
    return w.interactive(lambda **kw: display(fig_stage_attention(
        att, proposal_labels=proposal_labels, **kw)), **controls)

# ---------------------------------------------------------------------------------------------
# Model, training and evaluation (notebooks 06-08)
# ---------------------------------------------------------------------------------------------
