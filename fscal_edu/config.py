"""One config dataclass with named presets (``tiny`` for tests, ``quick`` for CPU, ``full`` for GPU)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Config:
    # --- input -------------------------------------------------------------------------------
    feature_dim: int = 64          # C_in, width of the per-snippet features on disk
    T: int = 128                   # query snippets after resampling
    T_S: int = 16                  # snippets per support clip after resampling
    # --- model -------------------------------------------------------------------------------
    d: int = 64                    # width of every token after the temporal embedding
    embed_layers: int = 2          # Conv1d layers of the shared temporal embedding
    anchor_lengths: tuple = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96)
    anchor_stride_frac: float = 0.25   # stride = max(1, length * frac)
    roi_inside: int = 8            # RoIAlign points inside a proposal
    roi_context: int = 2           # RoIAlign points in each side's context
    roi_context_frac: float = 0.25  # context width on each side, as a share of the length
    granularities: tuple = (2, 4)  # Dynamics-CA kernel = stride sizes; () turns the stage off
    # --- switches (choices of DESIGN.md, and the ablations) ----------------------------------
    qtos: bool = True              # stage 1 on
    stoq: bool = True              # stage 3 on
    joint: bool = False            # stage 1 treats all supports as one clip (ablation)
    own_only: bool = False         # stage 2: each support attends to its own coarse tokens only
    softmax_axis: str = "row"      # "row" (the paper) or "column" (ablation)
    temperature: bool = True       # scale Lambda by 1/sqrt(d)
    mass_norm: bool = True         # rescale the added term by N_b / N_a
    layernorm: bool = True         # LayerNorm after each residual
    support_summary: str = "aligned"  # "aligned" (ordered, like a proposal) or "mean" (bag)
    blind: bool = False            # control: no stage and no head ever sees the supports
    relation: bool = True          # auxiliary relation module in training
    # --- losses ------------------------------------------------------------------------------
    pos_iou: float = 0.5
    neg_iou: float = 0.3
    lambda_reg: float = 1.0
    lambda_rel: float = 0.5
    rel_neg_frac: float = 0.1      # share of negative proposals the relation loss samples
    # --- training ----------------------------------------------------------------------------
    shots: int = 5
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 50
    grad_clip: float = 1.0
    eval_every: int = 200
    val_episodes: int = 100
    dropout: float = 0.0
    # --- post-processing ---------------------------------------------------------------------
    soft_nms_sigma: float = 0.5
    top_k: int = 100
    score_floor: float = 1e-3
    preset: str = "quick"

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown field(s) {sorted(unknown)}")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**d)


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
    "blind": dict(blind=True, relation=False),   # the support-blind control
}


def get_config(preset: str = "quick", ablate=(), **overrides) -> Config:
    """A named preset, with ablations (names of ``ABLATIONS``) and any field overridden by keyword."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = Config(**PRESETS[preset])
    for name in ([ablate] if isinstance(ablate, str) else ablate):
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        cfg = cfg.replace(**ABLATIONS[name])
    return cfg.replace(**overrides)
