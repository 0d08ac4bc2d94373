"""Every claim a notebook makes in words is registered, written as registered, and true on the
current results file (fscal_edu.evidence)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fscal_edu import evidence
from fscal_edu.evidence import CLAIMS, Claim

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_claim_marker_is_registered_written_and_true(path):
    problems = evidence.check_notebook(path)
    assert not problems, "\n".join(problems)


def test_notebook_08_tells_both_halves_of_the_stage_story():
    """Leaned on (skipping the stages hurts the trained model) and not needed (no_stages does as well)."""
    path = next(p for p in NOTEBOOKS if p.stem.startswith("08"))
    cells = json.loads(path.read_text())["cells"]
    marked = {n for c in cells if c["cell_type"] == "markdown" for n in evidence.markers("".join(c["source"]))}
    assert {"skip_all_hurts_trained", "skip_all_hurts_every_world", "no_stages_as_well"} <= marked


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_every_registered_claim_holds_on_its_results_file(name):
    claim = CLAIMS[name]
    assert claim.text.strip() and (ROOT / "bench" / "results" / claim.results).is_file()
    assert claim.holds(evidence.results(claim.results)) is True


def test_a_reversed_claim_fails():
    """The check can fail: the stage story's claims turned around are reported as not holding."""
    reversed_claims = {
        name: Claim(CLAIMS[name].text, CLAIMS[name].results, lambda r, h=CLAIMS[name].holds: not h(r))
        for name in ("skip_all_hurts_trained", "no_stages_as_well")}
    cell = "<!-- claim: skip_all_hurts_trained --> <!-- claim: no_stages_as_well -->\n" + \
        "\n".join(c.text for c in reversed_claims.values())
    problems = evidence.check_cell(cell, reversed_claims, label="cell")
    assert len(problems) == 2 and all("does not hold" in p for p in problems)
    assert evidence.check_cell(cell) == []


def test_reversed_measurements_fail_the_stage_story():
    """The same claims on results files whose numbers point the other way."""
    probes = copy.deepcopy(evidence.results("probes.json"))
    entry = next(c for c in probes["checkpoints"] if c["checkpoint"] == evidence.FULL_CHECKPOINT)
    base = next(p["mAP@0.5"] for p in entry["probes"] if p["probe"] == "as trained")
    for p in entry["probes"]:
        if p["probe"] == evidence.skip_probe():
            p["mAP@0.5"] = base + 0.05
    assert not CLAIMS["skip_all_hurts_trained"].holds(probes)

    ablations = copy.deepcopy(evidence.results("ablations.json"))
    full = evidence.summary_entry(ablations, "full")["mAP@0.5"]
    evidence.summary_entry(ablations, "no_stages")["mAP@0.5"]["mean"] = full["mean"] - 2 * full["sd"] - 0.01
    assert not CLAIMS["no_stages_as_well"].holds(ablations)


def test_unknown_names_and_missing_sentences_are_reported():
    problems = evidence.check_cell("<!-- claim: no_such_claim --> words", label="x")
    assert problems and "not registered" in problems[0]
    problems = evidence.check_cell("<!-- claim: no_stages_as_well --> other words", label="x")
    assert problems and "does not hold its sentence" in problems[0]


def test_the_sentence_may_wrap_across_lines():
    text = CLAIMS["no_stages_as_well"].text.replace(" ", "\n", 3)
    assert evidence.check_cell("<!-- claim: no_stages_as_well -->\n" + text) == []
