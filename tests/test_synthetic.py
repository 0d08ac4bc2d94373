"""The synthetic feature world: determinism, the statistics it promises, the shipped copy, the CLI."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from fscal_edu import cli
from fscal_edu.data.episodes import sample_episodes
from fscal_edu.data.synthetic import (PROFILES, common_share, generate_world, render_video, resolve_config,
                                      world_statistics, write_world)
from fscal_edu.utils import FscalError

from conftest import DATA

SMALL = dataclasses.replace(PROFILES["anet"], n_base_pairs=2, n_val_pairs=2, n_test_pairs=2, videos_per_class=4)
SHIPPED = DATA / "anet_like"


def file_hashes(root):
    """{relative path: sha256} of every file under ``root`` (the feature store's cache folder aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".fscal_cache" not in p.parts}


@pytest.fixture(scope="module")
def anet():
    """The full ActivityNet-like world of seed 0, in memory (half a second)."""
    return generate_world("anet", seed=0)


# --- determinism -------------------------------------------------------------------------------

def small_world_hashes(out, seed):
    write_world(out, SMALL, seed=seed, n_test_episodes=10, n_val_episodes=5)
    return file_hashes(out)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    hashes = [small_world_hashes(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert len(hashes[0]) == 2 * 2 * 3 * 4 + 8          # 48 feature files, 3 json, 4 episode files, world.json
    assert hashes[0] == hashes[1]
    differ = {f for f in hashes[0] if hashes[0][f] != hashes[2][f]}
    assert {"annotations.json", "world.json", "episodes_test_5shot.json"} <= differ
    assert sum(f.startswith("features/") for f in differ) == 48      # every video's features change
    assert "features.json" not in differ and "splits.json" not in differ  # same names, same layout


def test_cli_generate_reproduces_the_shipped_world(tmp_path, capsys):
    """`fscal-edu generate --profile anet --seed 0` writes data_samples/anet_like byte for byte."""
    out = tmp_path / "anet_like"
    assert cli.main(["generate", "--profile", "anet", "--out", str(out), "--seed", "0"]) == 0
    assert "wrote the anet-like world (seed 0)" in capsys.readouterr().out
    shipped = file_hashes(SHIPPED)
    assert len(shipped) == 900 + 8
    assert file_hashes(out) == shipped


def test_cli_generate_reproduces_the_shipped_thumos_like_world(tmp_path, capsys):
    """`fscal-edu generate --profile thumos --seed 0` writes data_samples/thumos_like byte for byte:
    strided features (one row every 2 s), videos of different lengths."""
    out = tmp_path / "thumos_like"
    assert cli.main(["generate", "--profile", "thumos", "--out", str(out), "--seed", "0"]) == 0
    assert "wrote the thumos-like world (seed 0)" in capsys.readouterr().out
    shipped = file_hashes(SHIPPED.parent / "thumos_like")
    assert len(shipped) == 140 + 8
    assert file_hashes(out) == shipped
    meta = json.loads((out / "features.json").read_text())
    assert meta == {"feature_dim": 32, "fps": 30.0, "feat_stride": 60, "num_frames": 60}
    lengths = {np.load(f).shape[0] for f in (out / "features").iterdir()}
    assert len(lengths) > 50 and min(lengths) > 128           # long videos: two windows or more each


def test_shipped_world_json_matches_its_files(anet):
    world = json.loads((SHIPPED / "world.json").read_text())
    annotations = json.loads((SHIPPED / "annotations.json").read_text())
    stats = world_statistics(annotations)
    assert stats == pytest.approx({k: v for k, v in world["statistics"].items() if k in stats})
    assert stats == pytest.approx(world_statistics(anet[1]))
    for split in ("val", "test"):
        for shots in (1, 5):
            eps = json.loads((SHIPPED / f"episodes_{split}_{shots}shot.json").read_text())["episodes"]
            share = world["statistics"][f"common_share_{split}_{shots}shot"]
            assert common_share(annotations, eps) == pytest.approx(share)
            assert 0.4 < share < 0.5                                    # data_samples/README.md


# --- the world's promises (data_samples/README.md) ----------------------------------------------

def test_instances_per_video_lengths_and_placement(anet):
    _, ann, splits, info = anet
    cfg = PROFILES["anet"]
    for vid, entry in ann["database"].items():
        main = vid.split("_", 1)[1].rsplit("_", 1)[0]                 # "<split>_<class>_<nn>"
        labels = [a["label"] for a in entry["annotations"]]
        assert cfg.targets[0] <= labels.count(main) <= cfg.targets[1]
        assert cfg.distractors[0] <= len(labels) - labels.count(main) <= cfg.distractors[1]
        assert cfg.duration[0] <= entry["duration"] <= cfg.duration[1]
        segs = np.array([a["segment"] for a in entry["annotations"]])    # sorted by start
        ratio = (segs[:, 1] - segs[:, 0]) / entry["duration"]
        assert ((ratio > cfg.length_frac[0] - 1e-3) & (ratio < cfg.length_frac[1] + 1e-3)).all()
        assert segs.min() >= 0 and segs.max() <= entry["duration"]
        assert (segs[1:, 0] >= segs[:-1, 1]).all()                    # no two instances overlap


def test_splits_are_disjoint_and_videos_stay_in_their_split(anet):
    _, ann, splits, info = anet
    cfg = PROFILES["anet"]
    assert [len(splits[s]) for s in ("base", "val", "test")] == [2 * cfg.n_base_pairs, 2 * cfg.n_val_pairs,
                                                                  2 * cfg.n_test_pairs]
    split_of = {c: s for s, classes in splits.items() for c in classes}
    assert len(split_of) == cfg.n_classes                             # no class in two splits
    subset = {"base": "training", "val": "validation", "test": "testing"}
    for vid, entry in ann["database"].items():
        split = vid.split("_")[0]
        assert entry["subset"] == subset[split]
        # distractors come from the same split: test classes never appear in a training video
        assert {split_of[a["label"]] for a in entry["annotations"]} == {split}


def test_twins_share_phases_in_another_order(anet):
    _, ann, splits, info = anet
    phases, twin = info["class_phases"], info["twin"]
    for c, t in twin.items():
        assert twin[t] == c and c != t
        assert sorted(phases[c]) == sorted(phases[t]) and phases[c] != phases[t]
    assert {n["nodeName"]: n["phases"] for n in ann["taxonomy"]} == phases
    assert len({tuple(p) for p in phases.values()}) == len(phases)     # no two classes identical


def test_about_half_of_the_distractors_are_twins(anet):
    _, ann, splits, info = anet
    twins = others = 0
    for vid, entry in ann["database"].items():
        main = vid.split("_", 1)[1].rsplit("_", 1)[0]
        distractors = [a["label"] for a in entry["annotations"] if a["label"] != main]
        twins += sum(d == info["twin"][main] for d in distractors)
        others += len(distractors)
    assert 0.4 < twins / others < 0.6                                 # twin_prob = 0.5


@pytest.mark.parametrize("profile, low, high", [("anet", 0.3, 0.6), ("thumos", 0.2, 0.45)])
def test_common_class_holds_part_of_the_query_action_time(profile, low, high, anet):
    ann, splits = (anet if profile == "anet" else generate_world(profile, seed=0))[1:3]
    eps = sample_episodes(ann, splits["test"], 5, 200, seed=1)
    # the supports are necessary: "some action" is the common class only part of the time
    # (thumos: more distractors per video, and a query may hold the class only as a distractor)
    assert low < common_share(ann, eps) < high


def test_thumos_profile_has_many_short_instances(anet):
    thumos = world_statistics(generate_world("thumos", seed=0)[1])
    anet_stats = world_statistics(anet[1])
    assert thumos["instances_per_video"] > 2 * anet_stats["instances_per_video"]
    assert thumos["length_ratio_median"] < 0.05 < anet_stats["length_ratio_median"]


def test_features_are_float32_T_by_C_and_finite(anet):
    features, ann = anet[:2]
    assert set(features) == set(ann["database"])
    x = np.stack(list(features.values())[:50])
    assert x.dtype == np.float32 and x.shape[1:] == (128, 64) and np.isfinite(x).all()


# --- the knobs mean what they say ----------------------------------------------------------------

def test_render_walks_through_the_phases_in_order():
    cfg = dataclasses.replace(SMALL, noise_norm=0.0, scene_norm=0.0, drift_norm=0.0)
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((cfg.n_phases, cfg.feature_dim))
    x = render_video(cfg, [("c", (20.0, 80.0))], pool, {"c": [5, 2, 9]}, rng)        # (T, C)
    assert x.shape == (cfg.T, cfg.feature_dim)
    np.testing.assert_array_equal(x[:20], 0)                          # background: nothing at all
    np.testing.assert_array_equal(x[80:], 0)
    inside = x[20:80]
    which = np.argmin(((inside[:, None] - pool[None]) ** 2).sum(-1), axis=1)        # nearest phase
    np.testing.assert_allclose(inside, pool[which])                   # every snippet is a phase vector
    runs = [int(p) for i, p in enumerate(which) if i == 0 or p != which[i - 1]]
    assert runs == [5, 2, 9]                                          # in the class's order


def test_scene_and_noise_norms():
    cfg = dataclasses.replace(SMALL, noise_norm=0.0, drift_norm=0.0, scene_norm=1.6)
    x = render_video(cfg, [], None, {}, np.random.default_rng(0))
    np.testing.assert_allclose(x, np.broadcast_to(x[0], x.shape))      # one constant scene vector
    assert np.linalg.norm(x[0]) == pytest.approx(1.6)
    cfg = dataclasses.replace(SMALL, noise_norm=5.0, drift_norm=0.0, scene_norm=0.0)
    x = render_video(cfg, [], None, {}, np.random.default_rng(0))
    assert np.linalg.norm(x, axis=1).mean() == pytest.approx(5.0, rel=0.05)


def test_world_statistics_by_hand():
    ann = {"database": {
        "v1": {"duration": 100.0, "annotations": [{"label": "a", "segment": [0.0, 10.0]},
                                                  {"label": "b", "segment": [20.0, 50.0]}]},
        "v2": {"duration": 50.0, "annotations": [{"label": "a", "segment": [10.0, 20.0]}]}}}
    s = world_statistics(ann)
    assert (s["videos"], s["instances"], s["classes"]) == (2, 3, 2)
    assert s["instances_per_video"] == 1.5 and s["share_single_instance"] == 0.5
    assert s["length_ratio_median"] == pytest.approx(0.2)             # ratios 0.1, 0.3, 0.2
    assert s["coverage_median"] == pytest.approx(0.3)                 # coverages 0.4, 0.2
    assert s["share_multi_class"] == 0.5
    eps = [{"label": "a", "query": "v1"}, {"label": "a", "query": "v2"}]
    assert common_share(ann, eps) == pytest.approx((10 / 40 + 1.0) / 2)


# --- bad configurations: a clear error, not numpy's crash or an endless loop ---------------------

@pytest.mark.parametrize("knobs, field", [
    (dict(n_val_pairs=1), "n_val_pairs"),          # used to crash in numpy: no non-twin distractor
    (dict(n_test_pairs=0), "n_test_pairs"),
    (dict(n_base_pairs=1), "n_base_pairs"),
    (dict(phases_per_class=1), "phases_per_class"),  # a twin needs another order
    (dict(phases_per_class=30), "phases_per_class"),
    (dict(targets=(3, 6), distractors=(3, 6), length_frac=(0.1, 0.2)), "length_frac"),  # never fits
])
def test_bad_configs_name_the_knob(knobs, field):
    with pytest.raises(FscalError, match=f"field '{field}'"):
        generate_world(dataclasses.replace(SMALL, **knobs))


def test_unknown_profile():
    with pytest.raises(FscalError, match=r"field 'profile'.*'nope'.*anet"):
        resolve_config("nope")
    assert resolve_config("thumos") is PROFILES["thumos"]


# --- mechanisms only a stage can resolve (knobs; their defaults are the shipped world) ----

def test_swap_twins_differ_by_one_neighbouring_swap():
    info = generate_world(dataclasses.replace(SMALL, twin_mode="swap", phases_per_class=4), seed=0)[3]
    for a, b in info["twin"].items():
        pa, pb = info["class_phases"][a], info["class_phases"][b]
        diff = [i for i in range(4) if pa[i] != pb[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and pa[diff[0]] == pb[diff[1]]
    reorder = generate_world(dataclasses.replace(SMALL, phases_per_class=4), seed=0)[3]
    assert any(sum(x != y for x, y in zip(reorder["class_phases"][a], reorder["class_phases"][b])) > 2
               for a, b in reorder["twin"].items())          # the default twins are any reorder


@pytest.mark.parametrize("span, low_rank", [("phases", True), ("isotropic", False)])
def test_scene_in_the_span_of_the_phases(span, low_rank):
    cfg = dataclasses.replace(SMALL, feature_dim=16, n_phases=4, phases_per_class=2, noise_norm=0.0,
                              drift_norm=0.0, scene_span=span)
    features, ann = generate_world(cfg, seed=0)[:2]
    scenes = []
    for vid, x in features.items():        # a snippet outside every instance is the scene alone
        busy = np.zeros(len(x), dtype=bool)
        for a in ann["database"][vid]["annotations"]:
            s, e = (np.asarray(a["segment"]) / ann["database"][vid]["duration"] * len(x))
            busy[int(s):int(np.ceil(e)) + 1] = True
        scenes.append(x[np.flatnonzero(~busy)[0]])
    rank = np.linalg.matrix_rank(np.stack(scenes), tol=1e-3)
    assert (rank <= 4) == low_rank


def test_loose_supports_hold_their_instance_and_reach_out(tmp_path):
    write_world(tmp_path / "w", dataclasses.replace(SMALL, support_slack=(0.3, 0.8)), seed=0,
                n_test_episodes=10, n_val_episodes=5)
    ann = json.loads((tmp_path / "w" / "annotations.json").read_text())["database"]
    eps = json.loads((tmp_path / "w" / "episodes_test_5shot.json").read_text())["episodes"]
    grew = []
    for ep in eps:
        for clip in ep["support"]:
            s, e = clip["segment"]
            inst = [a["segment"] for a in ann[clip["video"]]["annotations"] if a["label"] == ep["label"]
                    and a["segment"][0] >= s - 1e-9 and a["segment"][1] <= e + 1e-9]
            assert inst, "a loose support still holds an instance of its class"
            assert 0 <= s and e <= ann[clip["video"]]["duration"]
            grew.append((e - s) / (inst[0][1] - inst[0][0]))
    assert min(grew) >= 1.0 and np.mean(grew) > 1.5
    from fscal_edu.data.episodes import RandomEpisodes, World
    world = World(tmp_path / "w")
    assert world.episode_knobs == {"support_slack": [0.3, 0.8]}      # knobs at their default are left out
    assert RandomEpisodes(world, "base", 5, 1, 32, 8).knobs.active     # training draws them loose too


def test_outlier_supports_are_twins_or_background(tmp_path):
    write_world(tmp_path / "w", dataclasses.replace(SMALL, outlier_prob=1.0), seed=0, n_test_episodes=10,
                n_val_episodes=5)
    ann = json.loads((tmp_path / "w" / "annotations.json").read_text())
    twin = {t["nodeName"]: t["twin"] for t in ann["taxonomy"]}
    kinds = set()
    for ep in json.loads((tmp_path / "w" / "episodes_test_5shot.json").read_text())["episodes"]:
        for clip in ep["support"]:
            s, e = clip["segment"]
            over = [a["label"] for a in ann["database"][clip["video"]]["annotations"]
                    if min(e, a["segment"][1]) - max(s, a["segment"][0]) > 1e-9]
            assert ep["label"] not in over and clip["video"] != ep["query"]
            kinds.add("twin" if over == [twin[ep["label"]]] else "background" if not over else "other")
    assert kinds == {"twin", "background"}


def test_bad_mechanism_knobs():
    for change in (dict(twin_mode="rotate"), dict(scene_span="planar"), dict(support_slack=(0.5, 0.2)),
                   dict(outlier_prob=1.5), dict(variants_per_class=0)):
        with pytest.raises(FscalError):
            resolve_config(dataclasses.replace(SMALL, **change))


def test_variants_shift_every_phase_and_keep_twins_twins():
    """variants_per_class=3: an instance walks through its class's phases shifted by 0, 8 or 16 in the
    pool of 24 (the same shift for its twin), and all three variants occur."""
    cfg = dataclasses.replace(SMALL, noise_norm=0.0, scene_norm=0.0, drift_norm=0.0, variants_per_class=3,
                              n_phases=24)
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((cfg.n_phases, cfg.feature_dim))
    seen = set()
    for _ in range(30):
        x = render_video(cfg, [("a", (20.0, 80.0)), ("b", (90.0, 120.0))], pool,
                         {"a": [5, 2, 9], "b": [2, 5, 9]}, rng)                   # (T, C), b the twin of a
        for (s, e), order in (((20, 80), [5, 2, 9]), ((90, 120), [2, 5, 9])):
            which = np.argmin(((x[s:e, None] - pool[None]) ** 2).sum(-1), axis=1)
            runs = [int(p) for i, p in enumerate(which) if i == 0 or p != which[i - 1]]
            shift = (runs[0] - order[0]) % 24
            assert shift in (0, 8, 16) and runs == [(p + shift) % 24 for p in order]
            seen.add(shift)
    assert seen == {0, 8, 16}


# --- the output folder: a world there is never overwritten, one inside a dataset never written --

def test_generate_over_an_existing_world_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys):
    from worlds import assert_error, run_cli
    out = tmp_path / "w"
    write_world(out, SMALL, seed=0, n_test_episodes=10, n_val_episodes=5)
    (out / "notes.txt").write_text("mine")
    before = file_hashes(out)
    for profile in ("anet", "thumos"):
        assert_error(run_cli(capsys, "generate", "--profile", profile, "--out", out), "generate", str(out),
                     "already holds a world", "--overwrite")
        assert file_hashes(out) == before
    with pytest.warns(UserWarning, match="moved the world that was there aside"):
        write_world(out, SMALL, seed=1, n_test_episodes=10, n_val_episodes=5, overwrite=True)
    assert file_hashes(tmp_path / "w.replaced-1") == before          # nothing lost, nothing mixed
    assert "notes.txt" not in file_hashes(out) and file_hashes(out) == small_world_hashes(tmp_path / "c", 1)


@pytest.mark.parametrize("inside", ["features", "features/sub", "elsewhere"])
def test_generate_inside_a_dataset_is_refused_even_with_overwrite(tmp_path, capsys, inside):
    from worlds import assert_error, run_cli
    data = tmp_path / "w"
    write_world(data, SMALL, seed=0, n_test_episodes=10, n_val_episodes=5)
    before = file_hashes(data)
    for extra in ([], ["--overwrite"]):
        assert_error(run_cli(capsys, "generate", "--out", data / inside, *extra), "generate",
                     "inside the dataset directory")
    assert file_hashes(data) == before and not list(tmp_path.glob("*.replaced-*"))


def test_generate_into_a_folder_of_other_files_keeps_them(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    write_world(out, SMALL, seed=0, n_test_episodes=10, n_val_episodes=5)
    assert (out / "notes.txt").read_text() == "mine" and (out / "world.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FscalError, match="is a file"):
        write_world(tmp_path / "file", SMALL, seed=0)


@pytest.mark.parametrize("inside", ["", "sub"])
def test_generate_onto_or_inside_a_run_folder_is_refused(tmp_path, capsys, inside):
    from worlds import assert_error, run_cli
    run = tmp_path / "RUN"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    (run / "metrics.jsonl").write_text("")
    before = file_hashes(run)
    for extra in ([], ["--overwrite"]):
        assert_error(run_cli(capsys, "generate", "--out", run / inside if inside else run, *extra), "generate",
                     "the run folder")
    assert file_hashes(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["RUN"]


def test_generate_through_a_link_loop_is_one_line(tmp_path, capsys):
    from worlds import assert_error, run_cli
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert_error(run_cli(capsys, "generate", "--out", tmp_path / "loop" / "w"), "generate", "cannot be resolved")
