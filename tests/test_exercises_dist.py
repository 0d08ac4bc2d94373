"""Notebook 07's helpers: the rank exercise's checker (fscal_edu.exercises_dist) and
demo.load_or_train evaluating the run the student has just trained."""
from __future__ import annotations

import pytest
import torch

from fscal_edu import demo
from fscal_edu.checkpoints import save_checkpoint
from fscal_edu.config import get_config
from fscal_edu.distributed import rank_items
from fscal_edu.exercises_dist import RANK_ITEMS, check_rank_items, rank_items_variant
from fscal_edu.model import FSCAL


def test_the_library_split_passes_and_covers_the_global_batch_once():
    assert check_rank_items(rank_items) is True
    for world in (1, 2, 4, 8):
        items = [i for r in range(world) for i in rank_items(3, 16, r, world)]
        assert items == list(range(48, 64))             # step 3 of a batch of 16, each item once, rank order


def test_a_stub_is_not_attempted(capsys):
    def my_rank_items(step, batch_size, rank, world_size):
        raise NotImplementedError
    assert check_rank_items(my_rank_items) is False
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", sorted(RANK_ITEMS))
def test_each_known_mistake_is_named(mistake, capsys):
    def wrong(step, batch_size, rank, world_size):
        return rank_items_variant(step, batch_size, rank, world_size, **{mistake: True})
    assert check_rank_items(wrong) is False
    assert RANK_ITEMS[mistake] in capsys.readouterr().out


def test_load_or_train_evaluates_the_students_run(tmp_path, capsys):
    cfg = get_config("tiny")
    torch.manual_seed(1)
    model = FSCAL(cfg)
    (tmp_path / "mine").mkdir()
    save_checkpoint(tmp_path / "mine" / "best.pt", model)

    class World:                                        # load_or_train reads only the feature size
        class meta:
            feature_dim = cfg.data.feature_dim

    got, secs = demo.load_or_train("full", World, out=tmp_path / "unused", run=tmp_path / "mine")
    assert secs is None and "the run you trained" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), model.state_dict().values()))
    assert not (tmp_path / "unused").exists()
