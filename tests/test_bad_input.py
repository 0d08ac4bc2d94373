"""Bad input: one line naming the file, the video or the option and the field, exit code 2, no
traceback, nothing lost; or handled (warned, refused) as each test says."""
import json
import math
import re

import numpy as np
import pytest
import torch

from fscal_edu.config import get_config
from fscal_edu.data.annotations import load_annotations
from fscal_edu.data.episodes import RandomEpisodes, World, collate, episode_tensors, sample_episodes
from fscal_edu.data.features import FeatureMeta, resample
from fscal_edu.evaluation import evaluate_detection
from fscal_edu.train import train
from fscal_edu.utils import FscalError, get_device

from worlds import SHIPPED, assert_error, base_video, copy_world, edit_json, run_cli, write_features


@pytest.fixture
def world_dir(tmp_path):
    return copy_world(tmp_path / "w")


def first_episode(path):
    return json.loads(path.read_text())["episodes"][0]


# --- item 5: more supports than K -----------------------------------------------------------------

def test_episode_with_more_supports_than_k(world_dir, capsys):
    path = world_dir / "episodes_test_5shot.json"
    ep = first_episode(path)
    edit_json(path, lambda d: d["episodes"][0]["support"].append(d["episodes"][1]["support"][0]))
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(path), f"video '{ep['query']}'", "field 'support'", "6", "K = 5")


def test_collate_refuses_episodes_of_different_shapes():
    world = World(SHIPPED)
    eps = world.episodes("test", 5)[:2]
    a = episode_tensors(world, eps[0], 32, 8)
    b = episode_tensors(world, {**eps[1], "support": eps[1]["support"] + eps[0]["support"][:1]}, 32, 8)
    with pytest.raises(FscalError, match=f"video '{eps[1]['query']}', field 'support'.*6.*5"):
        collate([a, b])


# --- item 6: episodes checked against their split -------------------------------------------------

def test_stale_episode_file_whose_classes_are_now_base(world_dir, capsys):
    ep = first_episode(world_dir / "episodes_test_5shot.json")

    def move(splits):
        splits["test"].remove(ep["label"])
        splits["base"].append(ep["label"])
    edit_json(world_dir / "splits.json", move)
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 "episodes_test_5shot.json", f"video '{ep['query']}'", "field 'label'", "'test'", "base")


# --- item 7: training data checked before the first step -----------------------------------------

def test_nan_in_one_base_video_stops_before_anything_is_written(world_dir, tmp_path):
    video = base_video(world_dir)
    x = np.load(SHIPPED / "features" / f"{video}.npy")
    x[5, 3] = np.nan
    write_features(world_dir, video, x)
    out = tmp_path / "run"
    with pytest.raises(FscalError, match=f"{video}.npy.*video '{video}', field 'feats'.*NaN"):
        train(get_config("tiny", steps=300), world_dir, out, device="cpu", progress=False)
    assert not out.exists()


def test_base_class_in_one_video_only(world_dir, tmp_path, capsys):
    ann = json.loads((world_dir / "annotations.json").read_text())
    label = json.loads((world_dir / "splits.json").read_text())["base"][0]
    keep = next(v for v, e in sorted(ann["database"].items()) if any(a["label"] == label for a in e["annotations"]))
    for v, e in ann["database"].items():
        if v != keep:
            e["annotations"] = [a for a in e["annotations"] if a["label"] != label]
    (world_dir / "annotations.json").write_text(json.dumps(ann))
    out = tmp_path / "run"
    assert_error(run_cli(capsys, "train", "--data", world_dir, "--preset", "tiny", "--out", out), "train",
                 "annotations.json", f"video '{keep}'", "field 'label'", repr(label), "K = 5")
    assert not out.exists()


# --- item 8: devices ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_bad_or_absent_device(tmp_path, capsys, command, device):
    args = (["--preset", "tiny", "--out", tmp_path / "r"] if command == "train" else ["--baseline", "prototype"])
    assert_error(run_cli(capsys, command, "--data", SHIPPED, *args, "--device", device), command,
                 "--device", device)
    assert not (tmp_path / "r").exists()


def test_get_device_names_the_field():
    with pytest.raises(FscalError, match="field 'device'.*'gpu'"):
        get_device("gpu")
    assert get_device("cpu") == torch.device("cpu")


# --- item 9: evaluate --out ----------------------------------------------------------------------

def test_evaluate_out_into_a_missing_folder_fails_before_evaluating(tmp_path, capsys, monkeypatch):
    import fscal_edu.baselines as baselines
    monkeypatch.setattr(baselines, "evaluate_prototype", lambda *a, **k: pytest.fail("evaluated first"))
    out = tmp_path / "no_such_dir" / "pred.json"
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--baseline", "prototype", "--out", out),
                 "evaluate", str(out), "field '--out'", "folder")


def test_evaluate_out_never_overwrites_the_dataset(world_dir, capsys):
    before = (world_dir / "annotations.json").read_bytes()
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype", "--out",
                         world_dir / "annotations.json"), "evaluate", "annotations.json", "field '--out'", "dataset")
    assert (world_dir / "annotations.json").read_bytes() == before


# --- item 10: features.json with quoted numbers -------------------------------------------------

@pytest.mark.parametrize("raw, field", [
    ({"feature_dim": 64, "fps": "30", "feat_stride": 4, "num_frames": 16}, "fps"),
    ({"feature_dim": "64", "resize_length": 128}, "feature_dim"),
    ({"feature_dim": 64, "resize_length": "128"}, "resize_length"),
    ({"feature_dim": 64, "fps": 30, "feat_stride": True, "num_frames": 16}, "feat_stride"),
])
def test_features_json_with_quoted_numbers(world_dir, capsys, raw, field):
    (world_dir / "features.json").write_text(json.dumps(raw))
    with pytest.raises(FscalError, match=f"features.json.*field '{field}'"):
        FeatureMeta.load(world_dir)
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 "features.json", f"field '{field}'")


# --- item 12: cryptic messages ------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--shots", 0), ("--shots", -2), ("--seed", -1), ("--threads", 0)])
def test_train_options_are_checked_by_argparse(tmp_path, capsys, option, value):
    assert_error(run_cli(capsys, "train", "--data", SHIPPED, "--preset", "tiny", "--out", tmp_path / "r",
                         option, value), "train", f"argument {option}", str(value))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option, value", [("--shots", 0), ("--shots", -2)])
def test_evaluate_shots_checked_by_argparse(capsys, option, value):
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--baseline", "prototype", option, value),
                 "evaluate", f"argument {option}")


LATIN1 = '{"note": "caf\xe9"}'.encode("latin-1")


def test_non_utf8_episode_file_and_features_json(world_dir, capsys):
    (world_dir / "episodes_test_5shot.json").write_bytes(LATIN1)
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 "episodes_test_5shot.json", "utf-8")
    (world_dir / "features.json").write_bytes(LATIN1)
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 "features.json", "utf-8")


def test_non_utf8_score_input(tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_bytes(LATIN1)
    assert_error(run_cli(capsys, "score", SHIPPED / "annotations.json", pred), "score", str(pred), "utf-8")


def test_oserror_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_error(run_cli(capsys, "train", "--data", SHIPPED, "--preset", "tiny", "--out", blocker / "run"),
                 "train", str(blocker))


# --- item 13: no longer accepted silently --------------------------------------------------------

def test_support_past_the_video_end_or_shorter_than_a_snippet_warns(world_dir):
    path = world_dir / "episodes_test_5shot.json"
    ann = load_annotations(world_dir / "annotations.json")
    ep = first_episode(path)
    v0, v1 = ep["support"][0]["video"], ep["support"][1]["video"]
    d0 = ann["database"][v0]["duration"]

    def change(d):
        d["episodes"][0]["support"][0]["segment"] = [d0 - 1.0, d0 + 5.0]      # ends past the video
        d["episodes"][0]["support"][1]["segment"] = [1.0, 1.01]               # far below one snippet
    edit_json(path, change)
    world = World(world_dir)
    with pytest.warns(UserWarning) as caught:
        eps = world.episodes("test", 5)
    text = " ".join(str(w.message) for w in caught)
    assert "episodes_test_5shot.json" in text and v0 in text and v1 in text
    assert "snippet" in text and "clipped" in text
    assert eps[0]["support"][0]["segment"] == [d0 - 1.0, d0]


@pytest.mark.parametrize("score", [True, "0.9", None])
def test_prediction_scores_must_be_numbers(score):
    gt = {"database": {"v": {"duration": 10.0, "annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    pred = {"results": {"v": [{"label": "a", "score": score, "segment": [1.0, 2.0]}]}}
    with pytest.raises(FscalError, match="video 'v', field 'score'"):
        evaluate_detection(gt, pred)


@pytest.mark.parametrize("thresholds", [[], [1.5], [float("nan")], [0.5, -0.1]])
def test_tiou_thresholds_are_checked(thresholds):
    gt = {"database": {"v": {"duration": 10.0, "annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    pred = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [1.0, 2.0]}]}}
    with pytest.raises(FscalError, match="field 'tiou_thresholds'"):
        evaluate_detection(gt, pred, thresholds)


def test_stop_at_zero_is_refused(tmp_path):
    with pytest.raises(FscalError, match="stop_at"):
        train(get_config("tiny"), SHIPPED, tmp_path / "r", device="cpu", progress=False, stop_at=0)
    assert not (tmp_path / "r").exists()


def test_zero_shots_and_zero_snippets_are_refused():
    world = World(SHIPPED)
    for bad in (dict(shots=0), dict(T=0), dict(T_S=0), dict(shots=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_config("tiny", **bad)
    with pytest.raises(FscalError, match="shots"):
        sample_episodes(world.annotations, world.splits["test"], 0, 3)
    with pytest.raises(FscalError, match="shots"):
        RandomEpisodes(world, "base", 0, 4, 32, 8)
    with pytest.raises(FscalError, match="length"):
        resample(np.ones((10, 4), np.float32), 0)
    assert math.isfinite(float(resample(np.ones((10, 4), np.float32), 1)[0, 0]))


# --- the config: every field's type and range checked when it is built ---------------------------

@pytest.mark.parametrize("change,field", [
    (dict(lr=-1), "optim.lr"), (dict(lr=0.0), "optim.lr"), (dict(d=0), "model.d"), (dict(d=-3), "model.d"),
    (dict(d="64"), "model.d"), (dict(d=64.0), "model.d"), (dict(T=True), "data.T"),
    (dict(dropout=1.0), "model.dropout"), (dict(window_neg_frac=2.0), "data.window_neg_frac"),
    (dict(neg_iou=0.6), "loss.neg_iou"), (dict(granularities=(3,)), "model.granularities"),
    (dict(anchor_lengths=()), "model.anchor_lengths"), (dict(mass_norm="yes"), "switches.mass_norm"),
    (dict(softmax_axis="diagonal"), "switches.softmax_axis"), (dict(top_k=0), "post.top_k"),
    (dict(off=("fifth",)), "switches.off"), (dict(qtos="no"), "switches.qtos"),
    (dict(T=10**7), "data.T"),               # refused from an estimate, before anything is allocated
])
def test_config_fields_are_checked_when_built(change, field):
    from fscal_edu.config import get_config
    with pytest.raises(FscalError, match=f"field '{re.escape(field)}'"):
        get_config("tiny", **change)


def test_config_from_a_file_is_checked_before_use():
    from fscal_edu.config import Config, get_config
    with pytest.raises(FscalError, match="field 'model.d'.*'x'"):
        Config.from_dict({"model": {"d": "x"}})
    with pytest.raises(FscalError, match="field 'model'.*object"):
        Config.from_dict({"model": [1, 2]})
    with pytest.raises(FscalError, match="unknown"):
        Config.from_dict({"model": {"width": 3}})
    cfg = get_config("tiny", ablate=["no_qtos", "no_stoq"])
    assert Config.from_dict(cfg.to_dict()) == cfg and cfg.switches.off == ("qtos", "stoq")


# --- JSON files: a repeated key or an absurd integer is refused, never silently read -------------

def test_json_with_a_repeated_key_or_a_huge_integer_is_refused(tmp_path):
    from fscal_edu.utils import read_json
    (tmp_path / "dup.json").write_text('{"database": {"v1": {"duration": 10}, "v1": {"duration": 20}}}')
    with pytest.raises(FscalError, match=r"dup.json', field 'v1': the key 'v1' appears twice"):
        read_json(tmp_path / "dup.json", "the annotations file")
    (tmp_path / "big.json").write_text('{"feature_dim": ' + "9" * 400 + "}")
    with pytest.raises(FscalError, match=r"big.json', field 'number': an integer of 400 digits"):
        read_json(tmp_path / "big.json", "features.json")
    (tmp_path / "ok.json").write_text('{"a": -123456789012345678, "b": [1, 2.5]}')
    assert read_json(tmp_path / "ok.json") == {"a": -123456789012345678, "b": [1, 2.5]}


@pytest.mark.parametrize("video", ["a/b", "../up", ".hidden", "a\\b", "", "x" * 201])
def test_a_video_id_that_could_leave_the_features_folder_is_refused(video):
    from fscal_edu.data.annotations import validate_annotations
    with pytest.raises(FscalError, match=r"field 'database': a video id may hold letters, digits"):
        validate_annotations({"database": {video: {"duration": 10.0, "annotations": []}}}, file="ann.json")
    assert validate_annotations({"database": {"v_---9CpRcKoU": {"duration": 10.0, "annotations": []}}})


# --- values out of range, names where lists belong, stored data: refused naming file, video, field --

@pytest.mark.parametrize("change, field, shown", [
    (lambda d: d["info"]["config"].__setitem__("outlier_prob", 2.0), "info.config.outlier_prob", "2.0"),
    (lambda d: d["info"]["config"].__setitem__("noise_norm", "a"), "info.config.noise_norm", "'a'"),
    (lambda d: d["info"]["config"].__setitem__("targets", [3, 1]), "info.config.targets", "[3, 1]"),
    (lambda d: d["info"]["config"].__setitem__("twin_mode", "rotate"), "info.config.twin_mode", "rotate"),
    (lambda d: d.__setitem__("info", "a string"), "info", "a string"),
    (lambda d: d["info"].__setitem__("config", [1]), "info.config", "[1]"),
])
def test_world_json_out_of_range_fails_before_a_run_is_started(world_dir, tmp_path, capsys, change, field, shown):
    edit_json(world_dir / "world.json", change)
    before = (world_dir / "world.json").read_bytes()
    assert_error(run_cli(capsys, "train", "--data", world_dir, "--preset", "tiny", "--out", tmp_path / "run"),
                 "train", str(world_dir / "world.json"), f"field '{field}'", shown)
    assert not (tmp_path / "run").exists()
    assert (world_dir / "world.json").read_bytes() == before
    with pytest.raises(FscalError, match=f"field '{re.escape(field)}'"):
        World(world_dir)


def test_world_json_that_is_a_list_is_refused(world_dir, capsys):
    (world_dir / "world.json").write_text("[1, 2, 3]\n")
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(world_dir / "world.json"), "field 'world.json'", "must be an object")


@pytest.mark.parametrize("change, field", [
    (dict(outlier_prob=2.0), "outlier_prob"), (dict(outlier_prob="0.1"), "outlier_prob"),
    (dict(noise_norm=float("nan")), "noise_norm"), (dict(twin_prob=-0.1), "twin_prob"),
    (dict(targets=(2, 1)), "targets"), (dict(length_frac=(0.0, 0.5)), "length_frac"),
    (dict(duration=[30.0]), "duration"), (dict(fps=0), "fps"), (dict(T=True), "T"),
    (dict(support_slack=(0.5, 0.2)), "support_slack"), (dict(n_val_pairs=1), "n_val_pairs"),
])
def test_world_config_knobs_are_checked_when_built(change, field):
    from fscal_edu.data.synthetic import WorldConfig
    with pytest.raises(FscalError, match=f"^field '{field}'"):
        WorldConfig(**change)


def test_world_config_knob_set_after_it_was_built_is_checked_before_use():
    from fscal_edu.data.synthetic import WorldConfig, resolve_config
    cfg = WorldConfig()
    cfg.outlier_prob = 2.0
    with pytest.raises(FscalError, match="^field 'outlier_prob'"):
        resolve_config(cfg)


@pytest.mark.parametrize("values, dtype", [
    (np.ones((16, 64)) + 1j, "complex128"), (np.ones((16, 64), bool), "bool"),
])
def test_features_that_are_not_real_numbers_are_refused(world_dir, capsys, values, dtype):
    vid = base_video(world_dir)
    path = write_features(world_dir, vid, values)
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(path), f"video '{vid}'", "field 'dtype'", dtype)


def test_complex_features_in_a_torch_file_are_refused(tmp_path):
    from fscal_edu.data.features import read_features
    torch.save(torch.ones(8, 4, dtype=torch.complex64), tmp_path / "v.pt")
    with pytest.raises(FscalError, match=r"v.pt', video 'v', field 'dtype'.*complex64"):
        read_features(tmp_path / "v.pt")


def test_a_cut_with_start_after_end_is_refused():
    from fscal_edu.data.features import crop
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    with pytest.raises(FscalError, match="field 'segment'.*start < end"):
        crop(x, 6.0, 2.0, 4)
    world = World(SHIPPED)
    vid = next(iter(world.annotations["database"]))
    for segment in ((20.0, 5.0), (5.0, 5.0), (float("nan"), 3.0), ("1", 3.0), (1.0,)):
        with pytest.raises(FscalError, match=f"video '{vid}', field 'segment'"):
            world.clip(vid, segment, 8)
    assert world.clip(vid, (5.0, 20.0), 8).shape == (8, 64)


@pytest.mark.parametrize("duration", [0, 0.0, -5.0, float("inf"), float("nan"), "10"])
def test_seconds_and_snippets_need_a_positive_duration(duration):
    from fscal_edu.data.features import index_to_seconds, seconds_to_index
    for convert in (seconds_to_index, index_to_seconds):
        with pytest.raises(FscalError, match="field 'duration'"):
            convert(1.0, duration=duration, num_snippets=10)
    with pytest.raises(FscalError, match="field 'num_snippets'"):
        seconds_to_index(1.0, duration=10.0, num_snippets=0)


@pytest.fixture(scope="module")
def tiny_model():
    from fscal_edu.model import FSCAL
    return FSCAL(get_config("tiny")).eval()


@pytest.mark.parametrize("limit", [-1, 0, 2.5, True])
def test_evaluate_model_limit_must_be_a_positive_count(tiny_model, limit):
    from fscal_edu.inference import evaluate_model
    with pytest.raises(FscalError, match="field 'limit'"):
        evaluate_model(tiny_model, World(SHIPPED), "test", 5, limit=limit)


@pytest.mark.parametrize("change, field", [
    (dict(query="no_such_video"), "query"), (dict(query=["a"]), "query"),
    (dict(id=["x"]), "id"), (dict(label=["x"]), "label"), (dict(id=3), "id"),
])
def test_predict_checks_the_episodes_it_is_given(tiny_model, change, field):
    from fscal_edu.inference import predict
    world = World(SHIPPED)
    ep = world.episodes("test", 5)[0]
    with pytest.raises(FscalError, match=f"field '{field}'"):
        predict(tiny_model, world, [{**ep, **change}])
    with pytest.raises(FscalError, match=f"field 'id'.*{ep['id']}.*appears twice"):
        predict(tiny_model, world, [ep, ep])


@pytest.mark.parametrize("change, field", [
    (lambda e: e.__setitem__("query", [e["query"]]), "query"),
    (lambda e: e.__setitem__("id", ["x"]), "id"),
    (lambda e: e.__setitem__("label", [e["label"]]), "label"),
    (lambda e: e["support"][0].__setitem__("video", [e["support"][0]["video"]]), "support"),
])
def test_episode_fields_given_as_lists(world_dir, capsys, change, field):
    path = world_dir / "episodes_test_5shot.json"
    edit_json(path, lambda d: change(d["episodes"][0]))
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(path), f"field '{field}'")


def test_duplicate_episode_id_is_refused_when_read(world_dir, capsys, tmp_path):
    path = world_dir / "episodes_val_5shot.json"
    eps = json.loads(path.read_text())["episodes"]
    edit_json(path, lambda d: d["episodes"][1].__setitem__("id", eps[0]["id"]))
    assert_error(run_cli(capsys, "train", "--data", world_dir, "--preset", "tiny", "--out", tmp_path / "run"),
                 "train", str(path), f"video '{eps[1]['query']}'", "field 'id'", eps[0]["id"], "twice")
    assert not (tmp_path / "run").exists()


def test_episode_whose_query_holds_no_instance_of_its_class(world_dir, capsys):
    path = world_dir / "episodes_test_5shot.json"
    ep = first_episode(path)
    other = next(c for c in World(SHIPPED).splits["test"] if c != ep["label"] and not any(
        a["label"] == c for a in load_annotations(SHIPPED / "annotations.json")["database"][ep["query"]]["annotations"]))
    edit_json(path, lambda d: d["episodes"][0].__setitem__("label", other))
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(path), f"video '{ep['query']}'", "field 'label'", "no instance")


def test_labels_given_as_lists_in_results_and_ground_truth(tmp_path):
    gt = {"database": {"v": {"annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    pred = {"results": {"v": [{"label": ["a"], "score": 0.5, "segment": [1.0, 2.0]}]}}
    with pytest.raises(FscalError, match="video 'v', field 'label'.*string"):
        evaluate_detection(gt, pred)
    bad_gt = {"database": {"v": {"annotations": [{"label": ["a"], "segment": [1.0, 2.0]}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(bad_gt))
    with pytest.raises(FscalError, match="gt.json', video 'v', field 'label'"):
        evaluate_detection(tmp_path / "gt.json", {"results": {}})
    from fscal_edu.evaluation import evaluate_fscal
    world = World(SHIPPED)
    ep = world.episodes("test", 5)[0]
    with pytest.raises(FscalError, match=f"video '{ep['query']}', field 'label'"):
        evaluate_fscal([{**ep, "label": [ep["label"]]}], world.annotations, {"results": {}})


# --- output folders: a failed start leaves nothing behind; evaluate --out never over a run's files;
# --- a closed stdout pipe ends quietly ------------------------------------------------------------

def tree_hashes(root):
    """{relative path: sha256} of every file under ``root`` (links followed; the feature cache aside)."""
    import hashlib
    from pathlib import Path
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".fscal_cache" not in p.parts}


def _val_episode_without_its_class(world_dir):
    path = world_dir / "episodes_val_5shot.json"
    world = World(SHIPPED)
    ep = world.episodes("val", 5)[0]
    held = {a["label"] for a in world.annotations["database"][ep["query"]]["annotations"]}
    other = next(c for c in world.splits["val"] if c not in held)
    edit_json(path, lambda d: d["episodes"][0].__setitem__("label", other))


def _duplicate_val_episode_id(world_dir):
    edit_json(world_dir / "episodes_val_5shot.json",
              lambda d: d["episodes"][1].__setitem__("id", d["episodes"][0]["id"]))


def _video_id_with_a_slash(world_dir):
    def rename(d):
        db = d["database"]
        video = sorted(db)[0]
        db["sub/" + video] = db.pop(video)
    edit_json(world_dir / "annotations.json", rename)


BAD_STARTS = {
    "world.json: a string where a number belongs": (
        lambda w: edit_json(w / "world.json", lambda d: d["info"]["config"].__setitem__("noise_norm", "a")),
        "world.json", "noise_norm"),
    "world.json: a list": (lambda w: (w / "world.json").write_text("[1, 2]"), "world.json", ""),
    "world.json: info is a string": (
        lambda w: edit_json(w / "world.json", lambda d: d.__setitem__("info", "x")), "world.json", "info"),
    "a val episode with no instance of its class": (_val_episode_without_its_class, "episodes_val_5shot.json",
                                                   "no instance"),
    "a duplicate val episode id": (_duplicate_val_episode_id, "episodes_val_5shot.json", "twice"),
    "a video id with a slash": (_video_id_with_a_slash, "annotations.json", "video id"),
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_start_leaves_nothing_behind(world_dir, tmp_path, capsys, case, existing):
    """Every input is checked before the run folder is touched: a new --out is not created, an
    existing run given --overwrite is neither moved aside nor changed; no input changes."""
    out = tmp_path / "run"
    if existing:
        out.mkdir()
        for name, text in (("config.json", "{}"), ("metrics.jsonl", ""), ("notes.txt", "mine")):
            (out / name).write_text(text)
    damage, *needles = BAD_STARTS[case]
    damage(world_dir)
    inputs, before = tree_hashes(world_dir), tree_hashes(out) if existing else None
    assert_error(run_cli(capsys, "train", "--data", world_dir, "--preset", "tiny", "--steps", 2, "--threads", 1,
                         "--out", out, *(["--overwrite"] if existing else [])), "train", *needles)
    assert tree_hashes(world_dir) == inputs
    assert (tree_hashes(out) == before) if existing else not out.exists()
    assert not (tmp_path / "run.replaced-1").exists() and not (tmp_path / ".run.lock").exists()


def test_a_bare_resume_of_a_corrupt_config_json_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": {"d": "x"}, "seed": 0}))
    before = tree_hashes(out)
    assert_error(run_cli(capsys, "train", "--data", SHIPPED, "--out", out, "--resume"), "train", "config.json")
    assert tree_hashes(out) == before


@pytest.fixture
def fake_run(tmp_path):
    """A run folder: the shipped checkpoint as best.pt and last.pt, a config and a log."""
    import shutil
    from conftest import DATA
    run = tmp_path / "RUN"
    run.mkdir()
    for name in ("best.pt", "last.pt"):
        shutil.copy(DATA / "checkpoints" / "full.pt", run / name)
    (run / "config.json").write_text("{}\n")
    (run / "metrics.jsonl").write_text("")
    return run


@pytest.mark.parametrize("name", ["last.pt", "best.pt", "metrics.jsonl", "config.json", "other.pt"])
def test_evaluate_out_never_writes_over_a_runs_files(fake_run, capsys, name):
    before = tree_hashes(fake_run)
    for extra in ([], ["--overwrite"]):
        assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--checkpoint", fake_run / "best.pt",
                             "--out", fake_run / name, *extra), "evaluate", "field '--out'", name)
    assert tree_hashes(fake_run) == before and not list(fake_run.glob("*.replaced-*"))


def test_evaluate_out_onto_a_dataset_file_or_an_existing_file(world_dir, tmp_path, capsys):
    before = tree_hashes(world_dir)
    for name in ("features.json", "features/x.json", "splits.json"):
        assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--baseline", "prototype", "--out",
                             world_dir / name, "--overwrite"), "evaluate", "dataset directory")
    assert tree_hashes(world_dir) == before
    pred = tmp_path / "pred.json"
    pred.write_text("mine")
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--baseline", "prototype", "--out", pred),
                 "evaluate", "exists", "--overwrite")
    assert pred.read_text() == "mine"
    with pytest.warns(UserWarning, match="moved what was there aside"):
        rc, _, err = run_cli(capsys, "evaluate", "--data", SHIPPED, "--baseline", "prototype", "--out", pred,
                             "--overwrite")
    assert rc == 0, err
    assert (tmp_path / "pred.json.replaced-1").read_text() == "mine" and "results" in json.loads(pred.read_text())


def _quiet_into_a_closed_pipe(args, cwd):
    """Run ``fscal-edu args`` with its stdout's reader gone before it prints: ``(exit code, stderr)``."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-m", "fscal_edu.cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=cwd)
    p.stdout.close()                         # as `| true` or `| head -0`: the reader leaves at once
    err = p.stderr.read()
    return p.wait(timeout=300), err


def test_generate_and_score_into_a_closed_pipe_end_quietly(tmp_path):
    from fscal_edu.utils import atomic_write_json
    rc, err = _quiet_into_a_closed_pipe(["generate", "--profile", "thumos", "--out", tmp_path / "w"], tmp_path)
    assert rc == 0 and err == "", err
    assert (tmp_path / "w" / "world.json").is_file()              # the work is done
    gt = {"database": {"v": {"subset": "testing", "annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    pred = {"results": {"v": [{"label": "a", "score": 0.9, "segment": [1.0, 2.0]}]}}
    atomic_write_json(tmp_path / "gt.json", gt)
    atomic_write_json(tmp_path / "pred.json", pred)
    rc, err = _quiet_into_a_closed_pipe(["score", tmp_path / "gt.json", tmp_path / "pred.json"], tmp_path)
    assert rc == 0 and err == "", err


def test_train_into_a_closed_pipe_still_trains_to_the_end(tmp_path):
    """The reader of stdout leaving ends the printing, never the work (a cut run that exits 0
    would be a silent loss)."""
    rc, err = _quiet_into_a_closed_pipe(["train", "--data", SHIPPED, "--preset", "tiny", "--steps", 2, "--threads", 1,
                                         "--out", tmp_path / "run"], tmp_path)
    assert rc == 0 and "error" not in err and "Traceback" not in err, err
    assert (tmp_path / "run" / "last.pt").is_file() and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


# --- found by fuzzing the command line (tests/test_fuzz.py, bench/fuzz.py) -------------------------

@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
def test_checkpoint_weights_that_are_not_real_floats_are_refused(tmp_path, capsys, dtype):
    from conftest import DATA
    state = torch.load(DATA / "checkpoints" / "full.pt", weights_only=True)
    name = "qtos.norm.bias"
    state["model"][name] = state["model"][name].to(dtype)          # cast silently by load_state_dict before
    torch.save(state, tmp_path / "ck.pt")
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--checkpoint", tmp_path / "ck.pt"), "evaluate",
                 str(tmp_path / "ck.pt"), f"field 'model.{name}'", "real floating-point", str(dtype)[6:])


@pytest.mark.parametrize("value", [{}, "", 0, None, False])
def test_granularities_that_are_not_a_list_are_refused_not_read_as_no_dynamics(tmp_path, capsys, value):
    from conftest import DATA
    from fscal_edu.config import Config
    with pytest.raises(FscalError, match=r"field 'model.granularities': must be a non-empty list"):
        Config.from_dict({"model": {"granularities": value}})
    state = torch.load(DATA / "checkpoints" / "full.pt", weights_only=True)
    state["config"]["granularities"] = value
    torch.save(state, tmp_path / "ck.pt")
    assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--checkpoint", tmp_path / "ck.pt"), "evaluate",
                 str(tmp_path / "ck.pt"), "field 'model.granularities'")


def test_an_empty_granularities_list_still_switches_dynamics_off():
    from fscal_edu.config import Config
    cfg = Config.from_dict({"model": {"granularities": []}})
    assert not cfg.switches.on("dynamics") and Config().switches.on("dynamics")



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A world and a finished two-step tiny run trained on it (``--resume`` of it has nothing left to do)."""
    from worlds import copy_world as copy
    from fscal_edu.cli import main
    root = tmp_path_factory.mktemp("resume")
    world = copy(root / "w")
    assert main(["train", "--data", str(world), "--preset", "tiny", "--steps", "2", "--threads", "1",
                 "--out", str(root / "run")]) == 0
    return world, root / "run"


def _shape_of_first_moment(state):
    state["optimizer"]["state"][0]["exp_avg"] = state["optimizer"]["state"][0]["exp_avg"][..., :1]


@pytest.mark.parametrize("change, field", [
    (lambda s: s["model"].pop("head.cls.0.weight"), "model.head.cls.0.weight"),
    (lambda s: s["model"].__setitem__("proposal_mlp.0.weight", s["model"]["proposal_mlp.0.weight"][:, :0]),
     "model.proposal_mlp.0.weight"),
    (lambda s: s["model"].__setitem__("extra.weight", torch.zeros(2)), "model.extra.weight"),
    (lambda s: s.__setitem__("optimizer", "x"), "optimizer.param_groups"),
    (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(), "optimizer.params"),
    (_shape_of_first_moment, "optimizer.state.exp_avg"),
    (lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", float("nan")), "optimizer.lr"),
    (lambda s: s.__setitem__("scheduler", []), "scheduler"),
    (lambda s: s.__setitem__("torch_rng", torch.zeros(3, dtype=torch.uint8)), "torch_rng"),
], ids=["weight missing", "weight shape", "weight unexpected", "optimizer a string", "a parameter not in a group",
        "moment shape", "lr NaN", "scheduler a list", "rng state size"])
def test_resume_of_a_last_pt_whose_state_does_not_fit_the_model(finished_run, tmp_path, capsys, change, field):
    import shutil
    world, run = finished_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    state = torch.load(out / "last.pt", weights_only=True)
    change(state)
    torch.save(state, out / "last.pt")
    before = tree_hashes(out)
    assert_error(run_cli(capsys, "train", "--data", world, "--out", out, "--resume"), "train",
                 str(out / "last.pt"), f"field '{field}'")
    assert tree_hashes(out) == before


def test_a_feature_file_with_bytes_after_its_array_is_refused(world_dir, capsys):
    vid = json.loads((world_dir / "episodes_test_5shot.json").read_text())["episodes"][0]["query"]
    path = world_dir / "features" / f"{vid}.npy"
    data = path.read_bytes()
    path.unlink()                                   # a link to the shipped file: replace, never write into it
    path.write_bytes(data[:300] + b"\xff" + data[300:])     # one byte inserted: every later value shifted
    assert_error(run_cli(capsys, "evaluate", "--data", world_dir, "--baseline", "prototype"), "evaluate",
                 str(path), f"video '{vid}'", "field 'path'", "1 byte(s) after the array")


def test_finite_weights_that_overflow_are_blamed_on_the_model_not_on_segments(tmp_path, capsys):
    from conftest import DATA
    state = torch.load(DATA / "checkpoints" / "full.pt", weights_only=True)
    state["model"]["embed.net.0.weight"] *= 1e36                 # finite, but the forward overflows
    torch.save(state, tmp_path / "ck.pt")
    line = assert_error(run_cli(capsys, "evaluate", "--data", SHIPPED, "--checkpoint", tmp_path / "ck.pt"),
                        "evaluate", "field 'model'", "NaN or inf", "episode 'test5shot_")
    assert "segments" not in line


def test_an_unreadable_npy_header_is_reported_the_same_on_every_run(tmp_path):
    from fscal_edu.data.features import read_features
    path = tmp_path / "v.npy"
    np.save(path, np.ones((4, 3), np.float16))
    path.write_bytes(path.read_bytes().replace(b"'<f2'", b"abcde", 1))     # a bare name where a string belongs
    with pytest.raises(FscalError, match=r"video 'v', field 'path': feature file is unreadable") as e:
        read_features(path)
    assert "<ast.Name>" in str(e.value) and " at 0x" not in str(e.value)
