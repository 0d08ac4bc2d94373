"""No switch may be silently ignored, and the statistics behind the verdicts are right.

Every ablation of ``config.ABLATIONS`` and every inference-time skip must change what a fixed model
computes on a fixed batch; a skipped stage is the identity (skipping it equals the ablation without
it, with the same weights); the blind control provably ignores the supports; ``fscal_edu.stats``
matches known values of Student's t; and the probes of ``fscal_edu.diagnostics`` measure what
they say.
"""
import itertools
import json
import re
import math
import subprocess
import sys

import pytest
import torch

from fscal_edu.checkpoints import load_model
from fscal_edu.cli import main as cli_main
from fscal_edu.config import ABLATIONS, get_config
from fscal_edu.data.annotations import instances_by_class
from fscal_edu.data.episodes import World
from fscal_edu.diagnostics import (EditedSupports, replace_supports, reverse_snippets, shuffle_snippets,
                                   stage_probes, stoq_added_term, twin_classes, weight_drift)
from fscal_edu.inference import evaluate_model, predict
from fscal_edu.losses import fscal_loss
from fscal_edu.model import FSCAL
from fscal_edu.stats import betainc, holm, t_two_sided_p, welch
from fscal_edu.utils import FscalError
from fscal_edu import stages

from conftest import DATA, ROOT

STAGES = stages.names()     # the paper's three stages (no test in this file registers another)

K = 5        # > 1: at K = 1 `joint` is the full model by construction (see test_joint_is_full_at_one_shot)


def build(ablate=(), shots=K, like=None) -> FSCAL:
    """A tiny model from seed 0; ``like``: take every weight the two models share from that model,
    so that the only difference left is the switch itself."""
    torch.manual_seed(0)
    model = FSCAL(get_config("tiny", ablate=ablate, shots=shots))
    if like is not None:
        missing, _ = model.load_state_dict(like.state_dict(), strict=False)
        assert missing == ([] if "blind" not in ablate else ["blind_s"])
    return model.eval()


def batch(shots=K, seed=1) -> dict:
    cfg = get_config("tiny", shots=shots)
    g = torch.Generator().manual_seed(seed)
    B = 3
    return {"query": torch.randn(B, cfg.data.T, cfg.data.feature_dim, generator=g),
            "support": torch.randn(B, shots, cfg.data.T_S, cfg.data.feature_dim, generator=g),
            "gt": torch.tensor([[[2.0, 9.0], [15.0, 24.0]], [[4.0, 12.0], [0.0, 0.0]], [[20.0, 30.0], [0.0, 0.0]]]),
            "gt_mask": torch.tensor([[True, True], [True, False], [True, False]]),
            "label": torch.tensor([0, 1, 2])}


def outputs(model, b, **kw):
    with torch.no_grad():
        out = model(b["query"], b["support"], **kw)
    return torch.cat([out.logits.flatten(), out.deltas.flatten()])


def differ(a, b) -> bool:
    return float((a - b).abs().max()) > 1e-5


@pytest.fixture(scope="module")
def full():
    return build()


# ---------------------------------------------------------------------------------------------
# Ablations: each one changes the outputs of the same weights
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for n in ABLATIONS if n != "no_relation"))
def test_every_ablation_changes_the_outputs_of_the_same_weights(full, name):
    b = batch()
    assert differ(outputs(build(name, like=full), b), outputs(full, b)), f"ablation {name!r} changes nothing"


def test_no_relation_changes_the_training_loss_not_inference(full):
    """The relation module only trains: inference is the full model's, the loss is not."""
    b, ablated = batch(), build("no_relation", like=full)
    assert not differ(outputs(ablated, b), outputs(full, b))
    losses = []
    for model in (full, ablated):
        model.train()
        torch.manual_seed(0)
        losses.append(fscal_loss(model(b["query"], b["support"]), b, model.cfg.loss))
        model.eval()
    assert "rel" in losses[0] and "rel" not in losses[1]
    assert float(losses[0]["loss"].detach()) != pytest.approx(float(losses[1]["loss"].detach()), abs=1e-6)


def build_with(like, **switches) -> FSCAL:
    """A tiny model with switches changed, every shared weight taken from ``like``."""
    torch.manual_seed(0)
    model = FSCAL(get_config("tiny", shots=K, **switches))
    model.load_state_dict(like.state_dict(), strict=False)
    return model.eval()


@pytest.mark.parametrize("added", ["centred", "gated", "null"])
def test_every_added_term_option_changes_the_outputs(full, added):
    """The switches on the stages' added term: each one computes something else than the
    paper's form with the same weights (the gate opened to 0.5 first: it starts closed)."""
    model = build_with(full, added_term=added)
    if added == "gated":
        stoq = model.stoq            # a closed gate: the stage adds nothing (only its LayerNorm acts)
        Y_S, X_Q = torch.randn(2, K, 8, stoq.d), torch.randn(2, 9, stoq.d)
        assert torch.allclose(stoq(Y_S, X_Q)[0], stoq.norm(X_Q), atol=1e-6)
        for stage in STAGES:
            getattr(model, stage).gate.data.fill_(0.5)
    assert differ(outputs(model, batch()), outputs(full, batch())), added


def test_centred_added_term_has_no_part_shared_by_all_targets():
    from fscal_edu.attention import StoQContextCA
    torch.manual_seed(0)
    stage = StoQContextCA(8, added="centred", layernorm=False)
    Y_S, X_Q = torch.randn(2, 3, 4, 8), torch.randn(2, 11, 8)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    X_Q_new, _ = stage(Y_S, X_Q, mask)
    added = X_Q_new - X_Q
    assert torch.allclose(added[0].mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(added[1, :7].mean(0), torch.zeros(8), atol=1e-5)   # over the real targets


def test_pooled_summary_starts_as_the_mean_and_learns(full):
    model = build_with(full, support_summary="pooled").requires_grad_(False)
    Y_S = torch.randn(2, K, 8, model.cfg.model.d)
    mean = build_with(full, support_summary="mean").support_summary(Y_S)
    assert torch.allclose(model.support_summary(Y_S), mean, atol=1e-6)   # zero query: uniform weights
    model.summary_query.data.normal_()
    assert differ(model.support_summary(Y_S), mean)
    assert differ(outputs(model, batch()), outputs(full, batch()))


def test_twin_negatives_pair_each_odd_episode_with_the_twin_class(world):
    from fscal_edu.data.episodes import RandomEpisodes
    twin = {t["nodeName"]: t["twin"] for t in world.annotations["taxonomy"]}
    plain = RandomEpisodes(world, "base", 1, 8, 32, 8, seed=0)
    paired = RandomEpisodes(world, "base", 1, 8, 32, 8, seed=0, twin_partners=True)
    labels = [world.labels[paired[i]["label"]] for i in range(8)]
    assert all(labels[i + 1] == twin[labels[i]] for i in range(0, 8, 2))
    assert [paired[i]["label"] for i in range(0, 8, 2)] == [plain[i]["label"] for i in range(0, 8, 2)]
    assert sum(world.labels[plain[i + 1]["label"]] == twin[world.labels[plain[i]["label"]]]
               for i in range(0, 8, 2)) < 4         # without the switch, twins are rare


def test_bad_switch_values_are_errors():
    for field, value in (("added_term", "halved"), ("support_summary", "max")):
        with pytest.raises(FscalError, match=field):
            get_config("tiny", **{field: value})


def test_joint_is_full_at_one_shot():
    """The one case an ablation cannot change anything, by construction: one support is one clip."""
    full1 = build(shots=1)
    b = batch(shots=1)
    assert torch.equal(outputs(build("joint", shots=1, like=full1), b), outputs(full1, b))


# ---------------------------------------------------------------------------------------------
# Inference-time skips
# ---------------------------------------------------------------------------------------------

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(STAGES, r)]


@pytest.mark.parametrize("skip", SUBSETS, ids="+".join)
def test_every_skip_changes_the_outputs(full, skip):
    b = batch()
    assert differ(outputs(full, b, skip=skip), outputs(full, b))


@pytest.mark.parametrize("stage,ablation", [("qtos", "no_qtos"), ("dynamics", "no_dynamics"), ("stoq", "no_stoq")])
def test_a_skipped_stage_is_the_identity(full, stage, ablation):
    """Skipping a stage of trained weights computes what the model without that stage computes."""
    b = batch()
    assert torch.allclose(outputs(full, b, skip=[stage]), outputs(build(ablation, like=full), b), atol=1e-6)
    assert torch.allclose(outputs(full, b, skip=STAGES), outputs(build("no_stages", like=full), b), atol=1e-6)
    with torch.no_grad():
        assert stage not in full(b["query"], b["support"], skip=[stage]).attention


def test_skip_names_are_checked(full):
    b = batch()
    with pytest.raises(FscalError, match=r"field 'skip'.*'qtso'.*\['qtos', 'dynamics', 'stoq'\]"):
        full(b["query"], b["support"], skip=["qtso"])
    with pytest.raises(FscalError, match="this model has no dynamics stage"):
        build("no_dynamics", like=full)(b["query"], b["support"], skip=["dynamics"])
    with pytest.raises(FscalError, match="has no qtos and no dynamics and no stoq stage .blind control"):
        build("blind", like=full)(b["query"], b["support"], skip=STAGES)
    assert torch.equal(outputs(full, b, skip="qtos, stoq"), outputs(full, b, skip=("stoq", "qtos")))


def test_blind_provably_ignores_the_supports(full):
    b, blind = batch(), build("blind", like=full)
    other = {**b, "support": torch.randn_like(b["support"]) * 3}
    assert torch.equal(outputs(blind, b), outputs(blind, other))
    assert torch.equal(outputs(EditedSupports(blind, reverse_snippets), b), outputs(blind, b))
    assert differ(outputs(full, b), outputs(full, other))


@pytest.fixture(scope="module")
def world():
    return World(DATA / "anet_like")


def test_predict_and_evaluate_take_skip(world):
    model = load_model(DATA / "checkpoints" / "full.pt", device="cpu")
    episodes = world.episodes("test", 5)[:6]
    base, skipped = predict(model, world, episodes), predict(model, world, episodes, skip=["stoq"])
    assert base["results"] != skipped["results"]
    with pytest.raises(FscalError, match="field 'skip'"):
        evaluate_model(model, world, "test", 5, limit=2, skip=["nope"])


def test_cli_evaluate_skip(capsys):
    args = ["evaluate", "--data", str(DATA / "anet_like"), "--checkpoint", str(DATA / "checkpoints" / "blind.pt")]
    with pytest.raises(SystemExit) as e:
        cli_main(args + ["--skip", "qtos,nope"])
    assert e.value.code == 2
    assert "fscal-edu evaluate: error: argument --skip: must be a comma-separated list of stages among " \
           "qtos,dynamics,stoq, got 'qtos,nope'" in capsys.readouterr().err
    assert cli_main(args + ["--skip", "stoq"]) == 2
    assert capsys.readouterr().err.strip() == ("fscal-edu evaluate: error: field 'skip': this model has no stoq "
                                               "stage (blind control), nothing to skip")
    assert cli_main(["evaluate", "--data", str(DATA / "anet_like"), "--baseline", "prototype", "--skip", "qtos"]) == 2
    assert "field 'skip'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t,df,p", [(12.706, 1, 0.05), (4.303, 2, 0.05), (2.776, 4, 0.05), (2.228, 10, 0.05),
                                    (2.0, 10, 0.07339), (1.96, 1e6, 0.05), (0.0, 3, 1.0)])
def test_t_two_sided_p_known_values(t, df, p):
    """Tables of Student's t (two-sided critical values at 5 %) and t = 2 at df = 10."""
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert t_two_sided_p(-t, df) == pytest.approx(p, abs=2e-4)


def test_welch_by_hand():
    """a = [1, 2, 3], b = [2, 4, 6]: var 1 and 4, se^2 = 1/3 + 4/3, t = -2/sqrt(5/3),
    df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17; p from the incomplete beta, checked against the
    t table's bracket (|t| = 1.549 lies between the 20 % and 30 % two-sided points for ~3 df)."""
    w = welch([1, 2, 3], [2, 4, 6])
    assert w.diff == -2.0
    assert w.t == pytest.approx(-2 / math.sqrt(5 / 3))
    assert w.df == pytest.approx(50 / 17)
    assert w.p == pytest.approx(t_two_sided_p(w.t, 50 / 17)) and 0.2 < w.p < 0.3
    assert welch([1, 1], [1, 1]).p == 1.0 and welch([2, 2], [1, 1]).p == 0.0
    with pytest.raises(ValueError):
        welch([1.0], [1.0, 2.0])


def test_welch_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    cases = [([0.61, 0.64, 0.58], [0.52, 0.55, 0.57]), ([0.7, 0.72, 0.69, 0.75, 0.71], [0.66, 0.74]),
             ([0.640, 0.653, 0.627], [0.542, 0.515, 0.569])]
    for a, b in cases:
        ref, w = stats.ttest_ind(a, b, equal_var=False), welch(a, b)
        assert (w.t, w.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9)
        assert w.df == pytest.approx(ref.df, rel=1e-9)
    for a, b_, x in [(0.5, 0.5, 0.3), (10, 0.5, 0.99), (1.2, 0.5, 1e-5), (200, 0.5, 0.7)]:
        assert betainc(a, b_, x) == pytest.approx(special.betainc(a, b_, x), rel=1e-10)


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.5]) == [0.5]


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

def test_stage_probes_measure_what_they_say(full):
    b = batch()
    probes = stage_probes(full, b["query"], b["support"])
    assert set(probes) == set(STAGES)
    stoq = stoq_added_term(full, b["query"], b["support"])
    assert probes["stoq"]["relative_size"] == pytest.approx(stoq["relative_size"], rel=1e-5)
    assert probes["stoq"]["shared_energy"] == pytest.approx(stoq["shared_energy"], rel=1e-5)
    for p in probes.values():
        assert 0 < p["entropy"] <= 1 and 0 <= p["shared_energy"] <= 1 and p["relative_size"] > 0
    assert set(stage_probes(full, b["query"], b["support"], skip=["dynamics"])) == {"qtos", "stoq"}
    uniform = build(like=full)
    with torch.no_grad():
        for s in STAGES:                     # Lambda = 0: every softmax is uniform, every target gets the mean
            getattr(getattr(uniform, s), {"qtos": "W_QtoS", "dynamics": "W_StoS", "stoq": "W_StoQ"}[s]).zero_()
    for p in stage_probes(uniform, b["query"], b["support"]).values():
        assert p["entropy"] == pytest.approx(1.0, abs=1e-5) and p["shared_energy"] == pytest.approx(1.0, abs=1e-5)


def test_weight_drift(full):
    state = torch.random.get_rng_state()
    assert all(v == 0 for d in weight_drift(full).values() for v in d.values())
    assert torch.equal(state, torch.random.get_rng_state())           # the fresh model drew nothing visible
    moved = build(like=full)
    with torch.no_grad():
        moved.stoq.W_StoQ.mul_(1.5)                                    # ||1.5 I - I|| / ||I|| = 0.5
        moved.dynamics.w["2"].weight.mul_(0.0)                         # ||0 - W0|| / ||W0|| = 1
    drift = weight_drift(moved)
    assert set(drift["dynamics"]) == {"W_StoS", "w.2.weight", "w.4.weight"}
    assert drift["stoq"]["W_StoQ"] == pytest.approx(0.5) and drift["dynamics"]["w.2.weight"] == pytest.approx(1.0)
    assert drift["qtos"]["W_QtoS"] == 0


def test_support_edits_keep_the_snippets():
    s = batch()["support"]
    r, sh = reverse_snippets(s), shuffle_snippets(0)(s)
    assert torch.equal(r[:, :, 0], s[:, :, -1])
    assert torch.equal(sh.sort(dim=2).values, s.sort(dim=2).values) and not torch.equal(sh, s)
    assert torch.equal(shuffle_snippets(0)(s), sh)                    # the same seed, the same shuffle


def test_replace_supports(world):
    episodes, twins = world.episodes("test", 5)[:20], twin_classes(world)
    for donor in ("twin", "other"):
        new = replace_supports(world, episodes, donor, seed=3)
        assert new == replace_supports(world, episodes, donor, seed=3)
        for old, ep in zip(episodes, new):
            assert (ep["id"], ep["label"], ep["query"]) == (old["id"], old["label"], old["query"])
            assert (ep["donor"] == twins[old["label"]]) == (donor == "twin")
            assert ep["donor"] != old["label"] and len(ep["support"]) == 5
            assert all(c["video"] != ep["query"] for c in ep["support"])
            assert ep["donor"] in world.splits["test"]
            clips = set(instances_by_class(world.annotations)[ep["donor"]])
            assert all((c["video"], tuple(c["segment"])) in clips for c in ep["support"])
    with pytest.raises(FscalError, match="donor"):
        replace_supports(world, episodes, "same")


# ---------------------------------------------------------------------------------------------
# The bench scripts: verdicts from p-values, the probes end to end
# ---------------------------------------------------------------------------------------------

def bench_module(name):
    import importlib
    import sys
    sys.path[:0] = [str(ROOT / "bench")]
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_ablation_verdicts_come_from_p_values():
    """Shipped 1-shot blind: |t| >= 2.8 would have passed an old fixed-t rule, but with 3 seeds a side
    its p is above 0.05, so the verdict is "no difference"; the 5-shot blind's p is below 0.05."""
    ablations = bench_module("ablations")
    rows = json.loads((ROOT / "bench" / "results" / "ablations.json").read_text())["runs"]
    one = next(line for line in ablations.reading(rows, 1) if line.startswith("- `blind`"))
    t, p = float(re.search(r"t = (-?[\d.]+)", one).group(1)), float(re.search(r"p = ([\d.]+)", one).group(1))
    assert abs(t) >= 2.8 and p > 0.05 and one.endswith("no difference the seeds can show.")
    five = {line.split("`")[1]: line for line in ablations.reading(rows, 5) if line.startswith("- `")}
    assert float(re.search(r"p = ([\d.]+)", five["blind"]).group(1)) < 0.05
    assert "the full model is better" in five["blind"]
    for line in five.values():        # every verdict follows from its p, none from |t|
        p = float(re.search(r"p = ([\d.]+)", line).group(1))
        assert ("is better" in line) == (p < 0.05) and ("no difference the seeds can show" in line) == (p >= 0.05)
    assert "|t|" not in "\n".join(ablations.reading(rows, 5))


def test_probes_script_smoke(tmp_path):
    out, doc = tmp_path / "probes.json", tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    cmd = [sys.executable, str(ROOT / "bench" / "probes.py"), "--limit", "6", "--draws", "1", "--bootstrap", "2",
           "--out", str(out), "--doc", str(doc)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    full, blind = result["checkpoints"]
    assert [r["probe"] for r in full["probes"]][:2] == ["as trained", "skip qtos"] and len(full["probes"]) == 12
    assert set(full["stages"]["trained"]) == set(STAGES) and set(full["weight_drift"]) == set(STAGES)
    assert len({r["mAP@0.5"] for r in blind["probes"]}) == 1 and not blind["stages"]    # blind reads no support
    text = doc.read_text()
    assert "## Other\n\nkept" in text and "## Probes of a trained model" in text
    assert "this model never reads the supports" in text
    doc.write_text("# Benchmarks\n")
    assert subprocess.run(cmd[:2] + ["--docs-only", "--out", str(out), "--doc", str(doc)], cwd=ROOT).returncode == 0
    assert text.split("## Probes")[1] == doc.read_text().split("## Probes")[1]
