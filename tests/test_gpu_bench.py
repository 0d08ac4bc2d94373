"""bench/gpu.py on the CPU: the tiny preset as a smoke test of the GPU benchmark's code."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_bench_smoke_on_cpu(tmp_path):
    out, doc = tmp_path / "gpu.json", tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--preset", "tiny", "--device", "cpu",
                           "--steps", "3", "--test-episodes", "8", "--out", str(out), "--doc", str(doc)],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["device"], result["preset"], result["steps"]) == ("cpu", "tiny", 3)
    assert [(r["precision"], r["procs"]) for r in result["runs"]] == [("fp32", 1), ("bf16", 1)]
    for r in result["runs"]:
        assert r["steps_per_s"] > 0 and abs(r["episodes_per_s"] - 4 * r["steps_per_s"]) < 0.2
        assert r["peak_memory_MiB"] > 0 and 0 <= r["test_mAP@0.5"] <= 1
    # the two runs are the same 3 steps in two precisions: close, not equal
    fp32, bf16 = (r["final_loss"] for r in result["runs"])
    assert fp32 != bf16 and abs(bf16 - fp32) < 0.05 * fp32
    text = doc.read_text()
    assert "## Other\n\nkept" in text and "## GPU" in text and result["machine"] in text
    assert "| 1 | bf16 |" in text
