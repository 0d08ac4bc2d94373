"""Episodes: the sampler, episodes.json, the World loader, the Dataset and collate, and bad input."""
import dataclasses
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from fscal_edu.data.annotations import instances_by_class
from fscal_edu.data.episodes import (EpisodeDataset, RandomEpisodes, collate, load_episodes, load_world,
                                     sample_episode, sample_episodes, save_episodes)
from fscal_edu.data.features import crop
from fscal_edu.data.synthetic import PROFILES, write_world
from fscal_edu.utils import FscalError

from conftest import DATA

SHIPPED = DATA / "anet_like"
SMALL = dataclasses.replace(PROFILES["anet"], n_base_pairs=2, n_val_pairs=2, n_test_pairs=2, videos_per_class=4)


@pytest.fixture(scope="module")
def shipped():
    return load_world(SHIPPED)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "world"
    write_world(out, SMALL, seed=0, n_test_episodes=12, n_val_episodes=4)
    return out


@pytest.fixture
def world_dir(small_dir, tmp_path):
    """A fresh copy of the small world, for tests that break it."""
    return shutil.copytree(small_dir, tmp_path / "world")


def check_protocol(episodes, annotations, classes, shots):
    """The FS-CAL episode protocol, asserted episode by episode."""
    db, by_class = annotations["database"], instances_by_class(annotations)
    for ep in episodes:
        assert ep["label"] in classes                                  # the class stays in its split
        assert ep["label"] in {a["label"] for a in db[ep["query"]]["annotations"]}   # query holds it
        assert len(ep["support"]) == shots
        for clip in ep["support"]:
            assert clip["video"] != ep["query"]                        # never from the query video
            assert (clip["video"], tuple(clip["segment"])) in by_class[ep["label"]]   # a real instance
        assert len({(c["video"], tuple(c["segment"])) for c in ep["support"]}) == shots   # no clip twice
    counts = Counter(ep["label"] for ep in episodes)
    assert max(counts.values()) - min(counts.values()) <= 1            # balanced classes


# --- the sampler -------------------------------------------------------------------------------

@pytest.mark.parametrize("shots", [1, 5])
def test_sampler_follows_the_protocol_and_repeats_by_seed(shipped, shots):
    test = shipped.splits["test"]
    eps = sample_episodes(shipped.annotations, test, shots, 45, seed=3, prefix="t")
    check_protocol(eps, shipped.annotations, test, shots)
    assert len(Counter(ep["label"] for ep in eps)) == len(test)        # every class gets its turn
    assert [ep["id"] for ep in eps[:2]] == ["t_0000", "t_0001"]
    assert sample_episodes(shipped.annotations, test, shots, 45, seed=3, prefix="t") == eps
    assert sample_episodes(shipped.annotations, test, shots, 45, seed=4, prefix="t") != eps
    # in the synthetic world, a split's classes live only in that split's videos
    assert {shipped.annotations["database"][v]["subset"] for ep in eps
            for v in [ep["query"]] + [c["video"] for c in ep["support"]]} == {"testing"}


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("shots", [1, 5])
def test_shipped_episodes_follow_the_protocol(shipped, split, shots):
    eps = shipped.episodes(split, shots)
    assert len(eps) == {"val": 100, "test": 300}[split]
    check_protocol(eps, shipped.annotations, shipped.splits[split], shots)


def test_a_class_with_too_few_clips(shipped):
    ann = {"database": {"v1": {"duration": 10.0, "annotations": [{"label": "a", "segment": [1.0, 2.0]},
                                                                 {"label": "a", "segment": [3.0, 4.0]}]},
                        "v2": {"duration": 10.0, "annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    assert len(sample_episodes(ann, ["a"], 1, 4)) == 4               # one clip outside either query
    with pytest.raises(FscalError, match=r"field 'support'.*'a' has 3 clip\(s\) in 2 video\(s\) \(v1, v2\).*K"):
        sample_episodes(ann, ["a"], 5, 4)
    with pytest.raises(FscalError, match=r"video 'v[12]', field 'support'.*'a' has only [12] clip.*K = 3"):
        sample_episode(instances_by_class(ann), "a", 3, np.random.default_rng(0), "e")
    with pytest.raises(FscalError, match=r"field 'label'.*\['zzz'\]"):
        sample_episodes(ann, ["zzz"], 1, 4)
    with pytest.raises(FscalError, match=r"field 'classes'"):
        sample_episodes(ann, [], 1, 4)


# --- episodes.json -----------------------------------------------------------------------------

def test_episodes_round_trip(shipped, tmp_path):
    eps = sample_episodes(shipped.annotations, shipped.splits["val"], 5, 12, seed=0)
    path = save_episodes(eps, tmp_path / "episodes.json")
    assert load_episodes(path, shipped.annotations, shots=5) == eps
    assert load_episodes(path) == eps                                  # no annotations: structure only
    text = path.read_text()
    save_episodes(load_episodes(path), path)
    assert path.read_text() == text
    assert list(json.loads(text)) == ["episodes"]
    assert list(json.loads(text)["episodes"][0]) == ["id", "label", "query", "support"]


# --- bad episodes, through World: the message names the file, the video and the field ------------

def break_episode(ep, db, kind):
    """Break the first episode of a file in one way; return the video and field the error names."""
    other = next(v for v in db if v != ep["query"] and v not in {c["video"] for c in ep["support"]})
    if kind == "unknown_query":
        ep["query"] = "no_such_video"
        return "no_such_video", "query"
    if kind == "unknown_support":
        ep["support"][1]["video"] = "no_such_video"
        return "no_such_video", "support.video"
    if kind == "support_from_query":
        ep["support"][0] = {"video": ep["query"], "segment": db[ep["query"]]["annotations"][0]["segment"]}
        return ep["query"], "support.video"
    if kind == "start_after_end":
        ep["support"][0]["segment"] = [5.0, 5.0]
        return ep["support"][0]["video"], "support.segment"
    if kind == "negative_start":
        ep["support"][0]["segment"] = [-1.0, 5.0]
        return ep["support"][0]["video"], "support.segment"
    if kind == "start_past_duration":
        ep["support"][0]["segment"] = [db[ep["support"][0]["video"]]["duration"] + 1, 1e4]
        return ep["support"][0]["video"], "support.segment"
    if kind == "too_few_supports":
        del ep["support"][1:]
        return ep["query"], "support"
    if kind == "support_without_segment":
        del ep["support"][0]["segment"]
        return ep["query"], "support"
    if kind == "query_lacks_class":
        ep["query"] = next(v for v in db if ep["label"] not in {a["label"] for a in db[v]["annotations"]})
        return ep["query"], "label"
    del ep[kind.removeprefix("missing_")]                            # missing_label, missing_support
    return ep["query"], kind.removeprefix("missing_")


@pytest.mark.parametrize("kind", ["unknown_query", "unknown_support", "support_from_query", "start_after_end",
                                  "negative_start", "start_past_duration", "too_few_supports",
                                  "support_without_segment", "query_lacks_class", "missing_label",
                                  "missing_support"])
def test_bad_episodes_name_file_video_field(world_dir, kind):
    path = world_dir / "episodes_test_5shot.json"
    raw = json.loads(path.read_text())
    db = json.loads((world_dir / "annotations.json").read_text())["database"]
    video, field = break_episode(raw["episodes"][0], db, kind)
    path.write_text(json.dumps(raw))
    world = load_world(world_dir)
    with pytest.raises(FscalError) as err:
        world.episodes("test", 5)
    assert f"file '{path}', video '{video}', field '{field}'" in str(err.value)
    assert repr(raw["episodes"][0]["id"]) in str(err.value)            # and the episode


def test_episodes_file_errors(world_dir):
    world = load_world(world_dir)
    with pytest.raises(FscalError, match=r"episodes_test_3shot\.json', field 'path'.*no fixed 3-shot"):
        world.episodes("test", 3)
    (world_dir / "episodes_val_1shot.json").write_text('{"episodes": {}}')
    with pytest.raises(FscalError, match=r"episodes_val_1shot\.json', field 'episodes'"):
        world.episodes("val", 1)
    (world_dir / "episodes_val_1shot.json").write_text('{"episodes": ["x"]}')
    with pytest.raises(FscalError, match=r"episodes_val_1shot\.json', field 'episodes'.*must be a dict"):
        world.episodes("val", 1)
    (world_dir / "episodes_val_1shot.json").write_text('{"episodes": [')
    with pytest.raises(FscalError, match=r"episodes_val_1shot\.json', field 'path'.*not readable JSON"):
        world.episodes("val", 1)


# --- bad worlds --------------------------------------------------------------------------------

def first_video(world_dir):
    return sorted(p.stem for p in (world_dir / "features").glob("*.npy"))[0]


@pytest.mark.parametrize("kind, field", [("wide", "feature_dim"), ("nan", "feats"), ("missing", "path")])
def test_bad_features_through_world(world_dir, kind, field):
    vid = first_video(world_dir)
    path = world_dir / "features" / f"{vid}.npy"
    if kind == "missing":
        path.unlink()
    if kind == "wide":
        np.save(path, np.zeros((128, 32), np.float16))
    if kind == "nan":
        x = np.load(path)
        x[7, 3] = np.nan
        np.save(path, x)
    world = load_world(world_dir)
    with pytest.raises(FscalError) as err:
        world.features(vid)
    assert f"file '{path}', video '{vid}', field '{field}'" in str(err.value)
    if kind == "wide":
        assert "width 32, features.json says 64" in str(err.value)
    if kind == "nan":
        assert "first at snippet 7" in str(err.value)


def test_unknown_video_through_world(world_dir):
    with pytest.raises(FscalError, match=r"annotations\.json', video 'nope', field 'database'.*unknown"):
        load_world(world_dir).features("nope")


@pytest.mark.parametrize("kind, message", [
    ("unknown_class", r"splits\.json', field 'test'.*'action_99a' does not occur"),
    ("overlap", r"splits\.json', field 'test'.*'action_00a' is already in split 'base'"),
    ("no_features_json", r"features\.json', field 'path'.*missing"),
    ("no_splits", r"splits\.json', field 'path'.*missing"),
    ("no_directory", r"field 'path'.*does not exist"),
])
def test_bad_worlds_refuse_to_load(world_dir, kind, message):
    splits = json.loads((world_dir / "splits.json").read_text())
    if kind == "unknown_class":
        splits["test"].append("action_99a")
    if kind == "overlap":
        splits["test"].append(splits["base"][0])
    (world_dir / "splits.json").write_text(json.dumps(splits))
    if kind == "no_features_json":
        (world_dir / "features.json").unlink()
    if kind == "no_splits":
        (world_dir / "splits.json").unlink()
    with pytest.raises(FscalError, match=message):
        load_world(world_dir / "gone" if kind == "no_directory" else world_dir)


# --- the World loader and the tensors for the model ----------------------------------------------

def test_world_loader(shipped):
    assert (shipped.meta.feature_dim, shipped.meta.resize_length) == (64, 128)
    assert [len(shipped.splits[s]) for s in ("base", "val", "test")] == [40, 10, 10]
    assert len(shipped.labels) == 60 and shipped.label_index[shipped.labels[5]] == 5
    vid = "test_action_28a_05"
    x = shipped.features(vid)
    assert x.dtype == np.float32 and x.shape == (128, 64)
    raw = shipped.raw_features(vid)              # read once into the shared float16 store: a view, no copy
    assert raw.dtype == np.float16 and np.shares_memory(raw, shipped.store.pack)
    assert type(x) is np.ndarray and not np.shares_memory(x, shipped.store.pack)
    np.testing.assert_array_equal(x, np.load(SHIPPED / "features" / f"{vid}.npy").astype(np.float32))
    d = shipped.duration(vid)
    np.testing.assert_allclose(shipped.to_index(vid, [0.0, d / 4, d], 128), [0.0, 32.0, 128.0])


def test_episode_dataset_and_collate(shipped):
    eps = shipped.episodes("test", 5)[:4]
    ds = EpisodeDataset(shipped, eps, T=64, T_S=8)
    assert len(ds) == 4
    item = ds[0]
    ep, db = eps[0], shipped.annotations["database"]
    assert item["query"].shape == (64, 64) and item["support"].shape == (5, 8, 64)
    assert item["query"].dtype == torch.float32 and item["support"].dtype == torch.float32
    # ground truth: the query's instances of the class, in snippet coordinates of the T = 64 axis
    d = db[ep["query"]]["duration"]
    gt = [np.array(a["segment"]) / d * 64 for a in db[ep["query"]]["annotations"] if a["label"] == ep["label"]]
    np.testing.assert_allclose(item["gt"].numpy(), gt, rtol=1e-5)
    # a support: its segment cut out of its own video and resampled to T_S snippets
    clip = ep["support"][2]
    s, e = np.array(clip["segment"]) / db[clip["video"]]["duration"] * 128
    np.testing.assert_allclose(item["support"][2].numpy(), crop(shipped.features(clip["video"]), s, e, 8),
                               rtol=1e-5, atol=1e-6)
    assert (item["label"], item["id"], item["video"], item["duration"]) == (
        shipped.label_index[ep["label"]], ep["id"], ep["query"], d)

    items = [ds[i] for i in range(4)]
    batch = collate(items)
    n_gt = [len(it["gt"]) for it in items]
    assert batch["query"].shape == (4, 64, 64) and batch["support"].shape == (4, 5, 8, 64)
    assert batch["gt"].shape == (4, max(n_gt), 2) and batch["gt_mask"].dtype == torch.bool
    assert batch["gt_mask"].sum(1).tolist() == n_gt
    assert (batch["gt"][~batch["gt_mask"]] == 0).all()                 # padding is zero
    for b, it in enumerate(items):
        torch.testing.assert_close(batch["gt"][b, :n_gt[b]], it["gt"])
    assert batch["label"].tolist() == [shipped.label_index[ep["label"]] for ep in eps]
    assert batch["id"] == [ep["id"] for ep in eps] and len(batch["duration"]) == 4


def test_random_episodes_are_repeatable_and_stay_in_base(shipped):
    def draw(seed):
        return RandomEpisodes(shipped, "base", shots=5, length=6, T=32, T_S=4, seed=seed)

    a, b, c = draw(1), draw(1), draw(2)
    assert len(a) == 6
    backwards = {i: b[i] for i in reversed(range(6))}                 # item i depends only on (seed, i)
    base = {shipped.label_index[x] for x in shipped.splits["base"]}
    for i in range(6):
        x, y = a[i], backwards[i]
        torch.testing.assert_close(x["query"], y["query"])
        torch.testing.assert_close(x["support"], y["support"])
        assert x["support"].shape == (5, 4, 64) and len(x["gt"]) >= 1
        assert x["label"] in base and shipped.annotations["database"][x["video"]]["subset"] == "training"
    assert [a[i]["video"] for i in range(6)] != [c[i]["video"] for i in range(6)]
    with pytest.raises(FscalError, match=r"splits\.json', field 'train'"):
        RandomEpisodes(shipped, "train", shots=5, length=6, T=32, T_S=4)
