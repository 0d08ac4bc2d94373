"""The claims the notebooks make in words, each tied to the results file that shows it.

A notebook states a result in plain words in its markdown, preceded by a marker::

    <!-- claim: no_stages_as_well -->
    A model trained from scratch without the three stages does as well as the full model ...

and the code cell after it prints the numbers. :data:`CLAIMS` holds, for every marker name, the
sentence (:attr:`Claim.text`), the results file under ``bench/results`` that shows it
(:attr:`Claim.results`) and a test of its direction on that file (:attr:`Claim.holds`).
``tests/test_claims.py`` reads every notebook's markdown and checks, for each marker, that the name
is registered, that the cell holds the sentence (whitespace aside) and that the sentence holds on
the current results file: a reader of the text, not only of the outputs, gets a true story, and a
new measurement that reverses a claim fails the test instead of leaving a false sentence behind.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import stages
from .diagnostics import probe_results
from .report import full_steps, load_results, summary_entry
from .report import ALPHA
from .report_stages import BAR, does_as_well, skip_costs
from .stats import welch
from .utils import FscalError, where

MARKER = re.compile(r"<!--\s*claim:\s*([A-Za-z0-9_\-]+)\s*-->")
FULL_CHECKPOINT = "data_samples/checkpoints/full.pt"


@dataclass(frozen=True)
class Claim:
    """One sentence of the course and the measurement behind it."""
    text: str                                  # the sentence, as the notebook writes it
    results: str                               # a file under bench/results, e.g. "probes.json"
    holds: Callable[[dict], bool]              # the parsed results file -> does the sentence hold?


def normalise(text: str) -> str:
    """Runs of whitespace (line breaks of the markdown included) become one space."""
    return " ".join(text.split())


def results(name: str, results_dir=None) -> dict:
    """The results file ``name`` (``"probes.json"`` or ``"probes"``), found by
    :func:`fscal_edu.report.load_results` (``bench/results``, also in an installed package)."""
    return load_results(name.removesuffix(".json"), results_dir)


# ---------------------------------------------------------------------------------------------
# Readings the claims share
# ---------------------------------------------------------------------------------------------

def skip_probe(names=None) -> str:
    """The probe of ``bench/probes.py`` that skips ``names`` (default: every registered stage),
    e.g. ``"skip qtos+dynamics+stoq"``."""
    return "skip " + "+".join(names if names is not None else stages.names())


def skip_delta(probes: dict, names=None, checkpoint: str = FULL_CHECKPOINT) -> float:
    """mAP@0.5 of the trained model with ``names`` skipped at test time, minus as trained (mean of
    the draws; negative: skipping costs accuracy)."""
    return probe_results(probes, checkpoint)[skip_probe(names)]["delta"]


def skip_interval(probes: dict, names=None, checkpoint: str = FULL_CHECKPOINT) -> list:
    """The bootstrap 95% interval of :func:`skip_delta` over the test episodes."""
    return probe_results(probes, checkpoint)[skip_probe(names)]["ci95_delta"]


def trained_as_well(ablations: dict, variant: str, shots: int = 5) -> bool:
    """The rule "does as well": ``variant``, trained from scratch, has a mean test mAP@0.5 over its
    seeds no more than one standard deviation of the full model's seeds below the full model's mean
    (at the full model's longest training for ``shots``)."""
    full, other = summary_entry(ablations, "full", shots), summary_entry(ablations, variant, shots)
    if full is None or other is None:
        return False
    return does_as_well(full["mAP@0.5"], other["mAP@0.5"])


def skip_hurts_every_world(mechanisms: dict, names=None) -> bool:
    """In every world of ``mechanisms.json`` whose full models were probed, skipping ``names``
    (default: every registered stage) lowers the mean mAP@0.5 over the seeds."""
    costs = skip_costs(mechanisms, ",".join(names if names is not None else stages.names()))
    return bool(costs) and all(sum(c) / len(c) > 0 for c in costs)


# ---------------------------------------------------------------------------------------------
# The registry: marker name -> Claim. Each group of notebooks adds its entries in its own section.
# ---------------------------------------------------------------------------------------------

CLAIMS: dict[str, Claim] = {}

# --- the stage story (told alike in notebooks 03-05, 07 and 08)
CLAIMS |= {
    "skip_all_hurts_trained": Claim(
        "Skipping all three stages at test time lowers the shipped full model's mAP@0.5 a little, by "
        "less than its test episodes can resolve: the 95% interval of the drop holds 0.",
        "probes.json", lambda r: skip_delta(r) < 0 and skip_interval(r)[0] < 0 < skip_interval(r)[1]),
    "no_stages_as_well": Claim(
        "A model trained from scratch without the three stages does as well as the full model: "
        "its mean mAP@0.5 over the seeds is no more than one standard deviation of the full "
        "model's seeds below the full model's mean. The model does not need its stages.",
        "ablations.json", lambda r: trained_as_well(r, "no_stages")),
}

# --- notebooks 03-05: each stage's notebook says that a model trained without it does as well
CLAIMS |= {
    "no_qtos_as_well": Claim(
        "A model trained from scratch without QtoS Context-CA does as well as the full model.",
        "ablations.json", lambda r: trained_as_well(r, "no_qtos")),
    "no_dynamics_as_well": Claim(
        "A model trained from scratch without Dynamics-CA does as well as the full model.",
        "ablations.json", lambda r: trained_as_well(r, "no_dynamics")),
    "no_stoq_as_well": Claim(
        "A model trained from scratch without StoQ Context-CA does as well as the full model.",
        "ablations.json", lambda r: trained_as_well(r, "no_stoq")),
}

# --- notebooks 06-07

def variant_seeds(ablations: dict, model: str, shots: int = 5) -> list[float]:
    """Per-seed test mAP@0.5 of ``model`` at the full model's longest training for ``shots``."""
    steps = full_steps(ablations, shots)
    return [r["mAP@0.5"] for r in ablations["runs"]
            if r["model"] == model and r["shots"] == shots and r["steps"] == steps]


def not_measurably_lower(ablations: dict, variant: str, shots: int = 5, alpha: float = 0.05) -> bool:
    """``variant`` trained from scratch is not below the full model at ``p < alpha`` (Welch's t)."""
    w = welch(variant_seeds(ablations, variant, shots), variant_seeds(ablations, "full", shots))
    return w.diff >= 0 or w.p >= alpha


def measurably_higher(ablations: dict, model: str, than: str, shots: int = 5, alpha: float = 0.05) -> bool:
    """``model``'s seeds score above ``than``'s at ``p < alpha`` (Welch's t)."""
    w = welch(variant_seeds(ablations, model, shots), variant_seeds(ablations, than, shots))
    return w.diff > 0 and w.p < alpha


CLAIMS |= {
    "no_relation_not_lower": Claim(
        "On this world, a model trained without the relation module does not score measurably lower "
        "than the full model.",
        "ablations.json", lambda r: not_measurably_lower(r, "no_relation")),
    "full_beats_blind": Claim(
        "The full model, which reads the supports, scores measurably higher than the support-blind "
        "control trained the same way, when this comparison is tested on its own (Welch's p < 0.05; "
        "notebook 08 tests eight comparisons at once and corrects for that with Holm's method).",
        "ablations.json", lambda r: measurably_higher(r, "full", "blind")),
}

# --- notebook 08
CLAIMS |= {
    "skip_all_hurts_every_world": Claim(
        "In every world of section 9, skipping all three stages at test time lowers the trained full "
        "models' mean mAP@0.5.",
        "mechanisms.json", skip_hurts_every_world),
    "no_world_needs_a_stage": Claim(
        "In no world of the sweeps does a model trained with one stage off score clearly below the full "
        "model (Δ ≥ 0.05 with p < 0.05).",
        "mechanisms.json", lambda r: not any(it.get("p") is not None and it["delta"] >= BAR and it["p"] < ALPHA
                                             for it in r["sweeps"])),
}


# ---------------------------------------------------------------------------------------------
# Checking a notebook's markdown
# ---------------------------------------------------------------------------------------------

def markers(markdown: str) -> list[str]:
    """The claim names marked in one markdown text, in order."""
    return MARKER.findall(markdown)


def check_cell(markdown: str, claims: dict | None = None, results_dir=None, label: str = "") -> list[str]:
    """Every problem of the claims marked in one markdown cell: an unknown name, a sentence the cell
    does not hold, a results file that is missing, or a claim that does not hold on it. Empty: all true."""
    claims = CLAIMS if claims is None else claims
    problems, text = [], normalise(markdown)
    for name in markers(markdown):
        claim = claims.get(name)
        if claim is None:
            problems.append(f"{label}: claim {name!r} is not registered in fscal_edu.evidence.CLAIMS")
            continue
        if normalise(claim.text) not in text:
            problems.append(f"{label}: claim {name!r}: the cell does not hold its sentence {claim.text!r}")
        try:
            ok = bool(claim.holds(results(claim.results, results_dir)))
        except (FscalError, KeyError, TypeError, ValueError) as e:
            problems.append(f"{label}: claim {name!r}: cannot read {claim.results}: {e}")
            continue
        if not ok:
            problems.append(f"{label}: claim {name!r} does not hold on bench/results/{claim.results}")
    return problems


def check_notebook(path, claims: dict | None = None, results_dir=None) -> list[str]:
    """:func:`check_cell` over every markdown cell of the notebook at ``path``."""
    path = Path(path)
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as e:
        raise FscalError(f"{where(file=path)}: not a readable notebook ({e})") from None
    problems = []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            problems += check_cell(source, claims, results_dir, label=f"{path.name} cell {i}")
    return problems
