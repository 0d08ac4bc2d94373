"""The configuration: one ``Config`` made of six sections, and named presets.

The sections follow the notebooks: ``data`` (what one episode looks like), ``model`` (the network's
sizes), ``switches`` (the choices we made and the ablations), ``loss``, ``optim`` (the training
loop) and ``post`` (post-processing). Presets: ``tiny`` for tests, ``quick`` for CPU, ``full`` for GPU.

A field is read as ``cfg.model.d``. Overrides may name a field flat (``d=32``: each name belongs
to exactly one section) or with its section (``model__d=32`` or ``"model.d"``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _at_least(section, name: str, fields, minimum: int) -> None:
    """Counts of a section must be integers >= ``minimum`` (``shots=0`` or ``T=0`` would fail later,
    cryptically)."""
    from .utils import FscalError, where
    for f in fields:
        value = getattr(section, f)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise FscalError(f"{where(field=f'{name}.{f}')}: must be an integer >= {minimum}, got {value!r}")


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

    def __post_init__(self):
        _at_least(self, "data", ("feature_dim", "T", "T_S", "shots"), 1)
        _at_least(self, "data", ("window_stride",), 0)
        from .utils import FscalError, where
        if self.query_mode not in ("resample", "window"):
            raise FscalError(f"{where(field='data.query_mode')}: must be 'resample' or 'window', got {self.query_mode!r}")
        if not 0.0 <= self.window_neg_frac <= 1.0:
            raise FscalError(f"{where(field='data.window_neg_frac')}: must be in [0, 1], got {self.window_neg_frac!r}")

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
    granularities: tuple = (2, 4)  # Dynamics-CA kernel = stride sizes; () turns the stage off
    dropout: float = 0.0


@dataclass
class SwitchConfig:
    qtos: bool = True              # stage 1 on
    stoq: bool = True              # stage 3 on
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
        from .utils import FscalError, where
        for name, allowed in (("support_summary", ("aligned", "mean", "pooled")),
                              ("added_term", ("kept", "centred", "gated", "null")),
                              ("softmax_axis", ("row", "column"))):
            if getattr(self, name) not in allowed:
                raise FscalError(f"{where(field='switches.' + name)}: must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        # the one place of the rule "blind implies no relation module": nothing to relate to
        if self.blind and self.relation:
            self.relation = False


@dataclass
class LossConfig:
    pos_iou: float = 0.5           # tIoU at or above which a proposal is positive
    neg_iou: float = 0.3           # tIoU below which it is negative (in between: ignored)
    lambda_reg: float = 1.0        # weight of the boundary regression
    lambda_rel: float = 0.5        # weight of the relation module
    rel_neg_frac: float = 0.1      # share of negative proposals the relation loss samples


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
        _at_least(self, "optim", ("steps", "batch_size", "eval_every", "val_episodes"), 1)
        _at_least(self, "optim", ("warmup",), 0)


@dataclass
class PostConfig:
    soft_nms_sigma: float = 0.5    # Gaussian Soft-NMS width
    top_k: int = 100               # detections kept per episode
    score_floor: float = 1e-3      # detections below this score are dropped


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

    def replace(self, **changes) -> "Config":
        """A copy with fields changed: flat names (``steps=40``), ``section__field`` or ``"section.field"``."""
        by_section = {}
        for key, value in changes.items():
            if key == "preset" or key in SECTIONS:
                by_section.setdefault(None, {})[key] = value
                continue
            section, name = _locate(key)
            by_section.setdefault(section, {})[name] = _tuples(value)
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
        unknown = [k for k in d if k not in SECTIONS and k != "preset" and k not in SECTION_OF]
        if unknown:
            raise ValueError(f"config: unknown field(s) {sorted(unknown)}")
        flat = {k: v for k, v in d.items() if k not in SECTIONS}
        for section in SECTIONS:
            if section in d:
                if not isinstance(d[section], dict):
                    raise ValueError(f"config: section {section!r} must be an object")
                flat |= {f"{section}__{k}": v for k, v in d[section].items()}
        return cls().replace(**flat)


def _locate(key: str) -> tuple[str, str]:
    """``"d"``, ``"model__d"`` or ``"model.d"`` -> ``("model", "d")``; unknown names raise ``ValueError``."""
    for sep in ("__", "."):
        if sep in key:
            section, name = key.split(sep, 1)
            if section in SECTIONS and name in {f.name for f in dataclasses.fields(SECTIONS[section])}:
                return section, name
            raise ValueError(f"config: unknown field {key!r}")
    if key not in SECTION_OF:
        raise ValueError(f"config: unknown field {key!r}")
    return SECTION_OF[key], key


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


PRESETS = {
    "tiny": dict(d=16, T=32, T_S=8, embed_layers=1, anchor_lengths=(4, 8, 16), steps=20,
                 batch_size=4, eval_every=10, val_episodes=8, warmup=2, preset="tiny"),
    "quick": dict(steps=700, eval_every=175, preset="quick"),
    "full": dict(d=256, embed_layers=3, steps=6000, batch_size=32, lr=5e-4, warmup=300,
                 eval_every=500, val_episodes=300, preset="full"),
}


# The ablation switches of ``fscal-edu train --ablate NAME``: each one names the fields it changes.
ABLATIONS = {
    "no_qtos": dict(qtos=False),                 # stage 1 off
    "no_dynamics": dict(granularities=()),       # stage 2 off
    "no_stoq": dict(stoq=False),                 # stage 3 off
    "no_stages": dict(qtos=False, granularities=(), stoq=False),
    "joint": dict(joint=True),                   # stage 1 sees all supports as one clip
    "own_only": dict(own_only=True),             # stage 2 without the "to-all" part
    "column": dict(softmax_axis="column"),       # softmax down each column in every stage
    "no_relation": dict(relation=False),         # no auxiliary relation module in training
    "mean_summary": dict(support_summary="mean"),  # bag-of-features support summary
    "blind": dict(blind=True),                   # the support-blind control (implies no relation)
}


def get_config(preset: str = "quick", ablate=(), **overrides) -> Config:
    """A named preset, with ablations (names of ``ABLATIONS``) and any field overridden by keyword."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = Config().replace(**PRESETS[preset])
    for name in ([ablate] if isinstance(ablate, str) else ablate):
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        cfg = cfg.replace(**ABLATIONS[name])
    return cfg.replace(**overrides)
