"""Process-wide settings, applied by the entry points only.

The CLI (:func:`fscal_edu.cli.main`), :func:`fscal_edu.train.train` and the notebooks' setup cells
call :func:`configure_process`; no constructor or library function changes global torch state.
"""
from __future__ import annotations

import os
import time

import torch


_asked_threads: int | None = None      # the thread count an entry point asked for, if any


def configure_process(threads: int | None = None) -> None:
    """Settings for the whole process, in one place.

    * Denormal floats are flushed to zero: attention produces tiny values whose arithmetic can
      slow a CPU training step down sevenfold.
    * ``threads``: torch's intra-op thread count (``None`` leaves it as it is; :func:`train`
      then follows :func:`free_threads`).
    """
    global _asked_threads
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)
        _asked_threads = threads


def asked_threads() -> int | None:
    """The thread count last given to :func:`configure_process` (``None``: nobody asked)."""
    return _asked_threads


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
