"""fscal_edu.report: the course's texts follow the results files, README's numbers are the files'."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fscal_edu import report
from fscal_edu.diagnostics import ablation_tests
from fscal_edu.stats import t_critical, t_two_sided_p

ROOT = Path(__file__).resolve().parents[1]
OWN_NOTEBOOKS = ["00_task_and_data", "01_features_and_episodes", "02_proposals", "08_evaluation_and_ablations"]


@pytest.fixture(scope="module")
def shipped():
    return {name: report.load_results(name) for name in ("ablations", "probes", "speed", "train_seeds")}


def test_readme_quotes_the_results_files():
    """Every figure README.md quotes from bench/results/ is there exactly as the files give it now."""
    text = " ".join((ROOT / "README.md").read_text().split())
    missing = [q for q in report.readme_quotes() if q not in text]
    assert not missing, f"README.md does not say (regenerate from bench/results/): {missing}"


def test_readme_world_numbers_are_the_shipped_worlds():
    data = ROOT / "data_samples" / "anet_like"
    splits = json.loads((data / "splits.json").read_text())
    meta = json.loads((data / "features.json").read_text())
    videos = len(json.loads((data / "annotations.json").read_text())["database"])
    quote = (f"{videos} videos of {meta['resize_length']} snippets x {meta['feature_dim']} features, "
             f"{sum(map(len, splits.values()))} classes ({len(splits['base'])} base / {len(splits['val'])} val / "
             f"{len(splits['test'])} test")
    assert quote in " ".join((ROOT / "README.md").read_text().split())


def _ablations(seeds: dict) -> dict:
    """A tiny results file: ``{model: [mAP@0.5 per seed]}`` at 5-shot, 100 steps."""
    runs, summary = [], []
    for model, values in seeds.items():
        for i, v in enumerate(values):
            runs.append({"model": model, "shots": 5, "seed": i, "steps": 100, "mAP@0.5": v, "train_s": 10.0})
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        summary.append({"model": model, "what": model, "shots": 5, "steps": 100, "seeds": list(range(len(values))),
                        "mAP@0.5": {"mean": mean, "sd": sd, "n": len(values)}})
    return {"runs": runs, "summary": summary}


def test_verdicts_follow_the_p_values():
    ab = _ablations({"full": [0.50, 0.51, 0.49], "blind": [0.30, 0.31, 0.29],       # clearly worse: holds
                     "no_stoq": [0.70, 0.71, 0.69],                                   # clearly better: reversed
                     "no_qtos": [0.40, 0.60, 0.52]})                                  # noise: not shown
    tests = ablation_tests(ab, 5)
    assert report.claim_verdict(tests["blind"]).startswith("**holds**")
    assert report.claim_verdict(tests["no_stoq"]).startswith("**reversed**")
    assert report.claim_verdict(tests["no_qtos"]).startswith("not shown")
    table = report.claims_table(ab)
    for variant, word in (("blind", "**holds**"), ("no_stoq", "**reversed**"), ("no_qtos", "not shown")):
        row = next(line for line in table.splitlines() if f"`{variant}`" in line)
        assert word in row.split("|")[-2], row
    summary = report.claims_summary(ab)
    assert "**What holds** (5-shot, p < 0.05): `blind`" in summary
    assert "`no_stoq`" in summary.split("**Reversed**")[1].split("**Not shown**")[0]
    assert "no cross-attention stage makes the full model better" in summary


def test_a_stage_that_helps_is_said_to_help():
    ab = _ablations({"full": [0.60, 0.61, 0.59], "no_dynamics": [0.40, 0.41, 0.39], "no_qtos": [0.6, 0.5, 0.7]})
    summary = report.claims_summary(ab)
    assert "only `no_dynamics` cross-attention stage makes the full model better" in summary
    assert "**holds**" in report.hypotheses_markdown(ab, {"checkpoints": [{"checkpoint":
                                                     "data_samples/checkpoints/full.pt", "probes": [
                                                         {"probe": "as trained", "draw": 0, "mAP@0.5": 0.6,
                                                          "ci95_delta": None}]}]}, ("no_dynamics",))


def test_texts_carry_the_shipped_numbers(shipped):
    ab, probes = shipped["ablations"], shipped["probes"]
    tests = ablation_tests(ab, 5)
    text = report.hypotheses_markdown(ab, probes)
    for variant in report.STAGE_VARIANTS:
        s = report.summary_entry(ab, variant)
        assert report.mean_sd(s["mAP@0.5"]) in text
        assert f"p = {tests[variant]['welch'].p:.2f}" in text or "p < 0.001" in text or "p = 0.0" in text
    table = report.claims_table(ab)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| the paper")]
    assert len(rows) == len(tests) + 1                          # each tested variant, and the prototype
    full = report.summary_entry(ab, "full")
    assert report.mean_sd(full["mAP@0.5"]) in table


def test_shipped_checkpoint_is_one_of_the_seeds_of_the_table(shipped):
    """The 0.573 of full.pt and the 0.542 of the table are one seed and the mean of the same runs."""
    s = report.shipped_checkpoint(shipped["train_seeds"])
    full = report.summary_entry(shipped["ablations"], "full")
    assert s["mean"] == pytest.approx(full["mAP@0.5"]["mean"], abs=1e-5)
    assert s["seed0"] in s["seeds"] and f"{s['seed0']:.3f}" in report.shipped_checkpoint_text(shipped["train_seeds"])


def test_training_time_and_sweep_plan_come_from_speed_json(shipped):
    t = report.training_time(shipped["speed"])
    conv = shipped["speed"]["convergence"]
    assert (t["idle_s"], t["loaded_s"]) == (conv["idle"]["wall_s"], conv["loaded"]["wall_s"])
    plan = report.sweep_plan(shipped["ablations"], shipped["speed"])
    assert plan["idle_minutes"] == pytest.approx(plan["trainings"] * t["idle_s"] / 60)
    assert plan["trainings"] > 0 and "joint" in plan["models"]


def test_t_critical_inverts_the_p_value():
    for df in (2, 2.7, 4, 30):
        assert t_two_sided_p(t_critical(df), df) == pytest.approx(0.05, abs=1e-9)
    assert t_critical(2) == pytest.approx(4.303, abs=1e-3) and t_critical(4) == pytest.approx(2.776, abs=1e-3)


@pytest.mark.parametrize("name", OWN_NOTEBOOKS)
def test_notebook_text_states_no_typed_measurement(name):
    """Notebooks 00-02 and 08: no reference outside the project, no exercise solved in the student's
    cell, and (08) no mAP-like figure typed into a markdown cell: they are generated."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "DESIGN.md" not in text and "shared/" not in text and "the review" not in text
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "|t| <" not in markdown and "t <= -" not in markdown
    if name.startswith("08"):
        assert not re.findall(r"\b0\.\d{3}\b", markdown), re.findall(r"\b0\.\d{3}\b", markdown)
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "# your code here" in src:
            assert "raise NotImplementedError" in src, src
