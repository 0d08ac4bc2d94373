"""ActivityNet JSON annotations, the TSP CSV converter and class splits."""
import copy
import json
import warnings

import pytest

from fscal_edu.data.annotations import (instances_by_class, labels, load_annotations, load_splits,
                                        save_annotations, save_splits, tsp_csv_to_activitynet,
                                        validate_annotations)
from fscal_edu.utils import FscalError


def tiny_ann():
    return {"version": "test", "taxonomy": [], "database": {
        "vid_b": {"subset": "validation", "duration": 60.0, "fps": 30.0, "annotations": [
            {"label": "Jump", "segment": [5.0, 12.5]},
            {"label": "Run", "segment": [20.0, 31.0]}]},
        "vid_a": {"subset": "training", "duration": 40, "annotations": [
            {"label": "Jump", "segment": [0.0, 40.0]}]},
    }}


def write(tmp_path, obj, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_round_trip_is_exact(tmp_path):
    ann = tiny_ann()
    path = save_annotations(ann, tmp_path / "a.json")
    loaded = load_annotations(path)
    assert loaded == ann
    assert list(loaded["database"]) == ["vid_a", "vid_b"]          # stable order: sorted ids
    assert list(loaded) == ["version", "taxonomy", "database"]
    text = path.read_text()
    save_annotations(loaded, path)
    assert path.read_text() == text                                 # byte-identical second time


def test_validate_does_not_modify_input_and_clips_with_warning():
    ann = tiny_ann()
    ann["database"]["vid_b"]["annotations"][1]["segment"] = [50.0, 60.02]
    before = copy.deepcopy(ann)
    with pytest.warns(UserWarning, match=r"ann\.json.*vid_b"):
        out = validate_annotations(ann, file="ann.json")
    assert out["database"]["vid_b"]["annotations"][1]["segment"] == [50.0, 60.0]
    assert ann == before
    with pytest.raises(FscalError, match=r"ann\.json.*vid_b.*annotations\[1\]\.segment.*sticks out"):
        validate_annotations(ann, file="ann.json", clip=False)


def test_no_warning_for_clean_annotations():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_annotations(tiny_ann(), file="ann.json")


def mutate(path_to, value):
    """A copy of tiny_ann with the item at ``path_to`` set to ``value`` (or deleted if None)."""
    ann = tiny_ann()
    target = ann
    for key in path_to[:-1]:
        target = target[key]
    if value is None:
        del target[path_to[-1]]
    else:
        target[path_to[-1]] = value
    return ann


BAD = [
    (("database",), None, r"field 'database'.*missing"),
    (("database", "vid_b", "duration"), None, r"vid_b.*field 'duration'.*missing"),
    (("database", "vid_b", "duration"), 0.0, r"vid_b.*field 'duration'.*zero-length video"),
    (("database", "vid_b", "duration"), -3.0, r"vid_b.*field 'duration'.*positive"),
    (("database", "vid_b", "duration"), "60", r"vid_b.*field 'duration'.*number"),
    (("database", "vid_b", "duration"), float("nan"), r"vid_b.*field 'duration'.*finite"),
    (("database", "vid_b", "fps"), float("inf"), r"vid_b.*field 'fps'.*finite"),
    (("database", "vid_b", "annotations"), None, r"vid_b.*field 'annotations'.*missing"),
    (("database", "vid_b", "annotations", 0, "label"), None, r"vid_b.*field 'annotations\[0\]\.label'.*missing"),
    (("database", "vid_b", "annotations", 0, "label"), 3, r"vid_b.*field 'annotations\[0\]\.label'.*str"),
    (("database", "vid_b", "annotations", 0, "segment"), None, r"vid_b.*field 'annotations\[0\]\.segment'.*missing"),
    (("database", "vid_b", "annotations", 0, "segment"), [1.0], r"vid_b.*annotations\[0\]\.segment.*\[start, end\]"),
    (("database", "vid_b", "annotations", 1, "segment"), [20.0, float("inf")], r"vid_b.*annotations\[1\]\.segment.*finite"),
    (("database", "vid_b", "annotations", 1, "segment"), [31.0, 20.0], r"vid_b.*annotations\[1\]\.segment.*not before"),
    (("database", "vid_b", "annotations", 1, "segment"), [20.0, 20.0], r"vid_b.*annotations\[1\]\.segment.*not before"),
    (("database", "vid_b", "annotations", 1, "segment"), [60.0, 70.0], r"vid_b.*annotations\[1\]\.segment.*outside"),
    (("database", "vid_b", "annotations", 1, "segment"), [-9.0, -1.0], r"vid_b.*annotations\[1\]\.segment.*outside"),
]


@pytest.mark.parametrize("path_to, value, message", BAD)
def test_bad_annotations_name_file_video_field(tmp_path, path_to, value, message):
    path = tmp_path / "bad.json"
    # NaN/inf are not JSON: validate the dict directly for those, load the file otherwise
    ann = mutate(path_to, value)
    with pytest.raises(FscalError, match=r"bad\.json.*" + message):
        validate_annotations(ann, file=path)
    if "finite" not in message:
        path.write_text(json.dumps(ann))
        with pytest.raises(FscalError, match=r"bad\.json.*" + message):
            load_annotations(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FscalError, match=r"nope\.json', field 'path'.*missing"):
        load_annotations(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"database": {')
    with pytest.raises(FscalError, match=r"broken\.json', field 'path'.*not readable JSON"):
        load_annotations(tmp_path / "broken.json")
    with pytest.raises(FscalError, match=r"nope\.json', field 'path'.*missing"):
        load_splits(tmp_path / "nope.json")


def test_negative_start_is_clipped_to_zero():
    ann = mutate(("database", "vid_b", "annotations", 0, "segment"), [-0.5, 3.0])
    with pytest.warns(UserWarning, match="vid_b"):
        out = validate_annotations(ann)
    assert out["database"]["vid_b"]["annotations"][0]["segment"] == [0.0, 3.0]


def test_labels_and_instances_by_class():
    ann = tiny_ann()
    assert labels(ann) == ["Jump", "Run"]
    by = instances_by_class(ann)
    assert by == {"Jump": [("vid_a", (0.0, 40.0)), ("vid_b", (5.0, 12.5))],
                  "Run": [("vid_b", (20.0, 31.0))]}
    assert instances_by_class(ann, subset="training") == {"Jump": [("vid_a", (0.0, 40.0))]}


TSP_HEADER = ("video-name,t-start,t-end,action-label,video-duration,filename,fps,video-frames,"
              "temporal-region-label\n")


def test_tsp_converter_on_a_tiny_csv(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text(TSP_HEADER +
                     "vB,10.0,20.0,Run,50.0,v_vB.mp4,30.0,1500,Action\n"
                     "vB,0.0,10.0,None,50.0,v_vB.mp4,30.0,1500,No action\n"
                     "vB,2.5,8.0,Jump,50.0,v_vB.mp4,30.0,1500,Action\n"
                     "vA,1.0,3.0,Jump,4.0,v_vA.mp4,25.0,100,Action\n"
                     "vC,0.0,4.0,None,4.0,v_vC.mp4,25.0,100,No action\n")
    valid = tmp_path / "valid.csv"
    valid.write_text(TSP_HEADER + "vD,0.5,1.5,Run,2.0,v_vD.mp4,30.0,60,Action\n")
    ann = tsp_csv_to_activitynet({"training": train, "validation": valid})
    assert list(ann["database"]) == ["vA", "vB", "vD"]              # vC has no Action row
    assert ann["database"]["vB"] == {"subset": "training", "duration": 50.0, "fps": 30.0,
                                     "annotations": [{"label": "Jump", "segment": [2.5, 8.0]},
                                                     {"label": "Run", "segment": [10.0, 20.0]}]}
    assert ann["database"]["vD"]["subset"] == "validation"
    assert validate_annotations(ann) == ann
    assert tsp_csv_to_activitynet({"training": train, "validation": valid}) == ann   # deterministic
    path = save_annotations(ann, tmp_path / "out.json")
    assert load_annotations(path) == ann


def test_tsp_converter_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("video-name,t-start,t-end\nvA,1,2\n")
    with pytest.raises(FscalError, match=r"bad\.csv.*field 'action-label'.*column is missing"):
        tsp_csv_to_activitynet({"x": bad})
    bad.write_text(TSP_HEADER + "vA,1.0,abc,Jump,4.0,v_vA.mp4,25.0,100,Action\n")
    with pytest.raises(FscalError, match=r"bad\.csv.*video 'vA'.*field 't-end'.*line 2"):
        tsp_csv_to_activitynet({"x": bad})
    bad.write_text(TSP_HEADER + "vA,1.0,2.0,Jump,4.0,v_vA.mp4,25.0,100,Action\n"
                                "vA,2.0,3.0,Jump,5.0,v_vA.mp4,25.0,100,Action\n")
    with pytest.raises(FscalError, match=r"bad\.csv.*video 'vA'.*line 3.*differs"):
        tsp_csv_to_activitynet({"x": bad})
    with pytest.raises(FscalError, match=r"gone\.csv', field 'path'.*missing"):
        tsp_csv_to_activitynet({"x": tmp_path / "gone.csv"})


def test_tsp_converter_drop_invalid(tmp_path):
    rows = ("vA,1.0,1.0,Jump,4.0,v_vA.mp4,25.0,100,Action\n"       # zero-length
            "vA,1.0,3.0,Jump,4.0,v_vA.mp4,25.0,100,Action\n"
            "vA,4.0,5.0,Run,4.0,v_vA.mp4,25.0,100,Action\n"        # starts at the end
            "vB,2.0,1.0,Run,9.0,v_vB.mp4,25.0,100,Action\n"        # reversed: vB has nothing left
            "vC,3.0,9.5,Run,9.0,v_vC.mp4,25.0,100,Action\n")       # sticks out: kept (the validator clips)
    path = tmp_path / "t.csv"
    path.write_text(TSP_HEADER + rows)
    faithful = tsp_csv_to_activitynet({"test": path})
    assert sum(len(e["annotations"]) for e in faithful["database"].values()) == 5
    with pytest.raises(FscalError, match=r"video 'vA'.*not before"):
        validate_annotations(faithful)
    message = r"t\.csv.*dropped 3 segment\(s\).*2 video\(s\): vA, vB.*left out 1 video"
    with pytest.warns(UserWarning, match=message):
        ann = tsp_csv_to_activitynet({"test": path}, drop_invalid=True)
    assert ann["database"]["vA"]["annotations"] == [{"label": "Jump", "segment": [1.0, 3.0]}]
    assert list(ann["database"]) == ["vA", "vC"]
    with pytest.warns(UserWarning, match=r"clipped 1 segment"):
        assert validate_annotations(ann)["database"]["vC"]["annotations"][0]["segment"] == [3.0, 9.0]
    clean = tmp_path / "clean.csv"
    clean.write_text(TSP_HEADER + rows.splitlines(keepends=True)[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # nothing dropped, no warning
        kept = tsp_csv_to_activitynet({"test": clean}, drop_invalid=True)
    assert kept == tsp_csv_to_activitynet({"test": clean})


def test_splits_round_trip_and_errors(tmp_path):
    splits = {"base": ["A", "B"], "val": ["C"], "test": ["D"]}
    path = save_splits(splits, tmp_path / "splits.json")
    assert load_splits(path, classes=["A", "B", "C", "D"]) == splits
    cases = [({"base": ["A"], "val": []}, r"field 'test'.*missing"),
             ({"base": ["A", "B"], "val": [], "test": ["B"]}, r"field 'test'.*'B'.*already in split 'base'"),
             ({"base": ["A"], "val": ["A"], "test": []}, r"field 'val'.*'A'.*already in split 'base'"),
             ({"base": ["A"], "val": [], "test": ["Z"]}, r"field 'test'.*'Z'.*does not occur"),
             ({"base": "A", "val": [], "test": []}, r"field 'base'.*must be a list")]
    for raw, message in cases:
        bad = write(tmp_path, raw, "splits_bad.json")
        with pytest.raises(FscalError, match=r"splits_bad\.json.*" + message):
            load_splits(bad, classes=["A", "B", "C", "D"])


# --- the real annotation files of ../shared/real (skipped in a user's clone) -------------------

def test_real_activitynet_valid_counts(shared_real):
    csv = {"validation": shared_real / "activitynet_v1-3_valid_tsp_groundtruth.csv"}
    ann = tsp_csv_to_activitynet(csv)
    assert len(ann["database"]) == 4926
    assert sum(len(e["annotations"]) for e in ann["database"].values()) == 7654
    assert len(labels(ann)) == 200
    # real rows the validator must catch: three zero-length segments, e.g. this one
    with pytest.raises(FscalError, match=r"video '6kgJx6ahgq0'.*segment.*not before"):
        validate_annotations(ann)
    # drop_invalid drops exactly those three (two videos had nothing else); the rest validates
    with pytest.warns(UserWarning, match=r"valid_tsp_groundtruth\.csv.*dropped 3 segment\(s\).*6kgJx6ahgq0"):
        dropped = tsp_csv_to_activitynet(csv, drop_invalid=True)
    assert len(dropped["database"]) == 4924
    assert sum(len(e["annotations"]) for e in dropped["database"].values()) == 7651
    with pytest.warns(UserWarning, match=r"clipped 567 segment\(s\)"):       # ends a little past the duration
        assert len(validate_annotations(dropped)["database"]) == 4924
    splits = load_splits(shared_real / "fewshot_splits.json", dataset="activitynet-1.3",
                         classes=labels(ann))
    assert [len(splits[k]) for k in ("base", "val", "test")] == [160, 20, 20]
    assert set().union(*splits.values()) == set(labels(ann))


def test_real_thumos_test_counts(shared_real):
    ann = tsp_csv_to_activitynet({"test": shared_real / "thumos14_test_tsp_groundtruth.csv"})
    assert len(ann["database"]) == 212
    assert sum(len(e["annotations"]) for e in ann["database"].values()) == 3358
    assert len(labels(ann)) == 20
    # 26 segments start at or after the duration the CSV reports (in three videos)
    with pytest.raises(FscalError, match=r"video 'video_test_0000270'.*segment.*outside the video"):
        validate_annotations(ann)
    with pytest.warns(UserWarning, match=r"dropped 26 segment\(s\).*in 3 video\(s\)"):
        dropped = tsp_csv_to_activitynet({"test": shared_real / "thumos14_test_tsp_groundtruth.csv"},
                                         drop_invalid=True)
    assert sum(len(e["annotations"]) for e in dropped["database"].values()) == 3332
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_annotations(dropped) == dropped
    splits = load_splits(shared_real / "fewshot_splits.json", dataset="thumos14", classes=labels(ann))
    assert [len(splits[k]) for k in ("base", "val", "test")] == [6, 0, 14]
