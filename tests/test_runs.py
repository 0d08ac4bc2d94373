"""Run directories: owned, resumed only as themselves, never losing records; Ctrl-C and SIGKILL
leave a resumable run; the numbers do not depend on the machine's load.

Each section tests one rule of :mod:`fscal_edu.runs`: a run is never destroyed, a resume checks what
it resumes, an empty checkpoint, step counts, the metrics log and ``last.pt`` always a consistent
pair, the same numbers whatever the load, and the Ctrl-C / kill cases.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fscal_edu.checkpoints import read_checkpoint
from fscal_edu.config import get_config
from fscal_edu.data.episodes import RandomEpisodes, World, collate
from fscal_edu.losses import fscal_loss
from fscal_edu.model import FSCAL
from fscal_edu.train import train
from fscal_edu.utils import FscalError

from worlds import SHIPPED, assert_error, copy_world, run_cli

TINY = ["--data", SHIPPED, "--preset", "tiny", "--steps", 4, "--threads", 1]


def snapshot(run):
    """The bytes of every file in a run directory."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step tiny run, written by the CLI."""
    run = tmp_path_factory.mktemp("runs") / "A"
    from fscal_edu.cli import main
    assert main([str(a) for a in ["train", *TINY, "--out", run]]) == 0
    return run


@pytest.fixture
def run_copy(finished, tmp_path):
    dst = tmp_path / "A"
    shutil.copytree(finished, dst)
    return dst


# --- train --out never destroys a run ---------------------------------------------------

def test_train_refuses_a_directory_that_holds_a_run(run_copy, capsys):
    before = snapshot(run_copy)
    assert_error(run_cli(capsys, "train", *TINY, "--out", run_copy, "--shots", 100), "train",
                 str(run_copy), "already holds a run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


def test_overwrite_with_bad_inputs_leaves_the_old_run_in_place(run_copy, capsys):
    before = snapshot(run_copy)
    assert_error(run_cli(capsys, "train", *TINY, "--out", run_copy, "--shots", 100, "--overwrite"), "train",
                 "K = 100")
    assert snapshot(run_copy) == before
    assert not run_copy.with_name("A.replaced-1").exists()


def test_overwrite_moves_the_old_run_aside_first(run_copy, capsys):
    before = snapshot(run_copy)
    with pytest.warns(UserWarning, match="moved the run that was there aside"):
        rc, out, err = run_cli(capsys, "train", *TINY, "--out", run_copy, "--seed", 1, "--overwrite")
    assert rc == 0, err
    assert snapshot(run_copy.with_name("A.replaced-1")) == before
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 1


# --- resume checks the checkpoint against the request -----------------------------------

@pytest.mark.parametrize("change, fields", [
    (["--shots", 1], ["data.shots"]),
    (["--seed", 3], ["seed"]),
    (["--ablate", "blind"], ["switches.blind", "switches.relation"]),
    (["--steps", 8], ["optim.steps"]),
])
def test_resume_names_the_fields_that_differ(run_copy, capsys, change, fields):
    before = snapshot(run_copy)
    line = assert_error(run_cli(capsys, "train", *TINY, "--out", run_copy, "--resume", *change), "train",
                        "last.pt", "field 'config'", *fields)
    assert snapshot(run_copy) == before, line


def test_resume_with_another_preset_or_data_width(run_copy, tmp_path, capsys):
    args = [a if a != "tiny" else "quick" for a in TINY]
    assert_error(run_cli(capsys, "train", *args, "--out", run_copy, "--resume"), "train",
                 "preset", "model.d")
    narrow = copy_world(tmp_path / "narrow", link_features=False)
    for f in (narrow / "features").iterdir():
        np.save(f, np.load(f)[:, :32])
    (narrow / "features.json").write_text(json.dumps({"feature_dim": 32, "resize_length": 128}))
    args = ["--data" if a == "--data" else (narrow if a == SHIPPED else a) for a in TINY]
    assert_error(run_cli(capsys, "train", *args, "--out", run_copy, "--resume"), "train",
                 "data.feature_dim", "run 64, request 32")


def test_bare_resume_takes_the_runs_own_options(run_copy, capsys):
    before = snapshot(run_copy)
    rc, out, err = run_cli(capsys, "train", "--data", SHIPPED, "--out", run_copy, "--resume")
    assert rc == 0, err
    assert snapshot(run_copy) == before       # a finished run: nothing to add, nothing changed


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    assert_error(run_cli(capsys, "train", *TINY, "--out", tmp_path / "none", "--resume"), "train",
                 "nothing to resume")
    assert not (tmp_path / "none").exists()


# --- an empty checkpoint ------------------------------------------------------------------

def test_zero_byte_checkpoint(run_copy, tmp_path, capsys):
    empty = tmp_path / "e.pt"
    empty.write_bytes(b"")
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--checkpoint", empty), "evaluate",
                 str(empty), "empty")
    (run_copy / "last.pt").write_bytes(b"")
    assert_error(run_cli(capsys, "train", *TINY, "--out", run_copy, "--resume"), "train",
                 str(run_copy / "last.pt"), "empty")
    with pytest.raises(FscalError, match="e.pt.*empty"):
        read_checkpoint(empty)


# --- step counts --------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [0, -5])
def test_steps_must_be_positive(tmp_path, capsys, steps):
    assert_error(run_cli(capsys, "train", "--data", SHIPPED, "--preset", "tiny", "--out", tmp_path / "r",
                         "--steps", steps), "train", "--steps")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="steps"):
        get_config("tiny", steps=steps)


# --- the metrics log and last.pt always make a consistent pair --------------------------

CFG = dict(steps=6, eval_every=2)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    train(get_config("tiny", **CFG), SHIPPED, out, seed=2, device="cpu", progress=False, threads=1)
    return out


def same_run(a, b):
    sa, sb = read_checkpoint(a / "last.pt")["model"], read_checkpoint(b / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


@pytest.mark.parametrize("damage", ["missing_log", "torn_last_line", "record_lost"])
def test_resume_rebuilds_the_log(whole, tmp_path, damage):
    out = tmp_path / "cut"
    cfg = get_config("tiny", **CFG)
    train(cfg, SHIPPED, out, seed=2, device="cpu", progress=False, threads=1, stop_at=3)
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 3 and read_checkpoint(out / "last.pt")["step"] == 2
    if damage == "missing_log":
        log.unlink()
    elif damage == "torn_last_line":
        log.write_text("".join(lines[:2]) + lines[2][:17])
    else:    # killed between writing last.pt at step 2 and appending step 2's record
        log.write_text(lines[0])
    train(cfg, SHIPPED, out, seed=2, device="cpu", progress=False, threads=1, resume=True)
    same_run(whole, out)


# --- Ctrl-C and SIGKILL ----------------------------------------------------------------------------

def spawn(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fscal_edu.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_ctrl_c_says_where_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    p = spawn(["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 2000, "--threads", 1, "--out", out])
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert lines[-1].startswith("fscal-edu train: interrupted") and "--resume" in lines[-1], lines[-1]
    assert "last.pt" in lines[-1] and "step" in lines[-1]


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """Three SIGKILLs at random instants (start-up, steps, checkpoint writes), each followed by a
    resume; bench/kill_resume.py does the same with 20 kills."""
    args = ["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 8, "--threads", 1, "--seed", 0]
    ref = tmp_path / "ref"
    p = spawn([*args, "--out", ref])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    out, rng, kills = tmp_path / "run", np.random.default_rng(7), 0
    while True:
        p = spawn([*args, "--out", out, *(["--resume"] if (out / "config.json").exists() else [])])
        if kills < 3:
            time.sleep(rng.uniform(0.5, 6.0))
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                kills += 1
                continue
        assert p.wait(timeout=300) == 0, p.stderr.read()
        break
    same_run(ref, out)


# --- the same numbers whatever the load ------------------------------------------------

def test_gradients_do_not_depend_on_the_load():
    """One forward and backward pass at 2 threads, repeated while two busy processes compete for
    the cores: the gradients must be bit-identical (a reduction whose order depends on thread
    timing, like index_put_ with duplicate indices, makes them differ from the first repeat)."""
    world = World(SHIPPED)
    cfg = get_config("quick")
    ds = RandomEpisodes(world, "base", 5, 4, cfg.data.T, cfg.data.T_S, seed=0)
    batch = collate([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = FSCAL(cfg).train()
    threads = torch.get_num_threads()
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        torch.set_num_threads(2)
        digests = set()
        for _ in range(5):
            torch.manual_seed(1)
            model.zero_grad(set_to_none=True)
            fscal_loss(model(batch["query"], batch["support"]), batch, cfg.loss)["loss"].backward()
            h = hashlib.sha256()
            for p in model.parameters():
                h.update(p.grad.numpy().tobytes())
            digests.add(h.hexdigest())
    finally:
        for b in busy:
            b.kill()
            b.wait()
        torch.set_num_threads(threads)
    assert len(digests) == 1


# --- one training per run folder: the lock ----------------------------------------------------

def wait_for(path, p, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert path.exists(), p.stderr.read() if p.poll() is not None else "timed out"


def test_two_trainings_into_one_folder_the_second_is_refused_naming_the_first(tmp_path):
    from fscal_edu.outputs import lock_path
    out = tmp_path / "run"
    first = spawn(["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 2000, "--threads", 1, "--out", out])
    try:
        wait_for(out / "config.json", first)
        lock = json.loads(lock_path(out).read_text())
        assert lock["pid"] == first.pid and lock["host"] and "train" in lock["command"] and lock["started"] > 0
        for extra in (["--overwrite"], ["--resume"]):
            second = spawn(["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 4, "--threads", 1,
                            "--out", out, *extra])
            _, err = second.communicate(timeout=120)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert second.returncode == 2 and "Traceback" not in err, err
            assert lines[-1].startswith("fscal-edu train: error:") and f"process {first.pid}" in lines[-1], err
            assert "another training" in lines[-1] and "another --out" in lines[-1]
        assert first.poll() is None, "the first training must go on"
        assert not out.with_name("run.replaced-1").exists()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    assert not lock_path(out).exists(), "Ctrl-C releases the lock"


def test_a_killed_trainings_stale_lock_is_reported_and_taken_over(tmp_path, capsys):
    from fscal_edu.outputs import lock_path
    out = tmp_path / "run"
    p = spawn(["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 2000, "--threads", 1, "--out", out])
    wait_for(out / "config.json", p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads(lock_path(out).read_text())["pid"] == p.pid          # left behind by the kill
    with pytest.warns(UserWarning, match=f"stale lock of process {p.pid} .*no longer running"):
        rc, _, err = run_cli(capsys, "train", *TINY, "--out", out, "--overwrite")
    assert rc == 0, err
    assert not lock_path(out).exists()
    assert (out / "last.pt").is_file() and (out.with_name("run.replaced-1") / "config.json").is_file()


def test_a_lock_from_another_host_is_refused_with_what_to_do(tmp_path, capsys):
    from fscal_edu.outputs import lock_path
    out = tmp_path / "run"
    lock_path(out).write_text(json.dumps({"pid": 4242, "host": "other-machine", "started": 0, "command": "x"}))
    before = lock_path(out).read_bytes()
    assert_error(run_cli(capsys, "train", *TINY, "--out", out), "train", "other-machine", "delete",
                 str(lock_path(out)))
    assert lock_path(out).read_bytes() == before and not out.exists()


def test_the_lock_is_released_when_training_fails_after_taking_it(tmp_path, monkeypatch):
    from fscal_edu.outputs import lock_path
    import fscal_edu.train as train_module

    def broken(*a, **k):
        raise RuntimeError("broken on purpose")
    monkeypatch.setattr(train_module, "_build", broken)
    with pytest.raises(RuntimeError, match="on purpose"):
        train(get_config("tiny", steps=2), SHIPPED, tmp_path / "run", threads=1, progress=False,
              feature_dim="data")
    assert (tmp_path / "run" / "config.json").is_file() and not lock_path(tmp_path / "run").exists()


# --- a run folder never among the dataset's files ----------------------------------------------

def input_hashes(root):
    """Every file under ``root`` (links followed; the derived feature cache left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".fscal_cache" not in p.parts}


@pytest.mark.parametrize("where_to", ["", "features", "sub/run"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_train_out_onto_or_inside_the_dataset_is_refused(tmp_path, capsys, where_to, overwrite):
    data = copy_world(tmp_path / "w")
    before = input_hashes(data)
    out = data / where_to if where_to else data
    assert_error(run_cli(capsys, "train", *TINY[2:], "--data", data, "--out", out,
                         *(["--overwrite"] if overwrite else [])), "train", "dataset directory")
    assert input_hashes(data) == before
    assert not (data / "sub").exists() and not list(tmp_path.glob("w.replaced-*"))


def test_train_out_holding_its_data_is_refused(tmp_path, capsys):
    data = copy_world(tmp_path / "outer" / "w")
    before = input_hashes(data)
    assert_error(run_cli(capsys, "train", *TINY[2:], "--data", data, "--out", tmp_path / "outer", "--overwrite"),
                 "train", "holds the input")
    assert input_hashes(data) == before and not list(tmp_path.glob("outer.replaced-*"))


# --- resume without config.json; --out . ---------------------------------------------------------

def test_bare_resume_without_config_json_reads_last_pt(run_copy, capsys):
    (run_copy / "config.json").unlink()
    rc, out, err = run_cli(capsys, "train", "--data", SHIPPED, "--out", run_copy, "--resume")
    assert rc == 0, err
    assert "differ" not in err
    stored = json.loads((run_copy / "config.json").read_text())
    assert stored["preset"] == "tiny" if "preset" in stored else stored["optim"]["steps"] == 4


def test_bare_resume_without_config_json_or_a_seed_in_last_pt_is_one_line(run_copy, capsys):
    (run_copy / "config.json").unlink()
    state = torch.load(run_copy / "last.pt", weights_only=True)
    state["extra"]["run"].pop("seed")
    torch.save(state, run_copy / "last.pt")
    before = snapshot(run_copy)
    assert_error(run_cli(capsys, "train", "--data", SHIPPED, "--out", run_copy, "--resume"), "train",
                 "last.pt", "field 'seed'", "config.json is missing")
    assert snapshot(run_copy) == before


def test_train_out_dot_twice_with_overwrite(tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert run_cli(capsys, "train", *TINY, "--out", ".")[0] == 0
    before = snapshot(here)
    assert_error(run_cli(capsys, "train", *TINY, "--out", ".", "--overwrite"), "train", "field 'out'",
                 "folder this command runs in")
    assert snapshot(here) == before
