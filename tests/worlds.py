"""Throw-away copies of the shipped world for tests that break it, and a CLI runner.

``copy_world`` copies the small JSON files and links the 900 feature files one by one, so a test
can replace one file (``break_features``) or rewrite one JSON without touching data_samples/.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from conftest import DATA

SHIPPED = DATA / "anet_like"


def copy_world(dst: Path, *, link_features: bool = True) -> Path:
    dst = Path(dst)
    dst.mkdir(parents=True)
    for p in SHIPPED.iterdir():
        if p.is_file():
            shutil.copy(p, dst / p.name)
    (dst / "features").mkdir()
    for f in (SHIPPED / "features").iterdir():
        if link_features:
            (dst / "features" / f.name).symlink_to(f.resolve())
        else:
            shutil.copy(f, dst / "features" / f.name)
    return dst


def edit_json(path: Path, change) -> None:
    """Load ``path``, let ``change(data)`` edit it in place, write it back."""
    data = json.loads(Path(path).read_text())
    change(data)
    Path(path).write_text(json.dumps(data))


def write_features(world: Path, video: str, x: np.ndarray) -> Path:
    """Replace one video's feature file (a link) by a real file holding ``x``."""
    path = Path(world) / "features" / f"{video}.npy"
    path.unlink()
    np.save(path, x)
    return path


def base_video(world: Path) -> str:
    """A video that holds an instance of a base class (so training reads it)."""
    ann = json.loads((Path(world) / "annotations.json").read_text())
    base = set(json.loads((Path(world) / "splits.json").read_text())["base"])
    return next(v for v, e in sorted(ann["database"].items()) if any(a["label"] in base for a in e["annotations"]))


def run_cli(capsys, *argv):
    """``fscal-edu argv...`` in this process: ``(exit code, stdout, stderr)``."""
    from fscal_edu.cli import main
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:       # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_error(result, command: str, *needles):
    """Exit code 2, no traceback, and a last stderr line ``fscal-edu COMMAND: error: ...`` that
    contains every needle."""
    rc, out, err = result
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"fscal-edu {command}: error:"), err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]
