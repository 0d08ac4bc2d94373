"""The teacher's kit: the student version of the notebooks (:func:`release`) and the grading of
submitted notebooks (:func:`grade`).

An exercise is a code cell with a stub (``# your code here``) and a checker call at the start of
a line (``exercises.check_*(...)`` or ``check_*(...)``); the reference solution is the collapsed code cell below it that
starts with ``# Reference solution``. The checkers of :mod:`fscal_edu.exercises` record each
verdict (:func:`fscal_edu.checking.record`) in the file named by ``$FSCAL_VERDICTS``: the grader
runs every submitted notebook headless with that variable set and reads the verdicts back.
"""
from __future__ import annotations

import ast
import collections
import csv
import inspect
import json
import os
import re
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat

from . import checking, solutions
from .utils import FscalError, where

REFERENCE_MARK = "# Reference solution"
CHECK_CALL = re.compile(r"^\s*(?:exercises\.)?(check_\w+)\(", re.M)
NOTEBOOK = re.compile(r"^\d\d_.*\.ipynb$")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def is_reference(cell) -> bool:
    """A reference-solution cell: a code cell that starts with ``# Reference solution``."""
    return cell.cell_type == "code" and cell.source.lstrip().startswith(REFERENCE_MARK)


def exercise_checks(cell) -> list[str]:
    """The checkers an exercise cell calls at the start of a line (``[]`` for any other cell, and for
    the reference cells): found by the call, so a filled-in stub is still the exercise."""
    if cell.cell_type != "code" or is_reference(cell):
        return []
    return CHECK_CALL.findall(cell.source)


def solution_sources() -> dict[str, str]:
    """``{name: body}`` of every reference solution that :func:`fscal_edu.solutions.reveal` can
    show (the parts' library functions included): the lines of code after the signature and the
    docstring (what must not reach a student)."""
    out = {}
    for name, (_, fn) in solutions.revealable().items():
        lines = inspect.getsource(fn).splitlines()
        node = ast.parse(textwrap.dedent("\n".join(lines))).body[0]
        # the body starts after the docstring (comments above the first statement included)
        start = node.body[0].end_lineno if ast.get_docstring(node) else node.body[0].lineno - 1
        out[name] = "\n".join(lines[start:])
    return out


def _leaks(text: str, bodies: dict[str, str]) -> bool:
    """Does ``text`` contain a line of code of a reference solution (its longer lines)?"""
    return any(ln.strip() in text for body in bodies.values() for ln in body.splitlines()
               if len(ln.strip()) > 25)


def _student_names(nb) -> dict[str, str]:
    """``{reference: the student's name}``: the reference cell's ``check_x(solutions.f`` against
    the exercise cell's ``check_x(my_f`` (``"f("`` when the reference is called for a value)."""
    given = {}
    for cell in nb.cells:
        for check, ref, call in re.findall(r"(check_\w+)\(solutions\.(\w+)(\()?", cell.source):
            given[check] = ref + call
    names = {}
    for cell in nb.cells:
        for check, mine in re.findall(r"^\s*(?:exercises\.)?(check_\w+)\((\w+)", cell.source, re.M):
            if exercise_checks(cell) and check in given:
                names[given[check]] = mine
    return names


def _student_cell(cell, own: dict[str, str]) -> None:
    """Rewrite a kept cell for the student: ``solutions.f`` -> the student's own answer where the
    notebook asks for one; ``solutions`` left out of the setup's imports."""
    def mine(m):
        name, call = m.group(1), m.group(2)
        if call and name + "(" in own:
            return own[name + "("]
        return (own[name] + (call or "")) if name in own else m.group(0)
    src = re.sub(r"\bsolutions\.(\w+)(\([^()]*\))?", mine, cell.source)
    src = re.sub(r"^(from fscal_edu import .*?), solutions$", r"\1", src, flags=re.M)
    src = re.sub(r"^from fscal_edu import solutions, (.*)$", r"from fscal_edu import \1", src, flags=re.M)
    if re.search(r"\bsolutions\.", src) and "import solutions" not in src:
        src = "from fscal_edu import solutions   # the library's reference, used for a comparison\n" + src
    cell.source = src


def release_notebook(nb, bodies: dict[str, str]):
    """The student version of one notebook: reference cells dropped, exercise cells' outputs
    cleared, every output that shows a reference solution's code dropped."""
    own = _student_names(nb)
    nb.cells = [c for c in nb.cells if not is_reference(c)]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if exercise_checks(cell):
            cell.outputs, cell.execution_count = [], None
            continue
        _student_cell(cell, own)
        cell.outputs = [o for o in cell.outputs if not _leaks(json.dumps(o), bodies)]
    return nb


def course_root(root=None) -> Path:
    """The course's checkout (README.md, docs/, notebooks/): ``root`` if given, else the current
    folder if it is one, else the checkout of an editable install."""
    from .runtime import _source_checkout
    candidates = [Path(root)] if root is not None else [Path.cwd(), _source_checkout()]
    for folder in candidates:
        if folder is not None and (folder / "notebooks").is_dir() and (folder / "README.md").is_file():
            return folder
    raise FscalError(f"{where(file=root, field='root')}: not the course's checkout (it needs README.md, "
                     f"docs/ and notebooks/); pass --root with the repository's folder")


def course_notebooks(folder) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``folder``, in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FscalError(f"{where(file=folder)}: not a folder of notebooks")
    found = sorted(p for p in folder.iterdir() if NOTEBOOK.match(p.name))
    if not found:
        raise FscalError(f"{where(file=folder)}: no notebook named NN_*.ipynb in it")
    return found


def release(notebooks, out) -> list[Path]:
    """Write the student version of every notebook of the folder ``notebooks`` into ``out``
    (notebooks only: no code of the package, so nothing of :mod:`fscal_edu.solutions` to import)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bodies, written = solution_sources(), []
    for path in course_notebooks(notebooks):
        nb = release_notebook(nbformat.read(path, as_version=4), bodies)
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written

# ---------------------------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------------------------


def submissions(folder) -> dict[str, list[Path]]:
    """``{student: [notebooks]}``: one sub-folder per student, or one notebook per student."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FscalError(f"{where(file=folder)}: not a folder of submissions")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            found[entry.name] = sorted(entry.rglob("*.ipynb"))
        elif entry.suffix == ".ipynb":
            found[entry.stem] = [entry]
    found = {k: v for k, v in found.items() if v}
    if not found:
        raise FscalError(f"{where(file=folder)}: no student folder or notebook (.ipynb) in it")
    return found


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


WIDGET_CELL_SECONDS = 20     # a cell that shows a widget: its reply sometimes waits out the cell's limit


def _saved_seconds(cell) -> float:
    """How long the cell took when its notebook was saved (0 if the notebook does not say)."""
    from datetime import datetime
    run = cell.get("metadata", {}).get("execution", {})
    try:
        start, end = (datetime.fromisoformat(run[k].rstrip("Z")) for k in ("iopub.execute_input", "shell.execute_reply"))
    except (KeyError, ValueError, AttributeError):
        return 0.0
    return max(0.0, (end - start).total_seconds())


def _shows_widget(cell) -> bool:
    return any(WIDGET_MIME in o.get("data", {}) for o in cell.get("outputs", []))


def widget_sources(folder) -> dict[str, float]:
    """``{source: seconds}`` of the course's cells that show a widget (from the saved outputs of
    ``folder``'s notebooks) and how long each took when saved."""
    found = {}
    for path in Path(folder).glob("[0-9][0-9]_*.ipynb"):
        found |= {c.source: _saved_seconds(c) for c in nbformat.read(path, as_version=4).cells
                  if c.cell_type == "code" and _shows_widget(c)}
    return found


def _widget_limit(cell, widgets: dict) -> float | None:
    """The time limit of a cell that shows a widget (None for any other cell): a short one, longer
    for a cell that took long when saved (notebook 07's training shows a widget)."""
    if cell.source not in widgets and not _shows_widget(cell):
        return None
    return WIDGET_CELL_SECONDS + 4 * max(widgets.get(cell.source, 0.0), _saved_seconds(cell))


def exercise_notebooks(folder) -> dict[str, str]:
    """``{exercise: "03"}``: the course notebook (its number) that asks each exercise."""
    return {name.removeprefix("check_"): path.name[:2] for path in course_notebooks(folder)
            for cell in nbformat.read(path, as_version=4).cells for name in exercise_checks(cell)}


def run_notebook(path: Path, *, cwd: Path, timeout: int, widgets: dict | None = None,
                 parts: Path | None = None) -> tuple:
    """Execute one notebook headless (``FSCAL_QUICK=1``, at most ``timeout`` seconds in all) ->
    (executed notebook, the checkers' verdicts in order, one line if the run stopped early, else None).
    ``parts``: the folder that keeps the parts this student's checkers save (``$FSCAL_PARTS``), so
    that notebook 07 builds the model from this student's parts and nobody else's."""
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    fd, log = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    saved = {k: os.environ.get(k) for k in (checking.VERDICTS_ENV, "FSCAL_QUICK", "FSCAL_PARTS")}
    os.environ.update({checking.VERDICTS_ENV: log, "FSCAL_QUICK": "1"})
    if parts is not None:
        os.environ["FSCAL_PARTS"] = str(parts)
    deadline, stopped = time.monotonic() + timeout, None

    def cell_limit(cell) -> float:
        left = deadline - time.monotonic()
        if left < 1:
            raise TimeoutError(f"the notebook ran past its time limit of {timeout} s")
        cap = _widget_limit(cell, widgets or {})
        return max(1.0, left if cap is None else min(left, cap))
    try:
        NotebookClient(nb, timeout_func=cell_limit, interrupt_on_timeout=True, allow_errors=True,
                       kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    except Exception as e:  # noqa: BLE001 - a timeout or a dead kernel is reported, not fatal
        stopped = f"{type(e).__name__}: {_one_line(e)}"
    else:
        if time.monotonic() > deadline:          # its last cell was interrupted at the limit
            stopped = f"TimeoutError: the notebook ran past its time limit of {timeout} s"
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    lines = Path(log).read_text(encoding="utf-8").splitlines()
    Path(log).unlink()
    return nb, [json.loads(ln) for ln in lines if ln.strip()], stopped


def _cell_error(cell) -> str | None:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"error: {o.get('ename')}: {_one_line(o.get('evalue', ''))}"
    return None


def _printed_verdict(cell) -> str:
    """A checker outside the runtime (defined in the notebook): read what it printed."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if "not attempted" in text or not first:
        return "not attempted"
    return "correct" if first.lower().startswith("correct") else f"wrong: {_one_line(first)}"


def notebook_verdicts(nb, verdicts: list[dict], stopped: str | None) -> dict[str, str]:
    """``{exercise: verdict}`` for every exercise cell of an executed notebook, in order."""
    queue = collections.defaultdict(list)
    for v in verdicts:
        queue[v["exercise"]].append(v["verdict"])
    out = {}
    for cell in nb.cells:
        for name in exercise_checks(cell):
            key = name.removeprefix("check_")
            key += f" ({sum(k.split(' (')[0] == key for k in out) + 1})" if key in out else ""   # asked twice
            verdict = queue[name].pop(0) if queue[name] else None
            if stopped and not cell.get("outputs"):     # not run, or run after the client gave up
                out[key] = f"error: the notebook stopped before this exercise ({stopped})"
            elif verdict:
                out[key] = verdict
            elif _cell_error(cell):
                out[key] = _cell_error(cell)
            else:
                out[key] = _printed_verdict(cell)
    return out


def grade(folder, out, *, cwd, timeout: int = 600, only=None) -> dict:
    """Run every student's notebooks (``only``: notebook names to grade, e.g. ``["03_qtos_context_ca.ipynb"]``)
    in ``cwd`` (the course's ``notebooks/`` folder, where their relative paths resolve) and write
    ``out/grades.csv``, ``out/grades.json`` and ``out/summary.md``; return the table."""
    students, table, runs = submissions(folder), {}, {}
    widgets, numbers = widget_sources(cwd), exercise_notebooks(cwd)
    for student, paths in students.items():
        row = table.setdefault(student, {})
        parts = Path(tempfile.mkdtemp(prefix="fscal_parts_"))     # this student's parts, in notebook order
        for path in sorted(paths, key=lambda p: p.name):
            if only and path.name not in only:
                continue
            nb, verdicts, stopped = run_notebook(path, cwd=Path(cwd), timeout=timeout, widgets=widgets,
                                                 parts=parts)
            runs[f"{student}/{path.name}"] = stopped or "ran"
            for key, verdict in notebook_verdicts(nb, verdicts, stopped).items():
                number = numbers.get(key.split(" (")[0], path.name[:2] if NOTEBOOK.match(path.name) else "")
                row[f"{number} {key}".strip()] = verdict
        shutil.rmtree(parts, ignore_errors=True)
    return write_grades(table, runs, out)


def write_grades(table: dict, runs: dict, out) -> dict:
    """Write the grade table (CSV and JSON) and the teacher's summary per exercise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = sorted({c for row in table.values() for c in row})
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", *columns])
        for student, row in table.items():
            w.writerow([student, *(row.get(c, "not submitted") for c in columns)])
    summary = exercise_summary(table, columns)
    data = {"columns": columns, "students": table, "runs": runs, "summary": summary}
    (out / "grades.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    lines = ["| exercise | correct | wrong | not attempted | error | most common mistake |", "|---|---|---|---|---|---|"]
    for c, s in summary.items():
        lines.append(f"| {c} | {s['correct']} | {s['wrong']} | {s['not attempted']} | {s['error']} | "
                     f"{s['most common mistake'] or '-'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def exercise_summary(table: dict, columns: list[str]) -> dict:
    """Per exercise: how many students are correct, wrong, not attempted, in error, and the most
    common wrong answer."""
    summary = {}
    for c in columns:
        verdicts = [row.get(c, "not submitted") for row in table.values()]
        kinds = collections.Counter(v.split(":")[0] for v in verdicts)
        wrong = collections.Counter(v.removeprefix("wrong: ") for v in verdicts if v.startswith("wrong"))
        summary[c] = {"correct": kinds["correct"], "wrong": kinds["wrong"],
                      "not attempted": kinds["not attempted"] + kinds["not submitted"],
                      "error": kinds["error"],
                      "most common mistake": wrong.most_common(1)[0][0] if wrong else None}
    return summary
