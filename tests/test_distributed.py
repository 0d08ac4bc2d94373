"""fscal_edu/distributed.py: the global batch split over ranks, torchrun's environment, and the
collectives the losses use (two gloo processes on the CPU)."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fscal_edu.distributed import StepBatches, env_world, local_batch_size, rank_items, setup, unwrap
from fscal_edu.utils import FscalError


def test_the_global_batch_splits_into_rank_items():
    assert local_batch_size(32, 4) == 8
    with pytest.raises(FscalError, match="field 'batch_size'.*32 episodes does not split evenly over 3"):
        local_batch_size(32, 3)
    # rank r of R at step s reads items s * batch + r * B_local + j: together, one process's batch
    one = rank_items(5, 8)
    assert one == list(range(40, 48))
    assert rank_items(5, 8, 0, 2) + rank_items(5, 8, 1, 2) == one
    assert [rank_items(5, 8, r, 4) for r in range(4)] == [one[0:2], one[2:4], one[4:6], one[6:8]]
    # the sampler starts where a resumed run starts
    assert list(StepBatches(3, 5, 4, rank=1, world_size=2)) == [[14, 15], [18, 19]]
    assert len(StepBatches(3, 5, 4)) == 2
    with pytest.raises(FscalError, match="batch_size"):
        StepBatches(0, 1, 5, rank=0, world_size=2)


def test_env_world(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (1, 2, 1)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(FscalError, match="'WORLD_SIZE'.*non-negative integer"):
        env_world()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(FscalError, match="rank 1 is outside a world of 1"):
        env_world()


def test_more_local_processes_than_gpus_is_an_error(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(FscalError, match="'LOCAL_RANK': local process 1 would take cuda:1, but this machine has 1"):
        setup(torch.device("cuda"))


def test_one_process_is_the_identity(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    d = setup("cpu")
    assert (d.rank, d.world_size, d.is_main, d.distributed, d.device) == (0, 1, True, False, torch.device("cpu"))
    x = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(d.roll_global(x), torch.roll(x, 1, 0))
    assert torch.equal(d.all_sum(x), x) and torch.equal(d.gather(x), x)
    assert d.rows(8) == slice(0, 8) and d.all_gather_object("a") == ["a"]
    m = torch.nn.Linear(2, 2)
    assert unwrap(m) is m


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = setup("cpu")
    # a global batch of 4 rows; rank r holds rows 2r, 2r+1 and a weight per global row
    x_full = torch.arange(8.0).reshape(4, 2)
    x = x_full[d.rows(4)].clone().requires_grad_(True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])[d.rows(4), None]
    rolled = d.roll_global(x)                                   # rows of roll(x_full, 1, 0)
    (rolled * w).sum().backward()
    counts = d.all_sum(torch.tensor([rank + 1.0]))
    queue.put((rank, rolled.detach(), x.grad, counts, d.all_gather_object(rank * 10)))
    from fscal_edu.distributed import teardown
    teardown(d)


def test_two_gloo_processes_roll_the_global_batch_with_gradients():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, rest) for r, *rest in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # forward: one process's torch.roll of the whole batch, split by rank
    x_full = torch.arange(8.0).reshape(4, 2).requires_grad_(True)
    rolled = torch.roll(x_full, 1, 0)
    (rolled * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]).sum().backward()
    assert torch.equal(torch.cat([got[0][0], got[1][0]]), rolled.detach())
    # backward: each rank receives the gradient of its own rows, whoever used them
    assert torch.equal(torch.cat([got[0][1], got[1][1]]), x_full.grad)
    assert got[0][2].item() == got[1][2].item() == 3.0
    assert got[0][3] == got[1][3] == [0, 10]
