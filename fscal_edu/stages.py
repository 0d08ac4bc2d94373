"""The stage registry: one record for each cross-attention stage, and everything else reads it.

The model builds and runs its stages from this list (``FSCAL.__init__`` and ``forward``), and so do
the switches (``cfg.switches.off``; ``ABLATIONS``' ``no_<name>`` and ``no_stages``), the skips at
inference (``forward(skip=...)``, ``fscal-edu evaluate --skip``), the probes, the figures, the
explorer's stage dropdown and the reports. A stage is *one* :class:`Stage` record:

    stage 1  qtos      QtoS Context-CA   proposals X_Q            -> each support's snippets  X_S  -> X~_S
    stage 2  dynamics  Dynamics-CA       coarse tokens of all supports -> each support's snippets  X~_S -> Y~_S
    stage 3  stoq      StoQ Context-CA   all support snippets     -> the proposals                 X_Q  -> X~_Q

The three run in that order over three named tensors, ``X_Q (B, N_Q, d)``, ``X_S (B, K, T_S, d)``
and ``mask_Q (B, N_Q)``: each stage reads the ones named in ``inputs`` (in the order its
``forward`` takes them) and rewrites the one named in ``output``. A new stage is one
:func:`register` call; ``tests/test_fourth_stage.py`` adds a toy fourth stage in that test file
alone and follows it into the switches, the skips, the probes, the explorer and training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .attention import DynamicsCA, QtoSContextCA, StoQContextCA
from .utils import FscalError, where

# How a stage's attention matrix ``A`` is laid out (``StageAttention.A``), for the figures
LAYOUTS = {
    "query_to_support": "(B, K, N_Q, T_S): the proposals -> the snippets of each support",
    "coarse_to_support": "(B, K, N_coarse, T_S): coarse tokens of all supports -> the snippets of support l",
    "support_to_query": "(B, K*T_S, N_Q): all support snippets -> the proposals",
}
TOKENS = ("X_Q", "X_S", "mask_Q")       # what the stages read; they rewrite X_Q or X_S


@dataclass(frozen=True)
class Stage:
    """One cross-attention stage: its names, what it attends, and how to build it."""

    name: str              # "qtos": FSCAL attribute, key of out.attention, --skip name, ablation no_<name>
    title: str             # "QtoS Context-CA", in figures and reports
    short: str             # "QtoS", in table columns
    source: str            # the tokens that attend, in plain words
    target: str            # the tokens they attend to
    inputs: tuple          # the tokens its forward takes, in order, among TOKENS
    output: str            # the tokens it rewrites: "X_S" or "X_Q"
    weight: str            # the attribute name of its cross-correlation matrix W ("W_QtoS")
    fixed_starts: tuple    # other parameters with a fixed start (fnmatch patterns such as "w.*.weight"), for weight_drift
    layout: str            # how its attention matrix is laid out, a key of LAYOUTS
    equation: str          # where the paper writes it
    build: Callable        # Config -> nn.Module (``options(cfg)`` gives the shared switches)

    def __post_init__(self):
        if not self.name.isidentifier() or self.name in ("stages", "all"):
            raise FscalError(f"{where(field='stage.name')}: {self.name!r} must be a Python name")
        if self.layout not in LAYOUTS:
            raise FscalError(f"{where(field='stage.layout')}: {self.layout!r} is not one of {list(LAYOUTS)}")
        if self.output not in ("X_Q", "X_S") or any(t not in TOKENS for t in self.inputs):
            raise FscalError(f"{where(field='stage.inputs')}: a stage reads tokens among {TOKENS} "
                             f"and rewrites X_Q or X_S, got {self.inputs} -> {self.output!r}")


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage after those already registered (it runs last); returns it."""
    if stage.name in _REGISTRY:
        raise FscalError(f"{where(field='stage.name')}: a stage named {stage.name!r} is registered already")
    _REGISTRY[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    """Remove a registered stage (a test's toy stage, when the test ends)."""
    get(name)
    del _REGISTRY[name]


def registered() -> tuple[Stage, ...]:
    """Every stage, in the order the model runs them."""
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """The stages' names, in the order the model runs them: ``("qtos", "dynamics", "stoq")``."""
    return tuple(_REGISTRY)


def get(name: str) -> Stage:
    if name not in _REGISTRY:
        raise FscalError(f"{where(field='stage')}: unknown stage {name!r}; choose from {list(_REGISTRY)}")
    return _REGISTRY[name]


def title(name: str) -> str:
    """A stage's title; ``"qtos_joint"`` (QtoS's joint ablation, its own attention layout) included."""
    if name == "qtos_joint":
        return get("qtos").title + " (joint)"
    return get(name).title


def options(cfg) -> dict:
    """The switches every stage shares (softmax axis, temperature, mass norm, LayerNorm, added term)."""
    sw = cfg.switches
    return dict(axis=sw.softmax_axis, temperature=sw.temperature, mass_norm=sw.mass_norm,
                layernorm=sw.layernorm, added=sw.added_term)


# ---------------------------------------------------------------------------------------------
# The paper's three stages
# ---------------------------------------------------------------------------------------------

register(Stage(
    name="qtos", title="QtoS Context-CA", short="QtoS",
    source="the query's proposals", target="the snippets of each support, one support at a time",
    inputs=("X_Q", "X_S", "mask_Q"), output="X_S", weight="W_QtoS", fixed_starts=(), layout="query_to_support",
    equation="eqs. (1)-(2)",
    build=lambda cfg: QtoSContextCA(cfg.model.d, joint=cfg.switches.joint, **options(cfg))))

register(Stage(
    name="dynamics", title="Dynamics-CA", short="Dynamics-CA",
    source="coarse tokens of all supports", target="the snippets of each support",
    inputs=("X_S",), output="X_S", weight="W_StoS", fixed_starts=("w.*.weight",), layout="coarse_to_support",
    equation="eqs. (3)-(5)",
    build=lambda cfg: DynamicsCA(cfg.model.d, tuple(cfg.model.granularities),
                                 own_only=cfg.switches.own_only, **options(cfg))))

register(Stage(
    name="stoq", title="StoQ Context-CA", short="StoQ",
    source="all support snippets at once", target="the query's proposals",
    inputs=("X_S", "X_Q", "mask_Q"), output="X_Q", weight="W_StoQ", fixed_starts=(), layout="support_to_query",
    equation="eq. (6)",
    build=lambda cfg: StoQContextCA(cfg.model.d, **options(cfg))))


def modules(model: nn.Module) -> dict[str, nn.Module]:
    """The stages a model has (built, not switched off), by name, in running order."""
    return {s.name: getattr(model, s.name) for s in registered() if getattr(model, s.name, None) is not None}
