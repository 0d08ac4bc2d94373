"""Probes of a trained model that notebooks and ``bench/`` share: numbers, not figures."""
from __future__ import annotations

from contextlib import contextmanager
from fnmatch import fnmatch

import numpy as np
import torch
from torch import nn

from .attention import cross_attend
from .data.annotations import instances_by_class
from . import stages
from .utils import FscalError, read_json, where


def stoq_added_term(model, query, support) -> dict:
    """What StoQ Context-CA adds to the proposal tokens (eq. 6, before its LayerNorm), on a batch.

    ``relative_size``: ``|Y~_S A_{S->Q}| / |X_Q|``, mean norms over all proposals;
    ``shared_energy``: the share of the added term's energy that is one vector for every proposal of
    the episode (its mean over the proposals), averaged over the episodes. Near 1: StoQ adds a
    per-episode constant that cannot help to rank the proposals of one query.
    """
    probe = stage_probes(model, query, support)["stoq"]                             # eq. 6's added term
    return {"relative_size": probe["relative_size"], "shared_energy": probe["shared_energy"]}


# ---------------------------------------------------------------------------------------------
# Probes of every stage, of the trained weights, and of edited supports
# ---------------------------------------------------------------------------------------------

@contextmanager
def _operands(model):
    """Within the block, ``store[stage]`` receives what each stage of ``model`` hands to the
    primitive (``X_a, X_b, W, mask_a, mask_b``), exactly as the stage passes it."""
    store, present = {}, stages.modules(model)

    def capture(name, original):
        def attend(X_a, X_b, W, mask_a=None, mask_b=None):
            store[name] = dict(X_a=X_a, X_b=X_b, W=W, mask_a=mask_a, mask_b=mask_b)
            return original(X_a, X_b, W, mask_a=mask_a, mask_b=mask_b)
        return attend

    for name, stage in present.items():
        stage.attend = capture(name, stage.attend)       # an instance attribute shadows the method
    try:
        yield store
    finally:
        for stage in present.values():
            del stage.attend


def stage_probes(model, query, support, skip=()) -> dict:
    """For each stage the model runs on a batch: what its added term (eqs. 2/5/6, before the
    stage's LayerNorm) and its attention look like. ``{stage: {...}}`` with

    ``relative_size``: ``|added| / |X_b|``, mean norms over all targets;
    ``shared_energy``: the share of the added term's energy that is one vector shared by all targets
    of one softmax (its mean over them: the N_Q proposals for StoQ, the T_S snippets of a support for
    QtoS and Dynamics-CA), averaged over those groups. With the row softmax and the mass
    normalisation that vector is the mean of the sources whatever W is (each row sums to one);
    ``entropy``: the mean entropy of the softmax distributions (rows, or columns for ``"column"``)
    over their maximum, ``log`` of the tokens each spreads over (1: uniform, 0: one token);
    ``spread_over``: that number of tokens.
    """
    with torch.no_grad(), _operands(model) as ops:
        model(query, support, skip=skip, relation=False)
        out = {}
        for name, o in ops.items():
            stage = getattr(model, name)
            X_b_new, A = cross_attend(o["X_a"], o["X_b"], o["W"], axis=stage.axis, scale=stage.scale,
                                      mass_norm=stage.mass_norm, mask_a=o["mask_a"], mask_b=o["mask_b"])
            added = X_b_new - o["X_b"]                                              # (..., N_b, d)
            shared = added.mean(dim=-2, keepdim=True)                               # (..., 1, d)
            energy = shared.pow(2).sum(-1) / added.pow(2).sum(-1).mean(-1, keepdim=True)
            out[name] = {"relative_size": float(added.norm(dim=-1).mean() / o["X_b"].norm(dim=-1).mean()),
                         "shared_energy": float(energy.mean()), **_entropy(A, o, stage.axis)}
    return out


def attention_entropy(A) -> float:
    """The mean entropy of the rows of ``A (sources, targets)``, each read as a distribution
    (divided by its sum), over its maximum ``log(targets)``: 1 when every row is uniform, 0 when
    every row puts all its weight on one target. Rows without weight are left out."""
    A = np.asarray(A, dtype=float).reshape(-1, np.shape(A)[-1])
    total = A.sum(-1)
    P = A[total > 0] / total[total > 0, None]
    if len(P) == 0 or P.shape[-1] < 2:
        raise FscalError(f"{where(field='A')}: the entropy needs a row with weight over 2 or more "
                         f"targets, got shape {np.shape(A)}")
    H = -np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0).sum(-1)
    return float(H.mean() / np.log(P.shape[-1]))


def _entropy(A: torch.Tensor, o: dict, axis: str) -> dict:
    """Mean normalised entropy of the softmax distributions of ``A`` (..., N_a, N_b) along ``axis``."""
    mask_a = o["mask_a"] if o["mask_a"] is not None else torch.ones(o["X_a"].shape[:-1], dtype=torch.bool)
    mask_b = o["mask_b"] if o["mask_b"] is not None else torch.ones(o["X_b"].shape[:-1], dtype=torch.bool)
    real = (mask_a[..., :, None] & mask_b[..., None, :]).expand(A.shape)
    dim = -1 if axis == "row" else -2
    n = real.sum(dim)                                                               # tokens per distribution
    H = -torch.where(A > 0, A * A.clamp_min(1e-38).log(), torch.zeros_like(A)).sum(dim)
    keep = (n >= 2) & (A.sum(dim) > 0)        # a masked-out source (own_only) spreads nothing
    return {"entropy": float((H[keep] / n[keep].double().log()).mean()), "spread_over": float(n[keep].double().mean())}


def weight_drift(model) -> dict:
    """How far each stage's weights moved from their initialisation, ``||W - W_0|| / ||W_0||``.

    ``{stage: {parameter: ratio}}`` for the weights with a fixed start (``attention.py``), as the
    stage registry names them (``Stage.weight`` and ``Stage.fixed_starts``): the ``W`` matrices (the
    identity) and Dynamics-CA's convolutions ``w.<k>.weight`` (the window mean). The starts come
    from a fresh model of the same config (the random state is left as it was).
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        fresh = type(model)(model.cfg)
    out = {}
    for name, stage in stages.modules(model).items():
        init, record = dict(getattr(fresh, name).named_parameters()), stages.get(name)
        out[name] = {p: float((w.detach().cpu() - init[p].detach()).norm() / init[p].detach().norm())
                     for p, w in stage.named_parameters()
                     if p == record.weight or any(fnmatch(p, f) for f in record.fixed_starts)}
    return out


class EditedSupports(nn.Module):
    """``model`` with its supports edited before every forward: ``edit(support (B, K, T_S, C))``.

    ``inference.predict`` and ``evaluate_model`` take it in place of the model, so a probe is
    scored exactly like the model (``skip`` passes through).
    """

    def __init__(self, model, edit):
        super().__init__()
        self.inner, self.edit, self.cfg = model, edit, model.cfg

    def check_skip(self, skip):
        return self.inner.check_skip(skip)

    def forward(self, query, support, **kwargs):
        return self.inner(query, self.edit(support), **kwargs)


def reverse_snippets(support: torch.Tensor) -> torch.Tensor:
    """Every support clip played backwards: ``(B, K, T_S, C)``, snippet order reversed."""
    return support.flip(-2)


def shuffle_snippets(seed: int = 0):
    """An edit that shuffles the snippets of every support clip, each clip its own permutation
    (drawn from a generator seeded once, so a fixed sequence of batches gets fixed permutations)."""
    gen = torch.Generator().manual_seed(seed)

    def edit(support: torch.Tensor) -> torch.Tensor:
        B, K, T_S, C = support.shape
        order = torch.rand(B, K, T_S, generator=gen).argsort(-1).to(support.device)   # (B, K, T_S)
        return support.gather(2, order[..., None].expand(B, K, T_S, C))
    return edit


def twin_classes(world) -> dict:
    """``{class: its twin}`` of a synthetic world (``annotations.json``'s taxonomy, else ``world.json``)."""
    twins = {t["nodeName"]: t["twin"] for t in world.annotations.get("taxonomy", []) if "twin" in t}
    if not twins and (world.root / "world.json").is_file():
        twins = read_json(world.root / "world.json", "world.json")["info"].get("twin", {})
    if not twins:
        raise FscalError(f"{where(file=world.root, field='twin')}: this world records no twin classes")
    return twins


def replace_supports(world, episodes: list[dict], donor: str, seed: int = 0) -> list[dict]:
    """The episodes with their K supports replaced by K clips of another class: its twin
    (``donor="twin"``) or a class of the same split that is neither it nor its twin (``"other"``).

    Query, label and ground truth stay; the clips are annotated instances of the donor class
    outside the query video, drawn without replacement by ``np.random.default_rng([seed, i])`` for
    episode i (the non-twin donor too), so the same call gives the same episodes.
    """
    if donor not in ("twin", "other"):
        raise FscalError(f"{where(field='donor')}: {donor!r} is not one of ('twin', 'other')")
    twins, by_class = twin_classes(world), instances_by_class(world.annotations)
    split_of = {c: s for s, classes in world.splits.items() for c in classes}
    out = []
    for i, ep in enumerate(episodes):
        rng, label = np.random.default_rng([seed, i]), ep["label"]
        if donor == "twin":
            cls = twins[label]
        else:
            others = sorted(c for c in world.splits[split_of[label]] if c not in (label, twins.get(label)))
            cls = others[rng.integers(len(others))]
        pool = [(v, seg) for v, seg in by_class.get(cls, []) if v != ep["query"]]
        if len(pool) < len(ep["support"]):
            raise FscalError(f"{where(video=ep['query'], field='support')}: class {cls!r} has {len(pool)} "
                             f"clip(s) outside the query, fewer than K = {len(ep['support'])}")
        pick = sorted(rng.choice(len(pool), size=len(ep["support"]), replace=False))
        out.append({**ep, "support": [{"video": pool[j][0], "segment": [float(s) for s in pool[j][1]]}
                                      for j in pick], "donor": cls})
    return out


# ---------------------------------------------------------------------------------------------
# Notebooks 03-05: each stage of a trained model beside its start, and the results files
# ---------------------------------------------------------------------------------------------

def stage_inputs(model, query, support, skip=()) -> dict:
    """What each stage of ``model`` receives in its forward on a batch: ``{stage: (args, kwargs)}``,
    ``qtos``: ``(X_Q, X_S)``, ``dynamics``: ``(X~_S,)``, ``stoq``: ``(Y~_S, X_Q)`` (forward
    pre-hooks; the model is run once under ``no_grad`` and left as it was)."""
    store, hooks = {}, []
    for name, stage in stages.modules(model).items():
        hooks.append(stage.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: store.__setitem__(name, (args, kwargs)),
            with_kwargs=True))
    try:
        with torch.no_grad():
            model(query, support, skip=skip, relation=False)
    finally:
        for hook in hooks:
            hook.remove()
    return store


def start_stages(model) -> dict:
    """The stages of ``model`` as training starts them, ``{stage: module}``: the stages of a fresh
    model of the same config (W = I, Dynamics-CA's ``w_k`` window means, LayerNorm 1 and 0; none of
    them is random, and the random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        fresh = type(model)(model.cfg)
    device = next(model.parameters()).device
    return {n: stage.to(device).eval() for n, stage in stages.modules(fresh).items()}


def stage_attention(model, query, support) -> dict:
    """``{stage: {"start": StageAttention, "trained": StageAttention}}`` on a batch: each stage of
    the trained ``model`` on what it receives in the model's forward (:func:`stage_inputs`), and the
    same stage at its start (:func:`start_stages`) on the very same input. The two differ by the
    stage's weights only: what training did to ``W`` (and to Dynamics-CA's ``w_k``)."""
    inputs, starts = stage_inputs(model, query, support), start_stages(model)
    with torch.no_grad():
        return {n: {"start": starts[n](*args, **kwargs)[1], "trained": getattr(model, n)(*args, **kwargs)[1]}
                for n, (args, kwargs) in inputs.items()}


def probe_results(probes: dict, checkpoint: str = "data_samples/checkpoints/full.pt") -> dict:
    """``bench/results/probes.json`` (read) -> ``{probe: {"mAP@0.5", "delta", "ci95_delta", "draws",
    "reading"}}`` for one checkpoint: mAP@0.5 the mean over the draws, ``delta`` the change from
    "as trained", ``ci95_delta`` the paired bootstrap interval of the first draw (None for "as
    trained"), ``reading`` what the interval says (the words of ``bench/probes.py``)."""
    entry = next((c for c in probes["checkpoints"] if c["checkpoint"] == checkpoint), None)
    if entry is None:
        raise FscalError(f"{where(field='checkpoints')}: probes.json holds no probes of {checkpoint!r} "
                         f"(it has {[c['checkpoint'] for c in probes['checkpoints']]})")
    out = {}
    for row in entry["probes"]:
        p = out.setdefault(row["probe"], {"draws": [], "ci95_delta": None})
        p["draws"].append(row["mAP@0.5"])
        if row["draw"] == 0:
            p["ci95_delta"] = row["ci95_delta"]
    base = float(np.mean(out["as trained"]["draws"]))
    for p in out.values():
        p["mAP@0.5"] = float(np.mean(p["draws"]))
        p["delta"] = p["mAP@0.5"] - base
        lo, hi = p["ci95_delta"] or (None, None)
        p["reading"] = ("-" if lo is None else "lower (interval below 0)" if hi < 0 else
                        "higher (interval above 0)" if lo > 0 else "no change detectable (interval holds 0)")
    return out


def ablation_tests(ablations: dict, shots: int = 5) -> dict:
    """``bench/results/ablations.json`` (read) -> ``{variant: {"welch": Welch, "p_holm", "verdict",
    "steps", "seeds"}}``: each trained-from-scratch variant's per-seed test mAP@0.5 against the full
    model's, at the full model's largest step count for ``shots`` (the comparisons of
    ``bench/ablations.py``): Welch's t-test (``fscal_edu.stats.welch``, diff = variant - full),
    Holm's adjustment over the variants, and the verdict at p < 0.05 in the words of the benchmarks."""
    from .stats import holm, welch

    rows = [r for r in ablations["runs"] if r["shots"] == shots and not r.get("same_as")]
    steps = max((r["steps"] for r in rows if r["model"] == "full"), default=None)
    per = {}
    for r in rows:
        if r["steps"] == steps:
            per.setdefault(r["model"], []).append(r["mAP@0.5"])
    full = per.pop("full", [])
    if len(full) < 2:
        raise FscalError(f"{where(field='runs')}: ablations.json has {len(full)} seed(s) of the full model "
                         f"at {shots}-shot; a comparison needs 2 or more")
    tests = {m: welch(s, full) for m, s in per.items() if len(s) > 1}
    out = {}
    for (m, w), p_holm in zip(tests.items(), holm([w.p for w in tests.values()])):
        verdict = ("no difference the seeds can show" if w.p >= 0.05 else
                   ("the full model is better" if w.diff < 0 else "the variant is better")
                   + ("" if p_holm < 0.05 else f" (not after Holm's correction, p_Holm = {p_holm:.2f})"))
        out[m] = {"welch": w, "p_holm": p_holm, "verdict": verdict, "steps": steps, "seeds": len(per[m])}
    return out


def mass_on_segments(att, anchors, spans: list, *, iou: float = 0.5) -> dict:
    """Where StoQ Context-CA's attention lands on the query, for each episode ``b`` of a batch:
    the proposals ``anchors (N_Q, 2)`` that overlap one of ``spans[b] (G, 2)`` (snippet coordinates,
    e.g. the common action's instances) with tIoU >= ``iou``, against the rest. Means over the
    episodes that have such a proposal: ``share``, the share of the mass all support snippets give
    that lands on them; ``fraction``, their share of the proposals (what an even spread gives);
    ``vs_same_length``, their mass over the mean mass of the proposals of the same length (1: no
    preference; the attention can favour some lengths, so this compares like with like);
    ``episodes``, how many episodes counted."""
    from .proposals import tiou
    if att.stage != "stoq":
        raise FscalError(f"{where(field='stage')}: mass_on_segments reads StoQ Context-CA, got {att.stage!r}")
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    mass = att.A.detach().float().cpu().sum(1)                                     # (B, N_Q)
    length = anchors[:, 1] - anchors[:, 0]                                         # (N_Q,)
    same = length[:, None] == length[None, :]                                      # (N_Q, N_Q)
    rows = []
    for b, seg in enumerate(spans):
        seg = torch.as_tensor(np.asarray(seg, dtype=np.float32)).reshape(-1, 2)
        if not len(seg):
            continue
        on = tiou(anchors, seg).max(dim=1).values >= iou                           # (N_Q,)
        if not on.any():
            continue
        m = mass[b]
        peers = (same.float() @ m) / same.sum(1)                                   # mean mass of each length
        rows.append((float(m[on].sum() / m.sum()), float(on.float().mean()), float((m[on] / peers[on]).mean())))
    if not rows:
        return {"share": float("nan"), "fraction": float("nan"), "vs_same_length": float("nan"), "episodes": 0}
    share, fraction, ratio = np.mean(rows, axis=0)
    return {"share": float(share), "fraction": float(fraction), "vs_same_length": float(ratio), "episodes": len(rows)}


def coarse_window_share(att) -> dict:
    """Dynamics-CA: where a coarse token of *another* support puts its unit in support l. A token
    of window ``[a, a + k)`` is "aligned" when it lands on snippets ``[a, a + k)`` of l, the same
    place in the action. ``{k: mean share of the unit inside the window}`` over the batch, the
    supports and the other supports' tokens of granularity k; an even spread gives ``k / T_S``."""
    if att.stage != "dynamics":
        raise FscalError(f"{where(field='stage')}: coarse_window_share reads Dynamics-CA, got {att.stage!r}")
    A = att.A.detach().float().cpu()                                               # (B, K, N_coarse, T_S)
    c, t = att.coarse, torch.arange(att.T_S)
    inside = ((t[None, :] >= c.start[:, None]) & (t[None, :] < (c.start + c.granularity)[:, None])).float()
    share = (A * inside).sum(-1)                                                   # (B, K, N_coarse)
    other = c.support[None, :] != torch.arange(att.K)[:, None]                     # (K, N_coarse)
    return {k: float(share[:, other & (c.granularity == k)[None, :]].mean())
            for k in sorted(set(c.granularity.tolist()))}
