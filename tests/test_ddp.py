"""Many processes through torchrun (gloo on the CPU), mixed precision, and the training DataLoader.

What must hold: ``torchrun --nproc_per_node=2 -m fscal_edu train ARGS`` trains on the
same global batches as ``fscal-edu train ARGS`` and logs the same losses; rank 0's checkpoints
load and evaluate; a killed 2-process run resumes to the numbers of an uninterrupted one; bf16
autocast gives finite gradients and losses within 5 % of float32's.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from fscal_edu.checkpoints import load_model, read_checkpoint
from fscal_edu.config import ABLATIONS, get_config
from fscal_edu.data.episodes import RandomEpisodes, World, collate
from fscal_edu.inference import evaluate_model
from fscal_edu.losses import fscal_loss
from fscal_edu.model import FSCAL
from fscal_edu.train import train, training_loader
from fscal_edu.utils import FscalError, seed_everything

from conftest import DATA, ROOT

WORLD = DATA / "anet_like"
ARGS = ["train", "--data", str(WORLD), "--preset", "tiny", "--seed", "0", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def world():
    return World(WORLD)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _torchrun(nproc, args):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "-m", "fscal_edu", *args]


def _run(cmd, **kw):
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one(tmp_path, world):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "fscal_edu", *ARGS, "--steps", "10", "--out", str(one)])
    done = _run(_torchrun(2, [*ARGS, "--steps", "10", "--out", str(two)]))
    assert done.stdout.count("wrote ") == 1                 # rank 0 alone speaks, logs and writes
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    for ra, rb in zip(a, b):
        for key in ("loss", "cls", "reg", "rel"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
    assert b[-1]["val_mAP@0.5"] == pytest.approx(a[-1]["val_mAP@0.5"], abs=1e-3)
    assert sorted(p.name for p in two.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    # rank 0's checkpoints load and evaluate like the one-process run's
    m1, m2 = (load_model(r / "best.pt", feature_dim=64, device="cpu") for r in (one, two))
    e1, _ = evaluate_model(m1, world, "test", 5, limit=8)
    e2, _ = evaluate_model(m2, world, "test", 5, limit=8)
    assert e2["mAP@0.5"] == pytest.approx(e1["mAP@0.5"], abs=1e-3)
    state = read_checkpoint(two / "last.pt")
    assert state["extra"]["world_size"] == 2 and len(state["extra"]["rng"]) == 2   # every rank's RNG


def test_a_killed_two_process_run_resumes_exactly(tmp_path):
    steps = ["--steps", "40"]                       # tiny preset: a checkpoint every 10 steps
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _run(_torchrun(2, [*ARGS, *steps, "--out", str(whole)]))
    proc = subprocess.Popen(_torchrun(2, [*ARGS, *steps, "--out", str(cut)]), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (cut / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)             # torchrun and both ranks, mid-run
    proc.wait()
    killed_at = read_checkpoint(cut / "last.pt")["step"]
    assert killed_at < 40 and len(_metrics(cut)) < 40      # it really was interrupted
    _run(_torchrun(2, [*ARGS, *steps, "--out", str(cut), "--resume"]))
    a, b = _metrics(whole), _metrics(cut)
    assert [r["step"] for r in b] == list(range(1, 41))
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "time_s"} == {k: v for k, v in rb.items() if k != "time_s"}
    sa, sb = read_checkpoint(whole / "last.pt"), read_checkpoint(cut / "last.pt")
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_bf16_forward_loss_backward_has_finite_gradients(world):
    cfg = get_config("tiny")
    seed_everything(0)
    model = FSCAL(cfg).train()
    ds = RandomEpisodes(world, "base", cfg.data.shots, 4, cfg.data.T, cfg.data.T_S)
    b = collate([ds[i] for i in range(4)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(b["query"], b["support"])
        terms = fscal_loss(out, b, cfg.loss)
    assert out.logits.dtype == out.relation.dtype == torch.bfloat16           # autocast really ran
    assert all(v.dtype == torch.float32 for v in terms.values())             # the BCE runs in float32
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_bf16_losses_stay_within_5_percent_of_fp32(world, tmp_path):
    cfg = get_config("tiny", steps=10)
    losses = {}
    for precision in ("fp32", "bf16"):
        records = []
        train(cfg, world, tmp_path / precision, precision=precision, device="cpu", progress=False,
              callback=records.append)
        losses[precision] = [r["loss"] for r in records]
    assert len(losses["bf16"]) == 10
    assert losses["bf16"] != losses["fp32"]                                   # bf16 did change the arithmetic
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(b - a) <= 0.05 * abs(a)


def test_workers_do_not_change_the_batches(world):
    cfg = get_config("tiny")
    a = list(training_loader(world, cfg, 0, 2, 4, workers=0))
    b = list(training_loader(world, cfg, 0, 2, 4, workers=2))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x["id"] == y["id"]
        assert torch.equal(x["query"], y["query"]) and torch.equal(x["support"], y["support"])
    assert a[0]["id"] == [f"train_{i}" for i in range(8, 12)]       # step 2 of a batch of 4: items 8..11


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_trainable_parameter_gets_a_gradient(world, name):
    """DDP runs without find_unused_parameters: whatever can learn must be used by forward."""
    cfg = get_config("tiny", ablate=name)
    model = FSCAL(cfg).train()
    if not cfg.switches.relation:
        model.head.g.requires_grad_(False)          # as train() does
    ds = RandomEpisodes(world, "base", cfg.data.shots, 2, cfg.data.T, cfg.data.T_S)
    b = collate([ds[i] for i in range(2)])
    fscal_loss(model(b["query"], b["support"]), b, cfg.loss)["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_bad_worker_counts_are_errors(world):
    with pytest.raises(FscalError, match="field 'workers'.*integer >= 0, got -1"):
        training_loader(world, get_config("tiny"), 0, 0, 1, workers=-1)
    done = subprocess.run([sys.executable, "-m", "fscal_edu", *ARGS, "--out", "unused", "--workers", "-1"],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--workers" in done.stderr


def test_evaluation_workers_give_the_same_predictions(world):
    model = FSCAL(get_config("tiny")).eval()
    a, _ = evaluate_model(model, world, "test", 5, limit=8, batch_size=4, workers=0)
    b, _ = evaluate_model(model, world, "test", 5, limit=8, batch_size=4, workers=2)
    assert a == b
