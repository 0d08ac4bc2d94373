"""The exercise checkers' runtime: run a student's function, compare it with the reference, say
in words what differs and which known mistake gives that answer.

:func:`checker` wraps every ``check_*`` of :mod:`fscal_edu.exercises`: the student's function is
called through :func:`run`, so that a stub (``raise NotImplementedError``, or ``None``/``...``
returned) prints "not attempted yet" and any error one line, and the checker returns False.
:func:`compare` prints ``Correct!`` or, through :func:`mismatch`, how an output differs from the
expected one (``None``, a wrong type, shape or dtype, NaNs, or the element that differs most and
how many differ). :func:`explain` and :func:`name_mistake` try the catalogue of known mistakes
(:mod:`fscal_edu.mistakes`: each exercise's answer computed with mistakes switched on by name),
every mistake alone and every pair, and print what to tell the student about the first that
reproduces their output. A checker of a part of the model (``checker(label, part=...)``) keeps
the student's attempted function for the model (:func:`keep_part`); the library asks a checker
for its verdict silently, without recording it or keeping anything (:func:`verdict_of`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import math
import inspect
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Stubs and crashes
# ---------------------------------------------------------------------------------------------

NOT_ATTEMPTED = "not attempted yet - fill in the cell above"


class NotAttempted(Exception):
    """The student's cell still holds the stub (raised by :func:`run`, caught by :func:`checker`)."""


class Crashed(Exception):
    """The student's code raised: the message is the one line to print."""


def is_stub(x) -> bool:
    """``None``, ``...``, or a tuple of nothing else: what a stub gives."""
    if isinstance(x, (tuple, list)) and x:
        return all(v is None or v is Ellipsis for v in x)
    return x is None or x is Ellipsis


def run(fn, *args):
    """Call the student's ``fn``; a stub raises :class:`NotAttempted`, any error :class:`Crashed`."""
    try:
        out = fn(*args)
    except NotImplementedError:
        raise NotAttempted from None
    except Exception as e:  # noqa: BLE001 - whatever the student's code raises becomes one line
        raise Crashed(f"your code raised {type(e).__name__}: {e}") from None
    if is_stub(out):
        raise NotAttempted
    return out


_QUIET = [0]          # > 0 inside quiet(): checkers neither record a verdict nor keep a part
_SAID: set = set()    # the known mistakes named so far by the running checker (each said once)


@contextlib.contextmanager
def quiet():
    """Within it, a checker records no verdict and keeps no part: for the library's own use of the
    checkers (``parts.verdict`` asks them whether a part is right), not the student's."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def verdict_of(check, fn, *args) -> str:
    """``check(fn, *args)``'s verdict in one line (:func:`summarize`), printing nothing, recording
    nothing and keeping no part."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), quiet():
        ok = check(fn, *args)
    return summarize(ok, printed.getvalue())


def parts_folder() -> Path:
    """Where a student's parts are kept: ``$FSCAL_PARTS``, or ``./my_parts``."""
    return Path(os.environ.get("FSCAL_PARTS") or "my_parts")


def keep_part(part: str, fn, *, label: str | None = None, library: bool = False) -> Path | None:
    """Keep an attempted student's function as their ``part`` of the model, so that notebook 07 can
    build the model from it (:func:`fscal_edu.parts.load`): its source, as
    ``parts_folder()/<part>.json``. Returns the file, or None (with one printed line) when the
    source cannot be read. The library's own functions (the references) are not kept unless
    ``library``. A failure to keep is one line: the checker's verdict stands."""
    if not library and (getattr(fn, "__module__", None) or "").split(".")[0] == __name__.split(".")[0]:
        return None
    source = getattr(fn, "__fscal_source__", None)
    try:
        source = source or textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        source = None
    if source is None or getattr(fn, "__name__", "<lambda>") == "<lambda>":
        print(f"{label or part}: not saved, its source cannot be read (write it as a def in a cell)")
        return None
    path = parts_folder() / f"{part}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"part": part, "function": fn.__name__, "source": source}, indent=1))
    except OSError as e:
        print(f"{label or part}: not kept for your model ({type(e).__name__}: {e})")
        return None
    return path


def checker(label: str, part: str | None = None):
    """Decorate ``check_*(fn, ...)``: stubs and errors are printed as one line and give False.

    The student is named by their function's name (``label`` for a lambda or an answer). With
    ``part``, an attempted function (not a stub) is kept as the student's part of the model
    (:func:`keep_part`), right or wrong: the comparison of notebook 07 names a wrong one.
    """
    def wrap(check):
        def verdict(fn, *args, **kwargs) -> bool:
            name = getattr(fn, "__name__", "<lambda>")
            name = label if name == "<lambda>" or not callable(fn) else name
            attempted, ok = True, False
            try:
                if is_stub(fn):
                    raise NotAttempted
                ok = bool(check(fn, *args, **kwargs))
            except NotAttempted:
                attempted = False
                print(f"{name}: {NOT_ATTEMPTED}")
            except Crashed as e:
                print(f"{name}: {e}")
            except Exception as e:  # noqa: BLE001 - an output the comparison cannot read
                print(f"{name}: could not check the output ({type(e).__name__}: {e})")
            if part and attempted and not _QUIET[0]:
                keep_part(part, fn)
            return ok

        @functools.wraps(check)
        def checked(fn, *args, **kwargs) -> bool:
            printed = io.StringIO()
            _SAID.clear()
            with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
                ok = verdict(fn, *args, **kwargs)
            if not _QUIET[0]:
                record(check.__name__, ok, printed.getvalue())
            return ok
        return checked
    return wrap


# ---------------------------------------------------------------------------------------------
# Verdicts a grader can read
# ---------------------------------------------------------------------------------------------

VERDICTS_ENV = "FSCAL_VERDICTS"       # a file: every checker appends one JSON line to it
VERDICTS: list[dict] = []             # the verdicts of this process, in order


class _Tee(io.TextIOBase):
    """Write to several streams at once (the notebook's output and the verdict's buffer)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def summarize(ok: bool, printed: str) -> str:
    """One checker's printed lines -> ``correct``, ``not attempted``, ``error: <line>`` or
    ``wrong: <the known mistake, or the first difference>``."""
    if ok:
        return "correct"
    lines = [ln.strip() for ln in printed.splitlines() if ln.strip()]
    if any(NOT_ATTEMPTED in ln for ln in lines):
        return "not attempted"
    said = [ln.split(": ", 1)[-1] for ln in lines if not ln.startswith("->") and not ln.endswith("Correct!")]
    if said and said[0].startswith(("your code raised", "could not check the output")):
        return f"error: {said[0]}"
    known = list(dict.fromkeys(ln.split("a known mistake: ", 1)[1] for ln in lines if "a known mistake: " in ln))
    return f"wrong: {'; '.join(known) if known else (said[0] if said else 'the output differs')}"


def record(exercise: str, ok: bool, printed: str) -> dict:
    """Keep one verdict in :data:`VERDICTS` and, if ``$FSCAL_VERDICTS`` names a file, append it there."""
    entry = {"exercise": exercise, "verdict": summarize(ok, printed)}
    VERDICTS.append(entry)
    path = os.environ.get(VERDICTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return entry


# ---------------------------------------------------------------------------------------------
# Describing a difference
# ---------------------------------------------------------------------------------------------


def as_array(x) -> np.ndarray | None:
    """A tensor, an array, a number or a (nested) list as a numpy array; None if it is none of them."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if x is None or x is Ellipsis or isinstance(x, (str, bytes, dict, set)):
        return None
    try:
        a = np.asarray(x)
    except (ValueError, TypeError):           # ragged lists, odd objects
        return None
    return a if a.dtype.kind in "biuf" else None


def what(x) -> str:
    """A few words for a value of the wrong kind."""
    if x is None:
        return "None (did the function forget to `return`?)"
    if x is Ellipsis:
        return "... (the placeholder, not filled in)"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    return f"a {type(x).__name__}"


def _shape_words(got: tuple, want: tuple) -> str:
    text = f"shape {got}, expected {want}"
    if len(got) == len(want) >= 2 and got[:-2] + got[-2:][::-1] == want:
        return text + ": the last two axes are swapped (a transpose?)"
    if math.prod(got) == math.prod(want):
        return text + ": the right number of elements, arranged differently"
    if len(got) == len(want) - 1:
        return text + ": one axis too few (summed, averaged or indexed away?)"
    if len(got) == len(want) + 1:
        return text + ": one axis too many (a sum or a mean missing?)"
    return text


def mismatch(got, want, *, atol: float = 1e-5, rtol: float = 1e-4, axes=None) -> str | None:
    """None when ``got`` equals ``want`` (up to the tolerances); else what differs, in words
    (``axes``: a name per axis, to say where an element is, e.g. "episode 1, proposal 31")."""
    w, g = as_array(want), as_array(got)
    if g is None:
        return f"expected {'a number' if w.ndim == 0 else f'an array of shape {w.shape}'}, got {what(got)}"
    if g.shape != w.shape:
        if g.size == 1 and w.size == 1:       # a 0-d tensor for a float, [x] for x: the same answer
            g = g.reshape(w.shape)
        else:
            return _shape_words(tuple(g.shape), tuple(w.shape))
    g, w = g.astype(np.float64), w.astype(np.float64)
    nan = ~np.isfinite(g) & np.isfinite(w)
    if nan.any():
        where = tuple(int(i) for i in np.argwhere(nan)[0])
        return (f"{int(nan.sum())} of {g.size} elements are NaN or infinite"
                + (f", the first at index {where}" if where else "") + " (a division by zero? log of 0?)")
    bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    if g.ndim == 0:
        text = f"got {g.item():.6g}, expected {w.item():.6g}"
    else:
        idx = np.unravel_index(np.argmax(np.where(bad, np.abs(g - w), -1.0)), g.shape)
        idx = tuple(int(i) for i in idx)
        at = (", ".join(f"{a} {i}" for a, i in zip(axes, idx)) if axes and len(axes) == len(idx)
              else f"index {idx if len(idx) > 1 else idx[0]}")
        text = (f"{int(bad.sum())} of {g.size} elements differ; the largest difference is at {at}: "
                f"got {g[idx]:.6g}, expected {w[idx]:.6g}")
    gk, wk = as_array(got).dtype.kind, as_array(want).dtype.kind
    if (gk in "biu") != (wk in "biu"):
        text += f" (your values are {'whole numbers' if gk in 'biu' else 'floats'}, the expected ones are not)"
    return text


def close(got, want, *, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """``got`` equals ``want`` (tuples element by element), silently."""
    if isinstance(want, (tuple, list)):
        return (isinstance(got, (tuple, list)) and len(got) == len(want)
                and all(close(g, w, atol=atol, rtol=rtol) for g, w in zip(got, want)))
    return as_array(got) is not None and mismatch(got, want, atol=atol, rtol=rtol) is None


def name_mistake(got, variant, mistakes: dict, *args) -> list[str]:
    """What to say about the first set of mistakes (one alone, then every pair) for which
    ``variant(*args, **{mistake: True})`` reproduces ``got``; ``[]`` if none does."""
    for n in (1, 2):
        for combo in itertools.combinations(mistakes, n):
            try:
                want = variant(*args, **{m: True for m in combo})
            except (RuntimeError, ValueError):     # a pair that cannot go together
                continue
            if close(got, want):
                return [mistakes[m] for m in combo]
    return []

# ---------------------------------------------------------------------------------------------
# Comparing with the reference, naming the mistake
# ---------------------------------------------------------------------------------------------


def compare(name: str, got, want, *, atol: float = 1e-5, rtol: float = 1e-4, names=None, axes=None) -> bool:
    """Compare two arrays/tensors/numbers (or tuples of them); print a verdict; return it.

    Every output of a tuple is compared and reported (``names`` names them); a mismatch says
    which element differs most (``axes`` names its index, e.g. ``("episode", "proposal")``),
    got against expected, and how many differ.
    """
    if is_stub(got):
        print(f"{name}: {NOT_ATTEMPTED}")
        return False
    if isinstance(want, (tuple, list)):
        names = list(names or [f"output {i}" for i in range(len(want))])
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            kind = f"{len(got)} outputs" if isinstance(got, (tuple, list)) else what(got)
            print(f"{name}: expected {len(want)} outputs ({', '.join(names)}), got {kind}")
            return False
        oks = [compare(f"{name}, {n}", g, w, atol=atol, rtol=rtol, axes=axes)
               for n, g, w in zip(names, got, want)]
        return all(oks)
    why = mismatch(got, want, atol=atol, rtol=rtol, axes=axes)
    print(f"{name}: {why or 'Correct!'}")
    return why is None


def explain(got, variant, known: dict, *args) -> bool:
    """Print the known mistake(s) that reproduce ``got``, if any; return False (the answer is wrong).
    ``variant`` and ``known`` are one exercise's entry of the catalogue, :mod:`fscal_edu.mistakes`."""
    for text in name_mistake(got, variant, known, *args):
        print("  -> the same known mistake as above" if text in _SAID else f"  -> a known mistake: {text}")
        _SAID.add(text)
    return False
