"""Every results file the course quotes was made by the code that ships.

Each results file (``bench/results/*.json``) and each shipped checkpoint and run log
(``data_samples/checkpoints``) carries ``"code"``: the behaviour fingerprint of the code that made
it (``bench/_fingerprint.py``). A file whose fingerprint differs from the current code's, or that
carries none, is stale: its numbers may not be the ones this code gives. The fingerprint hashes
what the code computes, not its text, so a comment or a refactor that keeps every number does not
make a file stale; a change of any number in the model, the loss, the training step, the episode
sampling or the evaluation does.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _fingerprint  # noqa: E402

QUOTED = re.compile(r"(bench/results/[A-Za-z0-9_]+\.json|data_samples/checkpoints/[A-Za-z0-9_/.]*[A-Za-z0-9_])")


def quoted_paths() -> list[str]:
    """The results files and checkpoints named in the notebooks, the README and the docs."""
    texts = [p.read_text(encoding="utf-8") for p in
             [*sorted((ROOT / "notebooks").glob("*.ipynb")), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    return sorted({m for text in texts for m in QUOTED.findall(text)})


def stamped_files(path: str) -> list[Path]:
    """The file(s) that carry the fingerprint of a quoted ``path``: a results file itself; a run
    log's ``summary.json``; every run's ``summary.json`` for the runs folder; a checkpoint itself."""
    p = ROOT / path
    if p.is_dir():
        return sorted(p.rglob("summary.json")) + sorted(p.rglob("*.pt"))
    if p.parent.parent.name == "runs" and p.name in ("metrics.jsonl", "config.json"):
        return [p.parent / "summary.json"]
    return [p]


def stamp_of(path: Path):
    """The ``"code"`` stamp of a results file (a dict, or a list whose every row carries one), a
    run's ``summary.json`` or a checkpoint (``extra["code"]``); None when it has none."""
    if path.suffix == ".pt":
        ck = torch.load(path, map_location="cpu", weights_only=False)
        return (ck.get("extra") or {}).get("code")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        stamps = [r.get("code") if isinstance(r, dict) else None for r in data]
        return stamps[0] if stamps and all(s == stamps[0] for s in stamps) else None
    return data.get("code") if isinstance(data, dict) else None


def staleness(files: list[Path], current: dict, root: Path = ROOT) -> list[str]:
    """One line per stale or unstamped file (named relative to ``root``)."""
    lines = []
    for f in files:
        stamp, rel = stamp_of(f), f.relative_to(root)
        if not isinstance(stamp, dict) or "behaviour" not in stamp:
            lines.append(f"{rel}: no code fingerprint (made before results carried one; re-make it)")
        elif stamp.get("recipe") != current["recipe"]:
            lines.append(f"{rel}: fingerprint of recipe {stamp.get('recipe')}, the current recipe is "
                         f"{current['recipe']} (re-make it, or verify it at the commit that made it)")
        elif stamp["behaviour"] != current["behaviour"]:
            lines.append(f"{rel}: made by code that computes other numbers (behaviour "
                         f"{stamp['behaviour']} at commit {stamp.get('commit')}, now {current['behaviour']})")
    return lines


def test_the_course_quotes_results_files():
    quoted = quoted_paths()
    assert "data_samples/checkpoints/full.pt" in quoted
    assert "bench/results/ablations.json" in quoted and "bench/results/probes.json" in quoted


def stale_files() -> dict:
    """Quoted path of each stale or unstamped file -> the reason."""
    files = sorted({f for path in quoted_paths() for f in stamped_files(path) if f.is_file()})
    assert len(files) >= 10
    lines = staleness(files, _fingerprint.code_fingerprint())
    return {line.split(":")[0]: line for line in lines}


def test_no_quoted_results_file_is_stale():
    stale = stale_files()
    assert not stale, "stale results files (their numbers may differ from what this code gives):\n" + "\n".join(stale.values())


def test_staleness_names_an_unstamped_and_a_stale_file(tmp_path):
    current = {"behaviour": "0123456789abcdef", "recipe": _fingerprint.RECIPE}
    fresh, old, bare = (tmp_path / n for n in ("fresh.json", "old.json", "bare.json"))
    fresh.write_text(json.dumps({"x": 1, "code": current}))
    old.write_text(json.dumps([{"x": 1, "code": current | {"behaviour": "fedcba9876543210"}}]))
    bare.write_text(json.dumps({"x": 1}))
    lines = staleness([fresh, old, bare], current, tmp_path)
    assert [line.split(":")[0] for line in lines] == ["old.json", "bare.json"]
    assert "fedcba9876543210" in lines[0] and "no code fingerprint" in lines[1]


# ---------------------------------------------------------------------------------------------
# The fingerprint follows the numbers, not the text
# ---------------------------------------------------------------------------------------------

def tiny_part() -> str:
    with _fingerprint._canonical():
        return _fingerprint._model_part(_fingerprint._configs()["tiny"])


def test_fingerprint_changes_when_a_loss_number_changes(monkeypatch):
    from fscal_edu import losses
    before = tiny_part()
    assert tiny_part() == before                                       # deterministic
    balanced_bce = losses.balanced_bce
    monkeypatch.setattr(losses, "balanced_bce", lambda *a, **k: balanced_bce(*a, **k) * 1.0001)
    assert tiny_part() != before


def test_fingerprint_changes_when_an_initial_weight_changes(monkeypatch):
    from fscal_edu import model
    before = tiny_part()
    init = model.RelationHead.__init__

    def nudged(self, *a, **k):
        init(self, *a, **k)
        with torch.no_grad():
            next(self.parameters()).mul_(1.0001)
    monkeypatch.setattr(model.RelationHead, "__init__", nudged)
    assert tiny_part() != before


def test_fingerprint_ignores_comments_and_docstrings(tmp_path):
    """A copy of the package with comments and docstrings edited computes the same numbers (run in
    another process, so that the copy is what gets imported) and has the same source hash."""
    shutil.copytree(ROOT / "fscal_edu", tmp_path / "fscal_edu", ignore=shutil.ignore_patterns("__pycache__"))
    losses = tmp_path / "fscal_edu" / "losses.py"
    text = losses.read_text(encoding="utf-8")
    text = text.replace('"""', '"""Reworded. ', 1)
    text = text.replace("\ndef ", "\n# a comment that changes no number\ndef ")
    losses.write_text(text, encoding="utf-8")
    assert _fingerprint.source_fingerprint(tmp_path) == _fingerprint.source_fingerprint(ROOT)
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import fscal_edu, _fingerprint as f; "
            "assert fscal_edu.__file__.startswith(sys.argv[1]), fscal_edu.__file__; "
            "\nwith f._canonical(): print(f._model_part(f._configs()['tiny']))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT / "bench")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == tiny_part()
    losses.write_text(text + "\nUNUSED = 1\n", encoding="utf-8")                  # code, not a comment
    assert _fingerprint.source_fingerprint(tmp_path) != _fingerprint.source_fingerprint(ROOT)
