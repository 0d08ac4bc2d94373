"""Every sentence fscal_edu.report and fscal_edu.report_stages write, checked against what it describes:
the numbers against the results file, the directions ("higher", "holds", "peaks") against the
numbers, the knobs and the code it names against the code."""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
import statistics
from pathlib import Path

import pytest

from fscal_edu import report, report_stages, stages
from fscal_edu.config import Config
from fscal_edu.data.synthetic import LATER_KNOBS, WorldConfig
from fscal_edu.diagnostics import ablation_tests, probe_results
from fscal_edu.model import RelationHead

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def res():
    return {n: report.load_results(n) for n in ("ablations", "probes", "speed", "mechanisms")}


@pytest.fixture(scope="module")
def world():
    return json.loads((ROOT / "data_samples" / "anet_like" / "world.json").read_text())["info"]["config"]


def _significant(test, sign):
    return test["welch"].p < report.ALPHA and (test["welch"].diff < 0 if sign < 0 else test["welch"].diff > 0)


# --- report.py ---

def test_probe_text_quotes_the_probe_and_its_interval(res):
    found = probe_results(res["probes"])
    base = found["as trained"]["mAP@0.5"]
    for probe, p in found.items():
        text = report.probe_text(res["probes"], probe)
        assert text.startswith(f"{p['mAP@0.5']:.3f} against {base:.3f} as trained")
        if p["ci95_delta"]:
            assert f"{p['ci95_delta'][0]:+.3f} to {p['ci95_delta'][1]:+.3f}" in text
    assert report.probe_text(res["probes"], "no such probe") is None


def test_hypotheses_name_the_probe_that_skips_each_stage(res):
    text = report.hypotheses_markdown(res["ablations"], res["probes"])
    for variant in report.stage_variants():
        probe = report.hypotheses()[variant][2]
        assert probe == "skip " + variant.removeprefix("no_") and probe in probe_results(res["probes"])
        line = next(x for x in text.splitlines() if f"`{variant}`" in x)
        assert report.probe_text(res["probes"], probe) in line


def test_hypothesis_brief_verdict_matches_the_direction(res):
    tests = ablation_tests(res["ablations"], 5)
    for variant, t in tests.items():
        brief = report.hypothesis_brief(res["ablations"], variant)
        assert report.welch_text(t) in brief
        assert ("**holds**" in brief) == _significant(t, -1)
        assert ("**reversed**" in brief) == _significant(t, +1)
        assert ("not shown" in brief) == (t["welch"].p >= report.ALPHA)
    assert "not in the results file" in report.hypothesis_brief(res["ablations"], "no_such_variant")


def test_support_probes_text_carries_each_probe(res):
    found = probe_results(res["probes"])
    text = report.support_probes_text(res["probes"])
    assert f"scores {found['as trained']['mAP@0.5']:.3f}" in text
    for name in ("reversed", "shuffled", "twin supports", "other-class supports"):
        assert f"{found[name]['mAP@0.5']:.3f}" in text
        if len(found[name]["draws"]) > 1:
            assert f"mean of {len(found[name]['draws'])} draws" in text


def test_order_sentence_directions_follow_the_intervals(res):
    found = probe_results(res["probes"])
    text = report.order_sentence(res["ablations"], res["probes"])
    hurts = {k: found[k]["ci95_delta"][1] < 0 for k in ("reversed", "twin supports")}
    assert text.startswith("So the trained model does read the order") == hurts["reversed"]
    if hurts["reversed"]:
        assert f"cost it {-found['reversed']['delta']:.3f}" in text
    assert ("it tells the twin's supports from the right ones" in text) == hurts["twin supports"]
    t = ablation_tests(res["ablations"], 5)["no_dynamics"]
    assert ("makes it worse: the stage carries that order" in text) == _significant(t, -1)
    assert ("does not make it worse" in text) == (not _significant(t, -1))


def test_switches_table_rows_are_the_files_variants(res):
    what = {s["model"]: s["what"] for s in res["ablations"]["summary"]}
    rows = report.switches_table(res["ablations"]).splitlines()[2:]
    named = [re.match(r"\| `([a-z_]+)` \| (.*?) \|", r).groups() for r in rows]
    assert {v for v, _ in named} == {v for v in report.hypotheses() if v in what}
    assert named and all(what[v] == w for v, w in named)


def test_claims_table_deltas_and_verdicts_follow_the_means(res):
    ab = res["ablations"]
    full = report.summary_entry(ab, "full")["mAP@0.5"]["mean"]
    tests = ablation_tests(ab, 5)
    checked = 0
    for row in report.claims_table(ab).splitlines():
        m = re.match(r"\| .*? \| `([a-z_]+)` \| .*? \| ([+-]\d\.\d{3}) \|", row)
        if not m:
            continue
        v, delta = m.group(1), float(m.group(2))
        assert delta == pytest.approx(report.summary_entry(ab, v)["mAP@0.5"]["mean"] - full, abs=6e-4)
        verdict, checked = row.split("|")[-2], checked + 1
        if v in tests:
            assert ("**holds**" in verdict) == _significant(tests[v], -1)
            assert ("**reversed**" in verdict) == _significant(tests[v], +1)
    assert checked == len(tests) + 1                   # every tested variant and the prototype


def test_claims_summary_sorts_every_variant_by_its_test(res):
    ab = res["ablations"]
    tests = ablation_tests(ab, 5)
    text = report.claims_summary(ab)
    holds, rest = text.split("**Reversed**")
    reversed_, rest = rest.split("**Not shown**")
    unclear, story = rest.split("So on this world")
    for v, t in tests.items():
        part = holds if _significant(t, -1) else reversed_ if _significant(t, +1) else unclear
        assert f"`{v}`" in part, (v, part)
    full = report.summary_entry(ab, "full")["mAP@0.5"]["mean"]
    higher = [v for v in tests if report.summary_entry(ab, v)["mAP@0.5"]["mean"] > full]
    assert f"{len(higher)} of the {len(tests)} variants score higher on average" in story


def test_shots_paragraph_carries_each_step_count(res):
    ab = res["ablations"]
    text = report.shots_paragraph(ab, 1)
    steps_all = sorted({s["steps"] for s in ab["summary"] if s["shots"] == 1 and s["model"] == "full"})
    paragraphs = text.split("\n\n")
    assert len(paragraphs) == len(steps_all)
    for steps, para in zip(steps_all, paragraphs):
        get = lambda m: report.summary_entry(ab, m, 1, steps)  # noqa: E731
        assert para.startswith(f"**1-shot, {steps} steps**")
        assert f"full {report.mean_sd(get('full')['mAP@0.5'])}" in para
        assert f"blind {report.mean_sd(get('blind')['mAP@0.5'])}" in para


def test_why_markdown_states_what_the_code_and_the_curves_show(res):
    ab = res["ablations"]
    text = report.why_markdown(ab)
    # (1) the relation head reads [x; s; x*s; |x - s|] with the aligned summary, the default
    src = inspect.getsource(RelationHead.forward)
    assert "X_Q * s_n" in src and "(X_Q - s_n).abs()" in src and Config().switches.support_summary == "aligned"
    assert report.mean_sd(report.summary_entry(ab, "no_stages")["mAP@0.5"]) in text
    # (2) StoQ's added term, as measured
    stoq = ab["diagnostics"]["stoq_added_term"]
    assert "/".join(f"{a:.2f}" for a in stoq["relative_size"]) in text
    # (3) "the variant with one stage fewer learns faster, and the full model has flattened"
    curves = ab["diagnostics"]["val_curves"]
    full, no_stoq = list(curves["full"].values()), list(curves["no_stoq"].values())
    assert all(b > a for a, b in zip(full, no_stoq)), "no_stoq is not above full at every step"
    gains = [b - a for a, b in zip(full, full[1:])]
    assert gains[-1] < min(gains[:-1]), "the full model has not flattened by the end"
    assert f"Each run is {report.summary_entry(ab, 'full')['steps']} steps" in text


def test_training_time_text_is_speed_json(res):
    conv = res["speed"]["convergence"]
    text = report.training_time_text(res["speed"])
    assert text.startswith(f"{conv['idle']['steps']} steps: {conv['idle']['wall_s']:.0f} s on an idle")
    assert f"{conv['loaded']['wall_s']:.0f} s beside {conv['loaded']['load']} busy processes" in text
    assert f"({conv['idle']['threads']} threads)" in text


@pytest.mark.parametrize("ratio_on, word", [(3.0, "peaks on"), (0.3, "avoids"), (1.0, "is about the same on")])
def test_timeline_sentence_direction_follows_the_curve(ratio_on, word):
    x = [float(i) for i in range(20)]
    curve = [ratio_on if 5 <= i < 10 else 1.0 for i in range(20)]
    found = report.on_instances(curve, x, [[5.0, 10.0]])
    assert found["ratio"] == pytest.approx(ratio_on)
    for stage in stages.names():
        text = report.timeline_sentence(stage, found)
        assert word in text and f"{found['inside']:.2f} there" in text and stages.get(stage).short in text
    empty = report.on_instances(curve, x, [[100.0, 120.0]])
    assert "no instance" in report.timeline_sentence("qtos", empty)


# --- report_stages.py ---

def test_construction_names_real_knobs_at_the_worlds_values(res, world):
    text = report_stages.construction_markdown(world, Config().data.T_S, res["mechanisms"])
    fields = {f.name for f in dataclasses.fields(WorldConfig)}
    named = set(re.findall(r"`([a-z_]+)`", text)) - {"joint"}
    assert named <= fields, named - fields
    assert set(report_stages.WORLD_KNOBS) <= named
    assert "no outlier knob" not in text
    value = lambda k: world.get(k, LATER_KNOBS.get(k))  # noqa: E731
    assert f"`outlier_prob` = {value('outlier_prob')}" in text
    assert f"`support_slack` = {report_stages.value_label(value('support_slack'))}" in text
    assert f"Dirichlet({world['tempo_concentration']})" in text and f"T_S = {Config().data.T_S}" in text
    odd = value("outlier_prob") > 0 or value("support_slack")[1] > 0
    assert ("there is no odd support to guard against" in text) == (not odd)
    listed = text.split("mechanisms.json`: ")[1].removesuffix(").").split("; ")
    listed = {item.split("` ")[0].strip("`"): set(item.split("` ")[1].split(" / ")) for item in listed}
    for knob in report_stages.WORLD_KNOBS:        # every setting the sweeps trained on, from the file
        swept = {report_stages.value_label(it["value"]) for it in res["mechanisms"]["sweeps"] if it["knob"] == knob}
        assert listed.get(knob, set()) == swept


def test_construction_says_when_a_world_has_odd_supports(world):
    text = report_stages.construction_markdown(world | {"outlier_prob": 0.2}, 16)
    assert "no odd support" not in text and "`outlier_prob` = 0.2" in text and "Section 9" not in text


def test_benchmarks_doc_carries_the_construction_text(res, world):
    """docs/benchmarks.md's paragraph is this generator's (bench/ablations.py --docs-only writes it)."""
    doc = " ".join((ROOT / "docs" / "benchmarks.md").read_text().split())
    assert "no outlier knob" not in doc
    text = report_stages.construction_markdown(world, Config().data.T_S, res["mechanisms"])
    assert " ".join(text.split()) in doc


def test_sweep_titles_name_the_stage_knob_and_fixed_settings(res):
    for sweep in report_stages.mechanism_sweeps(res["mechanisms"]):
        title = report_stages.sweep_title(sweep)
        assert title.startswith(report_stages.stage_title(sweep["stage"])) and f": {sweep['knob']}" in title
        assert all(f"{k}={v}" in title for k, v in sweep["fixed"].items())
        assert sweep["knob"] in {f.name for f in dataclasses.fields(WorldConfig)}


def test_skips_markdown_costs_are_the_files(res):
    text = report_stages.skips_markdown(res["mechanisms"])
    rows = [x for x in text.splitlines() if x.startswith("| `")]
    seen = {}
    for it in res["mechanisms"]["sweeps"]:
        if any((it.get("full_skipped") or {}).values()):
            seen.setdefault(it["world"], it)
    assert len(rows) == len(seen)
    for row, it in zip(rows, seen.values()):
        sk = it["full_skipped"]
        n = min(len(v) for v in sk.values())
        for key in sk:
            cost = statistics.mean(f - x for f, x in zip(it["full"][:n], sk[key][:n]))
            assert f"{cost:+.3f}" in row


def test_pooled_markdown_counts_are_the_files(res):
    text = report_stages.pooled_markdown(res["mechanisms"])
    for s in stages.registered():
        worlds = {}
        for it in res["mechanisms"]["sweeps"]:
            full, off = it.get("full") or [], it.get(f"no_{s.name}") or []
            if it["stage"] == s.name and len(full) > 1 and len(off) > 1:
                worlds[it["world"]] = statistics.mean(full) - statistics.mean(off)
        if len(worlds) < 2:
            continue
        line = next(x for x in text.splitlines() if f"**{s.title}**" in x)
        d = list(worlds.values())
        assert f"over {len(d)} worlds" in line and f"mean Δ = {statistics.mean(d):+.3f}" in line
        assert f"scores higher in {sum(x < 0 for x in d)} of {len(d)}" in line


def test_stage_story_numbers_and_words_follow_the_files(res):
    from fscal_edu.evidence import skip_probe
    text = report_stages.stage_story_markdown(res["probes"], res["ablations"], res["mechanisms"])
    lean, worlds, need = text.splitlines()
    found = probe_results(res["probes"])
    for name in stages.names():
        p = found[f"skip {name}"]
        assert f"{stages.title(name)} {p['mAP@0.5']:.3f} ({p['delta']:+.3f})" in lean
    p = found[skip_probe()]
    assert f"all three skipped: {p['mAP@0.5']:.3f} ({p['delta']:+.3f}" in lean
    assert f"Skipping all of them {'lowers' if p['delta'] < 0 else 'raises' if p['delta'] > 0 else 'leaves'}" in lean
    assert ("by less than the bootstrap interval can tell" in lean) == (p["ci95_delta"][0] < 0 < p["ci95_delta"][1])
    costs = report_stages.skip_costs(res["mechanisms"], ",".join(stages.names()))
    means = [statistics.mean(c) for c in costs]
    assert f"in {sum(m > 0 for m in means)} of {len(means)} worlds" in worlds and len(means) == len(
        {it["world"] for it in res["mechanisms"]["sweeps"] if it.get("full_skipped")})
    assert f"on {sum(x > 0 for c in costs for x in c)} of {sum(map(len, costs))} trained models" in worlds
    ab, tests = res["ablations"], ablation_tests(res["ablations"], 5)
    full = report.summary_entry(ab, "full")["mAP@0.5"]
    for v in ("no_stages", *report.stage_variants()):
        s = report.summary_entry(ab, v)["mAP@0.5"]
        part = need.split(f"`{v}` ")[1].split(";")[0].split(". \"As well\"")[0]
        assert part.startswith(report.mean_sd(s)) and report.welch_text(tests[v]) in part
        as_well = s["mean"] >= full["mean"] - full["sd"]
        assert part.endswith("as well") or part.endswith("as well (better, p < 0.05)") or not as_well
        assert ("worse, by more than one SD" in part) == (not as_well)
        assert ("better, p < 0.05" in part) == (as_well and _significant(tests[v], +1))


def test_stage_story_says_so_when_skipping_does_not_hurt(res):
    import copy
    probes = copy.deepcopy(res["probes"])
    entry = next(c for c in probes["checkpoints"] if c["checkpoint"].endswith("full.pt"))
    base = next(p["mAP@0.5"] for p in entry["probes"] if p["probe"] == "as trained")
    for p in entry["probes"]:
        if p["probe"] == "skip " + "+".join(stages.names()):
            p["mAP@0.5"], p["ci95_delta"] = base + 0.05, [0.02, 0.08]
    text = report_stages.stage_story_markdown(probes, res["ablations"])
    assert "Skipping all of them raises its score." in text and "worlds of section 9" not in text


def test_the_shipped_full_model_has_one_number(res):
    """shipped_checkpoint_text calls full.pt seed 0 of train_seeds.json: its run log, train_seeds.json
    and probes.json's "as trained" give it the same test mAP@0.5."""
    seeds = report.load_results("train_seeds")
    seed0 = report.shipped_checkpoint(seeds)["seed0"]
    run = json.loads((ROOT / "data_samples" / "checkpoints" / "runs" / "full" / "summary.json").read_text())
    assert run["test_best"]["mAP@0.5"] == pytest.approx(seed0, abs=1e-6)
    assert probe_results(res["probes"])["as trained"]["mAP@0.5"] == pytest.approx(seed0, abs=5e-5)
    assert f"test mAP@0.5 {seed0:.3f}" in report.shipped_checkpoint_text(seeds)
