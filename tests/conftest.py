import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = ROOT.parent / "shared" / "real"
DATA = ROOT / "data_samples"

os.environ.setdefault("FSCAL_QUICK", "1")


@pytest.fixture
def shared_real():
    if not SHARED_REAL.is_dir():
        pytest.skip("../shared/real is absent (a user's clone)")
    return SHARED_REAL
