"""Long queries as windows (THUMOS habit), padding masks, and no val/test class in training."""
import json

import numpy as np
import pytest
import torch

from fscal_edu.config import get_config
from fscal_edu.data.episodes import (EpisodeDataset, RandomEpisodes, World, collate, episode_tensors,
                                     window_starts)
from fscal_edu.data.features import index_to_seconds
from fscal_edu.data.synthetic import write_world
from fscal_edu.inference import predict
from fscal_edu.losses import fscal_loss, proposal_targets
from fscal_edu.model import FSCAL
from fscal_edu.utils import FscalError, seed_everything


@pytest.fixture(scope="module")
def thumos(tmp_path_factory):
    root = tmp_path_factory.mktemp("thumos")
    write_world(root, "thumos", seed=3, n_test_episodes=6, n_val_episodes=4)
    return World(root)


@pytest.fixture(scope="module")
def tempting(tmp_path_factory):
    """A THUMOS-like world built to tempt leakage: in every base-class video, each distractor is
    relabelled as a test class, so every training query holds test-class instances."""
    root = tmp_path_factory.mktemp("tempting")
    write_world(root, "thumos", seed=4, n_test_episodes=4, n_val_episodes=4)
    splits = json.loads((root / "splits.json").read_text())
    ann = json.loads((root / "annotations.json").read_text())
    base, test = set(splits["base"]), splits["test"]
    for vid, entry in ann["database"].items():
        main = vid.split("_", 1)[1].rsplit("_", 1)[0]
        if main in base:
            for i, a in enumerate(entry["annotations"]):
                if a["label"] != main:
                    a["label"] = test[i % len(test)]
    (root / "annotations.json").write_text(json.dumps(ann))
    return World(root)


@pytest.mark.parametrize("length, T, stride", [(10, 32, 16), (32, 32, 16), (100, 32, 16), (97, 32, 7), (33, 32, 40)])
def test_windows_cover_the_video(length, T, stride):
    starts = window_starts(length, T, stride)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s:s + T] = True
        assert 0 <= s and (s + T <= length or length <= T)
    assert covered.all() and starts == sorted(set(starts))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_window_tensors_map_back_to_seconds(thumos):
    ep = thumos.episodes("test", 5)[0]
    q = ep["query"]
    L = len(thumos.raw_features(q))
    assert L > 128                                   # the profile's videos are longer than a window
    truth = np.array([a["segment"] for a in thumos.annotations["database"][q]["annotations"]
                      if a["label"] == ep["label"]])
    found = []
    for start in window_starts(L, 128, 64):
        t = episode_tensors(thumos, ep, 128, 16, mode="window", start=start)
        n = min(128, L - start)
        assert t["mask"].sum() == n and t["mask"][:n].all()
        assert torch.equal(t["query"][:n], torch.from_numpy(thumos.raw_features(q)[start:start + n].astype(np.float32)))
        assert (t["query"][n:] == 0).all()
        assert t["axis"] == L and t["offset"] == start
        gt = t["gt"].numpy().astype(np.float64)
        assert ((gt >= 0) & (gt <= n)).all()
        sec = index_to_seconds(gt + start, duration=thumos.duration(q), num_snippets=L, meta=thumos.meta, feat_len=L)
        found += [s for s in sec if s[1] - s[0] > 1e-3]
    # every instance appears whole in some window, at its own seconds
    for s, e in truth:
        assert min(abs(a - s) + abs(b - e) for a, b in found) < 1e-3


def test_padding_masks_proposals_and_changes_nothing_when_absent(thumos):
    cfg = get_config("tiny", T=64, T_S=8, feature_dim=thumos.meta.feature_dim)
    seed_everything(0)
    model = FSCAL(cfg).eval()
    ep = thumos.episodes("test", 5)[0]
    L = len(thumos.raw_features(ep["query"]))
    items = [episode_tensors(thumos, ep, 64, 8, mode="window", start=s) for s in (0, L - 40)]
    batch = collate(items)
    assert batch["mask"][1].sum() == 40
    with torch.no_grad():
        out = model(batch["query"], batch["support"], mask=batch["mask"])
        full = model(batch["query"][:1], batch["support"][:1], mask=batch["mask"][:1])
        plain = model(batch["query"][:1], batch["support"][:1])
    assert full.valid is None and torch.equal(full.logits, plain.logits)     # nothing padded: no mask
    valid = out.valid
    assert valid[0].all() and not valid[1].all()
    ends = model.anchors[:, 1]
    assert (ends[valid[1]] <= 40 + 0.25 * (model.anchors[valid[1], 1] - model.anchors[valid[1], 0])).all()
    # the padded proposals change the other episode's QtoS input: the mask is really used
    with torch.no_grad():
        unmasked = model(batch["query"], batch["support"])
    assert not torch.allclose(unmasked.logits[1], out.logits[1])


def test_windowed_prediction_merges_windows_into_seconds(thumos):
    cfg = get_config("tiny", T=64, T_S=8, feature_dim=thumos.meta.feature_dim, query_mode="window", window_stride=32)
    seed_everything(0)
    model = FSCAL(cfg).eval()
    eps = thumos.episodes("test", 5)[:3]
    data = EpisodeDataset(thumos, eps, 64, 8, mode="window", stride=32)
    assert len(data) == sum(len(window_starts(len(thumos.raw_features(e["query"])), 64, 32)) for e in eps)
    results = predict(model, thumos, eps)["results"]
    assert set(results) == {e["id"] for e in eps}
    for e in eps:
        segs = np.array([r["segment"] for r in results[e["id"]]])
        assert len(segs) and (segs[:, 0] >= 0).all() and (segs[:, 1] <= thumos.duration(e["query"]) + 1e-6).all()
        # detections reach past the first window: the windows were merged
        first_window_end = 64 * 2.0                       # 64 snippets of 2 s
        assert segs[:, 1].max() > first_window_end


def test_bad_query_mode():
    with pytest.raises(FscalError, match="query_mode"):
        get_config("tiny", query_mode="crop")


def _foreign_seconds(world, video, foreign):
    return [a["segment"] for a in world.annotations["database"][video]["annotations"] if a["label"] in foreign]


@pytest.mark.parametrize("mode", ["window", "resample"])
def test_no_training_negative_comes_from_a_val_or_test_class(tempting, mode):
    """Every negative proposal of every training batch, mapped back to seconds, is checked against
    the val/test-class instances read straight from the annotations: it never overlaps one."""
    cfg = get_config("tiny", T=64, T_S=8, feature_dim=tempting.meta.feature_dim, query_mode=mode)
    foreign = set(tempting.splits["val"]) | set(tempting.splits["test"])
    ds = RandomEpisodes(tempting, "base", 5, 48, 64, 8, seed=0, mode=mode)
    seed_everything(0)
    model = FSCAL(cfg)
    tempted = negatives = 0
    for b0 in range(0, len(ds), 16):
        batch = collate([ds[i] for i in range(b0, b0 + 16)])
        out = model(batch["query"], batch["support"], mask=batch["mask"])
        pos, valid, _ = proposal_targets(out, batch, cfg.loss)
        for b in range(len(batch["id"])):
            video, axis, offset = batch["video"][b], batch["axis"][b], batch["offset"][b]
            sec = index_to_seconds(out.anchors.double().numpy() + offset, duration=tempting.duration(video),
                                   num_snippets=axis, meta=tempting.meta, feat_len=len(tempting.raw_features(video)))
            bad = _foreign_seconds(tempting, video, foreign)
            assert bad, "the tempting world puts a test-class instance in every training query"
            overlaps = np.zeros(len(sec), dtype=bool)
            for s, e in bad:
                overlaps |= (np.minimum(sec[:, 1], e) - np.maximum(sec[:, 0], s)) > 1e-6
            neg = (valid[b] & ~pos[b]).numpy()
            tempted += int((overlaps & (pos[b] == 0).numpy()).sum())
            negatives += int(neg.sum())
            assert not (neg & overlaps).any(), f"{video}: a negative proposal covers a val/test-class instance"
        fscal_loss(out, batch, cfg.loss)                  # the loss runs on these batches
    assert tempted > 0 and negatives > 0                  # the check had something to catch
