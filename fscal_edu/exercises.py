"""Checkers for the notebooks' exercises: each compares a student's function with the reference.

A checker runs the student's function and the library's on the same random inputs and prints
``Correct!`` or a short explanation of what differs. It returns True/False so tests can use it.
"""
from __future__ import annotations

import numpy as np
import torch


def compare(name: str, got, want, *, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Compare two arrays/tensors (or nested tuples of them); print a verdict; return it."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            print(f"{name}: expected {len(want)} outputs, got {type(got).__name__}")
            return False
        return all(compare(f"{name}[{i}]", g, w, atol=atol, rtol=rtol)
                   for i, (g, w) in enumerate(zip(got, want)))
    g = torch.as_tensor(np.asarray(got) if not isinstance(got, torch.Tensor) else got).double()
    w = torch.as_tensor(np.asarray(want) if not isinstance(want, torch.Tensor) else want).double()
    if g.shape != w.shape:
        print(f"{name}: shape {tuple(g.shape)}, expected {tuple(w.shape)}")
        return False
    if not torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=False):
        err = (g - w).abs().max().item()
        print(f"{name}: values differ (largest difference {err:.3g})")
        return False
    print(f"{name}: Correct!")
    return True

# ---------------------------------------------------------------------------------------------
# Notebooks 00-01
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Notebook 02
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Notebooks 03-05
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Notebooks 06-08
# ---------------------------------------------------------------------------------------------
