"""``fscal-edu train --query-mode auto`` decides from the training instances and says why, in one line."""
import json

import pytest

from fscal_edu.cli import main

from conftest import DATA


@pytest.mark.parametrize("world,line,mode,pool", [
    # the tiny preset's windows are 32 rows: thumos_like's p95 instance (19 rows) is more than half of
    # one, so auto reads the windows at half rate (with the quick preset's 128 rows: windows as they are)
    ("thumos_like", "query mode: window at 1/2 rate (p95 instance 19 rows > 50 % of a 32-row window; "
                    "10 rows at 1/2)", "window", 2),
    ("anet_like", "query mode: resample (features resized to 128 rows per video)", "resample", 1),
])
def test_auto_says_which_mode_and_why(tmp_path, capsys, world, line, mode, pool):
    out = tmp_path / "run"
    assert main(["train", "--data", str(DATA / world), "--preset", "tiny", "--steps", "2", "--threads", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [l for l in printed if l.startswith(line)], printed       # the reason, then the statistics read
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["query_mode"] == mode and config["data"]["window_pool"] == pool


def test_an_explicit_mode_and_pool_are_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(DATA / "thumos_like"), "--preset", "tiny", "--steps", "2", "--threads", "1",
                 "--query-mode", "window", "--window-pool", "2", "--out", str(out)]) == 0
    assert not [l for l in capsys.readouterr().out.splitlines() if l.startswith("query mode:")]
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["query_mode"] == "window" and config["data"]["window_pool"] == 2
