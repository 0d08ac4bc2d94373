"""The catalogue of known mistakes, exercise by exercise: for each, the mistakes by name with what
the student reads (``CROSS_ATTEND``, ...), and a ``*_variant`` function that computes the
exercise's answer with those mistakes switched on (``column=True``: a column softmax, ...).
:func:`fscal_edu.checking.name_mistake` tries them on a wrong answer to say which mistake it is.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange, reduce

# ---------------------------------------------------------------------------------------------
# Known mistakes, exercise by exercise: the flag, and what the student reads
# ---------------------------------------------------------------------------------------------


CROSS_ATTEND = {
    "column": "this is what a column softmax gives: the softmax must run along each row "
              "(source token i spreads one unit over the targets), `softmax(dim=-1)`",
    "no_residual": "the residual X_b is missing: eq. (2) is X~_b = X_a A + X_b",
    "temperature": "scaled by 1/sqrt(d): this exercise asks for the plain softmax, no temperature",
    "W_T": "W is transposed: Lambda[i, j] = x_i^T W x_j, i.e. X_a @ W @ X_b^T",
    "no_softmax": "there is no softmax: A is Lambda itself",
    "source_updated": "the source got updated instead of the target: X_b receives A^T X_a",
    "mass_norm": "multiplied by N_b / N_a (mass_norm): this exercise asks for the bare equations",
}


def cross_attend_variant(X_a, X_b, W, *, column=False, no_residual=False, temperature=False,
                         W_T=False, no_softmax=False, source_updated=False, mass_norm=False):
    """eqs. (1)-(2) with the mistakes of :data:`CROSS_ATTEND` switched on -> ``(X_b_new, A)``."""
    Lambda = torch.einsum("bid,de,bje->bij", X_a, W.T if W_T else W, X_b)          # (B, N_a, N_b)
    if temperature:
        Lambda = Lambda / math.sqrt(X_a.shape[-1])
    A = Lambda if no_softmax else Lambda.softmax(dim=-2 if column else -1)
    if source_updated:                                         # X_a + A X_b            (B, N_a, d)
        return (0 if no_residual else X_a) + A @ X_b, A
    added = torch.einsum("bij,bid->bjd", A, X_a)                                    # (B, N_b, d)
    if mass_norm:
        added = added * X_b.shape[-2] / X_a.shape[-2]
    return (0 if no_residual else X_b) + added, A


COLUMN_SOFTMAX = {
    "row": "this is the row softmax of exercise 1: here every column (target) must sum to one, `softmax(dim=-2)`",
    "temperature": "scaled by 1/sqrt(d): this exercise asks for the plain softmax, no temperature",
    "W_T": "W is transposed: Lambda[i, j] = x_i^T W x_j, i.e. X_a @ W @ X_b^T",
}


def column_softmax_variant(X_a, X_b, W, *, row=False, temperature=False, W_T=False):
    """The column-softmax A with the mistakes of :data:`COLUMN_SOFTMAX`."""
    return cross_attend_variant(X_a, X_b, W, column=not row, temperature=temperature, W_T=W_T)[1]


COARSE_TOKENS = {
    "sum": "the k snippets are summed: the untrained w_k is the window *mean* (weights I / k)",
    "max": "this is max pooling: the untrained w_k averages its window (mean, not max)",
    "interleaved": "each token mixes snippets T_S/k apart ('(k n)' instead of '(n k)'): "
                   "a window is k *consecutive* snippets",
    "overlapping": "the windows overlap (stride 1): kernel = stride = k, so there are T_S / k "
                   "windows that do not overlap",
    "subsample": "one snippet out of every k was taken: a coarse token averages all k snippets of its window",
}


def coarse_tokens_variant(X, k, *, sum=False, max=False, interleaved=False, overlapping=False,
                          subsample=False):
    """eq. (3) with the untrained w_k (window mean), with the mistakes of :data:`COARSE_TOKENS`."""
    how = "max" if max else "sum" if sum else "mean"
    if subsample:                                                            # (B, K, T_S/k, d)
        return X[:, :, ::k]
    if overlapping:                            # every window of k consecutive snippets (B, K, T_S-k+1, d)
        windows = X.unfold(2, k, 1)                                          # (B, K, T_S-k+1, d, k)
        return getattr(windows, "amax" if how == "max" else how)(-1)
    pattern = "b l (k n) d -> b l n d" if interleaved else "b l (n k) d -> b l n d"
    return reduce(X, pattern, how, k=k)                                      # (B, K, T_S/k, d)


GRANULARITY_MASS = {
    "mean": "the mean over the coarse tokens: the mass a snippet receives is their *sum*",
    "wrong_axis": "summed along the snippets: sum over the coarse tokens (rows) instead",
    "all_k": "every granularity counts: keep only the rows whose granularity is k",
    "other_k": "the rows of the *other* granularities: keep the rows where granularity == k",
}


def granularity_mass_variant(A_l, granularity, k, *, mean=False, wrong_axis=False, all_k=False,
                             other_k=False):
    """The ``(T_S,)`` mass from the coarse tokens of granularity k, with :data:`GRANULARITY_MASS`'s mistakes."""
    rows = A_l if all_k else A_l[granularity != k] if other_k else A_l[granularity == k]
    return rows.mean(0) if mean else rows.sum(1) if wrong_axis else rows.sum(0)


STOQ = {
    "column": "this is what a column softmax gives: the softmax must run along each row "
              "(each support snippet spreads one unit over the proposals)",
    "no_residual": "the residual X_Q is missing: eq. (6) is X~_Q = Y~_S A + X_Q",
    "temperature": "scaled by 1/sqrt(d): this exercise asks for the plain softmax, no temperature",
    "mass_norm": "mass_norm is on (times N_Q / (K T_S)): this exercise asks for the bare eq. (6)",
    "W_T": "W is transposed: Lambda[i, n] = y_i^T W x_n, i.e. Y_S @ W @ X_Q^T",
    "mean_supports": "the K supports are averaged: eq. (6) sums over all K*T_S support snippets",
    "first_support": "only the first support attends: all K supports form the source",
}


def stoq_variant(Y_S, X_Q, W, *, column=False, no_residual=False, temperature=False, mass_norm=False,
                 W_T=False, mean_supports=False, first_support=False):
    """eq. (6), bare, with the mistakes of :data:`STOQ` switched on -> ``X~_Q (B, N_Q, d)``."""
    K = Y_S.shape[1]
    Y_S = Y_S[:, :1] if first_support else Y_S
    Y_all = rearrange(Y_S, "b k t d -> b (k t) d")                                # (B, K*T_S, d)
    added = cross_attend_variant(Y_all, X_Q, W, column=column, no_residual=True, temperature=temperature,
                                 W_T=W_T, mass_norm=mass_norm)[0]                # (B, N_Q, d)
    added = added / K if mean_supports else added
    return added if no_residual else X_Q + added


MASS_NORM_FACTOR = {
    "inverse": "this is K T_S / N_Q, the inverse: the added term must grow when the proposals are few",
    "no_K": "this is N_Q / T_S: all K supports are sources, K * T_S units in all",
    "no_T_S": "this is N_Q / K: every support has T_S snippets, K * T_S source tokens in all",
}


def mass_norm_factor_variant(N_Q, K, T_S, *, inverse=False, no_K=False, no_T_S=False):
    """N_Q / (K T_S) with the mistakes of :data:`MASS_NORM_FACTOR`."""
    sources = (1 if no_K else K) * (1 if no_T_S else T_S)
    return sources / N_Q if inverse else N_Q / sources


RELATION_TARGETS = {
    "b_plus_1": "paired with episode b+1 instead of b-1: `torch.roll(x, 1)` puts x[b-1] at position b",
    "no_wrap": "episode 0 has no partner: b-1 is taken mod B, so episode 0 pairs with episode B-1",
    "same_class_too": "cross pairs kept when episode b-1 has the same class: same action, no negative",
    "negatives_too": "negative proposals got cross pairs too: only the positives are paired with episode b-1",
    "ignored_zero": "ignored proposals (label -1) got target 0: they take no part, own = -1",
}


def relation_targets_variant(labels, episode_label, *, b_plus_1=False, no_wrap=False,
                             same_class_too=False, negatives_too=False, ignored_zero=False):
    """``(own (B, N), cross (B, N))`` with the mistakes of :data:`RELATION_TARGETS` switched on."""
    partner = torch.roll(episode_label, -1 if b_plus_1 else 1)                      # (B,)
    has_partner = torch.ones_like(episode_label, dtype=torch.bool)
    if no_wrap:                                   # the first (or, for b+1, the last) has none
        has_partner[-1 if b_plus_1 else 0] = False
    differs = (same_class_too | (episode_label != partner)) & has_partner           # (B,)
    own = (labels == 1).double() if ignored_zero else torch.where(labels >= 0, (labels == 1).double(), -1.0)
    return own, ((labels >= 0) if negatives_too else (labels == 1)) & differs[:, None]


BALANCED_BCE = {
    "plain_mean": "this is the plain mean over the valid entries: positives and negatives must weigh one half each",
    "no_valid": "the ignored entries (valid False) are counted: leave them out of both means",
    "sum_sides": "the two means are added: the loss is their mean",
    "halve_always": "with one side empty, the other side's mean is halved: average only the sides present",
}


def balanced_bce_variant(logits, targets, valid, *, plain_mean=False, no_valid=False, sum_sides=False,
                         halve_always=False):
    """BCE balanced between positives and negatives, with the mistakes of :data:`BALANCED_BCE`."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    valid = torch.ones_like(valid) if no_valid else valid
    if plain_mean:
        return loss[valid].mean()
    sides = [loss[valid & (targets > 0.5)], loss[valid & (targets <= 0.5)]]
    means = [s.mean() for s in sides if s.numel()]
    return sum(means) / (1 if sum_sides else 2 if halve_always else len(means))
