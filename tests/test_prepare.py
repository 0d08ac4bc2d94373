"""``fscal-edu prepare``: a checked dataset directory from feature files, annotations and a split
file; the synthetic world's raw files, the real ActivityNet-1.3 and THUMOS14 annotation files with
synthetic features of the right lengths (skipped without ../shared), and bad input."""
import json
import warnings
from collections import Counter

import numpy as np
import pytest

from fscal_edu.data.annotations import instances_by_class, tsp_csv_to_activitynet
from fscal_edu.data.episodes import World
from fscal_edu.data.synthetic import WorldConfig, generate_world

from worlds import assert_error, run_cli

TINY = WorldConfig(feature_dim=8, T=32, n_base_pairs=2, n_val_pairs=2, n_test_pairs=2, videos_per_class=4)


@pytest.fixture
def raw(tmp_path):
    """A raw folder as a user has it: feature files, ActivityNet JSON, a plain split file."""
    features, ann, splits, _ = generate_world(TINY, seed=3)
    root = tmp_path / "raw"
    (root / "feats").mkdir(parents=True)
    for video, x in features.items():
        np.save(root / "feats" / f"{video}.npy", x)
    (root / "gt.json").write_text(json.dumps(ann))
    (root / "split.json").write_text(json.dumps(splits))
    return root


def prepare(capsys, raw, out, *extra, dataset="activitynet"):
    return run_cli(capsys, "prepare", "--features", raw / "feats", "--annotations", raw / "gt.json",
                   "--dataset", dataset, "--split-file", raw / "split.json", "--out", out,
                   "--val-episodes", 10, "--test-episodes", 20, *extra)


def first_video(raw):
    return sorted(p.stem for p in (raw / "feats").iterdir())[0]


def test_synthetic_raw_folder_becomes_a_world(raw, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = prepare(capsys, raw, out)
    assert rc == 0, err
    assert "episodes K=5" in stdout and "dropped or ignored" in stdout
    world = World(out)
    assert (world.meta.resize_length, world.meta.feature_dim) == (32, 8)        # detected: one length
    assert world.splits == json.loads((raw / "split.json").read_text())
    video = first_video(raw)
    assert (out / "features" / f"{video}.npy").is_symlink()                     # linked, not copied
    np.testing.assert_allclose(world.features(video), np.load(raw / "feats" / f"{video}.npy"), atol=1e-2)
    for split, n in (("val", 10), ("test", 20)):
        for shots in (1, 5):
            eps = world.episodes(split, shots)
            assert len(eps) == n and {e["label"] for e in eps} <= set(world.splits[split])
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["splits"]["test"]["classes"] == 4 and summary["splits"]["all"]["videos"] == 48
    assert not any(summary["dropped"].values())


def test_drop_missing_copy_and_extra_files(raw, tmp_path, capsys):
    video = first_video(raw)
    (raw / "feats" / f"{video}.npy").unlink()
    np.save(raw / "feats" / "not_annotated.npy", np.zeros((32, 8), np.float32))
    out = tmp_path / "out"
    rc, stdout, err = prepare(capsys, raw, out, "--drop-missing", "--copy")
    assert rc == 0, err
    dropped = json.loads((out / "prepare.json").read_text())["dropped"]
    assert dropped["videos without a feature file (--drop-missing)"] == 1
    assert dropped["feature files of videos not in the annotations (ignored)"] == 1
    assert "not_annotated" in stdout
    world = World(out)
    assert video not in world.annotations["database"] and len(world.annotations["database"]) == 47
    assert not any(p.is_symlink() for p in (out / "features").iterdir())        # --copy
    assert not (out / "features" / "not_annotated.npy").exists()
    # a second run into the same folder needs --overwrite
    assert_error(prepare(capsys, raw, out, "--drop-missing"), "prepare", str(out), "field '--out'", "--overwrite")
    assert prepare(capsys, raw, out, "--drop-missing", "--overwrite")[0] == 0
    assert (out / "features" / f"{first_video(raw)}.npy").is_symlink()


def break_width(raw, video):
    np.save(raw / "feats" / f"{video}.npy", np.zeros((32, 7), np.float32))


def break_nan(raw, video):
    x = np.load(raw / "feats" / f"{video}.npy")
    x[5, 2] = np.nan
    np.save(raw / "feats" / f"{video}.npy", x)


@pytest.mark.parametrize("damage, field, words", [
    (lambda raw, v: (raw / "feats" / f"{v}.npy").unlink(), "path", ["no feature file", "--drop-missing"]),
    (break_width, "feature_dim", ["width 7", "47 of 48 files have 8", "--drop-bad"]),
    (break_nan, "feats", ["NaN", "--drop-bad"]),
], ids=["missing", "width", "nan"])
def test_bad_feature_file_stops_naming_file_video_field(raw, tmp_path, capsys, damage, field, words):
    video = first_video(raw)
    damage(raw, video)
    line = assert_error(prepare(capsys, raw, tmp_path / "out"), "prepare",
                        str(raw / "feats" / f"{video}.npy"), f"video '{video}'", f"field '{field}'", *words)
    assert "more" not in line                                                    # one bad file only
    if field != "path":                                                         # --drop-bad leaves it out
        rc, _, err = prepare(capsys, raw, tmp_path / "ok", "--drop-bad")
        assert rc == 0, err
        assert video not in World(tmp_path / "ok").annotations["database"]


def test_unknown_class_in_the_split_file(raw, tmp_path, capsys):
    splits = json.loads((raw / "split.json").read_text())
    splits["test"].append("NoSuchClass")
    (raw / "split.json").write_text(json.dumps(splits))
    assert_error(prepare(capsys, raw, tmp_path / "out"), "prepare", str(raw / "split.json"), "field 'test'",
                 "'NoSuchClass'", "does not occur in the annotations")
    assert not (tmp_path / "out").exists()                                       # nothing written


def test_strided_length_against_duration(raw, tmp_path, capsys):
    """32 rows for videos of 30-210 s are not stride-4 features at 30 fps: an error naming the
    video and the field T, unless the stride makes the lengths fit."""
    ann = json.loads((raw / "gt.json").read_text())
    video = first_video(raw)
    duration = ann["database"][video]["duration"]
    line = assert_error(prepare(capsys, raw, tmp_path / "a", "--fps", 30, "--feat-stride", 4, "--num-frames", 16),
                        "prepare", f"video '{video}'", "field 'T'", "has 32 rows", "--drop-bad")
    assert f"{duration:.2f} s" in line
    for v, entry in ann["database"].items():         # make every duration fit 32 rows of 1 s
        entry["duration"] = 32.0
        for a in entry["annotations"]:
            a["segment"] = [min(t, 32.0) for t in a["segment"]]
    (raw / "gt.json").write_text(json.dumps(ann))
    rc, _, err = prepare(capsys, raw, tmp_path / "b", "--fps", 30, "--feat-stride", 30, "--num-frames", 30)
    assert rc == 0, err
    assert World(tmp_path / "b").meta.strided


def test_tsp_csv_rows_dropped_and_counted(raw, tmp_path, capsys):
    """A TSP CSV (subset given as SUBSET=FILE): an inverted row and one past the video's end are
    dropped, one sticking out is clipped, a background row is not an instance."""
    ann = json.loads((raw / "gt.json").read_text())
    lines = ["video-name,t-start,t-end,action-label,video-duration,filename,fps,video-frames,temporal-region-label"]
    for v, e in ann["database"].items():
        for a in e["annotations"]:
            lines.append(f"{v},{a['segment'][0]},{a['segment'][1]},{a['label']},{e['duration']},{v}.mp4,30.0,0,Action")
    v, e = next(iter(ann["database"].items()))
    label, d = e["annotations"][0]["label"], e["duration"]
    lines += [f"{v},5.0,5.0,{label},{d},{v}.mp4,30.0,0,Action", f"{v},{d + 1},{d + 2},{label},{d},{v}.mp4,30.0,0,Action",
              f"{v},{d - 1},{d + 2},{label},{d},{v}.mp4,30.0,0,Action", f"{v},0,1,{label},{d},{v}.mp4,30.0,0,No action"]
    (raw / "gt.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "prepare", "--features", raw / "feats", "--annotations", f"validation={raw / 'gt.csv'}",
                         "--dataset", "activitynet", "--split-file", raw / "split.json", "--out", out,
                         "--val-episodes", 5, "--test-episodes", 5)
    assert rc == 0, err
    dropped = json.loads((out / "prepare.json").read_text())["dropped"]
    assert [dropped[k] for k in ("annotation rows with start >= end (dropped)", "annotation rows outside the video "
            "(dropped)", "annotation rows sticking out, clipped to the video (kept)")] == [1, 1, 1]
    world = World(out)
    assert {e["subset"] for e in world.annotations["database"].values()} == {"validation"}
    assert world.annotations["database"][v]["annotations"][-1]["segment"] == [d - 1, d]
    assert sum(len(e["annotations"]) for e in world.annotations["database"].values()) == \
        sum(len(e["annotations"]) for e in ann["database"].values()) + 1


# ---------------------------------------------------------------------------------------------
# Real annotation files with synthetic features of the right lengths
# ---------------------------------------------------------------------------------------------

def real_csvs(shared_real, dataset):
    names = {"activitynet": ("activitynet_v1-3_train", "activitynet_v1-3_valid"),
             "thumos14": ("thumos14_valid", "thumos14_test")}[dataset]
    return [shared_real / f"{n}_tsp_groundtruth.csv" for n in names]


def videos_for_5shot(ann):
    """Per class, videos until the class makes a 5-shot episode whichever video is the query."""
    chosen = set()
    for clips in instances_by_class(ann).values():
        per = Counter()
        for v, _ in clips:
            if per and sum(per.values()) - max(per.values()) >= 5:
                break
            per[v] += 1
        chosen |= set(per)
    return sorted(chosen)


def run_real(capsys, tmp_path, shared_real, dataset, videos, rows, *extra):
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for v in videos:
        np.save(feats / f"{v}.npy", rng.standard_normal((rows(v), 4)).astype(np.float32))
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, "prepare", "--features", feats, "--annotations", *real_csvs(shared_real, dataset),
                              "--dataset", dataset, "--split-file", shared_real / "fewshot_splits.json",
                              "--out", out, "--val-episodes", 20, "--test-episodes", 50, *extra)
    assert rc == 0, err
    print(stdout)
    return out, json.loads((out / "prepare.json").read_text()), stdout


@pytest.mark.filterwarnings("ignore:.*shorter than one feature snippet")
def test_real_activitynet(shared_real, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ann = tsp_csv_to_activitynet(dict(zip(("training", "validation"), real_csvs(shared_real, "activitynet"))),
                                     drop_invalid=True)
    videos = videos_for_5shot(ann)                     # features for a subset only: --drop-missing
    out, summary, _ = run_real(capsys, tmp_path, shared_real, "activitynet", videos, lambda v: 16, "--drop-missing")
    world = World(out)
    assert [len(world.splits[s]) for s in ("base", "val", "test")] == [160, 20, 20]
    assert world.meta.resize_length == 16 and len(world.annotations["database"]) == len(videos)
    rows = summary["splits"]
    assert [rows[s]["classes"] for s in ("base", "val", "test", "all")] == [160, 20, 20, 200]
    assert all(rows[s][f"episodes_{k}shot"] == n for s, n in (("val", 20), ("test", 50)) for k in (1, 5))
    dropped = summary["dropped"]
    assert dropped["annotation rows with start >= end (dropped)"] == 9 + 3      # training + validation
    assert dropped["videos without a feature file (--drop-missing)"] == len(ann["database"]) - len(videos)
    assert not [n for n in summary["notes"] if "skip" in n]
    for s in ("val", "test"):
        assert {e["label"] for e in world.episodes(s, 5)} == set(world.splits[s])


@pytest.mark.filterwarnings("ignore:.*shorter than one feature snippet")
def test_real_thumos14(shared_real, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ann = tsp_csv_to_activitynet(dict(zip(("validation", "testing"), real_csvs(shared_real, "thumos14"))))
    duration = {v: e["duration"] for v, e in ann["database"].items()}
    rows = lambda v: max(1, int((duration[v] * 30 - 16) // 4) + 1)        # noqa: E731 - I3D, stride 4, window 16
    out, summary, stdout = run_real(capsys, tmp_path, shared_real, "thumos14", sorted(duration), rows)
    world = World(out)
    assert world.meta.strided and (world.meta.fps, world.meta.feat_stride, world.meta.num_frames) == (30.0, 4, 16)
    assert [len(world.splits[s]) for s in ("base", "val", "test")] == [6, 0, 14]
    assert summary["splits"]["all"]["videos"] == len(duration)
    assert summary["dropped"]["annotation rows outside the video (dropped)"] == 4 + 26  # valid + test
    assert not (out / "episodes_val_5shot.json").exists() and "--val-from-base" in stdout
    assert {e["label"] for e in world.episodes("test", 5)} == set(world.splits["test"])
    # the standard split has no val classes; --val-from-base makes some
    rc, _, err = run_cli(capsys, "prepare", "--features", tmp_path / "feats", "--annotations",
                         *real_csvs(shared_real, "thumos14"), "--dataset", "thumos14", "--split-file",
                         shared_real / "fewshot_splits.json", "--out", out, "--overwrite", "--val-from-base", "2",
                         "--val-episodes", 10, "--test-episodes", 10)
    assert rc == 0, err
    world = World(out)
    assert [len(world.splits[s]) for s in ("base", "val", "test")] == [4, 2, 14]
    assert len(world.episodes("val", 5)) == 10


def test_the_shipped_split_file_parses_with_the_standard_class_counts():
    """data_samples/fewshot_splits.json, the file the README's prepare commands name."""
    from conftest import DATA
    from fscal_edu.data.prepare import read_split_file

    counts = {"activitynet": [160, 20, 20], "thumos14": [6, 0, 14]}
    for dataset, expected in counts.items():
        splits = read_split_file(DATA / "fewshot_splits.json", dataset, classes=None)   # disjoint, checked
        assert [len(splits[s]) for s in ("base", "val", "test")] == expected, dataset
    anet = read_split_file(DATA / "fewshot_splits.json", "activitynet", classes=None)
    assert {"Hurling", "Pole vault", "Snatch"} <= set(anet["test"]) and "Archery" in anet["base"]


# --- the output folder: nothing a user owns is lost ----------------------------------------------

def tree_hashes(root):
    """{relative path: sha256} of every file under ``root`` (links followed; the feature cache aside)."""
    import hashlib
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".fscal_cache" not in p.parts}


def test_overwrite_moves_a_copied_dataset_aside_and_keeps_its_only_copies(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare(capsys, raw, out, "--copy")[0] == 0
    video = first_video(raw)
    (raw / "feats" / f"{video}.npy").unlink()               # the dataset now holds the only copy
    old = tree_hashes(out)
    with pytest.warns(UserWarning, match="moved what was there aside"):
        rc, _, err = prepare(capsys, raw, out, "--drop-missing", "--overwrite")
    assert rc == 0, err
    assert tree_hashes(tmp_path / "out.replaced-1") == old
    assert (tmp_path / "out.replaced-1" / "features" / f"{video}.npy").is_file()
    assert not (out / "features" / f"{video}.npy").exists()


def test_an_input_inside_the_output_is_refused(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare(capsys, raw, out)[0] == 0
    (raw / "gt.json").rename(out / "annotations_in.json")
    before_out, before_raw = tree_hashes(out), tree_hashes(raw)
    assert_error(run_cli(capsys, "prepare", "--features", raw / "feats", "--annotations", out / "annotations_in.json",
                         "--dataset", "activitynet", "--split-file", raw / "split.json", "--out", out, "--overwrite"),
                 "prepare", "holds the input", "annotations_in.json")
    assert tree_hashes(out) == before_out and tree_hashes(raw) == before_raw
    assert not (tmp_path / "out.replaced-1").exists()


@pytest.mark.parametrize("target, words", [("feats", "is the input"), ("feats/ds", "inside the input folder"),
                                           ("", "holds the input"), ("done/sub", "inside the dataset directory"),
                                           ("done/features", "inside the dataset directory")])
def test_out_onto_an_input_or_inside_a_dataset_is_refused(raw, tmp_path, capsys, target, words):
    assert prepare(capsys, raw, raw / "done")[0] == 0
    before = tree_hashes(raw)
    for extra in ([], ["--overwrite"]):
        assert_error(prepare(capsys, raw, raw / target if target else raw, *extra), "prepare", "field '--out'", words)
    assert tree_hashes(raw) == before and not list(raw.parent.rglob("*.replaced-*"))
