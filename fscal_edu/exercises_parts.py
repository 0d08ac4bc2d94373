"""Checkers of the student's parts of the model, notebooks 03-05: the attention primitive, QtoS
Context-CA, the coarse tokens and the attention of Dynamics-CA, StoQ Context-CA; and the small
exercise of notebook 05 on how the grouping of StoQ's sources matters.

Each checker runs the student's function and the library's reference (the function the model
itself calls, see :mod:`fscal_edu.parts`) on a few cases, prints one line per case that passes
and, for one that does not, what differs and which known mistake (:mod:`fscal_edu.mistakes`)
gives that answer. An attempted function is kept as the student's part of the model
(:func:`fscal_edu.checking.keep_part`). The stages' parts get the stage's ``attend`` as an
argument; the checkers pass the library's primitive with a stage's options,
``functools.partial(attention.cross_attend, scale=d ** -0.5, mass_norm=True)``.
"""
from __future__ import annotations

import functools

import torch

from . import mistakes
from .checking import Crashed, checker, close, compare, explain, run

D = 6                                                    # the token width of every case


def _reference(name: str):
    """The library's reference of a part (``attention.qtos_part``, ...)."""
    from . import attention
    return getattr(attention, name)


def _randn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _mask(B: int, N: int, padded: tuple) -> torch.Tensor:
    """``(B, N)`` bool: episode b has its last ``padded[b]`` tokens padded (False)."""
    return torch.arange(N)[None, :] < torch.tensor([N - p for p in padded])[:, None]


def _stage_attend():
    """The primitive with a stage's options (temperature and mass_norm), as a stage passes it."""
    from .attention import cross_attend
    return functools.partial(cross_attend, scale=D ** -0.5, mass_norm=True)


def check_cases(label: str, cases: dict, call, want, variant, known: dict, names, axes=None) -> bool:
    """Run every case: ``call(*case)`` (the student's) against ``want(*case)``; one line for a case
    that passes, the differences and the named mistakes (``variant(*case, **flags)``) for one
    that does not. Returns whether all passed."""
    ok = True
    for case, args in cases.items():
        got, expected = call(*args), want(*args)
        if close(got, expected):
            print(f"{label}, {case}: Correct!")
            continue
        compare(f"{label}, {case}", got, expected, names=names, axes=axes)
        ok = explain(got, variant, known, *args)
    return ok

# ---------------------------------------------------------------------------------------------
# Notebook 03: the primitive and QtoS Context-CA
# ---------------------------------------------------------------------------------------------


def attend_cases() -> dict:
    """``{case: (X_a, X_b, W, scale, mass_norm, mask_a, mask_b)}``: float64, B = 2, d = 6."""
    g = torch.Generator().manual_seed(0)
    X_a, X_b, W = _randn(2, 7, D, g=g), _randn(2, 5, D, g=g), _randn(D, D, g=g) * 0.5
    m_a, m_b, s = _mask(2, 7, (0, 2)), _mask(2, 5, (1, 2)), D ** -0.5
    X_a4, X_b4 = _randn(2, 1, 7, D, g=g), _randn(2, 3, 5, D, g=g)
    return {"plain": (X_a, X_b, W, 1.0, False, None, None),
            "scale = 1/sqrt(d)": (X_a, X_b, W, s, False, None, None),
            "mask_a (padded sources)": (X_a, X_b, W, s, False, m_a, None),
            "mask_b (padded targets)": (X_a, X_b, W, s, False, None, m_b),
            "mass_norm": (X_a, X_b, W, s, True, None, None),
            "mass_norm with both masks": (X_a, X_b, W, s, True, m_a, m_b),
            "leading axes (B, 1, N_a, d) against (B, K, N_b, d)": (X_a4, X_b4, W, s, True, m_a[:, None], None),
            "a mask_a (K, N_a) shared by the batch": (X_a4, X_b4, W, s, True, _mask(3, 7, (0, 3, 5)), None)}


@checker("my_attend", part="attend")
def check_attend(fn) -> bool:
    """Notebook 03, the primitive every stage runs (row softmax):
    ``fn(X_a (..., N_a, d), X_b (..., N_b, d), W (d, d), *, axis="row", scale=1.0, mass_norm=False,
    mask_a=None, mask_b=None) -> (X~_b (..., N_b, d), A (..., N_a, N_b))``, leading axes broadcast;
    compared with ``attention.cross_attend`` on eight cases (plain, a scale, each mask, mass_norm,
    mass_norm with masks, broadcast leading axes, a mask with fewer leading axes, as Dynamics-CA's
    own_only passes). Only the row softmax is checked (``axis="row"``, the paper's)."""
    from .attention import cross_attend

    def call(X_a, X_b, W, scale, mass_norm, mask_a, mask_b):
        opts = dict(scale=scale, mass_norm=mass_norm, mask_a=mask_a, mask_b=mask_b)
        if scale == 1.0 and not mass_norm and mask_a is None and mask_b is None:
            return run(fn, X_a.clone(), X_b.clone(), W.clone())                  # the defaults
        try:
            return run(functools.partial(fn, axis="row", **opts), X_a.clone(), X_b.clone(), W.clone())
        except Crashed:
            if X_a.dim() > 3:
                print("  -> the leading axes must broadcast: write the einsums with '...', "
                      "e.g. '...id,de,...je->...ij'")
            raise

    want = lambda X_a, X_b, W, scale, mass_norm, mask_a, mask_b: cross_attend(  # noqa: E731
        X_a, X_b, W, scale=scale, mass_norm=mass_norm, mask_a=mask_a, mask_b=mask_b)
    return check_cases("attend", attend_cases(), call, want, mistakes.attend_variant, mistakes.ATTEND,
                       names=("X~_b", "A"))


def qtos_cases() -> dict:
    """``{case: (X_Q, X_S, W, mask_Q, attend)}``: float64, B = 2, K = 3, T_S = 8."""
    g = torch.Generator().manual_seed(1)
    X_S, W = _randn(2, 3, 8, D, g=g), _randn(D, D, g=g) * 0.5
    return {"no padding": (_randn(2, 7, D, g=g), X_S, W, None, _stage_attend()),
            "padded proposals": (_randn(2, 8, D, g=g), X_S, W, _mask(2, 8, (0, 3)), _stage_attend())}


@checker("my_qtos", part="qtos")
def check_qtos(fn) -> bool:
    """Notebook 03, QtoS Context-CA (eqs. 1-2, every support on its own):
    ``fn(X_Q (B, N_Q, d), X_S (B, K, T_S, d), W (d, d), mask_Q (B, N_Q) or None, attend)
    -> (X~_S (B, K, T_S, d), A (B, K, N_Q, T_S))``: every support gets all proposals, as a
    broadcast support axis, then ``attend(X_Q_l, X_S, W, mask_a=mask_Q_l)``. ``attend`` is the
    stage's primitive (here ``cross_attend`` with scale 1/sqrt(d) and mass_norm)."""
    call = lambda X_Q, X_S, W, m, attend: run(fn, X_Q.clone(), X_S.clone(), W.clone(), m, attend)  # noqa: E731
    return check_cases("QtoS", qtos_cases(), call, _reference("qtos_part"), mistakes.qtos_variant,
                       mistakes.QTOS, names=("X~_S", "A"))

# ---------------------------------------------------------------------------------------------
# Notebook 04: Dynamics-CA, the coarse tokens and the attention
# ---------------------------------------------------------------------------------------------


def coarse_cases() -> dict:
    """``{case: (X_S_tilde, w)}``, ``w = {k: (weight (d, d, k), bias (d,))}``, T_S = 8."""
    g = torch.Generator().manual_seed(2)
    X = _randn(2, 3, 8, D, g=g)
    start = {k: (torch.eye(D, dtype=torch.float64)[:, :, None].expand(D, D, k) / k,
                 torch.zeros(D, dtype=torch.float64)) for k in (2, 4)}
    trained = {k: (_randn(D, D, k, g=g) * 0.3, _randn(D, g=g) * 0.1) for k in (2, 4)}
    return {"the untrained w_k (window means)": (X, start), "random w_k, k = 2 and 4": (X, trained),
            "random w_k, k = 4 then 2": (X, {4: trained[4], 2: trained[2]})}


@checker("my_coarse_tokens", part="coarse_tokens")
def check_coarse_tokens(fn) -> bool:
    """Notebook 04, eq. (3): ``fn(X_S_tilde (B, K, T_S, d), w) -> (B, K, sum_k T_S/k, d)`` with
    ``w = {k: (weight (d, d, k), bias (d,))}`` in granularity order: for each k a temporal
    convolution, kernel = stride = k (``weight[o, i, j]`` multiplies channel i of snippet
    ``n*k + j``), the tokens of every k concatenated in the order of ``w``. The checker's
    weights are the untrained window means and random ones."""
    call = lambda X, w: run(fn, X.clone(), {k: (a.clone(), b.clone()) for k, (a, b) in w.items()})  # noqa: E731
    return check_cases("coarse tokens", coarse_cases(), call, _reference("coarse_part"),
                       mistakes.coarse_tokens_variant, mistakes.COARSE_TOKENS, names=None)


def dynamics_cases() -> dict:
    """``{case: (X_S_prime, X_S_tilde, W, attend, mask_a)}``: K = 3, N = 6 coarse tokens a support."""
    g = torch.Generator().manual_seed(3)
    X_S_prime, X_S_tilde, W = _randn(2, 3, 6, D, g=g), _randn(2, 3, 8, D, g=g), _randn(D, D, g=g) * 0.5
    own = torch.arange(3)[:, None] == torch.arange(3).repeat_interleave(6)[None, :]      # (K, K*N)
    return {"every support sees all coarse tokens": (X_S_prime, X_S_tilde, W, _stage_attend(), None),
            "with a mask (own_only's)": (X_S_prime, X_S_tilde, W, _stage_attend(), own)}


@checker("my_dynamics", part="dynamics")
def check_dynamics(fn) -> bool:
    """Notebook 04, Dynamics-CA (eqs. 4-5): ``fn(X_S_prime (B, K, N, d), X_S_tilde (B, K, T_S, d),
    W (d, d), attend, mask_a=None) -> (Y~_S (B, K, T_S, d), A (B, K, K*N, T_S))``: the coarse
    tokens of ALL supports, flattened to one source with a broadcast support axis
    (``b k n d -> b 1 (k n) d``), attend to each support's snippets; ``mask_a`` (``(K, K*N)`` bool
    or None) is passed on to ``attend``."""
    def call(X_S_prime, X_S_tilde, W, attend, mask_a):
        extra = {} if mask_a is None else {"mask_a": mask_a}
        return run(functools.partial(fn, **extra), X_S_prime.clone(), X_S_tilde.clone(), W.clone(), attend)
    want = lambda X_S_prime, X_S_tilde, W, attend, mask_a: _reference("dynamics_part")(  # noqa: E731
        X_S_prime, X_S_tilde, W, attend, mask_a=mask_a)
    return check_cases("Dynamics-CA", dynamics_cases(), call, want,
                       mistakes.dynamics_variant, mistakes.DYNAMICS, names=("Y~_S", "A"))

# ---------------------------------------------------------------------------------------------
# Notebook 05: StoQ Context-CA, and what the grouping of its sources changes
# ---------------------------------------------------------------------------------------------


def stoq_cases() -> dict:
    """``{case: (Y_S, X_Q, W, mask_Q, attend)}``: K = 3, T_S = 8; the padded case has N_Q = K*T_S."""
    g = torch.Generator().manual_seed(4)
    Y_S, W = _randn(2, 3, 8, D, g=g), _randn(D, D, g=g) * 0.5
    return {"no padding": (Y_S, _randn(2, 7, D, g=g), W, None, _stage_attend()),
            "padded proposals": (Y_S, _randn(2, 24, D, g=g), W, _mask(2, 24, (0, 5)), _stage_attend())}


@checker("my_stoq", part="stoq")
def check_stoq(fn) -> bool:
    """Notebook 05, StoQ Context-CA (eq. 6): ``fn(Y_S (B, K, T_S, d), X_Q (B, N_Q, d), W (d, d),
    mask_Q (B, N_Q) or None, attend) -> (X~_Q (B, N_Q, d), A (B, K*T_S, N_Q))``: all K*T_S
    support snippets as one source, ``attend(Y_all, X_Q, W, mask_b=mask_Q)``."""
    call = lambda Y_S, X_Q, W, m, attend: run(fn, Y_S.clone(), X_Q.clone(), W.clone(), m, attend)  # noqa: E731
    return check_cases("StoQ", stoq_cases(), call, _reference("stoq_part"), mistakes.stoq_variant,
                       mistakes.STOQ, names=("X~_Q", "A"))


def grouping_settings() -> dict:
    """``{setting: attend}``: the three ways StoQ's softmax can be set up."""
    from .attention import cross_attend
    return {"row": cross_attend, "row + mass_norm": functools.partial(cross_attend, mass_norm=True),
            "column": functools.partial(cross_attend, axis="column")}


def grouping_table(per_support) -> dict:
    """``{setting: largest |per support - at once|}`` of StoQ's ``X~_Q`` in every setting, for a
    ``per_support(Y_S, X_Q, W, attend) -> X~_Q`` (one softmax per support, the added terms summed)."""
    Y_S, X_Q, W, _, _ = stoq_cases()["no padding"]
    stoq = _reference("stoq_part")
    return {s: float((per_support(Y_S, X_Q, W, a) - stoq(Y_S, X_Q, W, None, a)[0]).abs().max())
            for s, a in grouping_settings().items()}


@checker("my_stoq_per_support")
def check_stoq_per_support(fn) -> bool:
    """Notebook 05: ``fn(Y_S (B, K, T_S, d), X_Q (B, N_Q, d), W (d, d), attend) -> X~_Q (B, N_Q, d)``,
    StoQ one support at a time: each support's T_S snippets attend to the proposals alone (a
    softmax per support) and the K added terms are summed onto X_Q. Checked in three settings
    (row softmax, row softmax with mass_norm, column softmax); then each is set beside StoQ's one
    attention over all K*T_S snippets: under the row softmax the grouping matters only through
    the mass normalisation, and under the column softmax it matters."""
    from .solutions import stoq_per_support
    Y_S, X_Q, W, _, _ = stoq_cases()["no padding"]
    ok = True
    for setting, attend in grouping_settings().items():
        ok = compare(f"per support, {setting}", run(fn, Y_S.clone(), X_Q.clone(), W.clone(), attend),
                     stoq_per_support(Y_S, X_Q, W, attend)) and ok
    if ok:
        print("yours against StoQ over all K*T_S snippets at once, max |X~_Q per support - X~_Q at once|:")
        for setting, gap in grouping_table(fn).items():
            print(f"  {setting:16s} {gap:9.2e}  {'the same' if gap < 1e-9 else 'not the same'}")
    return ok


@checker("answer")
def check_grouping(answer) -> bool:
    """Notebook 05: ``answer``, the settings (a list or set of ``"row"``, ``"row + mass_norm"``,
    ``"column"``) in which StoQ one support at a time gives another X~_Q than StoQ over all K*T_S
    snippets at once; the checker measures it with :func:`fscal_edu.solutions.stoq_per_support`."""
    from .solutions import stoq_per_support
    settings = tuple(grouping_settings())
    given = {answer} if isinstance(answer, str) else set(answer)
    odd = sorted(a for a in given if a not in settings)
    if odd:
        print(f"answer: {', '.join(map(repr, odd))} is none of {', '.join(map(repr, settings))}")
        return False
    differs = {s for s, diff in grouping_table(stoq_per_support).items() if diff > 1e-9}
    if given == differs:
        print("answer: Correct!")
        return True
    print(f"answer: not quite: the grouping changes X~_Q in {sorted(differs)}, you said {sorted(given)}")
    for s in settings:
        if (s in given) != (s in differs):
            print(f"  -> {mistakes.GROUPING[s]}")
    return False

