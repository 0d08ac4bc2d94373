"""Process-wide settings, applied by the entry points only.

The CLI (:func:`fscal_edu.cli.main`), :func:`fscal_edu.train.train` and the notebooks' setup cells
call :func:`configure_process`; no constructor or library function changes global torch state.
"""
from __future__ import annotations

import torch


def configure_process(threads: int | None = None) -> None:
    """Settings for the whole process, in one place.

    * Denormal floats are flushed to zero: attention produces tiny values whose arithmetic can
      slow a CPU training step down sevenfold.
    * ``threads``: torch's intra-op thread count (``None`` leaves torch's default).
    """
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)
