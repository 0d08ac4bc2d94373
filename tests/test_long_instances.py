"""Long instances in long videos: the worlds, the query-mode rule, coarser windows, the edge merge."""
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fscal_edu.config import get_config
from fscal_edu.data.episodes import EpisodeDataset, World, episode_tensors, pooled_rows, window_starts
from fscal_edu.data.sampling import instance_rows, query_mode_rule
from fscal_edu.data.synthetic import PROFILES, generate_world, world_statistics, write_world
from fscal_edu.inference import predict
from fscal_edu.postprocess import merge_window_edges
from fscal_edu.proposals import encode, make_anchors, tiou
from fscal_edu.utils import FscalError

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real"


@pytest.fixture(scope="module")
def long_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    write_world(root, "long", seed=0, n_test_episodes=12, n_val_episodes=4)
    return root


@pytest.fixture(scope="module")
def anet_strided(tmp_path_factory):
    root = tmp_path_factory.mktemp("anet_strided")
    write_world(root, "anet_strided", seed=0, n_test_episodes=4, n_val_episodes=4)
    return World(root)


def test_long_profile_matches_its_description():
    st = world_statistics(generate_world("long", seed=0)[1])
    assert 360 <= st["duration_p10"] and st["duration_p90"] <= 900           # videos of 6-15 minutes
    assert 1.5 <= st["instances_per_video"] <= 2.5                            # 1-3 instances
    assert 0.15 <= st["coverage_median"] <= 0.45
    _, ann, _, _ = generate_world("long", seed=0)
    lengths = [a["segment"][1] - a["segment"][0] for v in ann["database"].values() for a in v["annotations"]]
    assert 50 <= np.percentile(lengths, 10) and np.percentile(lengths, 90) <= 190   # about 1-3 minutes


def test_anet_strided_profile_has_activitynet_lengths():
    cfg = PROFILES["anet_strided"]
    assert cfg.snippet_seconds == 0.5                                         # two rows per second
    st = world_statistics(generate_world("anet_strided", seed=0)[1])
    assert 100 <= st["duration_median"] <= 140                                # about 2 minutes
    assert 0.25 <= st["length_ratio_median"] <= 0.4                           # ActivityNet: 0.33
    assert st["length_ratio_p90"] - st["length_ratio_p10"] >= 0.5             # a wide spread


def test_rule_on_the_shipped_worlds():
    anet = query_mode_rule(World(ROOT / "data_samples" / "anet_like"))
    assert (anet.mode, anet.pool) == ("resample", 1) and anet.reason.startswith("query mode: resample")
    thumos = query_mode_rule(World(ROOT / "data_samples" / "thumos_like"))
    assert (thumos.mode, thumos.pool) == ("window", 1)
    assert thumos.reason.startswith("query mode: window (p95 instance ") and "of a 128-row window" in thumos.reason
    assert thumos.stats["instance_rows_p95"] <= 64


def test_rule_on_the_long_worlds(long_world, anet_strided):
    for world, pool in ((World(long_world), 3), (anet_strided, 4)):
        rule = query_mode_rule(world)                   # auto: windows at a coarser rate
        assert (rule.mode, rule.pool) == ("window", pool) and rule.stats["instance_rows_p95"] > 64
        assert rule.reason.startswith(f"query mode: window at 1/{pool} rate (p95 instance ")
        assert "> 50 % of a 128-row window" in rule.reason
        assert rule.stats["instance_rows_p95"] / pool <= 64 < rule.stats["instance_rows_p95"] / (pool - 1)
        resampled = query_mode_rule(world, long="resample")
        assert (resampled.mode, resampled.pool) == ("resample", 1) and "> 50 % of a 128-row window" in resampled.reason
    with pytest.raises(FscalError, match="long"):
        query_mode_rule(anet_strided, long="crop")


def test_instance_rows_reads_the_training_split(long_world):
    world = World(long_world)
    inst, videos = instance_rows(world, "base")
    base = set(world.splits["base"])
    n = sum(a["label"] in base for v in world.annotations["database"].values() for a in v["annotations"])
    assert len(inst) == n and (inst > 0).all() and (videos >= 360).all()   # 6 minutes at 1 row/s


def test_pooled_windows_map_back_to_seconds(long_world):
    world = World(long_world)
    ep = world.episodes("test", 5)[0]
    L = len(world.raw_features(ep["query"]))
    rows = pooled_rows(L, 3)
    assert rows == -(-L // 3) and world.query_features(ep["query"], 3).shape == (rows, world.meta.feature_dim)
    # the mean of the first three rows is the first coarse row
    np.testing.assert_allclose(world.query_features(ep["query"], 3)[0],
                               world.raw_features(ep["query"])[:3].astype(np.float32).mean(0), rtol=1e-5, atol=1e-5)
    truth = [a["segment"] for a in world.annotations["database"][ep["query"]]["annotations"] if a["label"] == ep["label"]]
    starts = window_starts(rows, 128, 64)
    assert len(EpisodeDataset(world, [ep], 128, 16, mode="window", pool=3)) == len(starts)
    for start in starts:
        t = episode_tensors(world, ep, 128, 16, mode="window", start=start, pool=3)
        assert t["axis"] == rows and int(t["mask"].sum()) == min(128, rows - start)
    t = episode_tensors(world, ep, 128, 16, mode="window", start=0, pool=3)
    whole = [s for s in truth if world.to_index(ep["query"], s[1], rows) <= 128]
    for s, e in whole:   # an instance inside the first window, at a third of its rows
        assert any(abs(a - world.to_index(ep["query"], s, rows)) < 1e-3 for a, _ in t["gt"].tolist())
    with pytest.raises(FscalError, match="window_pool"):
        world.query_features(ep["query"], 0)


def test_merge_joins_pieces_that_meet_at_window_edges():
    # an instance [100, 230) on an axis of 400 rows, windows of 64 every 32: every window that
    # touches it sees only a piece, clipped at its edges, plus a weak stray detection
    windows = []
    for off in window_starts(400, 64, 32):
        piece = [max(100, off), min(230, off + 64)]
        segs, scores = [[off + 5.0, off + 9.0]], [0.2]
        if piece[1] > piece[0]:
            segs.append(piece)
            scores.append(0.9)
        windows.append((torch.tensor(segs), torch.tensor(scores), off, 64))
    merged, sc = merge_window_edges(windows, axis=400)
    best = tiou(merged.numpy().astype(np.float64), np.array([[100.0, 230.0]]))[:, 0]
    assert best.max() > 0.99 and sc[best.argmax()] == pytest.approx(0.9)
    # no window edge inside an instance: nothing to merge
    alone = [(torch.tensor([[off + 10.0, off + 20.0]]), torch.tensor([0.9]), off, 64) for off in (0, 32, 64)]
    assert len(merge_window_edges(alone, axis=128)[0]) == 0


class OracleWindow(torch.nn.Module):
    """A detector that sees only its window: it reports the rows whose first feature is 1 (the
    instance, clipped to the window) as one detection, exactly, and nothing else."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("anchors", make_anchors(cfg.data.T, cfg.model.anchor_lengths, cfg.model.anchor_stride_frac))

    def check_skip(self, skip):
        return frozenset()

    def forward(self, query, support, mask=None, skip=()):
        B, N = query.shape[0], len(self.anchors)
        logits, deltas = torch.full((B, N), -12.0), torch.zeros(B, N, 2)
        for b in range(B):
            rows = torch.nonzero(query[b, :, 0] > 0.5).flatten()
            if len(rows):
                piece = torch.tensor([float(rows[0]), float(rows[-1] + 1)])
                i = int(tiou(self.anchors, piece[None])[:, 0].argmax())
                logits[b, i], deltas[b, i] = 6.0, encode(self.anchors[i], piece)
        return types.SimpleNamespace(logits=logits, deltas=deltas, anchors=self.anchors, valid=None)


def test_an_instance_cut_by_window_edges_is_found_whole(long_world, tmp_path):
    """Through predict: windows of 32 rows cut every instance of the long world; the merge finds it whole."""
    world = World(long_world)
    ep = next(e for e in world.episodes("test", 5)
              if sum(a["label"] == e["label"] for a in world.annotations["database"][e["query"]]["annotations"]) == 1)
    q = ep["query"]
    (seg,) = [a["segment"] for a in world.annotations["database"][q]["annotations"] if a["label"] == ep["label"]]
    x = np.zeros_like(world.features(q))
    s, e = (int(round(float(v))) for v in world.to_index(q, np.asarray(seg), len(x)))
    x[s:e, 0] = 1.0                                               # the instance, seen by the oracle
    root = tmp_path / "world"
    root.mkdir()
    for name in ("annotations.json", "splits.json", "features.json"):
        (root / name).write_text((long_world / name).read_text())
    (root / "features").mkdir()
    np.save(root / "features" / f"{q}.npy", x.astype(np.float16))
    for v in world.annotations["database"]:
        if v != q:
            np.save(root / "features" / f"{v}.npy", world.raw_features(v))
    world = World(root)
    found = {}
    for merge in (False, True):
        cfg = get_config("tiny", query_mode="window", window_merge=merge)      # T = 32: the instance > 60 rows
        top = predict(OracleWindow(cfg), world, [ep])["results"][ep["id"]][0]["segment"]
        found[merge] = float(tiou(np.array([top]), np.array([seg]))[0, 0])
    assert found[False] < 0.5 < 0.95 < found[True]


def test_real_activitynet_lengths_against_the_profile():
    """The strided ActivityNet world's instance lengths against real ActivityNet-1.3 (skips without the files)."""
    path = REAL / "activitynet_v1-3_train_tsp_groundtruth.csv"
    if not path.is_file():
        pytest.skip("real annotations not available")
    import csv
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["temporal-region-label"] == "Action"]
    ratio = np.median([(float(r["t-end"]) - float(r["t-start"])) / float(r["video-duration"]) for r in rows])
    st = world_statistics(generate_world("anet_strided", seed=0)[1])
    assert abs(st["length_ratio_median"] - ratio) < 0.05
    json.dumps(st)


def test_windows_figure_shows_the_pieces_of_a_cut_instance():
    from fscal_edu.viz.windows import windows_figure
    starts = window_starts(400, 128, 64)
    fig = windows_figure(400, starts, 128, [[100, 250], [10, 40]], pieces=True)
    cut = next(t for t in fig.data if t.name == "instance, cut by an edge")
    whole = next(t for t in fig.data if t.name == "instance, whole in the window")
    # [100, 250] (150 rows > 128) is cut in every window that touches it; [10, 40] lies whole in window 1
    assert len(cut.y) == sum(1 for a in starts if a < 250 and a + 128 > 100)
    assert list(whole.y) == ["window 1"] and list(whole.base) == [10.0]
    assert all(t.name not in ("instance, cut by an edge",) for t in windows_figure(400, starts, 128, [[100, 250]]).data)


def test_averaged_resampling_takes_bin_means(long_world):
    world = World(long_world)
    ep = world.episodes("test", 5)[0]
    raw = world.raw_features(ep["query"]).astype(np.float32)
    L = len(raw)
    t = episode_tensors(world, ep, 128, 16, average=True)
    plain = episode_tensors(world, ep, 128, 16)
    assert t["query"].shape == plain["query"].shape == (128, raw.shape[1]) and t["axis"] == plain["axis"] == 128
    assert torch.equal(t["gt"], plain["gt"])                          # the same axis, the same ground truth
    # row 0 is the mean of the video's first L / 128 rows (adaptive bins), not one interpolated row
    np.testing.assert_allclose(t["query"][0].numpy(), raw[: -(-L // 128)].mean(0), rtol=1e-4, atol=1e-4)
    assert t["query"].std() < 0.8 * plain["query"].std()              # averaging shrinks the noise
