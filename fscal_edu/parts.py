"""Your parts of the model: the functions you write in the notebooks, plugged into the real FS-CAL.

Every part below is a plain function that the library itself calls when it builds and trains the
model (its *reference*). Replace one with yours and the model runs your code instead:

    part              notebook  contract                                                  reference
    tiou              02        tiou(a (N,2), b (M,2)) -> (N,M)                           proposals.tiou
    attend            03        attend(X_a, X_b, W, *, axis, scale, mass_norm, mask_a,    attention.cross_attend
                                mask_b) -> (X~_b, A)
    qtos              03        qtos(X_Q, X_S, W, mask_Q, attend) -> (X~_S, A)            attention.qtos_part
    coarse_tokens     04        coarse_tokens(X_S_tilde, w) -> (B, K, sum_k T_S/k, d)     attention.coarse_part
    dynamics          04        dynamics(X_S_prime, X_S_tilde, W, attend, mask_a) -> ...  attention.dynamics_part
    stoq              05        stoq(Y_S, X_Q, W, mask_Q, attend) -> (X~_Q, A)            attention.stoq_part
    relation_targets  06        relation_targets(labels, episode_label) -> (own, cross)   losses.relation_targets

Training is deterministic: the same seed and the same parts give the same ``metrics.jsonl``, byte
for byte. So a model built from your parts (:func:`student_model`, or ``train(..., parts=collect())``)
and trained on the reference's seed logs exactly the reference run when every part is right, and
:func:`compare_runs` names the first step at which the two runs part and the part that explains it.

A part you have not attempted yet falls back to the reference, with one line that says so, so you
can train at any point. The checkers save each part you attempt (:func:`save`, in ``$FSCAL_PARTS``
or ``./my_parts``) and :func:`load` brings them back in a later notebook.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce, repeat

from . import attention, checking, losses, proposals
from .utils import FscalError, where


@dataclass(frozen=True)
class Part:
    """One part: its name (a keyword of :func:`collect`), the notebook that builds it, its title."""

    name: str
    notebook: str
    title: str
    reference: Callable


PARTS = {p.name: p for p in [
    Part("tiou", "02", "tIoU (label assignment)", proposals.tiou),
    Part("attend", "03", "Cross-attention primitive", attention.cross_attend),
    Part("qtos", "03", "QtoS Context-CA", attention.qtos_part),
    Part("coarse_tokens", "04", "Dynamics-CA coarse tokens", attention.coarse_part),
    Part("dynamics", "04", "Dynamics-CA", attention.dynamics_part),
    Part("stoq", "05", "StoQ Context-CA", attention.stoq_part),
    Part("relation_targets", "06", "Relation targets", losses.relation_targets),
]}


@dataclass(frozen=True)
class Parts:
    """The functions a model runs, one field per part; the defaults are the library's own."""

    tiou: Callable = proposals.tiou
    attend: Callable = attention.cross_attend
    qtos: Callable = attention.qtos_part
    coarse_tokens: Callable = attention.coarse_part
    dynamics: Callable = attention.dynamics_part
    stoq: Callable = attention.stoq_part
    relation_targets: Callable = losses.relation_targets


REFERENCE = Parts()
assert [f.name for f in fields(Parts)] == list(PARTS)


def _label(name: str) -> str:
    return f"{PARTS[name].title} (notebook {PARTS[name].notebook})"


def _known(name: str) -> None:
    if name not in PARTS:
        raise FscalError(f"{where(field='part')}: unknown part {name!r}; choose from {list(PARTS)}")


# ---------------------------------------------------------------------------------------------
# Saving and loading your parts
# ---------------------------------------------------------------------------------------------

folder = checking.parts_folder     # where your parts are kept: $FSCAL_PARTS, or ./my_parts


def save(name: str, fn: Callable) -> Path | None:
    """Keep the source of your function ``fn`` for part ``name`` as ``folder()/<name>.json``.

    The source is what you wrote (``inspect.getsource``), so the function must be a ``def`` of its
    own: it is run again by :func:`load` with ``torch``, ``np``, ``math``, ``F`` and einops'
    ``rearrange``, ``reduce``, ``repeat``, ``einsum`` at hand, and nothing else. Returns the file,
    or None (and one printed line) when the source cannot be read.
    """
    _known(name)
    return checking.keep_part(name, fn, label=_label(name), library=True)


def load() -> dict:
    """Your saved parts, ``{name: function}``. A part that cannot be loaded prints one line and is
    left out (the model then uses the reference for it)."""
    found = {}
    for name in PARTS:
        path = folder() / f"{name}.json"
        if not path.exists():
            continue
        try:
            saved = json.loads(path.read_text())
            space = dict(torch=torch, np=np, math=math, F=F, rearrange=rearrange, reduce=reduce,
                         repeat=repeat, einsum=einsum)
            exec(compile(saved["source"], str(path), "exec"), space)   # noqa: S102 - the student's own code
            fn = space[saved["function"]]
            fn.__fscal_source__ = saved["source"]
            found[name] = fn
        except Exception as e:  # noqa: BLE001 - any broken file is one line, not a traceback
            print(f"{_label(name)}: could not load {path} ({type(e).__name__}: {e}); using the reference")
    return found


# ---------------------------------------------------------------------------------------------
# Is a part attempted, and is it right?
# ---------------------------------------------------------------------------------------------

def _sample(name: str) -> tuple:
    """Small inputs of part ``name`` (float64, seeded), for a check without the notebook's checker."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    attend = lambda X_a, X_b, W, mask_a=None, mask_b=None: attention.cross_attend(  # noqa: E731
        X_a, X_b, W, scale=0.5, mass_norm=True, mask_a=mask_a, mask_b=mask_b)
    mask_Q = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])                   # (2, 5)
    W = torch.eye(4, dtype=torch.float64) + 0.1 * r(4, 4)
    return {
        "tiou": lambda: (torch.sort(r(5, 2).abs() * 9, -1).values, torch.sort(r(3, 2).abs() * 9, -1).values),
        "attend": lambda: (r(2, 5, 4), r(2, 6, 4), W),
        "qtos": lambda: (r(2, 5, 4), r(2, 3, 4, 4), W, mask_Q, attend),
        "coarse_tokens": lambda: (r(2, 3, 4, 4), {k: (r(4, 4, k), r(4)) for k in (2, 4)}),
        "dynamics": lambda: (r(2, 3, 3, 4), r(2, 3, 4, 4), W, attend),
        "stoq": lambda: (r(2, 3, 4, 4), r(2, 5, 4), W, mask_Q, attend),
        "relation_targets": lambda: (torch.randint(-1, 2, (4, 6), generator=g), torch.tensor([0, 0, 1, 2])),
    }[name]()


def _same(a, b) -> bool:
    """Outputs ``a`` (yours) and ``b`` (the reference's) hold the same numbers, up to rounding."""
    a, b = (a if isinstance(a, (tuple, list)) else (a,)), (b if isinstance(b, (tuple, list)) else (b,))
    return len(a) == len(b) and all(
        torch.is_tensor(x) and x.shape == y.shape and torch.allclose(x.double(), y.double(), atol=1e-9)
        for x, y in zip(a, b))


def verdict(name: str, fn: Callable) -> str:
    """One line on your function for part ``name``: ``correct``, ``not attempted``, ``error: ...``
    or ``wrong: ...``. The notebook's checker (``exercises.PART_CHECKS``) decides, its printing
    held back; without one, your output on small inputs is compared with the reference's."""
    from . import exercises                 # imported here: the checkers import the library
    check = getattr(exercises, "PART_CHECKS", {}).get(name)
    if check is not None and hasattr(checking, "verdict_of"):
        return checking.verdict_of(check, fn)           # quiet: no verdict recorded, no part kept
    if check is not None:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ok = check(fn)
        return checking.summarize(ok, printed.getvalue())
    args = _sample(name)
    try:
        got = checking.run(fn, *args)
    except checking.NotAttempted:
        return "not attempted"
    except checking.Crashed as e:
        return f"error: {e}"
    return "correct" if _same(got, PARTS[name].reference(*args)) else "wrong: the output differs from the reference's"


# ---------------------------------------------------------------------------------------------
# Your parts in the model
# ---------------------------------------------------------------------------------------------

def collect(**fns) -> Parts:
    """Your parts: the functions given by name (``collect(qtos=my_qtos)``), else the saved ones
    (:func:`load`). Prints one line per part: ``yours``, or that the reference is used because
    yours is not attempted yet (or raised an error on the checker's inputs)."""
    for name in fns:
        _known(name)
    saved = load() if any(fns.get(n) is None for n in PARTS) else {}
    chosen = {}
    for name, part in PARTS.items():
        fn = fns.get(name) if fns.get(name) is not None else saved.get(name)
        said = "not attempted" if fn is None else verdict(name, fn)
        if said == "not attempted":
            print(f"{_label(name)}: using the reference, yours is not attempted yet")
        elif said.startswith("error"):
            print(f"{_label(name)}: using the reference, yours raised an {said}")
        else:
            print(f"{_label(name)}: yours" + ("" if said == "correct" else f" (the checker says {said})"))
            chosen[name] = fn
    return Parts(**chosen)


def student_model(cfg, **fns):
    """``FSCAL(cfg)`` built from your parts (:func:`collect`): the same weights, your code."""
    from .model import FSCAL
    return FSCAL(cfg, collect(**fns))


def mine(my_fn: Callable, reference_fn: Callable, *args, name: str, **kwargs):
    """``my_fn(*args, **kwargs)``, or the reference's result (and one line) while yours is a stub
    (it raises ``NotImplementedError`` or returns ``None``/``...``). Later cells that use your
    result go through this, so they run your function as soon as you have written it."""
    from .checking import is_stub
    try:
        out = my_fn(*args, **kwargs)
    except NotImplementedError:
        out = None
    if is_stub(out):
        print(f"{name}: using the reference, yours is not attempted yet")
        return reference_fn(*args, **kwargs)
    return out


# ---------------------------------------------------------------------------------------------
# Your run against the reference run
# ---------------------------------------------------------------------------------------------

def _records(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FscalError(f"{where(file=path)}: no training log here; train a run into {run_dir} first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_difference(reference: list[dict], yours: list[dict]) -> dict | None:
    """The first step and field at which two training logs differ, with both values; None if none."""
    for ref, got in zip(reference, yours):
        for field in list(ref) + [k for k in got if k not in ref]:
            if ref.get(field) != got.get(field):
                return {"step": ref.get("step"), "field": field, "reference": ref.get(field),
                        "yours": got.get(field)}
    if len(reference) != len(yours):
        longer = reference if len(reference) > len(yours) else yours
        return {"step": longer[min(len(reference), len(yours))].get("step"), "field": "(log length)",
                "reference": len(reference), "yours": len(yours)}
    return None


def _largest_relative_difference(reference: list[dict], yours: list[dict], field: str) -> float:
    """``max |yours - reference| / |reference|`` of one logged number over the steps both logs have."""
    pairs = [(r.get(field), y.get(field)) for r, y in zip(reference, yours)]
    return max((abs(a - b) / max(abs(a), 1e-12) for a, b in pairs
                if isinstance(a, (int, float)) and isinstance(b, (int, float))), default=0.0)


def compare_runs(reference_dir, student_dir, parts: Parts | None = None) -> dict:
    """Compare your run's ``metrics.jsonl`` with the reference run's (same config and seed).

    ``"identical, byte for byte"``, or the first step and field at which they differ, and the parts
    that explain it: those of ``parts`` (your :class:`Parts`) that are yours and fail their checker.
    When all of yours pass, the difference is float rounding (your code adds in another order):
    then the largest relative difference of the loss says how small it is. Prints the verdict.
    """
    ref_path, got_path = Path(reference_dir) / "metrics.jsonl", Path(student_dir) / "metrics.jsonl"
    reference, yours = _records(reference_dir), _records(student_dir)
    if ref_path.read_bytes() == got_path.read_bytes():
        result = {"identical": True, "message": "identical, byte for byte"}
        if parts is not None and all(getattr(parts, n) is PARTS[n].reference for n in PARTS):
            result["message"] += (": every part is still the reference, so nothing of yours was compared yet "
                                  "(write the parts in notebooks 02-06, check them, and run this again)")
        print(result["message"])
        return result
    diff = first_difference(reference, yours) or {"step": None, "field": "(bytes)", "reference": None, "yours": None}
    own = {n: getattr(parts, n) for n in PARTS if parts is not None and getattr(parts, n) is not PARTS[n].reference}
    said = {n: verdict(n, fn) for n, fn in own.items()}
    wrong = {n: s for n, s in said.items() if s not in ("correct", "not attempted")}
    result = {"identical": False, **diff, "parts": said, "explained_by": list(wrong)}
    head = (f"the runs differ first at step {diff['step']}, {diff['field']}: "
            f"reference {diff['reference']}, yours {diff['yours']}")
    if wrong:
        why = "; ".join(f"{_label(n)}: {s}" for n, s in wrong.items())
        result["message"] = f"{head}. The part(s) that explain it: {why}"
    elif parts is None:
        result["message"] = f"{head}. Pass parts=... (your Parts) to find the part that explains it"
    else:
        rel = {f: _largest_relative_difference(reference, yours, f) for f in reference[0] if f != "step"}
        worst = max(rel, key=rel.get)
        result["max_rel_loss"], result["max_rel"] = rel.get("loss", 0.0), {worst: rel[worst]}
        result["message"] = (f"{head}. Same up to float rounding: every part of yours passes its checker; "
                             f"yours computes the same numbers in a different order of operations, which "
                             f"rounds differently. The largest relative difference of the loss is "
                             f"{result['max_rel_loss']:.2g} (the log keeps 5 decimals), of any logged "
                             f"number {rel[worst]:.2g} ({worst})")
    print(result["message"])
    return result
