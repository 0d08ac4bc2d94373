"""Probes of a trained model that notebooks and ``bench/`` share: numbers, not figures."""
from __future__ import annotations

import torch
from einops import rearrange

from .attention import cross_attend


def stoq_added_term(model, query, support) -> dict:
    """What StoQ Context-CA adds to the proposal tokens (eq. 6, before its LayerNorm), on a batch.

    ``relative_size``: ``|Y~_S A_{S->Q}| / |X_Q|``, mean norms over all proposals;
    ``shared_energy``: the share of the added term's energy that is one vector for every proposal of
    the episode (its mean over the proposals), averaged over the episodes. Near 1: StoQ adds a
    per-episode constant that cannot help to rank the proposals of one query.
    """
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
