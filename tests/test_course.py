"""The teacher's kit: the student release holds no reference solution, and grading three (four)
fake submissions of notebook 03 gives the expected table, row by row."""
from __future__ import annotations

import csv
import inspect
import json
import re
from pathlib import Path

import nbformat
import pytest

from fscal_edu import course, mistakes, solutions
from fscal_edu.utils import FscalError

ROOT = Path(__file__).resolve().parents[1]
NB03 = "03_qtos_context_ca.ipynb"
NB03_EXERCISES = ("cross_attend", "attend", "qtos", "column_softmax", "support_mass")


def _all_text(folder: Path) -> str:
    """Every cell's source and every output's text of every released notebook, decoded."""
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.suffix != ".ipynb":
            parts.append(path.read_text(encoding="utf-8", errors="replace") if path.is_file() else "")
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            parts.append(cell.source)
            for out in cell.get("outputs", []):
                parts.append(out.get("text", "") + "".join(str(v) for v in out.get("data", {}).values()))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    course.release(ROOT / "notebooks", out)
    return out


def test_release_holds_no_reference_solution(released):
    names = sorted(p.name for p in released.iterdir())
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    text = _all_text(released)
    bodies = course.solution_sources()
    assert len(bodies) >= 15 and {"cross_attend", "attend", "qtos", "stoq", "tiou"} <= set(bodies)
    for name, body in bodies.items():
        assert body.strip() and body.strip() not in text, name
        for line in body.splitlines():
            if len(line.strip()) >= 30:
                assert line.strip() not in text, f"{name}: {line.strip()}"
    assert course.REFERENCE_MARK not in text
    # the reference is called only as the fallback of a student's function not written yet
    for line in text.splitlines():
        if re.search(r"\bsolutions\.\w+\(", line) and "parts.mine(" not in line:
            assert re.search(r"if \w+ is \.\.\.|lambda:", line), line


def test_release_clears_exercises_keeps_the_rest(released):
    shipped = nbformat.read(ROOT / "notebooks" / NB03, as_version=4)
    nb = nbformat.read(released / NB03, as_version=4)
    exercises = [c for c in nb.cells if course.exercise_checks(c)]
    assert [course.exercise_checks(c) for c in exercises] == [[f"check_{n}"] for n in NB03_EXERCISES]
    assert all(c.outputs == [] and c.execution_count is None for c in exercises)
    assert len(nb.cells) == len(shipped.cells) - sum(course.is_reference(c) for c in shipped.cells)
    figures = lambda n: sum("application/vnd.plotly.v1+json" in o.get("data", {})  # noqa: E731
                            for c in n.cells if c.cell_type == "code" for o in c.outputs)
    assert figures(nb) == figures(shipped) > 0
    # the cell that uses the support mass goes through the student's function (the reference only
    # while theirs is a stub)
    assert any("parts.mine(support_mass, " in c.source for c in nb.cells)


def test_release_refuses_a_folder_without_notebooks(tmp_path):
    with pytest.raises(FscalError, match=str(tmp_path.name)):
        course.release(tmp_path, tmp_path / "out")


def _fill(nb, answers: dict) -> None:
    """Replace each exercise's stub (``def name(...)`` up to the checker call) by ``answers[name]``."""
    for cell in nb.cells:
        if course.exercise_checks(cell):
            name = re.search(r"^def (\w+)\(", cell.source, re.M).group(1)
            check = cell.source[cell.source.index("exercises.check_"):]
            cell.source = answers[name] + "\n\n" + check


@pytest.fixture(scope="module")
def graded(released, tmp_path_factory):
    subs = tmp_path_factory.mktemp("submissions")
    imports = "import torch\nfrom einops import rearrange, reduce\n\n"       # what solutions.py imports
    correct = {n: imports + inspect.getsource(getattr(solutions, n))
               for n in ("my_cross_attend", "my_column_attention", "support_mass")}
    # the parts' references are the library's functions, under the student's names
    correct["my_attend"] = ("from fscal_edu import attention\n\ndef my_attend(X_a, X_b, W, **options):\n"
                            "    return attention.cross_attend(X_a, X_b, W, **options)\n")
    correct["my_qtos"] = ("from fscal_edu import attention\n\ndef my_qtos(X_Q, X_S, W, mask_Q, attend):\n"
                          "    return attention.qtos_part(X_Q, X_S, W, mask_Q, attend)\n")
    wrong = dict(correct, my_cross_attend=(
        "from fscal_edu import mistakes\n\ndef my_cross_attend(X_a, X_b, W):\n"
        "    return mistakes.cross_attend_variant(X_a, X_b, W, no_residual=True)\n"))
    for student, answers in (("alice", correct), ("bob", wrong), ("carol", None), ("dave", "crash")):
        nb = nbformat.read(released / NB03, as_version=4)
        if isinstance(answers, dict):
            _fill(nb, answers)
        if answers == "crash":                                             # the kernel dies at once
            nb.cells.insert(0, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
        if student == "carol":                                             # one notebook, named after her
            nbformat.write(nb, subs / "carol.ipynb")
            continue
        (subs / student).mkdir()
        nbformat.write(nb, subs / student / NB03)
    out = tmp_path_factory.mktemp("grades")
    return course.grade(subs, out, cwd=ROOT / "notebooks", timeout=300), out


def test_grade_table_row_by_row(graded):
    data, out = graded
    cols = sorted(f"03 {n}" for n in NB03_EXERCISES)
    assert data["columns"] == cols
    rows = data["students"]
    assert rows["alice"] == dict.fromkeys(cols, "correct")
    assert rows["bob"] == dict.fromkeys(cols, "correct") | {"03 cross_attend": "wrong: " + mistakes.CROSS_ATTEND["no_residual"]}
    assert rows["carol"] == dict.fromkeys(cols, "not attempted")
    assert all(v.startswith("error: the notebook stopped before this exercise (DeadKernelError")
               for v in rows["dave"].values()), rows["dave"]
    assert data["runs"]["alice/" + NB03] == data["runs"]["carol/carol.ipynb"] == "ran" and data["runs"]["dave/" + NB03].startswith("DeadKernelError")
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["student", *cols]
    assert table[2] == ["bob", *("wrong: " + mistakes.CROSS_ATTEND["no_residual"] if c == "03 cross_attend"
                                 else "correct" for c in cols)]
    assert json.loads((out / "grades.json").read_text())["students"] == rows


def test_grade_summary_per_exercise(graded):
    data, out = graded
    s = data["summary"]["03 cross_attend"]
    assert (s["correct"], s["wrong"], s["not attempted"], s["error"]) == (1, 1, 1, 1)
    assert s["most common mistake"] == mistakes.CROSS_ATTEND["no_residual"]
    assert data["summary"]["03 support_mass"]["correct"] == 2
    assert "| 03 cross_attend | 1 | 1 | 1 | 1 | the residual X_b is missing" in (out / "summary.md").read_text()


def test_grade_refuses_an_empty_folder(tmp_path):
    with pytest.raises(FscalError, match="no student folder or notebook"):
        course.grade(tmp_path, tmp_path / "out", cwd=ROOT / "notebooks")


def test_command_line_release_and_bad_roots(tmp_path, capsys):
    from fscal_edu.cli import main
    assert main(["course", "release", "--out", str(tmp_path / "rel"), "--root", str(ROOT)]) == 0
    assert len(list((tmp_path / "rel").glob("*.ipynb"))) == 10
    assert main(["course", "release", "--out", str(ROOT / "notebooks"), "--root", str(ROOT)]) == 2
    err = capsys.readouterr().err
    assert "field '--out'" in err and "input" in err            # never written over the course's notebooks
    assert main(["site", "--out", str(tmp_path / "site"), "--root", str(tmp_path)]) == 2
    assert "field 'root': not the course's checkout" in capsys.readouterr().err
    assert main(["course", "grade", str(tmp_path / "none"), "--out", str(tmp_path / "g")]) == 2
    assert "not a folder of submissions" in capsys.readouterr().err


def test_a_notebook_past_its_time_limit_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from fscal_edu import exercises"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(60)"),
        nbformat.v4.new_code_cell("def my_tiou(a, b):\n    # your code here\n    raise NotImplementedError\n\n"
                                  "exercises.check_tiou(my_tiou)")])
    nbformat.write(nb, tmp_path / "02_proposals.ipynb")
    done, verdicts, stopped = course.run_notebook(tmp_path / "02_proposals.ipynb", cwd=tmp_path, timeout=6)
    assert stopped.startswith("TimeoutError: the notebook ran past its time limit of 6 s"), stopped
    assert course.notebook_verdicts(done, verdicts, stopped) == {
        "tiou": f"error: the notebook stopped before this exercise ({stopped})"}


def test_shipped_notebooks_show_no_reference_solution():
    """No output of a shipped notebook (as committed, executed) holds a line of a reference
    solution, the library functions that are the parts' answers included: a student asks for one
    on purpose with ``reveal(name, sure=True)``."""
    bodies = course.solution_sources()
    leaks = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for out in cell.get("outputs", []):
                text = out.get("text", "") + "".join(str(v) for v in out.get("data", {}).values())
                leaks += [f"{path.name} cell {i}: {name}: {ln.strip()}" for name, body in bodies.items()
                          for ln in body.splitlines() if len(ln.strip()) >= 30 and ln.strip() in text]
    assert not leaks, "\n".join(leaks[:20])
