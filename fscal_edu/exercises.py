"""Checkers for the notebooks' exercises: each compares a student's function with the reference.

A checker runs the student's function and the library's on the same random inputs and prints
``Correct!`` or what differs: which output, which element, by how much, and which known mistake
gives that answer (the comparison is :mod:`fscal_edu.checking`, the known mistakes
:mod:`fscal_edu.mistakes`). It returns True/False so tests can use it, and never raises: a stub
(a function that raises ``NotImplementedError`` or returns ``None``/``...``, or an ``answer``
left at ``...``) is "not attempted yet", and an error in the student's code is one line.

The exercises that build a part of the model (:data:`PART_CHECKS`, one per part of
:mod:`fscal_edu.parts`; those of notebooks 03-05 live in :mod:`fscal_edu.exercises_parts`) are
checked against the library function the model calls, and an attempted one is kept as the
student's part. The reference solutions of the other exercises are in :mod:`fscal_edu.solutions`;
``solutions.reveal(name)`` shows one on purpose.
"""
from __future__ import annotations

import numpy as np
import torch

from . import mistakes
from .checking import checker, compare, explain, run


# ---------------------------------------------------------------------------------------------
# Notebooks 00-01
# ---------------------------------------------------------------------------------------------


def _toy_episodes():
    """A tiny annotation database and episodes, some of them broken on purpose."""
    db = {v: {"subset": "testing", "duration": 60.0, "annotations": []} for v in "ABCD"}
    db["A"]["annotations"] = [{"label": "jump", "segment": [3.0, 9.0]}, {"label": "run", "segment": [10.0, 20.0]},
                              {"label": "jump", "segment": [40.0, 52.5]}]
    db["B"]["annotations"] = [{"label": "jump", "segment": [0.5, 4.0]}, {"label": "run", "segment": [30.0, 33.0]}]
    db["C"]["annotations"] = [{"label": "run", "segment": [1.0, 2.0]}]
    db["D"]["annotations"] = [{"label": "jump", "segment": [5.0, 6.0]}, {"label": "run", "segment": [7.0, 8.0]}]
    clip = lambda v, s, e: {"video": v, "segment": [s, e]}  # noqa: E731
    episodes = [
        {"id": "ok1", "label": "jump", "query": "A", "support": [clip("B", 0.5, 4.0), clip("D", 5.0, 6.0)]},
        {"id": "ok2", "label": "run", "query": "C", "support": [clip("A", 10.0, 20.0)]},
        {"id": "bad1", "label": "jump", "query": "A", "support": [clip("B", 0.5, 4.0), clip("A", 40.0, 52.5)]},
        {"id": "bad2", "label": "run", "query": "B", "support": [clip("B", 30.0, 33.0)]},
        {"id": "ok3", "label": "run", "query": "D", "support": [clip("C", 1.0, 2.0), clip("B", 30.0, 33.0)]},
    ]
    return {"database": db}, episodes


@checker("supports_outside_query")
def check_supports_outside_query(fn) -> bool:
    """``fn(episode) -> bool``: True when no support clip is cut from the episode's query video."""
    _, episodes = _toy_episodes()
    want = [all(s["video"] != ep["query"] for s in ep["support"]) for ep in episodes]
    got = [run(fn, ep) for ep in episodes]
    ok = compare("supports_outside_query", np.array([bool(g) for g in got]), np.array(want))
    wrong = [f"{ep['id']} (expected {w})" for ep, g, w in zip(episodes, got, want) if bool(g) != w]
    if wrong:
        print("  wrong on episode(s):", ", ".join(wrong))
    return ok


@checker("query_ground_truth")
def check_query_ground_truth(fn) -> bool:
    """``fn(episode, annotations) -> [[start, end], ...]``: the query's instances of the episode's
    class (seconds, in file order): the only ones that count as true positives."""
    annotations, episodes = _toy_episodes()
    ok = True
    for ep in episodes[:2] + episodes[4:]:
        want = [a["segment"] for a in annotations["database"][ep["query"]]["annotations"]
                if a["label"] == ep["label"]]
        got = [list(s) for s in run(fn, ep, annotations)]
        ok = compare(f"ground truth of episode {ep['id']}", np.reshape(got, (-1, 2)),
                     np.reshape(want, (-1, 2))) and ok
    return bool(ok)


@checker("seconds_to_index")
def check_seconds_to_index(fn) -> bool:
    """``fn(t, duration, num_snippets)``: seconds -> snippet coordinates for resized features."""
    from .data.features import seconds_to_index
    rng = np.random.default_rng(0)
    duration = rng.uniform(20, 200, size=8)
    t = rng.uniform(0, 1, size=8) * duration
    got = np.array([run(fn, float(ti), float(d), 128) for ti, d in zip(t, duration)])
    return compare("seconds_to_index", got, seconds_to_index(t, duration=duration, num_snippets=128))


@checker("strided_index")
def check_strided_seconds_to_index(fn) -> bool:
    """``fn(t, fps, feat_stride, num_frames)``: seconds -> position on the axis of a strided feature
    file (feature i's window of ``num_frames`` frames starts at frame ``i * feat_stride``)."""
    from .data.features import FeatureMeta, seconds_to_index
    ok = True
    for fps, stride, frames in ((30.0, 4, 16), (25.0, 8, 16), (10.0, 1, 1)):
        meta = FeatureMeta(feature_dim=1, fps=fps, feat_stride=stride, num_frames=frames)
        t = np.array([0.5, 1.0, 7.25, 60.0])
        want = seconds_to_index(t, duration=100.0, num_snippets=1000, meta=meta)
        ok = compare(f"fps={fps:g}, stride={stride}, window={frames}",
                     np.array([run(fn, float(ti), fps, stride, frames) for ti in t]), want) and ok
    return bool(ok)

# ---------------------------------------------------------------------------------------------
# Notebook 02
# ---------------------------------------------------------------------------------------------


@checker("my_tiou", part="tiou")
def check_tiou(fn) -> bool:
    """Notebook 02: ``fn(a (N, 2), b (M, 2)) -> (N, M)``: temporal IoU of every pair of segments
    (torch); the label assignment calls it once per query (reference ``proposals.tiou``)."""
    from .proposals import tiou
    g = torch.Generator().manual_seed(0)
    start = torch.rand(12, generator=g) * 20
    a = torch.stack([start, start + 0.5 + torch.rand(12, generator=g) * 10], 1)
    b = torch.cat([a[:3], a[3:6] + 0.7, torch.tensor([[40.0, 45.0], [5.0, 5.0]])])   # same, shifted, far, empty
    got = run(fn, a.clone(), b.clone())
    return compare("tiou", got, tiou(a, b)) or explain(got, mistakes.tiou_variant, mistakes.TIOU, a, b)


@checker("my_interpolated_ap")
def check_interpolated_ap(fn) -> bool:
    """``fn(precision (n,), recall (n,)) -> float``: VOC-2011 all-point interpolated AP."""
    from .evaluation import interpolated_ap
    rng = np.random.default_rng(0)
    ok = True
    for n, n_gt in ((5, 3), (30, 10), (60, 80)):
        tp = rng.uniform(size=n) < 0.5
        precision, recall = np.cumsum(tp) / np.arange(1, n + 1), np.cumsum(tp) / n_gt
        ok = compare(f"AP of a ranking of {n} predictions ({n_gt} instances)",
                     run(fn, precision.copy(), recall.copy()), interpolated_ap(precision, recall)) and ok
    return bool(ok)


# ---------------------------------------------------------------------------------------------
# Notebooks 03-05
# ---------------------------------------------------------------------------------------------
from einops import reduce  # noqa: E402

from .attention import DynamicsCA, QtoSContextCA, cross_attend  # noqa: E402
from .exercises_parts import (check_attend, check_coarse_tokens, check_dynamics, check_grouping,  # noqa: E402,F401
                              check_qtos, check_stoq, check_stoq_per_support)
from .stats import welch  # noqa: E402
from .solutions import granularity_mass  # noqa: E402


def _attention_inputs(B=2, K=3, T_S=8, N_Q=7, d=6, seed=0):
    """Random float64 proposals ``(B, N_Q, d)``, supports ``(B, K, T_S, d)`` and a ``(d, d)`` W."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N_Q, d, generator=g, dtype=torch.float64),
            torch.randn(B, K, T_S, d, generator=g, dtype=torch.float64),
            torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5)


@checker("my_cross_attend")
def check_cross_attend(fn) -> bool:
    """Notebook 03: ``fn(X_a, X_b, W) -> (X_b_new, A)`` is eqs. (1)-(2) exactly (row softmax)."""
    X_Q, X_S, W = _attention_inputs()
    X_b = X_S[:, 0]
    got = run(fn, X_Q.clone(), X_b.clone(), W.clone())
    return (compare("eqs. (1)-(2)", got, cross_attend(X_Q, X_b, W), names=("X_b_new", "A"))
            or explain(got, mistakes.cross_attend_variant, mistakes.CROSS_ATTEND, X_Q, X_b, W))


@checker("my_column_attention")
def check_column_softmax(fn) -> bool:
    """Notebook 03: ``fn(X_a, X_b, W) -> A`` with every target's column summing to one."""
    X_Q, X_S, W = _attention_inputs()
    X_b = X_S[:, 0]
    got = run(fn, X_Q.clone(), X_b.clone(), W.clone())
    return (compare("column softmax A", got, cross_attend(X_Q, X_b, W, axis="column")[1])
            or explain(got, mistakes.column_softmax_variant, mistakes.COLUMN_SOFTMAX, X_Q, X_b, W))


@checker("support_mass")
def check_support_mass(fn) -> bool:
    """Notebook 03: ``fn(A_joint (B, N_Q, K*T_S), K) -> (B, K)``, the mass each support gathers."""
    X_Q, X_S, _ = _attention_inputs()
    _, att = QtoSContextCA(X_Q.shape[-1], joint=True).double()(X_Q, X_S)
    A = att.A.detach()
    got = run(fn, A.clone(), att.K)
    return (compare("mass per support", got, reduce(A, "b n (k t) -> b k", "sum", k=att.K))
            or explain(got, mistakes.support_mass_variant, mistakes.SUPPORT_MASS, A, att.K))


@checker("mass_from")
def check_granularity_mass(fn) -> bool:
    """Notebook 04: ``fn(A_l (N_coarse, T_S), granularity (N_coarse,), k) -> (T_S,)``, the mass
    that each snippet of support l receives from the coarse tokens of granularity k."""
    _, X_S, _ = _attention_inputs()
    _, att = DynamicsCA(X_S.shape[-1], (2, 4)).double()(X_S)
    A_l, granularity = att.A.detach()[0, 1], att.coarse.granularity
    want = granularity_mass(att, support=1)
    ok = True
    for k in want:
        got = run(fn, A_l.clone(), granularity.clone(), k)
        ok = (compare(f"mass from k={k}", got, want[k])
              or explain(got, mistakes.granularity_mass_variant, mistakes.GRANULARITY_MASS,
                         A_l, granularity, k)) and ok
    return ok


@checker("factor")
def check_mass_norm_factor(answer, N_Q: int, K: int, T_S: int) -> bool:
    """Notebook 05: ``answer`` is the factor by which ``mass_norm=True`` multiplies StoQ's added
    term for ``N_Q`` proposals and ``K`` supports of ``T_S`` snippets (one unit per proposal)."""
    return (compare("mass_norm factor", answer, N_Q / (K * T_S), rtol=1e-3)
            or explain(answer, mistakes.mass_norm_factor_variant, mistakes.MASS_NORM_FACTOR, N_Q, K, T_S))

# ---------------------------------------------------------------------------------------------
# Relation classifier and training (notebooks 06-07)
# ---------------------------------------------------------------------------------------------


@checker("my_balanced_bce")
def check_balanced_bce(fn) -> bool:
    """Notebook 06: ``fn(logits (B, N), targets (B, N) in {0, 1}, valid (B, N) bool) -> scalar``,
    BCE in which the valid positives and the valid negatives weigh one half each."""
    from .losses import balanced_bce
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=g, dtype=torch.float64) * 2
    targets = (torch.rand(3, 40, generator=g) < 0.1).double()
    valid = torch.rand(3, 40, generator=g) < 0.8
    cases = {"a batch with a few positives": (logits, targets, valid),
             "every entry valid": (logits, targets, torch.ones_like(valid)),
             "no positive at all": (logits, torch.zeros_like(targets), valid)}
    ok = True
    for name, args in cases.items():
        got = run(fn, *(x.clone() for x in args))
        ok = (compare(name, got, balanced_bce(*args))
              or explain(got, mistakes.balanced_bce_variant, mistakes.BALANCED_BCE, *args)) and ok
    return ok


def _relation_batch():
    """A tiny untrained model, one forward pass on random episodes (episodes 1 and 2 share a class)."""
    from .config import get_config
    from .model import FSCAL
    torch.manual_seed(0)
    cfg = get_config("tiny", feature_dim=8, rel_neg_frac=1.0)        # every negative takes part
    model = FSCAL(cfg).double().eval()
    with torch.no_grad():                     # spread the relation logits, so that errors show
        for p in model.head.g.parameters():
            p.mul_(4)
    B, K = 4, 3
    query = torch.randn(B, cfg.data.T, 8, dtype=torch.float64)
    support = torch.randn(B, K, cfg.data.T_S, 8, dtype=torch.float64)
    gt = torch.tensor([[[2.0, 10.0], [20.0, 28.0]], [[4.0, 20.0], [0.0, 0.0]],
                       [[10.0, 14.0], [0.0, 0.0]], [[0.0, 16.0], [17.0, 31.0]]], dtype=torch.float64)
    batch = {"query": query, "support": support, "gt": gt, "gt_mask": gt[..., 1] > 0,
             "label": torch.tensor([0, 1, 1, 2])}
    return model, model(query, support, relation=True), batch


@checker("my_relation_targets", part="relation_targets")
def check_relation_targets(fn) -> bool:
    """Notebook 06: ``fn(labels (B, N) in {1, 0, -1}, episode_label (B,)) -> (own, cross)``.

    ``own (B, N)`` float: the target of every (proposal, own support) pair: 1 for positives, 0 for
    negatives, -1 for ignored proposals (no pair). ``cross (B, N)`` bool: the positives of episode
    b that are also paired (target 0) with the supports of episode ``b - 1`` (mod B, as
    ``torch.roll`` gives), when that episode has another class. The checker compares both with
    the expected targets, then builds ``L_rel`` from yours and compares it with ``fscal_loss``'s
    (every negative sampled).
    """
    from .losses import balanced_bce, fscal_loss
    from .proposals import assign_labels
    model, out, batch = _relation_batch()
    with torch.no_grad():
        want = fscal_loss(out, batch, model.cfg.loss)["rel"]
        labels = assign_labels(out.anchors, batch["gt"], batch["gt_mask"],
                               model.cfg.loss.pos_iou, model.cfg.loss.neg_iou)[0]
        got = run(fn, labels.clone(), batch["label"].clone())
        expected = mistakes.relation_targets_variant(labels, batch["label"])
        if not compare("relation targets", got, expected, names=("own", "cross"),
                       axes=("episode", "proposal")):
            return explain(got, mistakes.relation_targets_variant, mistakes.RELATION_TARGETS,
                           labels, batch["label"])
        own, cross = torch.as_tensor(got[0]).double(), torch.as_tensor(got[1]).bool()
        rho_own, rho_x = out.relation, out.relation_cross                            # (B, N, K) each
        used = own >= 0
        logits = torch.cat([rho_own[used].flatten(), rho_x[cross].flatten()])
        t = torch.cat([own[used][:, None].expand(-1, rho_own.shape[-1]).flatten(),
                       rho_x.new_zeros(int(cross.sum()) * rho_x.shape[-1])])
        mine = balanced_bce(logits, t, torch.ones_like(t, dtype=torch.bool))
    return compare("L_rel from your targets", mine, want)


@checker("my_lr_factor")
def check_lr_factor(fn) -> bool:
    """Notebook 07: ``fn(step, cfg) -> float``, warm-up then cosine decay to 5% (``train.lr_factor``)."""
    from .config import get_config
    from .train import lr_factor
    ok = True
    for cfg in (get_config("quick"), get_config("tiny"), get_config("quick", steps=30, warmup=0)):
        steps = range(cfg.optim.steps + 5)
        got = np.array([run(fn, s, cfg) for s in steps])
        ok = (compare(f"lr_factor, {cfg.optim.steps} steps, warm-up {cfg.optim.warmup}", got,
                      np.array([lr_factor(s, cfg) for s in steps]))
              or explain(got, mistakes.lr_factor_variant, mistakes.LR_FACTOR, steps, cfg)) and ok
    return ok


def episode_winner(episodes, annotations: dict, predictions: dict) -> tuple[str, dict]:
    """The model with the highest mAP at tIoU 0.5 on one episode or a list of them (``"tie"`` if
    several share it), and every model's mAP: ``predictions = {name: results JSON}``."""
    from .evaluation import evaluate_fscal
    episodes = [episodes] if isinstance(episodes, dict) else list(episodes)
    ap = {name: evaluate_fscal(episodes, annotations, {"results": {ep["id"]: p["results"][ep["id"]]
                                                                   for ep in episodes}})["mAP@0.5"]
          for name, p in predictions.items()}
    best = [name for name, v in ap.items() if np.isclose(v, max(ap.values()))]
    return (best[0] if len(best) == 1 else "tie"), ap


@checker("answer")
def check_winner(answer: str, episodes, annotations: dict, predictions: dict) -> bool:
    """Notebook 07: ``answer`` names the model (a key of ``predictions``, or ``"tie"``) with the
    highest mAP at tIoU 0.5 on ``episodes`` (one episode or a list). ``answer = ...`` is not
    attempted yet, and reveals nothing."""
    if answer not in (*predictions, "tie"):
        print(f"answer: {answer!r} is none of {', '.join(map(repr, (*predictions, 'tie')))}")
        return False
    winner, ap = episode_winner(episodes, annotations, predictions)
    what = f"episode {episodes['id']}" if isinstance(episodes, dict) else f"{len(episodes)} episodes"
    print(f"mAP@0.5 on {what}:", ", ".join(f"{n} {v:.3f}" for n, v in ap.items()))
    print("Correct!" if answer == winner else f"not quite: the winner is {winner!r}, you said {answer!r}")
    return answer == winner

# ---------------------------------------------------------------------------------------------
# Evaluation, ablations and the attention explorer (notebook 08)
# ---------------------------------------------------------------------------------------------


@checker("welch_t")
def check_welch_t(fn) -> bool:
    """Notebook 08: ``fn(a, b) -> t``, Welch's t statistic of two lists of per-seed scores,
    ``t = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the sample variances
    (divided by n - 1); the reference is :func:`fscal_edu.stats.welch` (which adds the degrees of
    freedom and the p-value)."""
    cases = {"three seeds each": ([0.61, 0.64, 0.58], [0.52, 0.55, 0.57]),
             "unequal sizes": ([0.7, 0.72, 0.69, 0.75, 0.71], [0.66, 0.74]),
             "the second one better": ([0.3, 0.35, 0.31], [0.4, 0.38, 0.45])}
    ok = True
    for name, (a, b) in cases.items():
        got = run(fn, list(a), list(b))
        ok = (compare(name, got, welch(a, b).t)
              or explain(got, mistakes.welch_t_variant, mistakes.WELCH_T, a, b)) and ok
    return ok


# the checker of every part of the model the student writes (see fscal_edu.parts)
PART_CHECKS = {"tiou": check_tiou, "attend": check_attend, "qtos": check_qtos,
               "coarse_tokens": check_coarse_tokens, "dynamics": check_dynamics, "stoq": check_stoq,
               "relation_targets": check_relation_targets}
