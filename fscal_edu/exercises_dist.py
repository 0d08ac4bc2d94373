"""Notebook 07's exercise on many processes: which episodes does rank r train on at step s?

``torchrun --nproc_per_node=R`` starts R training processes (ranks). The preset's ``batch_size``
stays the *global* batch: at step s the run trains on the dataset items
``s * batch_size, ..., s * batch_size + batch_size - 1``, and rank r takes its consecutive share of
``B_local = batch_size / R`` of them (:func:`fscal_edu.distributed.rank_items`). The checker runs
the student's ``fn(step, batch_size, rank, world_size) -> list of item indices`` on a grid of
cases, compares it with the library's answer and names the known mistake that gives a wrong one.
"""
from __future__ import annotations

import numpy as np

from .checking import checker, close, compare, explain, run

RANK_ITEMS = {
    "local_stride": "a step moves on by the *global* batch: step s starts at item s * batch_size, "
                    "not s * B_local (with s * B_local, two steps would share episodes)",
    "global_offset": "rank r's share starts r * B_local items into the step (B_local = batch_size / R), "
                     "not r * batch_size: the R shares together are one global batch",
    "whole_batch": "each rank takes only its share, B_local = batch_size / R episodes: with the whole "
                   "batch on every rank, R processes would train on the same episodes R times",
    "interleaved": "the library gives each rank a consecutive block (items r * B_local + j), not every "
                   "R-th item: then the global batch is the ranks' rows one after another, and episode "
                   "b-1 of rank r's first episode is the last episode of rank r-1",
    "no_step": "the items depend on the step: step s starts at item s * batch_size",
}


def rank_items_variant(step: int, batch_size: int, rank: int, world_size: int, *, local_stride=False,
                       global_offset=False, whole_batch=False, interleaved=False, no_step=False) -> list[int]:
    """The items of ``rank`` at ``step`` with the mistakes of :data:`RANK_ITEMS` switched on."""
    b = batch_size if whole_batch else batch_size // world_size
    start = 0 if no_step else step * (batch_size // world_size if local_stride else batch_size)
    if interleaved:
        # item = step * batch_size + j * R + r: every R-th item of the step
        return [start + j * world_size + rank for j in range(b)]
    # item = step * batch_size + r * B_local + j: a consecutive block per rank
    first = start + rank * (batch_size if global_offset else batch_size // world_size)
    return list(range(first, first + b))


CASES = [(0, 4, 0, 2), (0, 4, 1, 2), (3, 4, 1, 2), (5, 16, 3, 4), (2, 16, 0, 1), (7, 32, 5, 8), (1, 6, 2, 3)]


@checker("rank_items")
def check_rank_items(fn) -> bool:
    """``fn(step, batch_size, rank, world_size) -> list of int``: the dataset items that ``rank``
    trains on at ``step`` (:func:`fscal_edu.distributed.rank_items`)."""
    from .distributed import rank_items
    for step, batch, rank, world in CASES:
        got = run(fn, step, batch, rank, world)
        got = np.asarray([int(i) for i in got]) if isinstance(got, (list, tuple, range, np.ndarray)) else got
        want = np.asarray(rank_items(step, batch, rank, world))
        if not close(got, want, atol=0, rtol=0):
            compare(f"rank_items, step {step}, batch {batch}, rank {rank} of {world}", got, want, atol=0, rtol=0)
            variant = lambda *a, **mistake: np.asarray(rank_items_variant(*a, **mistake))  # noqa: E731
            return explain(got, variant, RANK_ITEMS, step, batch, rank, world)
    print(f"rank_items, {len(CASES)} cases (1 to 8 processes): Correct!")
    return True
