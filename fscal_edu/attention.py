"""The three cross-attention stages of FS-CAL, built on one primitive.

The paper writes tokens as columns, ``X in R^{d x N}``; we keep them as rows, ``X (B, N, d)``.
So the paper's ``X_a^T W X_b`` is our ``X_a @ W @ X_b^T`` and its ``X_a A + X_b`` is our
``A^T @ X_a + X_b``: the same numbers, transposed. The primitive, for a source ``X_a`` (N_a
tokens) and a target ``X_b`` (N_b tokens):

    eq. (1)/(4)      Lambda_{a->b} = X_a^T W_{a->b} X_b              (N_a x N_b)
                     A_{a->b}      = softmax(Lambda_{a->b}), along each row
    eq. (2)/(5)/(6)  X~_b          = X_a A_{a->b} + X_b

Target token j receives ``sum_i A[i, j] x_i``: targets that many sources find relevant are
emphasized, targets nobody attends to stay as they were.

The functions accept extra leading batch axes that broadcast, ``(B, ..., N, d)``: the stages
give the K supports their own axis, so "each support alone" is an axis, not a python loop.

What is the paper's and what is ours. The equations above are the paper's (docs/design.md
writes them out). Our **choices**, each a switch of the modules below:

- ``temperature``: scale Lambda by ``1/sqrt(d)`` before the softmax (the equations have none).
- ``mass_norm``: with the row softmax a target can receive up to N_a units; multiply the added
  term by ``N_b / N_a`` so that targets receive one unit on average. (With the column softmax
  every target already receives exactly one unit, so the modules rescale on the row axis only.)
- ``layernorm``: LayerNorm after the residual.
- ``axis``: ``"row"`` (the paper: every source spreads one unit over the targets) or
  ``"column"`` (the ablation: every target takes a convex combination of the sources, as in a
  Transformer's cross-attention).
- W init: the identity, so an untrained stage attends by plain dot-product similarity of the
  tokens, and with the temperature the logits start at the scale of a Transformer's.
- eq. (5): the paper's ``X~'_S^(l)`` on the right reads as a typo for ``X~_S^(l)``; we add the
  fine snippets of support l, the residual of eqs. (2) and (6).
- ``added`` (the added term ``A^T X_a``): with the row softmax every source spreads one unit, so
  averaged over the targets the added term is the mean of the sources whatever W is: a part
  shared by all targets, which ranks nothing. ``"kept"`` (the paper), ``"centred"`` (that shared
  part removed: the added term minus its mean over the targets), ``"gated"`` (a scalar gate per
  stage, starting at 0: the stage starts as the identity and must earn its contribution) or
  ``"null"`` (a learned null target: a source may send its unit nowhere).

With ``scale=1.0, mass_norm=False`` and no LayerNorm, the code is the equations exactly.

The parts. Each stage's computation is a plain module-level function that the stage calls, so a
student's own function can take its place (``fscal_edu.parts``): the primitive
:func:`cross_attend` (``stage.primitive``), and :func:`qtos_part`, :func:`coarse_part`,
:func:`dynamics_part`, :func:`stoq_part` (``stage.part``, ``DynamicsCA.coarse``). A part gets the
stage's own :meth:`CrossAttentionStage.attend` (the primitive with the stage's options, the added
term and the LayerNorm), so the part is the stage's arrangement of tokens and nothing else.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
import torch.nn.functional as F
from torch import nn

from .utils import FscalError, where

AXES = ("row", "column")
ADDED = ("kept", "centred", "gated", "null")


def cross_correlation(X_a: torch.Tensor, X_b: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """eq. (1)/(4): the cross-correlation of every source token with every target token.

    ``X_a (B, N_a, d)``, ``X_b (B, N_b, d)``, ``W (d, d)`` -> ``Lambda (B, N_a, N_b)`` with
    ``Lambda[b, i, j] = x_i^T W x_j``.
    """
    # Lambda_{a->b} = X_a^T W_{a->b} X_b                                        (B, N_a, N_b)
    return torch.einsum("...id,de,...je->...ij", X_a, W, X_b)


def cross_attend(X_a: torch.Tensor, X_b: torch.Tensor, W: torch.Tensor, *, axis: str = "row",
                 scale: float = 1.0, mass_norm: bool = False, mask_a: torch.Tensor | None = None,
                 mask_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """eqs. (1)-(2): the source ``X_a`` attends to the target ``X_b``; returns ``(X~_b, A)``.

    ``A (B, N_a, N_b)`` is the softmax of ``scale * Lambda`` along each row (``axis="row"``:
    source token i spreads one unit over the targets) or down each column (``axis="column"``:
    target token j takes a convex combination of the sources). ``X~_b (B, N_b, d)`` is
    ``X_b + A^T X_a``, times ``N_b / N_a`` if ``mass_norm``.

    ``mask_a (B, N_a)`` and ``mask_b (B, N_b)`` (bool, True = real token) mark padding: padded
    sources give nothing, padded targets receive nothing, and N_a, N_b count real tokens.
    """
    if axis not in AXES:
        raise FscalError(f"{where(field='axis')}: {axis!r} is not one of {AXES}")
    if mask_a is None:
        mask_a = torch.ones(X_a.shape[:-1], dtype=torch.bool, device=X_a.device)    # (B, N_a)
    if mask_b is None:
        mask_b = torch.ones(X_b.shape[:-1], dtype=torch.bool, device=X_b.device)    # (B, N_b)
    real = mask_a[..., :, None] & mask_b[..., None, :]                               # (B, N_a, N_b)

    Lambda = cross_correlation(X_a, X_b, W)                                          # (B, N_a, N_b)
    logits = (scale * Lambda).masked_fill(~real, torch.finfo(Lambda.dtype).min)
    # A_{a->b} = softmax(Lambda_{a->b}), along each row or down each column         (B, N_a, N_b)
    A = logits.softmax(dim=-1 if axis == "row" else -2).masked_fill(~real, 0.0)
    # eq. (2): X~_b = X_a A_{a->b} + X_b; in rows, target j gets sum_i A[i, j] x_i   (B, N_b, d)
    added = torch.einsum("...ij,...id->...jd", A, X_a)
    if mass_norm:
        N_a, N_b = mask_a.sum(-1).to(added.dtype), mask_b.sum(-1).to(added.dtype)      # (B,)
        added = added * (N_b / N_a.clamp(min=1))[..., None, None]
    return X_b + added, A


class CoarseTokens(NamedTuple):
    """Where each Dynamics-CA coarse token comes from; three ``(N_coarse,)`` long tensors.

    Coarse token n summarises snippets ``[start[n], start[n] + granularity[n])`` of support
    ``support[n]``.
    """

    support: torch.Tensor
    granularity: torch.Tensor
    start: torch.Tensor


class StageAttention(NamedTuple):
    """A stage's attention, for losses (``A`` is live, with its graph) and for plots.

    ``stage`` and the layout of ``A``:
      ``"qtos"``        (B, K, N_Q, T_S)      proposals -> the snippets of each support
      ``"qtos_joint"``  (B, N_Q, K*T_S)       proposals -> all supports as one clip
      ``"dynamics"``    (B, K, N_coarse, T_S) coarse tokens of all supports -> support l
      ``"stoq"``        (B, K*T_S, N_Q)       all support snippets -> proposals
    ``coarse`` names the Dynamics-CA source tokens (N_coarse = K * sum_k T_S / k).
    """

    stage: str
    A: torch.Tensor
    K: int
    T_S: int
    coarse: CoarseTokens | None = None


class CrossAttentionStage(nn.Module):
    """What every stage shares: the options of the primitive and the LayerNorm after it.

    A stage subclasses it, holds its ``W`` matrices and calls :meth:`attend` (the primitive with
    the stage's options), so the probes of ``fscal_edu.diagnostics`` can see its operands. A new
    stage is then registered in ``fscal_edu.stages``."""

    def __init__(self, d: int, *, axis: str, temperature: bool, mass_norm: bool, layernorm: bool,
                 added: str = "kept"):
        super().__init__()
        if axis not in AXES:
            raise FscalError(f"{where(field='softmax_axis')}: {axis!r} is not one of {AXES}")
        if added not in ADDED:
            raise FscalError(f"{where(field='added_term')}: {added!r} is not one of {ADDED}")
        self.d, self.axis, self.added = d, axis, added
        self.gate = nn.Parameter(torch.zeros(())) if added == "gated" else None    # starts closed
        self.null = nn.Parameter(torch.zeros(d)) if added == "null" else None      # the null target
        # choice: temperature 1/sqrt(d), as in a Transformer (the equations have none)
        self.scale = d ** -0.5 if temperature else 1.0
        # choice: one unit per target on average; the column softmax gives that already
        self.mass_norm = mass_norm and axis == "row"
        # choice: LayerNorm after the residual
        self.norm = nn.LayerNorm(d) if layernorm else nn.Identity()
        # the primitive every stage runs: eqs. (1)-(2); a student's own may replace it
        self.primitive = cross_attend

    def expect(self, x: torch.Tensor, field: str, layout: str) -> None:
        """Bad input names its field: ``x`` must have the ``layout`` given, e.g. "(B, N_Q, d)"."""
        if x.dim() != layout.count(",") + 1 or x.shape[-1] != self.d:
            raise FscalError(f"{where(field=field)}: expected {layout} with d = {self.d}, "
                             f"got shape {tuple(x.shape)}")

    def attend(self, X_a, X_b, W, mask_a=None, mask_b=None):
        """The primitive (``self.primitive``, default :func:`cross_attend`) with the stage's options,
        then the added-term variant and the LayerNorm: ``(X~_b, A)``. Leading axes broadcast."""
        opts = dict(axis=self.axis, scale=self.scale, mass_norm=self.mass_norm, mask_a=mask_a)
        if self.added == "null":      # one more target, learned, whose row of the output is dropped
            null = self.null.to(X_b.dtype).expand(*X_b.shape[:-2], 1, self.d)            # (..., 1, d)
            mask_b = None if mask_b is None else torch.cat([mask_b, mask_b.new_ones(*mask_b.shape[:-1], 1)], -1)
            X_b_new, A = self.primitive(X_a, torch.cat([X_b, null], -2), W, mask_b=mask_b, **opts)
            return self.norm(X_b_new[..., :-1, :]), A[..., :-1]
        X_b_new, A = self.primitive(X_a, X_b, W, mask_b=mask_b, **opts)
        if self.added == "kept":
            return self.norm(X_b_new), A
        added = X_b_new - X_b                                                            # (..., N_b, d)
        if self.added == "centred":   # minus the part shared by all (real) targets: their mean
            m = torch.ones_like(added[..., :1]) if mask_b is None else mask_b[..., None].to(added.dtype)
            added = added - (added * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1)
        else:                         # "gated": g * added, g starts at 0
            added = self.gate.to(added.dtype) * added
        return self.norm(X_b + added), A


def _identity_W(d: int) -> nn.Parameter:
    """choice: W starts as the identity, so an untrained stage attends by dot-product similarity."""
    return nn.Parameter(torch.eye(d))


class QtoSContextCA(CrossAttentionStage):
    """Stage 1, QtoS Context-CA: all N_Q proposals attend to each support, one support at a time.

    Every support is recalibrated in the context of the query, and supports never see each
    other, so one odd support cannot pull the others. ``joint=True`` (ablation) concatenates the
    K supports into one clip of K*T_S snippets that compete for each proposal's attention.
    """

    def __init__(self, d: int, *, joint: bool = False, axis: str = "row", temperature: bool = True,
                 mass_norm: bool = True, layernorm: bool = True, added: str = "kept"):
        super().__init__(d, axis=axis, temperature=temperature, mass_norm=mass_norm,
                         layernorm=layernorm, added=added)
        self.joint = joint
        self.W_QtoS = _identity_W(d)
        self.part = qtos_part         # the stage's arrangement of tokens (not used by the joint ablation)

    def forward(self, X_Q, X_S, mask_Q=None) -> tuple[torch.Tensor, StageAttention]:
        """``X_Q (B, N_Q, d)``, ``X_S (B, K, T_S, d)``, ``mask_Q (B, N_Q)`` -> ``X~_S (B, K, T_S, d)``."""
        self.expect(X_Q, "X_Q", "(B, N_Q, d)")
        self.expect(X_S, "X_S", "(B, K, T_S, d)")
        B, K, T_S, d = X_S.shape
        if self.joint:
            # ablation: the K supports as one clip                                  (B, K*T_S, d)
            X_S_joint = rearrange(X_S, "b k t d -> b (k t) d")
            # eqs. (1)-(2) once, on the joint clip; A (B, N_Q, K*T_S)
            X_S_tilde, A = self.attend(X_Q, X_S_joint, self.W_QtoS, mask_a=mask_Q)
            X_S_tilde = rearrange(X_S_tilde, "b (k t) d -> b k t d", k=K)
            return X_S_tilde, StageAttention("qtos_joint", A, K, T_S)
        # eqs. (1)-(2) for every support l at once                  X~_S (B, K, T_S, d), A (B, K, N_Q, T_S)
        X_S_tilde, A = self.part(X_Q, X_S, self.W_QtoS, mask_Q, self.attend)
        return X_S_tilde, StageAttention("qtos", A, K, T_S)


def qtos_part(X_Q, X_S, W, mask_Q, attend):
    """QtoS Context-CA, eqs. (1)-(2): all N_Q proposals attend to each support's snippets.

    ``X_Q (B, N_Q, d)``, ``X_S (B, K, T_S, d)``, ``W (d, d)``, ``mask_Q (B, N_Q)`` or None ->
    ``X~_S (B, K, T_S, d)``, ``A (B, K, N_Q, T_S)``. Every support gets all proposals through a
    broadcast support axis of size 1, so "each support alone" is one call, not a loop.
    """
    # every support l gets the same proposals: a broadcast support axis         (B, 1, N_Q, d)
    X_Q_l = rearrange(X_Q, "b n d -> b 1 n d")
    mask_Q_l = None if mask_Q is None else rearrange(mask_Q, "b n -> b 1 n")      # (B, 1, N_Q)
    # eq. (1): Lambda^(l)_{Q->S} = X_Q^T W_{Q->S} X_S^(l)                        (B, K, N_Q, T_S)
    # eq. (2): X~_S^(l) = X_Q A^(l)_{Q->S} + X_S^(l)                             (B, K, T_S, d)
    return attend(X_Q_l, X_S, W, mask_a=mask_Q_l)


def coarse_index(K: int, T_S: int, granularities) -> CoarseTokens:
    """Label the coarse tokens of all supports, in the order ``DynamicsCA`` stacks them.

    For each support l, for each k in ``granularities``, the T_S / k windows ``[j*k, (j+1)*k)``.
    """
    starts = [(k, s) for k in granularities for s in range(0, T_S, k)]
    return CoarseTokens(
        support=torch.arange(K).repeat_interleave(len(starts)),
        granularity=torch.tensor([k for k, _ in starts], dtype=torch.long).repeat(K),
        start=torch.tensor([s for _, s in starts], dtype=torch.long).repeat(K),
    )


class DynamicsCA(CrossAttentionStage):
    """Stage 2, Dynamics-CA: coarse tokens of all supports attend to each support's snippets.

    eq. (3): for each granularity k, a temporal convolution w_k with kernel = stride = k turns
    the T_S snippets of a support into T_S / k coarse tokens (one per window of k snippets).
    The coarse tokens of every k and of **all** supports form X~_S'; for each support l they are
    the source and the fine snippets of l the target (eqs. 4-5): "individual-to-all".

    ``own_only=True`` (ablation) lets support l see only its own coarse tokens. (The stage is
    switched off like the others, by its name: ``cfg.switches.off``, see ``fscal_edu.stages``.)
    The convolutions start as window means (weight I / k, bias 0): a **choice**, so that an
    untrained coarse token is the average of its k snippets.
    """

    def __init__(self, d: int, granularities=(2, 4), *, own_only: bool = False, axis: str = "row",
                 temperature: bool = True, mass_norm: bool = True, layernorm: bool = True, added: str = "kept"):
        super().__init__(d, axis=axis, temperature=temperature, mass_norm=mass_norm,
                         layernorm=layernorm, added=added)
        self.granularities = tuple(granularities)
        if not self.granularities or any(not isinstance(k, int) or k < 1 for k in self.granularities):
            raise FscalError(f"{where(field='granularities')}: {self.granularities} must be "
                             f"one or more positive integers")
        self.own_only = own_only
        # eq. (3): one temporal convolution w_k per granularity, kernel = stride = k
        self.w = nn.ModuleDict({str(k): nn.Conv1d(d, d, k, stride=k) for k in self.granularities})
        with torch.no_grad():
            for k in self.granularities:                     # choice: w_k starts as the window mean
                self.w[str(k)].weight.copy_(torch.eye(d)[:, :, None].expand(d, d, k) / k)
                self.w[str(k)].bias.zero_()
        self.W_StoS = _identity_W(d)
        self.coarse = coarse_part     # eq. (3)
        self.part = dynamics_part     # eqs. (4)-(5)

    def conv_weights(self) -> dict:
        """The convolutions of eq. (3), ``{k: (weight (d, d, k), bias (d,))}`` in granularity order."""
        return {k: (self.w[str(k)].weight, self.w[str(k)].bias) for k in self.granularities}

    def coarse_tokens(self, X_S_tilde: torch.Tensor) -> torch.Tensor:
        """eq. (3): ``X~_S (B, K, T_S, d)`` -> coarse tokens ``(B, K, sum_k T_S/k, d)``."""
        T_S = X_S_tilde.shape[-2]
        for k in self.granularities:
            if T_S % k:
                raise FscalError(f"{where(field='granularities')}: k={k} does not divide "
                                 f"T_S={T_S}; choose divisors of the support length")
        return self.coarse(X_S_tilde, self.conv_weights())

    def forward(self, X_S_tilde) -> tuple[torch.Tensor, StageAttention]:
        """``X~_S (B, K, T_S, d)`` -> ``Y~_S (B, K, T_S, d)``."""
        self.expect(X_S_tilde, "X_S_tilde", "(B, K, T_S, d)")
        B, K, T_S, d = X_S_tilde.shape
        coarse = coarse_index(K, T_S, self.granularities)
        # eq. (3): each support's coarse tokens                                     (B, K, N, d)
        X_S_prime = self.coarse_tokens(X_S_tilde)
        # own_only (ablation): support l sees only its own coarse tokens             (K, K*N)
        mask = (coarse.support[None, :] == torch.arange(K)[:, None]) if self.own_only else None
        # eqs. (4)-(5) for every support l at once           Y~_S (B, K, T_S, d), A (B, K, K*N, T_S)
        Y_S, A = self.part(X_S_prime, X_S_tilde, self.W_StoS, self.attend,
                           mask_a=None if mask is None else mask.to(X_S_tilde.device))
        return Y_S, StageAttention("dynamics", A, K, T_S, coarse)


def coarse_part(X_S_tilde, w: dict):
    """eq. (3): ``X~_S (B, K, T_S, d)``, ``w = {k: (weight (d, d, k), bias (d,))}`` -> coarse
    tokens ``(B, K, sum_k T_S/k, d)``: for each granularity k in order, a temporal convolution with
    kernel = stride = k (one token per window of k snippets), concatenated over k."""
    B = X_S_tilde.shape[0]
    X = rearrange(X_S_tilde, "b k t d -> (b k) d t")                               # (B*K, d, T_S)
    # X~_S'^(l) = X~_S^(l) (*) w_k, for every k in G                           (B*K, d, T_S/k)
    coarse = [F.conv1d(X, weight, bias, stride=k) for k, (weight, bias) in w.items()]
    return rearrange(torch.cat(coarse, dim=-1), "(b k) d n -> b k n d", b=B)       # (B, K, N, d)


def dynamics_part(X_S_prime, X_S_tilde, W, attend, mask_a=None):
    """Dynamics-CA, eqs. (4)-(5): the coarse tokens of **all** supports attend to each support.

    ``X_S_prime (B, K, N, d)`` each support's coarse tokens, ``X~_S (B, K, T_S, d)``, ``W (d, d)``
    -> ``Y~_S (B, K, T_S, d)``, ``A (B, K, K*N, T_S)``. The K*N coarse tokens form one shared
    source with a broadcast support axis; ``mask_a`` (K, K*N) or None marks the sources each
    support may see (the own_only ablation).
    """
    # X~_S': the coarse tokens of all supports, shared by every support l     (B, 1, K*N, d)
    X_S_all = rearrange(X_S_prime, "b k n d -> b 1 (k n) d")
    # eq. (4): Lambda^(l)_{S'->S} = X~_S'^T W_{S'->S} X~_S^(l)                   (B, K, K*N, T_S)
    # eq. (5): Y~_S^(l) = X~_S' A^(l)_{S'->S} + X~_S^(l)                         (B, K, T_S, d)
    return attend(X_S_all, X_S_tilde, W, mask_a=mask_a)


class StoQContextCA(CrossAttentionStage):
    """Stage 3, StoQ Context-CA: all support snippets at once attend to the proposals (eq. 6).

    The order of the supports does not matter: every support snippet is one more source token.
    """

    def __init__(self, d: int, *, axis: str = "row", temperature: bool = True,
                 mass_norm: bool = True, layernorm: bool = True, added: str = "kept"):
        super().__init__(d, axis=axis, temperature=temperature, mass_norm=mass_norm,
                         layernorm=layernorm, added=added)
        self.W_StoQ = _identity_W(d)
        self.part = stoq_part

    def forward(self, Y_S, X_Q, mask_Q=None) -> tuple[torch.Tensor, StageAttention]:
        """``Y~_S (B, K, T_S, d)``, ``X_Q (B, N_Q, d)``, ``mask_Q (B, N_Q)`` -> ``X~_Q (B, N_Q, d)``."""
        self.expect(Y_S, "Y_S", "(B, K, T_S, d)")
        self.expect(X_Q, "X_Q", "(B, N_Q, d)")
        B, K, T_S, d = Y_S.shape
        # eq. (6)                                            X~_Q (B, N_Q, d), A (B, K*T_S, N_Q)
        X_Q_tilde, A = self.part(Y_S, X_Q, self.W_StoQ, mask_Q, self.attend)
        return X_Q_tilde, StageAttention("stoq", A, K, T_S)


def stoq_part(Y_S, X_Q, W, mask_Q, attend):
    """StoQ Context-CA, eq. (6): all K*T_S support snippets at once attend to the proposals.

    ``Y~_S (B, K, T_S, d)``, ``X_Q (B, N_Q, d)``, ``W (d, d)``, ``mask_Q (B, N_Q)`` or None ->
    ``X~_Q (B, N_Q, d)``, ``A (B, K*T_S, N_Q)``. One source of K*T_S tokens, not K sources: with
    the mass normalisation, N_a counts all of them.
    """
    # Y~_S = [Y~_S^(1), ..., Y~_S^(K)]: all supports as one source              (B, K*T_S, d)
    Y_S_all = rearrange(Y_S, "b k t d -> b (k t) d")
    # eq. (6): Lambda_{S->Q} = Y~_S^T W_{S->Q} X_Q                               (B, K*T_S, N_Q)
    #          X~_Q = Y~_S A_{S->Q} + X_Q                                        (B, N_Q, d)
    return attend(Y_S_all, X_Q, W, mask_b=mask_Q)
