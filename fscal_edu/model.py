"""The full FS-CAL model: embedding, proposals, the three cross-attention stages, the relation head.

Pipeline (see docs/architecture.md), shapes for one batch of B episodes with K supports:

    query features (B, T, C)  --embed-->  (B, T, d)  --anchors + RoIAlign + MLP-->  X_Q (B, N_Q, d)
    support clips (B, K, T_S, C) --embed-->  X_S (B, K, T_S, d)
    stage 1  QtoS Context-CA:   X_S  -> X~_S      (each support alone, against all proposals)
    stage 2  Dynamics-CA:       X~_S -> Y~_S      (coarse tokens of all supports -> each support)
    stage 3  StoQ Context-CA:   X_Q  -> X~_Q      (all supports at once -> the proposals)
    relation classifier head:   X~_Q, Y~_S -> action logit (B, N_Q), offsets (B, N_Q, 2)
                                (+ relation logits (B, N_Q, K), own and cross-episode, in training only)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import einsum, rearrange, reduce, repeat

from . import stages
from .config import Config
from .proposals import RoIAlign, make_anchors, roi_align_mlp
from .utils import FscalError, where


class TemporalEmbedding(nn.Module):
    """The shared temporal embedding: a Conv1d stack ``C_in -> d`` over the snippet axis.

    Query and supports go through the *same* weights, so their tokens live in one space.
    """

    def __init__(self, c_in: int, d: int, layers: int, dropout: float):
        super().__init__()
        blocks, width = [], c_in
        for _ in range(layers):
            blocks += [nn.Conv1d(width, d, kernel_size=3, padding=1), nn.GELU(), nn.Dropout(dropout)]
            width = d
        self.net = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # (B, T, C_in) -> (B, T, d)
        x = rearrange(x, "b t c -> b c t")
        return self.norm(rearrange(self.net(x), "b d t -> b t d"))


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class RelationHead(nn.Module):
    """The relation classifier (our reconstruction; the paper leaves its exact form open).

    action classifier: ``p_n = sigmoid(MLP([x~_n; s; x~_n * s; |x~_n - s|]))`` with ``s`` the
    support summary (see :meth:`FSCAL.support_summary`); boundary regression: ``MLP([x~_n; s])`` -> (delta-centre, delta-log-width);
    auxiliary relation module (training only): ``rho_{n,l} = sigmoid(g([x~_n; s^(l); x~_n * s^(l)]))``
    for every proposal n and support l.
    """

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.cls = mlp(4 * d, d, 1, dropout)
        self.reg = mlp(2 * d, d, 2, dropout)
        self.g = mlp(3 * d, d, 1, dropout)

    def forward(self, X_Q, s):                       # X_Q (B, N, d), s (B, d)
        s_n = repeat(s, "b d -> b n d", n=X_Q.shape[1])                           # (B, N, d)
        logit = self.cls(torch.cat([X_Q, s_n, X_Q * s_n, (X_Q - s_n).abs()], -1)).squeeze(-1)   # (B, N)
        deltas = self.reg(torch.cat([X_Q, s_n], -1))                              # (B, N, 2)
        return logit, deltas

    def relation(self, X_Q, s_l):                    # X_Q (B, N, d), s_l (B, K, d) -> (B, N, K)
        # g's first layer on [x; s; x * s] is W_x x + W_s s + W_xs (x * s) + b: the first two terms
        # are computed once per proposal and once per support, only the third once per pair
        first, rest = self.g[0], self.g[1:]
        W_x, W_s, W_xs = first.weight.split(X_Q.shape[-1], dim=1)                # (h, d) each
        h = (rearrange(X_Q @ W_x.T, "b n h -> b n 1 h") + rearrange(s_l @ W_s.T, "b k h -> b 1 k h")
             + einsum(X_Q, s_l, W_xs, "b n d, b k d, h d -> b n k h") + first.bias)  # (B, N, K, h)
        return rest(h).squeeze(-1)


@dataclass
class FSCALOutput:
    logits: torch.Tensor                 # (B, N_Q) action logits, one per proposal
    deltas: torch.Tensor                 # (B, N_Q, 2) boundary offsets relative to the anchors
    anchors: torch.Tensor                # (N_Q, 2) snippet coordinates
    X_Q: torch.Tensor                    # (B, N_Q, d) fused proposal tokens X~_Q
    support_tokens: torch.Tensor         # (B, K, T_S, d) Y~_S (zeros for the blind control)
    attention: dict                      # stage name -> the stage's attention structure
    relation: torch.Tensor | None = None        # (B, N_Q, K) rho logits against the episode's own supports
    relation_cross: torch.Tensor | None = None  # (B, N_Q, K) rho logits against episode b-1's supports
    valid: torch.Tensor | None = None    # (B, N_Q) bool, proposals inside the query (None: all of them)


class FSCAL(nn.Module):
    """Few-shot common action localization with three-stage cross-attention (Lee et al., 2023).

    ``cfg.switches.blind`` builds the *support-blind control*: no stage runs and the head compares the
    proposals with a learned constant instead of the supports, so nothing about the supports can
    reach the output. It measures how far "finding some action" goes on its own.

    ``parts`` (a :class:`fscal_edu.parts.Parts`, default: the library's own functions) supplies
    the functions the stages run: the primitive ``attend`` and the stage parts ``qtos``,
    ``coarse_tokens``, ``dynamics``, ``stoq`` (see :meth:`use_parts`). The loss's parts (``tiou``,
    ``relation_targets``) go to :func:`fscal_edu.losses.fscal_loss`.
    """

    def __init__(self, cfg: Config, parts=None):
        super().__init__()
        self.cfg = cfg
        m, sw = cfg.model, cfg.switches
        d = m.d
        self.embed = TemporalEmbedding(cfg.data.feature_dim, d, m.embed_layers, m.dropout)
        self.register_buffer("anchors", make_anchors(cfg.data.T, m.anchor_lengths, m.anchor_stride_frac),
                             persistent=False)
        n_points = m.roi_inside + 2 * m.roi_context
        self.proposal_mlp = mlp(n_points * d, 2 * d, d, m.dropout)
        self.proposal_norm = nn.LayerNorm(d)
        # RoIAlign over fixed segments: the query's anchors, and a support read as one whole clip
        roi = dict(inside=m.roi_inside, context=m.roi_context, context_frac=m.roi_context_frac)
        self.roi_Q = RoIAlign(self.anchors, cfg.data.T, **roi)
        self.roi_S = RoIAlign(torch.tensor([[0.0, float(cfg.data.T_S)]]), cfg.data.T_S, **roi)
        # the cross-attention stages, in running order (fscal_edu.stages): self.qtos, self.dynamics,
        # self.stoq, each None when switched off (an ablation) or in the blind control
        for stage in stages.registered():
            self.add_module(stage.name, stage.build(cfg) if sw.on(stage.name) else None)
        self.head = RelationHead(d, m.dropout)
        self.blind_s = nn.Parameter(torch.zeros(d)) if sw.blind else None
        # "pooled" summary: a learned query; zero at the start, so the pooling starts as the mean
        self.summary_query = nn.Parameter(torch.zeros(d)) if sw.support_summary == "pooled" else None
        if parts is not None:
            self.use_parts(parts)

    def use_parts(self, parts) -> None:
        """Let the stages run the functions of ``parts`` (any object with the attributes ``attend``,
        ``qtos``, ``coarse_tokens``, ``dynamics``, ``stoq``) instead of the library's own. The
        weights are untouched: only the code that combines them changes."""
        for name, attr, fn in [("qtos", "part", parts.qtos), ("dynamics", "coarse", parts.coarse_tokens),
                               ("dynamics", "part", parts.dynamics), ("stoq", "part", parts.stoq)]:
            if getattr(self, name, None) is not None:       # a stage switched off has no part to run
                setattr(getattr(self, name), attr, fn)
        for stage in stages.registered():
            if getattr(self, stage.name, None) is not None and hasattr(getattr(self, stage.name), "primitive"):
                getattr(self, stage.name).primitive = parts.attend

    def tokens(self, E: torch.Tensor, roi: RoIAlign) -> torch.Tensor:
        """Tokens of fixed segments: ``E (B, T, d)`` -> ``(B, N, d)``, RoIAlign then the proposal MLP.

        ``roi`` is the operator of the segments: ``self.roi_Q`` the query's anchors, ``self.roi_S``
        a whole support clip. The MLP reads a segment's P RoIAlign points side by side,
        ``x = LayerNorm(MLP([R_1; ...; R_P]))``; :func:`fscal_edu.proposals.roi_align_mlp` says
        why it runs the MLP's first layer before RoIAlign when that is cheaper.
        """
        # roi_align_mlp computes exactly proposal_mlp(rearrange(roi(E), "b n p d -> b n (p d)"))
        return self.proposal_norm(roi_align_mlp(E, roi, self.proposal_mlp))          # (B, N, d)

    def proposals(self, query: torch.Tensor) -> torch.Tensor:
        """Query features ``(B, T, C)`` -> proposal tokens ``X_Q (B, N_Q, d)``: the embedding,
        1-D RoIAlign over the anchors, then the proposal MLP."""
        E = self.embed(query)                                                           # (B, T, d)
        # X_Q = LayerNorm(MLP(RoIAlign(E, anchors)))
        return self.tokens(E, self.roi_Q)                                               # (B, N_Q, d)

    def proposal_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """``mask (B, T)`` (True = a real snippet, padding at the tail) -> ``mask_Q (B, N_Q)``: a
        proposal is real when at most a quarter of it lies in the padding. ``None`` when nothing is
        padded, so an unpadded query runs exactly as without a mask."""
        if mask is None or bool(mask.all()):
            return None
        length = mask.sum(-1, keepdim=True).to(self.anchors.dtype)                     # (B, 1)
        start, end = self.anchors.unbind(-1)                                            # (N_Q,) each
        return end <= length + 0.25 * (end - start)                                    # (B, N_Q)

    def check_skip(self, skip) -> frozenset:
        """``skip`` of :meth:`forward`: names of registered stages (``fscal_edu.stages.names()``; a
        collection, or one string of comma-separated names), each a stage this model has; returns
        them as a frozenset.

        Skipping a stage the model was built without (an ablation, the blind control) is an
        error, not a no-op: a switch that silently does nothing would read as "no effect".
        """
        names = [n.strip() for n in skip.split(",") if n.strip()] if isinstance(skip, str) else list(skip)
        unknown = [n for n in names if n not in stages.names()]
        if unknown:
            raise FscalError(f"{where(field='skip')}: unknown stage(s) {unknown}; choose from {list(stages.names())}")
        absent = [n for n in stages.names() if n in names and getattr(self, n, None) is None]
        if absent:
            raise FscalError(f"{where(field='skip')}: this model has no {' and no '.join(absent)} stage "
                             f"({'blind control' if self.cfg.switches.blind else 'ablation'}), nothing to skip")
        return frozenset(names)

    def forward(self, query: torch.Tensor, support: torch.Tensor, *, mask: torch.Tensor | None = None,
                relation: bool | None = None, partners=None, skip=()) -> FSCALOutput:
        """``query (B, T, C)``, ``support (B, K, T_S, C)`` -> :class:`FSCALOutput`.

        ``mask (B, T)`` marks the query's real snippets (a window past a video's end is padded):
        proposals in the padding (:meth:`proposal_mask`, ``out.valid``) are neither sources of
        QtoS nor targets of StoQ, and the loss and the post-processing drop them.

        The relation logits (``out.relation``, ``out.relation_cross``) are computed when the model
        has a relation module (``cfg.switches.relation``) and ``relation`` is True; by default
        (``None``) in training mode only, so inference costs nothing extra. ``partners`` maps the
        support summaries ``(B, K, d)`` to those of each episode's partner, episode b-1 (default
        ``torch.roll`` over the batch; with several processes
        :meth:`fscal_edu.distributed.Dist.roll_global`, the partner in the *global* batch).
        ``skip`` (stage names, e.g. ``"qtos"``, ``"dynamics"``, ``"stoq"``) bypasses those stages at
        inference time: a skipped stage is the identity, its input passes through unchanged and
        ``out.attention`` has no entry for it (probes of a trained model, ``bench/probes.py``).
        """
        skip = self.check_skip(skip)
        C = self.cfg.data.feature_dim
        if query.shape[-1] != C or support.shape[-1] != C:
            raise FscalError(f"{where(field='feature_dim')}: the model takes {C} features per snippet, "
                             f"got query {tuple(query.shape)} and support {tuple(support.shape)}")
        B, K = support.shape[:2]
        X_Q = self.proposals(query)                                                      # (B, N, d)
        mask_Q = self.proposal_mask(mask)                                                # (B, N) or None
        attention = {}
        if self.cfg.switches.blind:   # the control: the supports are never read
            Y_S = X_Q.new_zeros(B, K, self.cfg.data.T_S, self.cfg.model.d)
            s = repeat(self.blind_s, "d -> b d", b=B)
        else:
            X_S = rearrange(self.embed(rearrange(support, "b k t c -> (b k) t c")),
                            "(b k) t d -> b k t d", b=B)                                 # (B, K, T_S, d)
            tokens = {"X_Q": X_Q, "X_S": X_S, "mask_Q": mask_Q}
            # the stages in running order, each reading tokens and rewriting X_S or X_Q:
            #   stage 1 QtoS      eqs. (1)-(2)  X~_S = QtoS(X_Q, X_S)     (B, K, T_S, d)
            #   stage 2 Dynamics  eqs. (3)-(5)  Y~_S = Dynamics(X~_S)     (B, K, T_S, d)
            #   stage 3 StoQ      eq. (6)       X~_Q = StoQ(Y~_S, X_Q)    (B, N_Q, d)
            for stage in stages.registered():
                module = getattr(self, stage.name, None)
                if module is None or stage.name in skip:       # switched off, or bypassed: the identity
                    continue
                tokens[stage.output], attention[stage.name] = module(*(tokens[t] for t in stage.inputs))
            X_Q, Y_S = tokens["X_Q"], tokens["X_S"]
            s_l = self.support_summary(Y_S)                                              # (B, K, d)
            s = reduce(s_l, "b k d -> b d", "mean")                                      # (B, d)
        logits, deltas = self.head(X_Q, s)
        out = FSCALOutput(logits, deltas, self.anchors, X_Q, Y_S, attention, valid=mask_Q)
        if self.cfg.switches.relation and (self.training if relation is None else relation):
            out.relation, out.relation_cross = self.relations(X_Q, s_l, partners)
        return out

    def relations(self, X_Q: torch.Tensor, s_l: torch.Tensor, partners=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The auxiliary relation module's logits, ``X~_Q (B, N_Q, d)``, ``s^(l) (B, K, d)`` ->
        own ``(B, N_Q, K)`` and cross ``(B, N_Q, K)``.

        own: ``rho_{n,l}`` of every proposal n with every support l of its own episode b.
        cross: the same proposals with the supports of episode b-1 (``partners(s_l)``, by default
        ``torch.roll`` over the batch), the cross-episode negatives of the relation loss when the
        two classes differ.
        """
        partner_s = partners(s_l) if partners is not None else torch.roll(s_l, 1, dims=0)   # (B, K, d)
        own = self.head.relation(X_Q, s_l)                                               # (B, N_Q, K)
        cross = self.head.relation(X_Q, partner_s)                                       # (B, N_Q, K)
        return own, cross

    def support_summary(self, Y_S: torch.Tensor) -> torch.Tensor:
        """Per-support summaries ``s^(l)``: ``Y~_S (B, K, T_S, d)`` -> ``(B, K, d)``.

        ``"mean"`` (the literal reading): the mean of the support's tokens, a bag of
        features that forgets temporal order. ``"pooled"``: attention pooling with a learned
        query (a bag too, but one that can weigh the snippets). ``"aligned"`` (**choice**, the default): the support
        clip is read like a proposal spanning the whole clip (the same RoIAlign points and MLP
        as the query's proposals), so ``s^(l)`` is ordered and lives in the proposal-token space
        that the classifier compares it with. Twin classes differ only in order, so this matters.
        """
        if self.cfg.switches.support_summary == "mean":
            return reduce(Y_S, "b k t d -> b k d", "mean")
        if self.cfg.switches.support_summary == "pooled":
            # s^(l) = sum_t softmax_t(q . y_t / sqrt(d)) y_t, a learned query q          (B, K, T_S)
            w = (einsum(Y_S, self.summary_query, "b k t d, d -> b k t") * Y_S.shape[-1] ** -0.5).softmax(-1)
            return einsum(w, Y_S, "b k t, b k t d -> b k d")                               # (B, K, d)
        # s^(l) = LayerNorm(MLP(RoIAlign(Y~_S^(l), [0, T_S])))
        s_l = self.tokens(rearrange(Y_S, "b k t d -> (b k) t d"), self.roi_S)           # (B*K, 1, d)
        return rearrange(s_l, "(b k) 1 d -> b k d", b=Y_S.shape[0])                     # (B, K, d)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_counts(model, *, split=()) -> dict:
    """Trainable parameters of each top-level part of a model, ``{name: count}`` (parts with none
    left out). The parts named in ``split`` are listed by their own parts instead (``split=("head",)``
    gives ``head.cls``, ``head.reg``, ``head.g``)."""
    counts = {}
    for name, part in model.named_children():
        children = list(part.named_children()) if name in split else []
        for sub, module in children or [("", part)]:
            if n := count_parameters(module):
                counts[f"{name}.{sub}" if sub else name] = n
        if children:
            counts |= {f"{name}.{p_name}": p.numel() for p_name, p in part.named_parameters(recurse=False)
                       if p.requires_grad}
    return counts | {name: p.numel() for name, p in model.named_parameters(recurse=False) if p.requires_grad}
