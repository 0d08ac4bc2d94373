"""What every bench script shares, on purpose: where things are, the machine a measurement ran on
(measured when the script starts, never typed in), the one writer of results files (stamped with
the fingerprint of the code that made them), the docs section replacement, and the
"train, load ``best.pt``, score the test episodes" step.

A bench script runs as ``python bench/NAME.py``, so ``bench/`` is on ``sys.path`` and
``from _common import ...`` finds this file; the repository root is added here once, so that the
scripts also run from a checkout where ``fscal_edu`` is not installed.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fscal_edu.utils import atomic_write_json, atomic_write_text  # noqa: E402,F401  (re-exported)

DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"


# ---------------------------------------------------------------------------------------------
# The machine, measured
# ---------------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    return names[0].strip() if names else (platform.processor() or platform.machine() or "unknown CPU")


def machine_info(device: str | None = None) -> dict:
    """The machine as measured now: CPU model, cores this process may use (and the machine's),
    torch threads, load average (1 minute), torch and Python versions, and the GPU if one is visible
    (or asked for with ``device="cuda"``)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:                                       # macOS, Windows
        usable = os.cpu_count() or 1
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):                            # Windows
        load = None
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() and device != "cpu" else [])
    return {"cpu": cpu_model(), "cores": usable, "machine_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": load,
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": f"{gpus[0]} x {len(gpus)}" if gpus else None}


def describe(info: dict) -> str:
    """One line for the docs: ``AMD EPYC 7B13, 2 CPU cores, load average 1.93 at start, 1 torch
    thread(s), torch 2.13.0+cpu, Python 3.11.7, no GPU`` (the pieces are comma-separated; the core
    count reads ``N CPU cores``)."""
    cores = f"{info['cores']} CPU cores" + (f" (of {info['machine_cores']})"
                                             if info.get("machine_cores") not in (None, info["cores"]) else "")
    load = "load average not available" if info["load_average"] is None else \
        f"load average {info['load_average']:.2f} at start"
    return (f"{info['cpu']}, {cores}, {load}, {info['torch_threads']} torch thread(s), torch {info['torch']}, "
            f"Python {info['python']}, {'GPU ' + info['gpu'] if info['gpu'] else 'no GPU'}")


def machine(device: str | None = None) -> str:
    """:func:`describe` of :func:`machine_info`: call it when a measurement starts (the load average
    is the one of that moment) and store the line in the results file beside the numbers."""
    return describe(machine_info(device))


def measured_on(rows, fallback: str = "not recorded") -> str:
    """The machine line(s) of result ``rows`` (each row records :func:`machine` when its run started),
    else ``fallback`` (the line a results file written before rows carried one already holds)."""
    lines = sorted({r["machine"] for r in rows if isinstance(r, dict) and r.get("machine")})
    return "; ".join(lines) if lines else fallback


# ---------------------------------------------------------------------------------------------
# Results files: the numbers and the code that made them
# ---------------------------------------------------------------------------------------------

def code_stamp() -> dict:
    """The fingerprint of the code this process runs (``bench/_fingerprint.py``: what it computes,
    its syntax trees, the commit), computed once per process."""
    from _fingerprint import code_fingerprint
    return code_fingerprint()


def stamped(result):
    """``result`` with ``"code": code_stamp()``: a dict gets the key, a list of rows gets it in
    every row (``tests/test_results_fresh.py`` compares it with the current code's)."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in ("code", "verified")} | {"code": code_stamp()}
    return [stamped(r) if isinstance(r, dict) else r for r in result]


def write_results(path, result, **kw) -> None:
    """The writer of every ``bench/results`` file: :func:`stamped` ``result``, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, stamped(result), **kw)


# ---------------------------------------------------------------------------------------------
# docs/benchmarks.md
# ---------------------------------------------------------------------------------------------

def replace_section(path, title: str, body: str) -> None:
    """Replace (or append) the section headed ``title`` (``"## ..."``) of a markdown file with
    ``title`` + ``body``; the next ``## `` heading (or the end) closes it. Written atomically."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    found = re.search(rf"^{re.escape(title)}[ \t]*$", text, re.M)        # the heading, on a line of its own
    start = found.start() if found else -1
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + title + "\n" + body
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + title + "\n" + body + (text[end:] if end >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# ---------------------------------------------------------------------------------------------
# Train, load best.pt, score
# ---------------------------------------------------------------------------------------------

def scores(metrics: dict) -> dict:
    """The three numbers every table reports, from :func:`fscal_edu.inference.evaluate_model`."""
    return {"mAP@0.5": metrics["mAP@0.5"], "average_mAP": metrics["average_mAP"],
            "per_class_mAP@0.5": metrics["per_class"]["mAP@0.5"]}


def evaluate_best(run, world, *, shots: int = 5, split: str = "test", device: str = "cpu",
                  limit: int | None = None) -> dict:
    """Load ``run/best.pt`` and score the fixed ``split`` episodes of ``shots`` shots: the metrics."""
    from fscal_edu.checkpoints import load_model
    from fscal_edu.inference import evaluate_model
    metrics, _ = evaluate_model(load_model(Path(run) / "best.pt", device=device), world, split, shots,
                                limit=limit, device=torch.device(device))
    return metrics


def train_and_evaluate(cfg, world, run, *, seed: int, shots: int = 5, device: str = "cpu",
                       limit: int | None = None, **train_kw) -> tuple[dict, float]:
    """Train ``cfg`` on ``world`` into ``run`` (replacing what is there), then score its best
    checkpoint on the test episodes: ``(metrics, training wall time in s)``."""
    from fscal_edu.train import train
    train_kw.setdefault("threads", torch.get_num_threads())    # the thread count this script configured
    t0 = time.perf_counter()
    train(cfg, world, run, seed=seed, device=device, progress=False, overwrite=True, **train_kw)
    secs = time.perf_counter() - t0
    return evaluate_best(run, world, shots=shots, device=device, limit=limit), secs


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def median_ms(fn, runs: int = 20, warmup: int = 3) -> tuple[float, float]:
    """``(median, best)`` wall time of ``fn()`` in ms over ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * min(times)


@contextlib.contextmanager
def busy(n: int):
    """``n`` CPU-bound processes (a python loop each) for the duration of the block: a load that
    is the same on every machine, for timings "beside other jobs"."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)                     # let them take their cores
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
