"""The configuration: one ``Config`` made of six sections, and named presets.

The sections follow the notebooks: ``data`` (what one episode looks like), ``model`` (the network's
sizes), ``switches`` (the choices we made and the ablations), ``loss``, ``optim`` (the training
loop) and ``post`` (post-processing). Presets: ``tiny`` for tests, ``quick`` for CPU, ``full`` for GPU.

A field is read as ``cfg.model.d``. Overrides may name a field flat (``d=32``: each name belongs
to exactly one section) or with its section (``model__d=32`` or ``"model.d"``).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .utils import FscalError, check_int, check_number, where


# Each field's type and range, checked when a section is built (``get_config``, ``replace``,
# ``from_dict``, a checkpoint's config before its model is built): bad values fail at once, with
# the field's name, never later and cryptically. ("int", n): an integer >= n; ("num", lo, hi): a
# finite number in [lo, hi] (None: open); ("pos",): a finite number > 0; ("bool",); ("choice", a,
# b, ...); ("ints", n): a non-empty tuple of integers >= n.
RULES = {
    "data": dict(feature_dim=("int", 1), T=("int", 1), T_S=("int", 1), shots=("int", 1),
                 query_mode=("choice", "resample", "window"), window_stride=("int", 0),
                 window_neg_frac=("num", 0.0, 1.0), window_pool=("int", 1), window_merge=("bool",),
                 resample_average=("bool",)),
    "model": dict(d=("int", 1), embed_layers=("int", 1), anchor_lengths=("ints", 1),
                  anchor_stride_frac=("num", 1e-6, 1.0), roi_inside=("int", 1), roi_context=("int", 0),
                  roi_context_frac=("num", 0.0, None), granularities=("ints", 1), dropout=("num", 0.0, 0.99)),
    "switches": dict(joint=("bool",), own_only=("bool",), softmax_axis=("choice", "row", "column"),
                     temperature=("bool",), mass_norm=("bool",), layernorm=("bool",),
                     support_summary=("choice", "aligned", "mean", "pooled"),
                     added_term=("choice", "kept", "centred", "gated", "null"), blind=("bool",),
                     relation=("bool",), twin_negatives=("bool",)),
    "loss": dict(pos_iou=("num", 1e-6, 1.0), neg_iou=("num", 0.0, 1.0), lambda_reg=("num", 0.0, None),
                 lambda_rel=("num", 0.0, None), rel_neg_frac=("num", 0.0, 1.0)),
    "optim": dict(steps=("int", 1), batch_size=("int", 1), lr=("pos",), weight_decay=("num", 0.0, None),
                  warmup=("int", 0), grad_clip=("pos",), eval_every=("int", 1), val_episodes=("int", 1)),
    "post": dict(soft_nms_sigma=("pos",), top_k=("int", 1), score_floor=("num", 0.0, 1.0)),
}


def _check_section(section, name: str) -> None:
    """Check every field of ``section`` against :data:`RULES` (its type and range)."""
    for f, (kind, *args) in RULES[name].items():
        value, field_name = getattr(section, f), f"{name}.{f}"
        if kind == "int":
            check_int(value, at_least=args[0], field=field_name)
        elif kind == "num":
            check_number(value, low=args[0], high=args[1], field=field_name)
        elif kind == "pos" and check_number(value, low=0.0, field=field_name) == 0.0:
            raise FscalError(f"{where(field=field_name)}: must be a number > 0, got {value!r}")
        elif kind == "bool" and not isinstance(value, bool):
            raise FscalError(f"{where(field=field_name)}: must be true or false, got {value!r}")
        elif kind == "choice" and (not isinstance(value, str) or value not in args):
            raise FscalError(f"{where(field=field_name)}: must be one of {args}, got {value!r}")
        elif kind == "ints":
            if not isinstance(value, tuple) or not value:
                raise FscalError(f"{where(field=field_name)}: must be a non-empty list of integers, got {value!r}")
            for v in value:
                check_int(v, at_least=args[0], field=field_name)


@dataclass
class DataConfig:
    feature_dim: int = 64          # C_in, width of the per-snippet features on disk
    T: int = 128                   # query snippets after resampling
    T_S: int = 16                  # snippets per support clip after resampling
    shots: int = 5                 # K, support clips per episode
    # How a query becomes T snippets. "resample": the whole video resampled to T (features resized
    # per video, ActivityNet style). "window": T snippets of the original feature rate, windows
    # every ``window_stride`` snippets (0: T // 2) over a long video, the last one ending at the
    # video's end (a video shorter than T: one window, padded and masked)
    # (features at a fixed stride, THUMOS14 style: short instances survive).
    query_mode: str = "resample"
    window_stride: int = 0
    window_neg_frac: float = 0.1   # training: share of windows drawn anywhere (may hold no instance)
    # Long instances (data/sampling.py: query_mode_rule). window_pool: windows read at a coarser rate,
    # each query row the mean of that many feature rows (an instance of L rows takes L / pool).
    # window_merge: at inference, detections that meet or overlap at a window edge are merged into
    # one segment before Soft-NMS (an instance longer than a window is found whole)
    window_pool: int = 1
    window_merge: bool = False
    # resample_average: a query resampled to T rows takes each row as the mean of the feature rows in
    # its bin (adaptive average pooling) instead of linear interpolation between two rows
    resample_average: bool = False

    def __post_init__(self):
        _check_section(self, "data")

    @property
    def stride(self) -> int:
        """Snippets between the starts of two query windows (``window_stride``, or T // 2)."""
        return self.window_stride or max(1, self.T // 2)


@dataclass
class ModelConfig:
    d: int = 64                    # width of every token after the temporal embedding
    embed_layers: int = 2          # Conv1d layers of the shared temporal embedding
    anchor_lengths: tuple = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96)
    anchor_stride_frac: float = 0.25   # stride = max(1, length * frac)
    roi_inside: int = 8            # RoIAlign points inside a proposal
    roi_context: int = 2           # RoIAlign points in each side's context
    roi_context_frac: float = 0.25  # context width on each side, as a share of the length
    granularities: tuple = (2, 4)  # Dynamics-CA kernel = stride sizes (each divides T_S)
    dropout: float = 0.0

    def __post_init__(self):
        _check_section(self, "model")


@dataclass
class SwitchConfig:
    off: tuple = ()                # stages switched off, names from fscal_edu.stages ("qtos", "dynamics", "stoq")
    joint: bool = False            # stage 1 treats all supports as one clip (ablation)
    own_only: bool = False         # stage 2: each support attends to its own coarse tokens only
    softmax_axis: str = "row"      # "row" (the paper) or "column" (ablation)
    temperature: bool = True       # scale Lambda by 1/sqrt(d)
    mass_norm: bool = True         # rescale the added term by N_b / N_a
    layernorm: bool = True         # LayerNorm after each residual
    support_summary: str = "aligned"  # "aligned" (ordered, like a proposal), "mean" (bag) or "pooled" (attention)
    added_term: str = "kept"       # each stage's added term: "kept" (paper), "centred", "gated", "null"
    blind: bool = False            # control: no stage and no head ever sees the supports
    relation: bool = True          # auxiliary relation module in training (always off when blind)
    twin_negatives: bool = False   # training: episode 2i+1 draws the twin of episode 2i's class

    def __post_init__(self):
        _check_section(self, "switches")
        from . import stages
        unknown = [n for n in self.off if n not in stages.names()]
        if not isinstance(self.off, tuple) or unknown:
            raise FscalError(f"{where(field='switches.off')}: must be a tuple of stage names among "
                             f"{list(stages.names())}, got {self.off!r}")
        self.off = tuple(n for n in stages.names() if n in self.off)       # running order, no repeats
        # the one place of the rule "blind implies no relation module": nothing to relate to
        if self.blind and self.relation:
            self.relation = False

    def on(self, stage: str) -> bool:
        """Whether the model builds and runs ``stage``: not switched off, and not the blind control."""
        return stage not in self.off and not self.blind


@dataclass
class LossConfig:
    pos_iou: float = 0.5           # tIoU at or above which a proposal is positive
    neg_iou: float = 0.3           # tIoU below which it is negative (in between: ignored)
    lambda_reg: float = 1.0        # weight of the boundary regression
    lambda_rel: float = 0.5        # weight of the relation module
    rel_neg_frac: float = 0.1      # share of negative proposals the relation loss samples

    def __post_init__(self):
        _check_section(self, "loss")
        if self.neg_iou > self.pos_iou:
                raise FscalError(f"{where(field='loss.neg_iou')}: must not exceed loss.pos_iou = {self.pos_iou}, "
                             f"got {self.neg_iou}")


@dataclass
class OptimConfig:
    steps: int = 600               # optimiser steps (batches of episodes)
    batch_size: int = 16           # episodes per batch
    lr: float = 1e-3               # AdamW's peak learning rate
    weight_decay: float = 1e-2
    warmup: int = 50               # linear warm-up steps, then cosine decay
    grad_clip: float = 1.0         # max gradient norm
    eval_every: int = 200          # validate (and checkpoint) every that many steps
    val_episodes: int = 100        # fixed val episodes per validation

    def __post_init__(self):
        _check_section(self, "optim")


@dataclass
class PostConfig:
    soft_nms_sigma: float = 0.5    # Gaussian Soft-NMS width
    top_k: int = 100               # detections kept per episode
    score_floor: float = 1e-3      # detections below this score are dropped

    def __post_init__(self):
        _check_section(self, "post")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "switches": SwitchConfig, "loss": LossConfig,
            "optim": OptimConfig, "post": PostConfig}
SECTION_OF = {f.name: s for s, c in SECTIONS.items() for f in dataclasses.fields(c)}   # flat name -> section


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    switches: SwitchConfig = field(default_factory=SwitchConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    post: PostConfig = field(default_factory=PostConfig)
    preset: str = "quick"          # the preset this config started from

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise FscalError(f"{where(field=name)}: must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.preset, str):
            raise FscalError(f"{where(field='preset')}: must be a preset's name, got {self.preset!r}")
        if self.switches.on("dynamics"):
            for k in self.model.granularities:
                if self.data.T_S % k:
                    raise FscalError(f"{where(field='model.granularities')}: k={k} does not divide "
                                     f"T_S={self.data.T_S}; choose divisors of the support length")
        need, have = estimated_memory(self), physical_memory()
        if have and need > have:
            raise FscalError(f"{where(field='data.T')}: one batch of {self.optim.batch_size} episodes with "
                             f"T = {self.data.T} needs about {need / 2**30:.0f} GiB (estimated from the config), "
                             f"more than this machine's {have / 2**30:.0f} GiB")

    def replace(self, **changes) -> "Config":
        """A copy with fields changed: flat names (``steps=40``), ``section__field`` or ``"section.field"``."""
        by_section, toggles = {}, {}
        for key, value in changes.items():
            if key == "preset" or key in SECTIONS:
                by_section.setdefault(None, {})[key] = value
                continue
            stage = _stage_switch(key, value)
            if stage is not None:           # qtos=False: a stage's name switches it (sets switches.off)
                toggles[stage] = value
                continue
            section, name = _locate(key)
            by_section.setdefault(section, {})[name] = _tuples(value)
        if toggles:
            off = by_section.setdefault("switches", {}).get("off", self.switches.off)
            by_section["switches"]["off"] = (tuple(n for n in off if n not in toggles)
                                             + tuple(n for n, on in toggles.items() if not on))
        top = by_section.pop(None, {})
        # every section is copied, so that two configs never share a section object
        sections = {s: dataclasses.replace(getattr(self, s), **by_section.get(s, {})) for s in SECTIONS}
        return dataclasses.replace(self, **(sections | top))

    def to_dict(self) -> dict:
        """The nested form: ``{"data": {...}, "model": {...}, ..., "preset": ...}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Read the nested form of :meth:`to_dict`, or the flat form of older checkpoints and runs."""
        from . import stages
        unknown = [k for k in d if k not in SECTIONS and k != "preset" and k not in SECTION_OF
                   and k not in stages.names()]
        if unknown:
            raise FscalError(f"{where(field='config')}: unknown field(s) {sorted(unknown)}")
        flat = {k: v for k, v in d.items() if k not in SECTIONS}
        for section in SECTIONS:
            if section in d:
                if not isinstance(d[section], dict):
                    raise FscalError(f"{where(field=section)}: a config section must be an object, "
                                     f"got {type(d[section]).__name__}")
                flat |= {f"{section}__{k}": v for k, v in d[section].items()}
        # older files switched Dynamics-CA off with an empty width: read that as dynamics=False
        # (an empty list only: {}, "", 0, null or false are wrong values, refused by RULES)
        for key in ("granularities", "model__granularities"):
            if key in flat and isinstance(flat[key], (list, tuple)) and not flat[key]:
                del flat[key]
                flat["dynamics"] = False
        return cls().replace(**flat)


def _locate(key: str) -> tuple[str, str]:
    """``"d"``, ``"model__d"`` or ``"model.d"`` -> ``("model", "d")``; unknown names raise ``FscalError``."""
    for sep in ("__", "."):
        if sep in key:
            section, name = key.split(sep, 1)
            if section in SECTIONS and name in {f.name for f in dataclasses.fields(SECTIONS[section])}:
                return section, name
            raise FscalError(f"{where(field=key)}: unknown field; see Config for the names")
    if key not in SECTION_OF:
        raise FscalError(f"{where(field=key)}: unknown field; see Config for the names")
    return SECTION_OF[key], key


def anchor_count(T: int, lengths, stride_frac: float) -> int:
    """N_Q, the number of anchors ``proposals.make_anchors`` lays on ``T`` snippets (no tensor made)."""
    return sum((T - L) // max(1, round(L * stride_frac)) + 1 for L in lengths if L <= T)


def estimated_memory(cfg: "Config") -> int:
    """Bytes of the largest tensors of one training batch, roughly (float32): the stages' attention
    ``(B, K, N_Q, T_S)`` a few times over (forward and backward), the proposal tokens through the MLP
    and the head ``(B, N_Q, ~16 d)``, and the RoIAlign operator (``N_Q`` segments of ``P`` points).
    Used to refuse a config that cannot fit before anything is allocated."""
    m, data = cfg.model, cfg.data
    N_Q = anchor_count(data.T, m.anchor_lengths, m.anchor_stride_frac)
    B, K, P = cfg.optim.batch_size, data.shots, m.roi_inside + 2 * m.roi_context
    return 4 * (B * (6 * K * N_Q * data.T_S + 16 * N_Q * m.d + 4 * data.T * m.d) + 3 * N_Q * P)


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _stage_switch(key: str, value) -> str | None:
    """``qtos=False`` (or ``switches__qtos``, ``"switches.qtos"``): the stage's name if ``key`` names a
    registered stage with a boolean, else None."""
    from . import stages
    name = key.split("__", 1)[1] if key.startswith("switches__") else key
    name = name.split(".", 1)[1] if name.startswith("switches.") else name
    if name not in stages.names():
        return None
    if not isinstance(value, bool):
        raise FscalError(f"{where(field='switches.' + name)}: a stage is switched by True or False, got {value!r}")
    return name


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


PRESETS = {
    "tiny": dict(d=16, T=32, T_S=8, embed_layers=1, anchor_lengths=(4, 8, 16), steps=20,
                 batch_size=4, eval_every=10, val_episodes=8, warmup=2, preset="tiny"),
    "quick": dict(steps=700, eval_every=175, preset="quick"),
    "full": dict(d=256, embed_layers=3, steps=6000, batch_size=32, lr=5e-4, warmup=300,
                 eval_every=500, val_episodes=300, preset="full"),
}


class _Ablations(Mapping):
    """The ablation switches of ``fscal-edu train --ablate NAME``, each naming the fields it changes:
    ``no_<stage>`` for every registered stage (``fscal_edu.stages``), ``no_stages`` (all of them),
    then the switches of :data:`SWITCH_ABLATIONS`. Read when used, so a stage registered later has
    its ablation too."""

    def _all(self) -> dict:
        from . import stages
        by_stage = {f"no_{n}": dict(off=(n,)) for n in stages.names()}             # one stage off
        return by_stage | {"no_stages": dict(off=stages.names())} | SWITCH_ABLATIONS

    def __getitem__(self, name):
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __repr__(self):
        return f"ABLATIONS({self._all()!r})"


SWITCH_ABLATIONS = {
    "joint": dict(joint=True),                   # stage 1 sees all supports as one clip
    "own_only": dict(own_only=True),             # stage 2 without the "to-all" part
    "column": dict(softmax_axis="column"),       # softmax down each column in every stage
    "no_relation": dict(relation=False),         # no auxiliary relation module in training
    "mean_summary": dict(support_summary="mean"),  # bag-of-features support summary
    "blind": dict(blind=True),                   # the support-blind control (implies no relation)
}
ABLATIONS = _Ablations()


def get_config(preset: str = "quick", ablate=(), **overrides) -> Config:
    """A named preset, with ablations (names of ``ABLATIONS``) and any field overridden by keyword."""
    if preset not in PRESETS:
        raise FscalError(f"{where(field='preset')}: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = Config().replace(**PRESETS[preset])
    for name in ([ablate] if isinstance(ablate, str) else ablate):
        if name not in ABLATIONS:
            raise FscalError(f"{where(field='ablate')}: unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        changes = dict(ABLATIONS[name])
        if "off" in changes:              # ablations add up: no_qtos then no_stoq turns both off
            changes["off"] = cfg.switches.off + tuple(changes["off"])
        cfg = cfg.replace(**changes)
    return cfg.replace(**overrides)
