"""The catalogue of known mistakes, exercise by exercise: for each, the mistakes by name with what
the student reads (``CROSS_ATTEND``, ...), and a ``*_variant`` function that computes the
exercise's answer with those mistakes switched on (``column=True``: a column softmax, ...).
:func:`fscal_edu.checking.name_mistake` tries them on a wrong answer to say which mistake it is.
"""
from __future__ import annotations

import math

import numpy as np
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


TIOU = {
    "no_subtract": "the union counts the overlap twice: |a ∪ b| = |a| + |b| - |a ∩ b|, subtract the intersection",
    "no_clamp": "disjoint segments give a negative overlap: |a ∩ b| = max(0, min(a_e, b_e) - max(a_s, b_s)), "
                "clamp it at 0",
    "over_a": "divided by the length of a: tIoU divides the intersection by the union",
}


def tiou_variant(a, b, *, no_subtract=False, no_clamp=False, over_a=False):
    """tIoU ``(N, M)`` with the mistakes of :data:`TIOU` switched on."""
    # |a ∩ b| = max(0, min(a_e, b_e) - max(a_s, b_s))                                (N, M)
    inter = torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    inter = inter if no_clamp else inter.clamp(min=0)
    la, lb = (a[:, 1] - a[:, 0])[:, None], (b[:, 1] - b[:, 0])[None, :]             # (N, 1), (1, M)
    union = la.expand_as(inter) if over_a else la + lb - (0 if no_subtract else inter)
    return inter / union


SUPPORT_MASS = {
    "mean": "this is a mean: the mass a support gathers is the *sum* of its columns over every proposal",
    "mean_n": "averaged over the proposals (a share, divided by N_Q): the mass is the sum over every "
              "proposal, N_Q units in all",
    "interleaved": "the K*T_S columns are grouped the wrong way ('(t k)'): they go support by support, "
                   "'(k t)', the first T_S columns are support 0's",
}


def support_mass_variant(A_joint, K, *, mean=False, mean_n=False, interleaved=False):
    """``(B, K)`` mass per support from ``A_joint (B, N_Q, K*T_S)``, with :data:`SUPPORT_MASS`'s mistakes."""
    cols = "(t k)" if interleaved else "(k t)"
    per = reduce(A_joint, f"b n {cols} -> b n k", "mean" if mean else "sum", k=K)    # (B, N_Q, K)
    return per.mean(1) if mean or mean_n else per.sum(1)


ATTEND = {
    "column": "the softmax runs down each column: with axis='row' every source token spreads one unit "
              "over the targets, softmax(dim=-1)",
    "no_residual": "the residual X_b is missing: X~_b = X_b + A^T X_a",
    "W_T": "W is transposed: Lambda[i, j] = x_i^T W x_j, i.e. X_a @ W @ X_b^T",
    "mask_after": "the mask is not applied before the softmax: padded targets took a share of each row; "
                  "fill the logits of padded pairs with a very negative number, then take the softmax",
    "no_mask": "the masks are ignored: a padded source gives nothing and a padded target receives nothing",
    "pad_counts": "the mass normalisation counts padded tokens: N_a and N_b count the real ones, mask.sum(-1)",
    "scale_after": "the scale is applied after the softmax: it multiplies Lambda inside, softmax(scale * Lambda)",
    "no_scale": "the scale is not used: A = softmax(scale * Lambda)",
    "mass_inverse": "mass_norm multiplies by N_a / N_b: it is N_b / N_a, so that targets receive one unit on average",
    "no_mass_norm": "mass_norm is not applied: with mass_norm=True the added term is multiplied by N_b / N_a",
}


def attend_variant(X_a, X_b, W, scale=1.0, mass_norm=False, mask_a=None, mask_b=None, *, column=False,
                   no_residual=False, W_T=False, mask_after=False, no_mask=False, pad_counts=False,
                   scale_after=False, no_scale=False, mass_inverse=False, no_mass_norm=False):
    """The primitive ``(X~_b (..., N_b, d), A (..., N_a, N_b))`` with the mistakes of :data:`ATTEND`."""
    ones = lambda X: torch.ones(X.shape[:-1], dtype=torch.bool)                   # noqa: E731
    m_a = ones(X_a) if mask_a is None or no_mask else mask_a                      # (..., N_a)
    m_b = ones(X_b) if mask_b is None or no_mask else mask_b                      # (..., N_b)
    real = m_a[..., :, None] & m_b[..., None, :]                                  # (..., N_a, N_b)
    # Lambda[i, j] = x_i^T W x_j                                                  (..., N_a, N_b)
    Lambda = torch.einsum("...id,de,...je->...ij", X_a, W.T if W_T else W, X_b)
    s = 1.0 if no_scale or scale_after else scale
    logits = s * Lambda if mask_after else (s * Lambda).masked_fill(~real, torch.finfo(Lambda.dtype).min)
    A = logits.softmax(dim=-2 if column else -1).masked_fill(~real, 0.0) * (scale if scale_after else 1.0)
    added = torch.einsum("...ij,...id->...jd", A, X_a)                            # (..., N_b, d)
    if mass_norm and not no_mass_norm:
        N_a = torch.tensor(float(X_a.shape[-2])) if pad_counts else m_a.sum(-1).to(added.dtype)
        N_b = torch.tensor(float(X_b.shape[-2])) if pad_counts else m_b.sum(-1).to(added.dtype)
        ratio = N_a / N_b.clamp(min=1) if mass_inverse else N_b / N_a.clamp(min=1)
        added = added * ratio[..., None, None]
    return (0 if no_residual else X_b) + added, A


QTOS = {
    "joint": "all supports as one clip: that is the joint ablation; give each support its own axis "
             "(the proposals get a broadcast support axis, X_Q[:, None])",
    "no_mask": "mask_Q is not passed on: padded proposals take part; pass mask_a=mask_Q (with its support axis)",
    "mask_target": "mask_Q on the target side: the proposals are QtoS's sources, pass mask_a=",
    "reversed": "the direction is reversed: in QtoS the proposals (X_a) attend to the snippets of each support (X_b)",
    "plain": "the `attend` given was not used (its scale and mass_norm were lost): call attend(...), the stage's own",
}


def _plain(X_a, X_b, W, mask_a=None, mask_b=None):
    """The bare primitive (no scale, no mass_norm): what a student gets by not using ``attend``."""
    return attend_variant(X_a, X_b, W, 1.0, False, mask_a, mask_b)


def qtos_variant(X_Q, X_S, W, mask_Q, attend, *, joint=False, no_mask=False, mask_target=False,
                 reversed=False, plain=False):
    """QtoS ``(X~_S (B, K, T_S, d), A (B, K, N_Q, T_S))`` with the mistakes of :data:`QTOS`."""
    attend = _plain if plain else attend
    mask = None if no_mask or mask_Q is None else mask_Q
    if joint:                                            # the K supports as one clip (B, K*T_S, d)
        X, A = attend(X_Q, rearrange(X_S, "b k t d -> b (k t) d"), W, mask_a=mask)
        return rearrange(X, "b (k t) d -> b k t d", k=X_S.shape[1]), A
    # every support gets all proposals: a broadcast support axis                  (B, 1, N_Q, d)
    X_Q_l = rearrange(X_Q, "b n d -> b 1 n d")
    mask_l = None if mask is None else rearrange(mask, "b n -> b 1 n")
    if reversed:
        return attend(X_S, X_Q_l, W, mask_b=mask_l)
    if mask_target:
        return attend(X_Q_l, X_S, W, mask_b=mask_l)
    return attend(X_Q_l, X_S, W, mask_a=mask_l)


COARSE_TOKENS = {
    "window_mean": "this is the window mean, w_k's starting value: use the weights w[k] you are given "
                   "(the checker's are random)",
    "swap_io": "the convolution's in and out channels are swapped: weight is (d_out, d_in, k), "
               "out[o] = sum_i,j weight[o, i, j] x[i, j]",
    "flipped": "the kernel is flipped: conv1d is a cross-correlation, tap j multiplies snippet n*k + j",
    "no_bias": "the bias is missing: out = w_k (*) x + bias",
    "interleaved": "each token mixes snippets T_S/k apart ('(k n)' instead of '(n k)'): "
                   "a window is k *consecutive* snippets",
    "reversed_order": "the granularities are concatenated in the wrong order: follow the order of w",
}


def coarse_tokens_variant(X_S_tilde, w, *, window_mean=False, swap_io=False, flipped=False, no_bias=False,
                          interleaved=False, reversed_order=False):
    """eq. (3) ``(B, K, sum_k T_S/k, d)`` with ``w = {k: (weight (d, d, k), bias (d,))}`` and the
    mistakes of :data:`COARSE_TOKENS`."""
    out = []
    for k, (weight, bias) in w.items():
        pattern = "b l (j n) d -> b l n j d" if interleaved else "b l (n j) d -> b l n j d"
        windows = rearrange(X_S_tilde, pattern, j=k)                               # (B, K, T_S/k, k, d)
        if window_mean:
            out.append(windows.mean(-2))
            continue
        weight = weight.transpose(0, 1) if swap_io else weight
        weight = weight.flip(-1) if flipped else weight
        # X~_S'[n, o] = sum_{i, j} w_k[o, i, j] x[n*k + j, i] + bias[o]            (B, K, T_S/k, d)
        out.append(torch.einsum("blnji,oij->blno", windows, weight) + (0 if no_bias else bias))
    return torch.cat(out[::-1] if reversed_order else out, dim=-2)


DYNAMICS = {
    "own_only": "each support sees only its own coarse tokens: that is own_only; the coarse tokens of "
                "ALL supports, flattened to one source ('b k n d -> b 1 (k n) d'), attend to each support",
    "no_mask": "mask_a is not passed on to attend",
    "interleaved": "the coarse tokens are flattened in the wrong order ('(n k)'): support by support, '(k n)'",
    "reversed": "the direction is reversed: the coarse tokens (X_a) attend to the snippets of each support (X_b)",
    "plain": "the `attend` given was not used (its scale and mass_norm were lost): call attend(...), the stage's own",
}


def dynamics_variant(X_S_prime, X_S_tilde, W, attend, mask_a=None, *, own_only=False, no_mask=False,
                     interleaved=False, reversed=False, plain=False):
    """Dynamics-CA ``(Y~_S (B, K, T_S, d), A (B, K, K*N, T_S))`` with the mistakes of :data:`DYNAMICS`."""
    attend = _plain if plain else attend
    if own_only:
        return attend(X_S_prime, X_S_tilde, W)
    # X~_S': the coarse tokens of all supports, one source for every support l     (B, 1, K*N, d)
    src = rearrange(X_S_prime, "b k n d -> b 1 (n k) d" if interleaved else "b k n d -> b 1 (k n) d")
    if reversed:
        return attend(X_S_tilde, src, W)
    return attend(src, X_S_tilde, W, mask_a=None if no_mask else mask_a)


STOQ = {
    "mask_source": "mask_Q on the source side: the proposals are StoQ's targets, pass mask_b=mask_Q",
    "no_mask": "mask_Q is not passed on: padded proposals would receive; pass mask_b=mask_Q",
    "per_support": "each support attended on its own (a softmax per support, the added terms summed): "
                   "with mass_norm each counts T_S sources, not K*T_S; attend once, all K*T_S snippets as one source",
    "mean_supports": "the K supports are averaged: eq. (6) sums over all K*T_S support snippets",
    "first_support": "only the first support attends: all K supports form the source",
    "reversed": "the direction is reversed: in StoQ the support snippets (X_a) attend to the proposals (X_b)",
    "plain": "the `attend` given was not used (its scale and mass_norm were lost): call attend(...), the stage's own",
}


def stoq_variant(Y_S, X_Q, W, mask_Q, attend, *, mask_source=False, no_mask=False, per_support=False,
                 mean_supports=False, first_support=False, reversed=False, plain=False):
    """StoQ ``(X~_Q (B, N_Q, d), A (B, K*T_S, N_Q))`` with the mistakes of :data:`STOQ`."""
    attend = _plain if plain else attend
    mask = None if no_mask else mask_Q
    if per_support:                   # one attention per support, the added terms summed
        outs = [attend(Y_S[:, l], X_Q, W, mask_b=mask) for l in range(Y_S.shape[1])]
        return X_Q + sum(X - X_Q for X, _ in outs), torch.cat([A for _, A in outs], dim=1)
    # the K supports as one source of K*T_S tokens                                  (B, K*T_S, d)
    Y_all = rearrange(Y_S[:, :1] if first_support else Y_S, "b k t d -> b (k t) d")
    if reversed:
        return attend(X_Q, Y_all, W, mask_a=mask)
    X, A = attend(Y_all, X_Q, W, **({"mask_a": mask} if mask_source else {"mask_b": mask}))
    return (X_Q + (X - X_Q) / Y_S.shape[1], A) if mean_supports else (X, A)

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


WELCH_T = {
    "ddof0": "the population variance (divided by n): Welch's t takes the sample variance, divided by "
             "n - 1 (np.var(x, ddof=1), statistics.variance)",
    "pooled": "this is Student's t with a pooled variance: Welch's t keeps each side's own variance, "
              "s_a^2 / n_a + s_b^2 / n_b",
    "no_n": "the variances are not divided by the sizes: the standard error is sqrt(s_a^2 / n_a + s_b^2 / n_b)",
    "swapped": "the sign is flipped: t is (mean(a) - mean(b)) / ..., a first",
    "std": "standard deviations in place of variances: sqrt(s_a^2 / n_a + s_b^2 / n_b), s squared",
}


def welch_t_variant(a, b, *, ddof0=False, pooled=False, no_n=False, swapped=False, std=False):
    """Welch's t with the mistakes of :data:`WELCH_T` switched on."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ddof = 0 if ddof0 else 1
    va, vb = a.var(ddof=ddof), b.var(ddof=ddof)
    va, vb = (np.sqrt(va), np.sqrt(vb)) if std else (va, vb)
    na, nb = (1, 1) if no_n else (len(a), len(b))
    if pooled:          # s_p^2 (1/n_a + 1/n_b), s_p^2 = ((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)
        sp2 = ((len(a) - ddof) * va + (len(b) - ddof) * vb) / (len(a) + len(b) - 2 * ddof)
        se = math.sqrt(sp2 * (1 / na + 1 / nb))
    else:
        se = math.sqrt(va / na + vb / nb)
    return (b.mean() - a.mean() if swapped else a.mean() - b.mean()) / se


LR_FACTOR = {
    "step_over_W": "the warm-up gives step / W: it is (step + 1) / W, so that step 0 already learns and "
                   "step W - 1 reaches the full rate",
    "to_zero": "the cosine decays to 0: it ends at 5%, 0.05 + 0.95 * (1 + cos(pi * done)) / 2",
    "no_hold": "past the last step the cosine rises again: hold done at 1 (min(1, ...))",
    "from_zero": "the cosine starts at step 0: it starts after the warm-up, done = (step - W) / (steps - W)",
}


def lr_factor_variant(steps, cfg, *, step_over_W=False, to_zero=False, no_hold=False, from_zero=False):
    """The learning-rate factor at every step of ``steps`` (an array), with :data:`LR_FACTOR`'s mistakes."""
    W, total = cfg.optim.warmup, cfg.optim.steps
    out = []
    for step in steps:
        if step < W:
            out.append(step / W if step_over_W else (step + 1) / W)
            continue
        done = step / max(1, total) if from_zero else (step - W) / max(1, total - W)
        done = done if no_hold else min(1.0, done)
        low = 0.0 if to_zero else 0.05
        out.append(low + (1 - low) * (1 + math.cos(math.pi * done)) / 2)
    return np.array(out)


GROUPING = {
    "row": "under the row softmax each source snippet spreads its unit over the proposals whatever the "
           "other sources are: one softmax per support or one for all gives the same rows, and the sum is the same",
    "row + mass_norm": "mass_norm multiplies by N_Q / (number of sources): T_S for one support alone, "
                       "K*T_S for all at once, K times apart",
    "column": "the column softmax normalises each proposal's column over the sources: over the T_S "
              "snippets of one support, or over all K*T_S at once, is not the same",
}
