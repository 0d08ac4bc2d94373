"""Reference solutions of the notebooks' exercises, and :func:`reveal`, the one way a notebook shows one.

The exercises that build a part of the model (tIoU, the attention primitive, QtoS Context-CA,
Dynamics-CA's coarse tokens and attention, StoQ Context-CA, the relation targets; see
:mod:`fscal_edu.parts`) have the library's own function as their reference: the function the
model calls. The other exercises, the warm-ups and the answers, have theirs here, one function
per exercise, named like the function the student writes. Every one is checked by a
``check_*`` of :mod:`fscal_edu.exercises`.

Try the exercise, then the checker's hints; ``reveal("qtos")`` says what it would show, and
``reveal("qtos", sure=True)`` shows it.

Tensors are rows of tokens, as in the library: ``X (B, N, d)``.
"""
from __future__ import annotations

import importlib
import inspect
import math
import sys

import numpy as np
import torch
from einops import rearrange, reduce

from .utils import FscalError, where

# ---------------------------------------------------------------------------------------------
# Notebook 00: the task and the data
# ---------------------------------------------------------------------------------------------


def supports_outside_query(episode: dict) -> bool:
    """True when no support clip is cut from the episode's query video (that would leak the answer)."""
    return all(clip["video"] != episode["query"] for clip in episode["support"])


def query_ground_truth(episode: dict, annotations: dict) -> list:
    """The ``[start, end]`` (seconds, in file order) of the query's instances of the episode's class."""
    instances = annotations["database"][episode["query"]]["annotations"]
    return [a["segment"] for a in instances if a["label"] == episode["label"]]

# ---------------------------------------------------------------------------------------------
# Notebook 01: features and episodes
# ---------------------------------------------------------------------------------------------


def my_seconds_to_index(t: float, duration: float, num_snippets: int) -> float:
    """Seconds -> position on the axis of ``num_snippets`` resized snippets."""
    # snippet i covers [i, i + 1) * duration / T, so  index = t / duration * T
    return t / duration * num_snippets


def strided_index(t: float, fps: float, feat_stride: int, num_frames: int) -> float:
    """Seconds -> position on the axis of a strided feature file."""
    # feature i covers frames [i * stride, i * stride + num_frames): its centre, frame
    # i * stride + num_frames / 2, sits at position i + 0.5 (the middle of cell i)
    return (t * fps - num_frames / 2) / feat_stride + 0.5

# ---------------------------------------------------------------------------------------------
# Notebook 02: proposals and evaluation
# ---------------------------------------------------------------------------------------------


def my_interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-2011 all-point interpolated AP of one ranking."""
    p = np.concatenate([[0.0], precision, [0.0]])
    r = np.concatenate([[0.0], recall, [1.0]])
    # p_interp(k) = max_{j >= k} p_j: sweep from the right
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    # AP = sum_k (r_k - r_{k-1}) p_interp(k), over the steps where recall changes
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))

# ---------------------------------------------------------------------------------------------
# Notebooks 03-05: the three cross-attention stages
# ---------------------------------------------------------------------------------------------


def my_cross_attend(X_a: torch.Tensor, X_b: torch.Tensor, W: torch.Tensor):
    """eqs. (1)-(2), bare: ``X_a (B, N_a, d)`` attends to ``X_b (B, N_b, d)`` -> ``(X~_b, A)``."""
    # eq. (1): Lambda[i, j] = x_i^T W x_j                                           (B, N_a, N_b)
    Lambda = torch.einsum("bid,de,bje->bij", X_a, W, X_b)
    # A = softmax(Lambda) along each row: source token i spreads one unit over the targets
    A = Lambda.softmax(dim=-1)
    # eq. (2): X~_b = X_a A + X_b; target j receives sum_i A[i, j] x_i              (B, N_b, d)
    X_b_new = X_b + torch.einsum("bij,bid->bjd", A, X_a)
    return X_b_new, A


def my_column_attention(X_a: torch.Tensor, X_b: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The ablation's A: softmax down each column, every target takes a convex combination of the sources."""
    # Lambda[i, j] = x_i^T W x_j                                                    (B, N_a, N_b)
    Lambda = torch.einsum("bid,de,bje->bij", X_a, W, X_b)
    # softmax over the sources i: every column sums to one
    return Lambda.softmax(dim=-2)


def support_mass(A_joint: torch.Tensor, K: int) -> torch.Tensor:
    """``A_joint (B, N_Q, K*T_S)`` -> ``(B, K)``: the attention mass each support gathers."""
    # mass_l = sum_n sum_t A[n, (l, t)]                                              (B, K)
    return reduce(A_joint, "b n (k t) -> b k", "sum", k=K)


def mass_from(A_l: torch.Tensor, granularity: torch.Tensor, k: int) -> torch.Tensor:
    """``A_l (N_coarse, T_S)`` -> ``(T_S,)``: the mass each snippet receives from the tokens of granularity k."""
    # sum over the coarse tokens (rows) of granularity k                              (T_S,)
    return A_l[granularity == k].sum(dim=0)


def granularity_mass(att, *, batch: int = 0, support: int = 0) -> dict:
    """:func:`mass_from` for every granularity of a Dynamics-CA ``StageAttention``: ``{k: (T_S,)
    array}``, the mass each snippet of ``support`` receives from the coarse tokens of granularity
    k of all supports (what :func:`fscal_edu.viz.attention.granularity_mass_figure` draws)."""
    if not 0 <= support < att.K:
        raise FscalError(f"{where(field='support')}: {support} is out of range, this episode has K = {att.K}")
    # A_l: the coarse tokens of all supports -> the snippets of support l        (N_coarse, T_S)
    A_l = att.A.detach().double().cpu()[batch, support]
    granularity = att.coarse.granularity.cpu()
    return {k: mass_from(A_l, granularity, k).numpy() for k in sorted(set(granularity.tolist()))}


def stoq_per_support(Y_S: torch.Tensor, X_Q: torch.Tensor, W: torch.Tensor, attend) -> torch.Tensor:
    """StoQ one support at a time: each support's T_S snippets ``Y_S (B, K, T_S, d)`` attend to the
    proposals ``X_Q (B, N_Q, d)`` alone (a softmax per support); the K added terms are summed."""
    # the proposals, once for every support: a broadcast support axis              (B, 1, N_Q, d)
    targets = rearrange(X_Q, "b n d -> b 1 n d")
    # X~_Q^(l) = Y_S^(l) A^(l) + X_Q, one softmax per support                         (B, K, N_Q, d)
    per_support, _ = attend(Y_S, targets, W)
    # X~_Q = X_Q + sum_l (X~_Q^(l) - X_Q)                                             (B, N_Q, d)
    return X_Q + reduce(per_support - targets, "b k n d -> b n d", "sum")


def mass_norm_factor(N_Q: int, K: int, T_S: int) -> float:
    """StoQ's mass normalisation: the K*T_S sources spread K*T_S units; scale so each proposal gets one."""
    # N_b / N_a, with N_a = K * T_S sources and N_b = N_Q targets
    return N_Q / (K * T_S)

# ---------------------------------------------------------------------------------------------
# Notebooks 06-08: relation classifier, training, evaluation
# ---------------------------------------------------------------------------------------------


def my_balanced_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BCE in which the valid positives and the valid negatives weigh one half each."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    sides = [loss[valid & (targets > 0.5)], loss[valid & (targets <= 0.5)]]
    # the mean of the sides present (one side only when the other is empty)
    means = [side.mean() for side in sides if side.numel()]
    return sum(means) / len(means)


def my_lr_factor(step: int, cfg) -> float:
    """The learning-rate factor: linear warm-up, then cosine decay to 5% at ``cfg.optim.steps``."""
    warmup, steps = cfg.optim.warmup, cfg.optim.steps
    if step < warmup:
        return (step + 1) / warmup                       # 1/warmup, 2/warmup, ..., 1
    done = min(1.0, (step - warmup) / max(1, steps - warmup))    # 0 -> 1, then held at 1
    # 0.05 + 0.95 * (1 + cos(pi * done)) / 2: from 1 down to 0.05
    return 0.05 + 0.95 * (1 + math.cos(math.pi * done)) / 2


def welch_t(a, b) -> float:
    """Welch's t of two lists of per-seed scores, with the sample variances (ddof = 1)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    # t = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b)
    return float((a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))

# ---------------------------------------------------------------------------------------------
# Asking for a solution on purpose
# ---------------------------------------------------------------------------------------------

# the parts of the model: name -> (title, module, the library function that is the reference)
PART_REFERENCES = {
    "tiou": ("tIoU", "proposals", "tiou"),
    "attend": ("the attention primitive", "attention", "cross_attend"),
    "qtos": ("QtoS Context-CA", "attention", "qtos_part"),
    "coarse_tokens": ("Dynamics-CA's coarse tokens", "attention", "coarse_part"),
    "dynamics": ("Dynamics-CA's attention", "attention", "dynamics_part"),
    "stoq": ("StoQ Context-CA", "attention", "stoq_part"),
    "relation_targets": ("the relation targets", "losses", "relation_targets"),
}
# exercises whose answer is a library function that is not a part of the model
LIBRARY_REFERENCES = {
    "rank_items": ("the items rank r trains on", "distributed", "rank_items"),
    "window_starts": ("the window starts", "data.episodes", "window_starts"),
}


def revealable() -> dict:
    """``{name: (title, function)}`` of every exercise :func:`reveal` knows: the parts (their
    library reference) and this module's solutions (named without ``my_``)."""
    out = {}
    for name, (title, module, attr) in (PART_REFERENCES | LIBRARY_REFERENCES).items():
        fn = getattr(importlib.import_module(f"fscal_edu.{module}"), attr, None)
        if fn is not None:
            out[name] = (title, fn)
    for name, fn in inspect.getmembers(sys.modules[__name__], inspect.isfunction):
        if fn.__module__ == __name__ and name not in ("reveal", "revealable") and not name.startswith("_"):
            out.setdefault(name.removeprefix("my_"), (repr(name.removeprefix("my_")), fn))
    return out


def reveal(name: str, sure: bool = False) -> None:
    """Show the reference solution of the exercise ``name`` (e.g. ``"qtos"``, ``"lr_factor"``).

    Without ``sure``, one line: what it would show and how to see it. With ``sure=True``, the
    source of the reference (for a part of the model, the library function the model calls).
    """
    known = revealable()
    key = name.removeprefix("my_") if isinstance(name, str) else name
    if key not in known:
        raise FscalError(f"{where(field='name')}: {name!r} is not an exercise; the exercises: "
                         f"{', '.join(sorted(known))}")
    title, fn = known[key]
    where_from = f"{fn.__module__}.{fn.__qualname__}"
    if not sure:
        lines = len(inspect.getsource(fn).splitlines())
        print(f"reveal({key!r}) would show the reference of {title}, {where_from} ({lines} lines): "
              f"try the checker's hints first; reveal({key!r}, sure=True) shows it")
        return
    print(f"# the reference of {title}: {where_from}")
    print(inspect.getsource(fn))
