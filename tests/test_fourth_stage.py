"""How a new cross-attention stage plugs in: a toy fourth stage, defined in this file alone.

The stage is one class on top of ``attention.CrossAttentionStage`` and one record given to
``stages.register``. Nothing else in the package is edited, and the stage appears by itself in the
model (built, run, trained), the switches (``no_toy``, and inside ``no_stages``), the skips at
inference (``forward(skip=...)``, ``fscal-edu evaluate --skip``), the probes and the weight
drift, the model diagram, and the attention explorer's stage dropdown.
"""
from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

from fscal_edu import stages
from fscal_edu.attention import CrossAttentionStage, StageAttention
from fscal_edu.cli import build_parser
from fscal_edu.config import ABLATIONS, get_config
from fscal_edu.data.episodes import World
from fscal_edu.diagnostics import stage_probes, weight_drift
from fscal_edu.model import FSCAL

from conftest import DATA


class ToyCA(CrossAttentionStage):
    """A toy stage 4: every support snippet attends to the proposals once more (a second StoQ,
    with a weight of its own)."""

    def __init__(self, d: int, **options):
        super().__init__(d, **options)
        self.W_toy = nn.Parameter(torch.eye(d))

    def forward(self, X_S, X_Q, mask_Q=None):
        B, K, T_S, d = X_S.shape
        # all supports as one source                                               (B, K*T_S, d)
        X_S_all = rearrange(X_S, "b k t d -> b (k t) d")
        # X~_Q = X_S A_{S->Q} + X_Q                                                 (B, N_Q, d)
        X_Q_tilde, A = self.attend(X_S_all, X_Q, self.W_toy, mask_b=mask_Q)
        return X_Q_tilde, StageAttention("toy", A, K, T_S)


TOY = stages.Stage(
    name="toy", title="Toy CA", short="Toy", source="all support snippets", target="the query's proposals",
    inputs=("X_S", "X_Q", "mask_Q"), output="X_Q", weight="W_toy", fixed_starts=(),
    layout="support_to_query", equation="(none: a toy)",
    build=lambda cfg: ToyCA(cfg.model.d, **stages.options(cfg)))


@pytest.fixture(scope="module", autouse=True)
def toy_stage():
    stages.register(TOY)
    try:
        yield TOY
    finally:
        stages.unregister("toy")


def batch(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    C, T, T_S, K = cfg.data.feature_dim, cfg.data.T, cfg.data.T_S, cfg.data.shots
    return torch.randn(B, T, C, generator=g), torch.randn(B, K, T_S, C, generator=g)


def test_the_toy_runs_fourth_and_trains():
    assert stages.names() == ("qtos", "dynamics", "stoq", "toy")
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = FSCAL(cfg)
    assert isinstance(model.toy, ToyCA) and "toy.W_toy" in model.state_dict()
    query, support = batch(cfg)
    out = model(query, support)
    assert set(out.attention) == {"qtos", "dynamics", "stoq", "toy"}
    assert out.attention["toy"].A.shape == (2, cfg.data.shots * cfg.data.T_S, len(model.anchors))
    out.logits.sum().backward()
    assert model.toy.W_toy.grad is not None and model.toy.W_toy.grad.abs().sum() > 0


def test_the_toy_has_its_ablation_and_is_inside_no_stages():
    assert ABLATIONS["no_toy"] == {"off": ("toy",)}
    assert "toy" in ABLATIONS["no_stages"]["off"]
    assert FSCAL(get_config("tiny", ablate="no_toy")).toy is None
    assert FSCAL(get_config("tiny", toy=False)).toy is None
    none = FSCAL(get_config("tiny", ablate="no_stages"))
    assert all(getattr(none, n) is None for n in stages.names())
    assert FSCAL(get_config("tiny", ablate="blind")).toy is None


def test_the_toy_can_be_skipped_at_inference():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = FSCAL(cfg).eval()
    query, support = batch(cfg)
    with torch.no_grad():
        full, skipped = model(query, support), model(query, support, skip="toy")
        with torch.no_grad():
            model.toy.W_toy.mul_(3.0)            # a toy that attends sharply changes the output
        sharper = model(query, support)
    assert "toy" not in skipped.attention and not torch.allclose(full.logits, sharper.logits)
    assert not torch.allclose(sharper.logits, skipped.logits)


def test_the_command_line_knows_the_toy():
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--data", str(DATA / "anet_like"), "--checkpoint", "x.pt",
                              "--skip", "stoq,toy"])
    assert args.skip == ("stoq", "toy")
    args = parser.parse_args(["train", "--data", str(DATA / "anet_like"), "--out", "runs/x", "--ablate", "no_toy"])
    assert "no_toy" in (args.ablate if isinstance(args.ablate, (list, tuple)) else [args.ablate])
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--data", str(DATA / "anet_like"), "--checkpoint", "x.pt", "--skip", "fifth"])


def test_the_toy_is_probed_and_its_weight_drift_measured():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = FSCAL(cfg).eval()
    query, support = batch(cfg)
    probes = stage_probes(model, query, support)
    assert set(probes) == {"qtos", "dynamics", "stoq", "toy"}
    assert 0 < probes["toy"]["relative_size"] and 0 <= probes["toy"]["entropy"] <= 1
    assert weight_drift(model)["toy"] == {"W_toy": 0.0}
    with torch.no_grad():
        model.toy.W_toy.mul_(1.5)                                   # ||1.5 I - I|| / ||I|| = 0.5
    assert weight_drift(model)["toy"]["W_toy"] == pytest.approx(0.5)


def test_the_reports_name_the_toy():
    from fscal_edu import report, report_stages
    assert report.stage_variants()[-1] == "no_toy"
    what, hypothesis, probe = report.hypotheses()["no_toy"]
    assert what == "Toy CA (stage 4)" and probe == "skip toy" and "all support snippets" in hypothesis
    assert report.hypotheses()["no_stages"][0] == "all four stages"
    assert report_stages.skip_labels() == {"qtos": "QtoS", "dynamics": "Dynamics-CA", "stoq": "StoQ", "toy": "Toy",
                                           "qtos,dynamics,stoq,toy": "all four"}
    assert report_stages.stage_title("toy") == "Toy CA"


def test_the_model_diagram_draws_the_toy_after_stoq():
    from fscal_edu.viz.training import model_diagram_figure, model_edges, model_nodes
    nodes, edges = model_nodes(), model_edges()
    assert nodes["toy"] == (nodes["stoq"][0] + 1.25, 2.0, "stage 4<br>Toy CA")     # rewrites X_Q: top row
    assert {("dynamics", "toy"), ("stoq", "toy"), ("toy", "head"), ("toy", "relation")} <= set(edges)
    assert ("stoq", "head") not in edges and nodes["head"][0] > nodes["toy"][0]
    fig = model_diagram_figure({"toy": "X~_Q (1, 361, 64)"})
    texts = {a.name: a.text for a in fig.layout.annotations if not a.showarrow}
    assert "Toy CA" in texts["toy"] and "X~_Q (1, 361, 64)" in texts["toy"]


def test_the_explorer_offers_the_toy_and_draws_it(monkeypatch):
    pytest.importorskip("ipywidgets")
    import plotly.graph_objects as go

    from fscal_edu.widgets import model_attention_explorer
    shown = []                                            # the figures each redraw shows
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    world = World(DATA / "anet_like")
    torch.manual_seed(0)
    model = FSCAL(get_config("tiny", feature_dim=world.meta.feature_dim)).eval()
    episodes = world.episodes("test", 5)[:2]
    box = model_attention_explorer({"toy model": model}, world, episodes)
    controls = [c for row in box.children[:2] for c in row.children]
    stage = next(c for c in controls if c.description == "stage")
    support = next(c for c in controls if c.description == "support")
    assert ("Toy CA", "toy") in [tuple(o) for o in stage.options]
    assert ("all (StoQ, Toy)", None) in [tuple(o) for o in support.options]    # its layout's "all"
    stage.value = "toy"                                   # redraws: the toy's attention and the detections
    attention, detections = shown[-2:]
    assert attention.layout.title.text == "toy model: Toy CA: support 0"
    heatmap = next(t for t in attention.data if isinstance(t, go.Heatmap))
    T_S = model.cfg.data.T_S
    assert len(heatmap.y) == T_S and len(heatmap.x) == len(model.anchors)     # its snippets -> the proposals
    assert "detections" in detections.layout.title.text
    support.value = None                                  # all supports: every support's snippets
    heatmap = next(t for t in shown[-2].data if isinstance(t, go.Heatmap))
    assert len(heatmap.y) == model.cfg.data.shots * T_S
