"""Process-wide settings, applied by the entry points only, and where the shipped data lives.

The CLI (:func:`fscal_edu.cli.main`), :func:`fscal_edu.train.train` and the notebooks' setup cells
call :func:`configure_process`; no constructor or library function changes global torch state,
and nothing reads back what an earlier call set (a run's thread count is an argument of
:func:`~fscal_edu.train.train`).

:func:`shipped` finds the data the package ships (the world, the checkpoints, the results files
the reports read), installed from a wheel or in a source checkout, or in the folder named by the
environment variable ``FSCAL_DATA``.
"""
from __future__ import annotations

import json
import os
import time
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from .utils import FscalError, where


def configure_process(threads: int | None = None) -> None:
    """Settings for the whole process, in one place.

    * Denormal floats are flushed to zero: attention produces tiny values whose arithmetic can
      slow a CPU training step down sevenfold.
    * ``threads``: torch's intra-op thread count for the code that runs next (``None`` leaves it
      as it is). :func:`~fscal_edu.train.train` does not read it: a run's count is its own argument.
    """
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# The thread policy
# ---------------------------------------------------------------------------------------------

def cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                       # macOS, Windows
        return os.cpu_count() or 1


def busy_cores(interval: float = 0.25) -> float:
    """How many cores other programs keep busy right now: ``/proc/stat`` sampled over
    ``interval`` seconds (elsewhere the 1-minute load average, which lags)."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [float(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]                   # all, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (1 - (idle1 - idle0) / max(total1 - total0, 1e-9)) * (os.cpu_count() or 1)


def free_threads() -> int:
    """The thread policy: one torch thread per core that nothing else keeps busy, at least one.

    The threads of one process meet at every operation; when another program holds a core, the
    thread on it is descheduled and the others spin waiting for it (measured on a 2-core machine:
    up to 10x slower than one thread). A busy laptop gets fewer threads, an idle one all its cores.
    Results repeat exactly for a fixed thread count, so a run stores the count it chose.
    """
    return max(1, min(cores(), int(cores() - busy_cores() + 0.5)))


# ---------------------------------------------------------------------------------------------
# The shipped data
# ---------------------------------------------------------------------------------------------

DATA_ENV = "FSCAL_DATA"
# name -> where it lies in a source checkout (in an installed package and in $FSCAL_DATA: NAME/)
SHIPPED = {"anet_like": "data_samples/anet_like", "checkpoints": "data_samples/checkpoints",
           "results": "bench/results"}


def shipped(name: str) -> Path:
    """The folder ``name`` of the shipped data: ``"anet_like"`` (the synthetic world),
    ``"checkpoints"`` (``full.pt``, ``blind.pt``) or ``"results"`` (the ``bench/results/*.json``
    files that :mod:`fscal_edu.report` reads). Looked up, in this order:

    1. ``$FSCAL_DATA/NAME`` when the environment variable ``FSCAL_DATA`` is set (a folder holding
       ``anet_like/``, ``checkpoints/`` and ``results/``);
    2. the package's own copy, ``fscal_edu/shipped/NAME`` (``pip install .`` puts it there:
       ``pyproject.toml`` maps ``data_samples/`` and ``bench/results/`` into the wheel);
    3. the source checkout of an editable install (``pip install -e .``), as recorded by the
       installer (``direct_url.json``): ``data_samples/anet_like``, ``data_samples/checkpoints``,
       ``bench/results``.
    """
    if name not in SHIPPED:
        raise FscalError(f"{where(field='name')}: no shipped folder {name!r}; one of {sorted(SHIPPED)}")
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]) / name
        if not path.is_dir():
            raise FscalError(f"{where(file=path, field=DATA_ENV)}: no folder {name!r} in the data directory "
                             f"{os.environ[DATA_ENV]!r}")
        return path
    installed = resources.files("fscal_edu").joinpath("shipped", name)
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    source = _source_checkout()
    if source is not None and (source / SHIPPED[name]).is_dir():
        return source / SHIPPED[name]
    raise FscalError(f"{where(field=DATA_ENV)}: cannot find the shipped folder {name!r}: this installation "
                     f"carries no data; install the package with `pip install .` from its repository, or "
                     f"set {DATA_ENV} to a folder holding anet_like/, checkpoints/ and results/")


def _source_checkout() -> Path | None:
    """The project folder an editable install points to (PEP 610's ``direct_url.json``), else None."""
    for dist in metadata.distributions(name="fscal-edu"):     # a stale egg-info may come first
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urlparse(info.get("url", ""))
        if info.get("dir_info", {}).get("editable") and url.scheme == "file":
            return Path(unquote(url.path))
    return None
