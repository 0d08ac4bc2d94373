"""Figures, the model attention explorer and the exercise checker of notebook 08."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from fscal_edu import exercises as ex
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.model import FSCAL
from fscal_edu.diagnostics import stoq_added_term
from fscal_edu.evaluation import episode_ap
from fscal_edu.inference import episode_outputs
from fscal_edu.viz.evaluation import ablation_figure, explorer_figures, per_class_ap_figure
from fscal_edu.widgets import model_attention_explorer

from conftest import DATA


def row(model, shots, mean, sd, steps=700):
    return {"model": model, "what": f"what {model}", "shots": shots, "steps": steps, "seeds": [0, 1, 2],
            "mAP@0.5": {"mean": mean, "sd": sd, "n": 3}, "average_mAP": {"mean": mean / 2, "sd": sd, "n": 3}}


SUMMARY = [row("full", 5, 0.7, 0.02), row("blind", 5, 0.5, 0.01), row("prototype", 5, 0.2, 0.0, steps=0),
           row("no_qtos", 5, 0.6, 0.05), row("full", 1, 0.4, 0.03, steps=350)]


def test_ablation_figure_bars_errors_and_full_line():
    fig = ablation_figure(SUMMARY, shots=5)
    bar = fig.data[0]
    assert isinstance(bar, go.Bar) and list(bar.x) == ["full", "blind", "prototype", "no_qtos"]
    np.testing.assert_allclose(bar.y, [0.7, 0.5, 0.2, 0.6])
    np.testing.assert_allclose(bar.error_y.array, [0.02, 0.01, 0.0, 0.05])
    assert bar.marker.color[0] != bar.marker.color[3]            # full and an ablation differ
    assert fig.layout.shapes[0].y0 == 0.7 and "5-shot" in fig.layout.title.text
    avg = ablation_figure(SUMMARY, shots=1, metric="average_mAP")
    np.testing.assert_allclose(avg.data[0].y, [0.2])
    with pytest.raises(ValueError, match="3-shot"):
        ablation_figure(SUMMARY, shots=3)


def test_ablation_figure_names_the_steps_when_they_differ():
    fig = ablation_figure(SUMMARY + [row("full", 5, 0.6, 0.0, steps=350)], shots=5)
    assert "full (700 steps)" in fig.data[0].x and "full (350 steps)" in fig.data[0].x


def _toy():
    episodes = [{"id": "e0", "label": "a", "query": "v0", "support": []},
                {"id": "e1", "label": "a", "query": "v1", "support": []}]
    annotations = {"database": {v: {"subset": "test", "duration": 100.0,
                                    "annotations": [{"label": "a", "segment": [10.0, 20.0]},
                                                    {"label": "b", "segment": [50.0, 60.0]}]}
                                for v in ("v0", "v1")}}
    results = {"results": {"e0": [{"label": "common", "score": 0.9, "segment": [10.0, 20.0]}],
                           "e1": [{"label": "common", "score": 0.9, "segment": [50.0, 60.0]},
                                  {"label": "common", "score": 0.8, "segment": [11.0, 20.0]}]}}
    return episodes, annotations, results


def test_episode_ap_scores_each_episode_alone():
    ap = episode_ap(*_toy())
    assert ap["e0"] == pytest.approx(1.0)
    assert ap["e1"] == pytest.approx(0.5)        # a false positive ranked first, then the hit
    ap = episode_ap(*_toy(), tiou=0.95)
    assert ap["e1"] == pytest.approx(0.0)        # [11, 20] has tIoU 0.9 with [10, 20]


def test_per_class_ap_figure_sorts_by_ap_at_05():
    thr = np.linspace(0.5, 0.95, 10)
    fig = per_class_ap_figure({"x": [0.2] * 10, "y": [0.9] + [0.1] * 9}, thr)
    assert list(fig.data[0].x) == ["y", "x"]
    np.testing.assert_allclose(fig.data[0].y, [0.9, 0.2])
    np.testing.assert_allclose(fig.data[1].y, [0.18, 0.2])


@pytest.fixture(scope="module")
def world_and_models():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    return World(DATA / "anet_like"), {"full": FSCAL(cfg), "blind": FSCAL(cfg.replace(blind=True)),
                                       "joint": FSCAL(cfg.replace(joint=True))}


def test_explorer_figures_for_each_stage_and_model(world_and_models):
    world, models = world_and_models
    ep = world.episodes("test", 5)[0]
    out = episode_outputs(models["full"], world, ep)
    assert set(out["attention"]) == {"qtos", "dynamics", "stoq"} and len(out["proposals"]) == \
        out["attention"]["stoq"].A.shape[-1]
    for stage in ("qtos", "dynamics", "stoq"):
        left, right = explorer_figures(out, ep, world.annotations, model="full", stage=stage, support=None,
                                       granularity=2)
        assert isinstance(left.data[0], go.Heatmap) and left.layout.title.text.startswith("full: ")
        assert right.layout.title.text.startswith(f"episode {ep['id']}")
    left, _ = explorer_figures(out, ep, world.annotations, stage="dynamics", support=1, granularity=4)
    assert left.data[0].z.shape[0] == 5 * 8 // 4            # the k = 4 coarse tokens of 5 supports
    joint = explorer_figures(episode_outputs(models["joint"], world, ep), ep, world.annotations,
                             model="joint", stage="qtos")[0]
    assert "joint" in joint.layout.title.text
    blind = explorer_figures(episode_outputs(models["blind"], world, ep), ep, world.annotations,
                             model="blind", stage="stoq")[0]
    assert len(blind.data) == 0 and "no StoQ" in blind.layout.title.text


def test_stoq_added_term_is_all_shared_when_attention_is_uniform():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = FSCAL(cfg).eval()
    query, support = torch.randn(2, cfg.data.T, cfg.data.feature_dim), torch.randn(2, 5, cfg.data.T_S, cfg.data.feature_dim)
    m = stoq_added_term(model, query, support)
    assert m["relative_size"] > 0 and 0 <= m["shared_energy"] < 0.999
    with torch.no_grad():
        model.stoq.W_StoQ.zero_()               # Lambda = 0: every support snippet spreads evenly
    assert stoq_added_term(model, query, support)["shared_energy"] == pytest.approx(1.0, abs=1e-5)


def test_model_attention_explorer_builds(world_and_models, monkeypatch):
    world, models = world_and_models
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self.layout.title.text))
    box = model_attention_explorer(models, world, world.episodes("test", 5)[:2])
    controls = [c for row in box.children[:2] for c in row.children]
    assert [c.description for c in controls] == ["episode", "model", "stage", "support", "granularity"]
    # first the stage's attention on the query's time line, then the two panels
    assert shown[0] == "full: QtoS Context-CA on the query's time line" and len(shown) == 3
    controls[1].value = "blind"                  # switching the model redraws without error
    assert len(box.children[3].children) == 2 and len(shown) == 5      # blind: no stage, no time line


def test_check_welch_t():
    def welch(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    def biased(a, b):                            # population variances: a common slip
        a, b = np.asarray(a), np.asarray(b)
        return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))

    assert ex.check_welch_t(welch)
    assert not ex.check_welch_t(biased)


def _item(stage, value, full, off, sweep=None, knob="k", fixed=None):
    """One setting of a mechanisms.json sweep (Δ, t, df, p only when the seeds allow, as bench writes it)."""
    from fscal_edu.stats import welch
    it = {"stage": stage, "knob": knob, "value": value, "fixed": fixed or {}, "why": "why", "full": full,
          f"no_{stage}": off}
    if sweep:
        it["sweep"] = sweep
    if full and off:
        it["delta"] = float(np.mean(full) - np.mean(off))
    if len(full) > 1 and len(off) > 1:
        w = welch(full, off)
        it |= {"t": w.t, "df": w.df, "p": w.p}
    return it


MECHANISMS = {"machine": "test", "sweeps": [
    _item("qtos", [0.0, 0.0], [0.5, 0.6, 0.55], [0.5, 0.55, 0.6]),
    _item("qtos", [0.5, 1.0], [0.6], [0.4]),                                  # one seed: no error bar
    _item("qtos", [1.0, 2.0], [], []),                                        # not run yet
    _item("stoq", 0.0, [0.5, 0.52], [0.5, 0.5], sweep="stoq_variants", knob="scene_norm",
          fixed={"scene_span": "phases"}),
    _item("stoq", 4.0, [0.5, 0.52], [0.3, 0.32], sweep="stoq_variants", knob="scene_norm",
          fixed={"scene_span": "phases"}),
    _item("stoq", 0.0, [0.5, 0.5], [0.5, 0.5], knob="other")]}                # no "sweep": the stage's name


def test_mechanisms_figure_one_panel_per_sweep_with_the_files_deltas():
    from fscal_edu.viz import mechanisms_figure
    fig = mechanisms_figure(MECHANISMS)
    assert fig.layout.title.text == "When does each stage matter?"
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == 3 and titles[0] == "QtoS Context-CA: k" and "scene_span=phases" in titles[1]
    deltas = [t for t in fig.data if t.name and t.name.startswith("Δ")]
    assert len(deltas) == 3 and {t.xaxis for t in deltas} == {"x", "x2", "x3"}
    qtos, variants, stoq = deltas
    assert list(qtos.x) == ["(0.0, 0.0)", "(0.5, 1.0)", "(1.0, 2.0)"]          # weakest first, as in the file
    items = MECHANISMS["sweeps"]
    np.testing.assert_allclose(qtos.y[:2], [items[0]["delta"], items[1]["delta"]], atol=1e-4)
    assert qtos.y[2] is None                                                  # missing: a gap, the label kept
    se = np.sqrt(np.var(items[0]["full"], ddof=1) / 3 + np.var(items[0]["no_qtos"], ddof=1) / 3)
    assert qtos.error_y.array[0] == pytest.approx(se, abs=1e-4) and qtos.error_y.array[1] is None
    np.testing.assert_allclose(variants.y, [items[3]["delta"], items[4]["delta"]], atol=1e-4)
    assert list(stoq.x) == ["0.0"]
    seeds = [t for t in fig.data if t.name == "one seed: full − off" and t.xaxis == "x"][0]
    assert len(seeds.x) == 4                                                  # 3 seeds + 1 seed, none missing
    assert any(t.mode == "text" and "no runs" in t.text for t in fig.data)
    bars = [s for s in fig.layout.shapes if s.y0 == 0.05]
    assert len(bars) == 3 and all(s.line.dash == "dash" for s in bars)
    assert any(t.name and "the bar" in t.name for t in fig.data)
    assert [s for s in fig.layout.shapes if s.y0 == 0.0]
    with pytest.raises(ValueError, match="sweep"):
        mechanisms_figure({"sweeps": []})


def test_mechanisms_figure_on_the_shipped_results():
    from fscal_edu import report
    from fscal_edu.report_stages import mechanism_sweeps
    from fscal_edu.viz import mechanisms_figure
    mech = report.load_results("mechanisms")
    sweeps = mechanism_sweeps(mech)
    fig = mechanisms_figure(mech)
    deltas = [t for t in fig.data if t.name and t.name.startswith("Δ")]
    assert len(deltas) == len(sweeps) == len(fig.layout.annotations)
    names = [it.get("sweep") or it["stage"] for it in mech["sweeps"]]
    for trace, name in zip(deltas, dict.fromkeys(names)):
        file_deltas = [it.get("delta") for it in mech["sweeps"] if (it.get("sweep") or it["stage"]) == name]
        assert len(trace.y) == len(file_deltas)
        for y, d in zip(trace.y, file_deltas):
            assert (y is None) == (d is None) and (d is None or y == pytest.approx(d, abs=1e-4))
