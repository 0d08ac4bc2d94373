"""Every notebook runs to its end headless, as ``jupyter nbconvert --to notebook --execute`` runs it.

nbval (the notebooks in ``python -m pytest``) runs the cells with its own client; this test runs
them with nbclient, the library behind nbconvert, which also plays the front-end of the widgets
(it stores their state and answers for ``ipywidgets.Output`` areas). A widget that needs a browser
to answer, or an output area that makes nbclient talk back to the kernel while a cell runs, shows
here as a cell whose reply the client takes in long after the kernel sent it (nbclient then waits
until the cell's timeout and goes on as if nothing happened, so the lag is what is checked), or as a
cell that does not return within ``CELL_TIMEOUT``.

Each notebook runs in quick mode from its own temporary folder: ``WORK/notebooks/<copy>`` beside a
private ``WORK/runs/`` (the runs the notebooks train), with the repository's other top-level
entries (``data_samples``, ``bench``, ...) linked in, as the notebooks read them through ``..``.
Nothing is written into the repository: the test checks that no file appeared under
``data_samples/`` or ``bench/`` (the feature store's ``.fscal_cache`` aside, which any run of the
notebooks may fill).
Per notebook: no cell raises, every code cell ran, the client took in every cell's reply within
``REPLY_LAG`` seconds of the kernel sending it.

``FSCAL_HEADLESS_TIMEOUT`` (seconds per cell, default 300) changes the timeout.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = int(os.environ.get("FSCAL_HEADLESS_TIMEOUT", 300))
# seconds between the kernel's reply and the client taking it in: a stalled client waits out the
# cell's whole timeout (300 s), while a busy machine delays a reply by seconds, not minutes
REPLY_LAG = 120.0
KEEP_OUT = {"notebooks", "runs", "my_parts"}   # never linked into the work folder (nor hidden entries)
WATCHED = ("data_samples", "bench")             # what the notebooks read through their links


def _work_folder(tmp: Path, notebook: Path) -> Path:
    """``tmp/notebooks/<copy of notebook>``, ``tmp/runs/`` and links to the repository's other
    top-level entries; returns the notebook's copy."""
    (tmp / "notebooks").mkdir()
    (tmp / "runs").mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in KEEP_OUT and not entry.name.startswith("."):
            (tmp / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    copy = tmp / "notebooks" / notebook.name
    copy.write_bytes(notebook.read_bytes())
    return copy


def _snapshot() -> set[str]:
    """Every file under the repository's ``WATCHED`` folders (``.fscal_cache`` and ``__pycache__`` aside)."""
    files = set()
    for folder in WATCHED:
        for d, dirs, names in os.walk(ROOT / folder):
            dirs[:] = [x for x in dirs if x not in (".fscal_cache", "__pycache__")]
            files |= {str((Path(d) / name).relative_to(ROOT)) for name in names}
    return files


def run_headless(nb, folder: Path, env: dict, timeout: int = CELL_TIMEOUT) -> dict[int, float]:
    """Execute ``nb`` in place with nbclient from ``folder``; ``{cell index: seconds}`` by which the
    client took in the cell's reply after the kernel had sent it."""
    lags = {}

    def executed(cell, cell_index, execute_reply):
        sent = datetime.fromisoformat(cell.metadata["execution"]["shell.execute_reply"].replace("Z", "+00:00"))
        lags[cell_index] = (datetime.now(timezone.utc) - sent).total_seconds()

    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                                     on_cell_executed=executed, resources={"metadata": {"path": str(folder)}})
    client.execute(env=env)
    return lags


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(notebook, tmp_path):
    copy = _work_folder(tmp_path, notebook)
    before = _snapshot()
    nb = nbformat.read(copy, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "FSCAL_VERDICTS"}
    env.update(FSCAL_QUICK="1", FSCAL_PARTS=str(tmp_path / "my_parts"))
    start = time.monotonic()
    try:
        lags = run_headless(nb, copy.parent, env)
    except nbclient.exceptions.CellTimeoutError as e:
        pytest.fail(f"{notebook.name}: a cell did not return within {CELL_TIMEOUT} s under nbclient "
                    f"(as under `jupyter nbconvert --execute`):\n{str(e)[:2000]}", pytrace=False)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{notebook.name}: a cell raised under nbclient:\n{str(e)[-3000:]}", pytrace=False)
    print(f"{notebook.name}: ran headless in {time.monotonic() - start:.1f} s")

    late = {i: round(lag, 1) for i, lag in lags.items() if lag > REPLY_LAG}
    assert not late, (f"{notebook.name}: the client took in these cells' replies this many seconds after the "
                      f"kernel sent them (a lost wake-up: under plain nbconvert, a hang): {late}")
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    not_run = [i for i in code if nb.cells[i].execution_count is None]
    assert not not_run, f"{notebook.name}: cells {not_run} did not run"
    created = sorted(_snapshot() - before)
    assert not created, f"{notebook.name}: running it wrote files into the repository: {created[:10]}"
