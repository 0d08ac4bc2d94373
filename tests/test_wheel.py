"""The package works when installed from a wheel, away from the repository.

The wheel is built from a copy of the project, installed into a fresh virtual environment, and
``fscal-edu demo`` runs from an empty temporary folder: the shipped world, the shipped checkpoints
and the results files the reports read must come with the package (``fscal_edu.runtime.shipped``).

Installing torch into a fresh environment takes minutes, so the new environment borrows this one's
third-party packages: a ``.pth`` file appends this environment's site-packages to its path. A
folder added that way is not a site folder, so the ``.pth`` files inside it (among them the
editable install of ``fscal_edu``) are not run: ``fscal_edu`` can only come from the wheel.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

WHEEL_MB = 40          # the wheel carries the anet_like world (about 18 MB of features) and two checkpoints


def run(cmd, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the project (the build writes nothing into the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "fscal_edu", src / "fscal_edu", ignore=junk)
    shutil.copytree(ROOT / "data_samples", src / "data_samples", ignore=shutil.ignore_patterns("*.replaced-*"),
                    symlinks=True)
    shutil.copytree(ROOT / "bench" / "results", src / "bench" / "results")
    cache = src / "data_samples" / "anet_like" / ".fscal_cache"
    cache.mkdir(exist_ok=True)
    (cache / "features-0.json").write_text("{}")     # a feature store cache must never ship
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist", src], cwd=tmp)
    (path,) = (tmp / "dist").glob("fscal_edu-*.whl")
    return path


def test_the_wheel_carries_the_code_and_the_shipped_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = {str(p.relative_to(ROOT)) for p in (ROOT / "fscal_edu").rglob("*.py") if "__pycache__" not in p.parts}
    assert code <= set(names), sorted(code - set(names))          # every subpackage is listed in pyproject
    assert not [n for n in names if ".fscal_cache" in n or "__pycache__" in n]
    for needed in ("fscal_edu/shipped/anet_like/world.json", "fscal_edu/shipped/anet_like/episodes_test_5shot.json",
                   "fscal_edu/shipped/checkpoints/full.pt", "fscal_edu/shipped/checkpoints/blind.pt",
                   "fscal_edu/shipped/results/ablations.json"):
        assert needed in names
    features = len(list((ROOT / "data_samples" / "anet_like" / "features").glob("*.npy")))
    assert sum(n.startswith("fscal_edu/shipped/anet_like/features/") for n in names) == features
    assert wheel.stat().st_size < WHEEL_MB * 2**20


def test_demo_runs_from_a_wheel_in_a_fresh_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_borrowed_packages.pth").write_text("\n".join(borrowed) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-index", "-q", wheel])

    away = tmp_path / "elsewhere"                   # no repository around, no data folder next to it
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FSCAL_DATA")}
    env |= {"OMP_NUM_THREADS": "1", "FSCAL_CACHE_DIR": str(tmp_path / "cache")}
    where = run([python, "-c", "import fscal_edu, fscal_edu.runtime as r; print(fscal_edu.__file__); "
                 "print(r.shipped('anet_like')); print(r.shipped('results'))"], cwd=away, env=env).split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where

    out = run([bin_dir / "fscal-edu", "demo"], cwd=away, env=env)
    assert "full: loading the shipped checkpoint" in out and "blind: loading the shipped checkpoint" in out
    table = json.loads(out.strip().splitlines()[-1])
    assert set(table) == {"full", "blind", "prototype"}
    assert table["full"]["mAP@0.5"] > table["blind"]["mAP@0.5"] > table["prototype"]["mAP@0.5"]
    assert list(away.iterdir()) == []                # the demo wrote nothing where it ran

    quotes = run([python, "-c", "from fscal_edu.report import readme_quotes; print(len(readme_quotes()))"],
                 cwd=away, env=env)
    assert int(quotes) > 0                          # the reports read the results files from the wheel
