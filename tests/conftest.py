import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = ROOT.parent / "shared" / "real"
DATA = ROOT / "data_samples"

os.environ.setdefault("FSCAL_QUICK", "1")

from fscal_edu.runtime import configure_process  # noqa: E402

# One thread in tests: the numbers repeat for a fixed thread count (train() would otherwise pick
# one per free core, which depends on what else the machine runs), and CI shares two cores.
configure_process(threads=1)


@pytest.fixture
def shared_real():
    if not SHARED_REAL.is_dir():
        pytest.skip("../shared/real is absent (a user's clone)")
    return SHARED_REAL
