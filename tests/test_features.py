"""Feature readers, features.json, resampling and the seconds <-> index conversion."""
import json
import warnings

import numpy as np
import pytest
import torch

from fscal_edu.data.features import (FeatureMeta, crop, find_feature_file, index_to_seconds, read_features,
                                     resample, seconds_to_index)
from fscal_edu.utils import FscalError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 5)).astype(np.float32)          # (T, C)


def write_csv(path, x):
    header = ",".join(f"f{i}" for i in range(x.shape[1]))
    np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.9g")


WRITERS = {
    "npy": lambda p, x: np.save(p, x),
    "npz": lambda p, x: np.savez(p, feats=x),
    "csv": write_csv,
    "pt": lambda p, x: torch.save(torch.from_numpy(x), p),
    "pt_dict": lambda p, x: torch.save({"feats": torch.from_numpy(x)}, p),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_reader_returns_float32_T_by_C(tmp_path, kind):
    path = tmp_path / f"vid1.{kind.split('_')[0]}"
    WRITERS[kind](path, X)
    x = read_features(path, expected_dim=5)
    assert x.dtype == np.float32 and x.shape == (7, 5)
    np.testing.assert_allclose(x, X, rtol=1e-6)


@pytest.mark.parametrize("kind", ["npy", "npz", "pt", "pt_dict"])
def test_float16_input_becomes_float32(tmp_path, kind):
    path = tmp_path / f"vid1.{kind.split('_')[0]}"
    x16 = X.astype(np.float16)
    WRITERS[kind](path, x16)
    x = read_features(path)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, x16.astype(np.float32))


def test_find_feature_file(tmp_path):
    np.save(tmp_path / "a.npy", X)
    torch.save(torch.from_numpy(X), tmp_path / "b.pt")
    assert find_feature_file(tmp_path, "a").name == "a.npy"
    assert find_feature_file(tmp_path, "b").name == "b.pt"
    with pytest.raises(FscalError, match=r"c\.npy.*video 'c'.*field 'path'.*no feature file"):
        find_feature_file(tmp_path, "c")


# --- bad feature files: each message names the file, the video and the field

def bad_file(tmp_path, kind):
    """Write one broken feature file; return (path, the field the error must name)."""
    path = tmp_path / "vid_bad.npy"
    if kind == "missing":
        return path, "path"
    if kind == "corrupt_npy":
        path.write_bytes(b"\x93NUMPY garbage")
        return path, "path"
    if kind in ("corrupt_pt", "corrupt_csv", "unknown_suffix"):
        path = tmp_path / {"corrupt_pt": "vid_bad.pt", "corrupt_csv": "vid_bad.csv",
                           "unknown_suffix": "vid_bad.h5"}[kind]
        path.write_text("not a torch file" if kind != "corrupt_csv" else "f0,f1\n1,2\n3\n")
        return path, "path"
    if kind in ("csv_header", "csv_header_only"):
        path = tmp_path / "vid_bad.csv"
        path.write_text("a,b\n1,2\n" if kind == "csv_header" else "f0,f1,f2,f3,f4\n")
        return path, "header" if kind == "csv_header" else "T"
    if kind == "npz_no_feats":
        np.savez(tmp_path / "vid_bad.npz", x=X)
        return tmp_path / "vid_bad.npz", "feats"
    if kind == "pt_no_tensor":
        torch.save({"x": torch.zeros(2, 2)}, tmp_path / "vid_bad.pt")
        return tmp_path / "vid_bad.pt", "feats"
    array, field = {"wide": (np.zeros((4, 6)), "feature_dim"),
                    "nan": (np.where(np.eye(4, 5) > 0, np.nan, 0.0), "feats"),
                    "inf": (np.full((4, 5), np.inf, np.float16), "feats"),
                    "zero_length": (np.zeros((0, 5)), "T"),
                    "one_d": (np.zeros(5), "shape"),
                    "three_d": (np.zeros((2, 4, 5)), "shape")}[kind]
    np.save(path, array)
    return path, field


@pytest.mark.parametrize("kind", ["missing", "corrupt_npy", "corrupt_pt", "corrupt_csv", "unknown_suffix",
                                  "csv_header", "csv_header_only", "npz_no_feats", "pt_no_tensor", "wide",
                                  "nan", "inf", "zero_length", "one_d", "three_d"])
def test_bad_feature_files_name_file_video_field(tmp_path, kind):
    path, field = bad_file(tmp_path, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the FscalError comes alone (no numpy warning first)
        with pytest.raises(FscalError) as err:
            read_features(path, expected_dim=5, video_id="vid_bad")
    message = str(err.value)
    assert f"file '{path}', video 'vid_bad', field '{field}'" in message


def test_header_only_csv_is_a_zero_length_video(tmp_path):
    (tmp_path / "v.csv").write_text("f0,f1\n\n")
    with pytest.raises(FscalError, match=r"v\.csv.*video 'v'.*field 'T'.*zero-length"):
        read_features(tmp_path / "v.csv")


def test_nan_message_points_at_the_snippet(tmp_path):
    x = X.copy()
    x[4, 2] = np.nan
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(FscalError, match=r"1 snippet\(s\), first at snippet 4"):
        read_features(tmp_path / "v.npy")


def test_npz_without_feats_and_pt_without_tensor(tmp_path):
    np.savez(tmp_path / "v.npz", x=X)
    with pytest.raises(FscalError, match=r"v\.npz.*video 'v'.*field 'feats'.*no key 'feats'.*\['x'\]"):
        read_features(tmp_path / "v.npz")
    torch.save({"x": torch.zeros(2, 2)}, tmp_path / "v.pt")
    with pytest.raises(FscalError, match=r"v\.pt.*video 'v'.*field 'feats'.*got dict"):
        read_features(tmp_path / "v.pt")


# --- features.json ---------------------------------------------------------------------------

def test_feature_meta_round_trip(tmp_path):
    for meta in (FeatureMeta(feature_dim=64, resize_length=128),
                 FeatureMeta(feature_dim=2048, fps=30.0, feat_stride=4, num_frames=16)):
        meta.save(tmp_path)
        assert FeatureMeta.load(tmp_path) == meta                        # a directory works
        assert FeatureMeta.load(tmp_path / "features.json") == meta      # and the file itself
    assert not FeatureMeta(feature_dim=8, resize_length=10).strided
    assert FeatureMeta(feature_dim=8, fps=30.0, feat_stride=4, num_frames=16).strided
    assert "fps" not in json.loads((FeatureMeta(8, resize_length=10).save(tmp_path)).read_text())


@pytest.mark.parametrize("content, message", [
    (None, r"field 'path'.*features\.json is missing"),
    ("{not json", r"field 'path'.*not readable JSON"),
    ({"resize_length": 100}, r"field 'feature_dim'.*missing"),
    ({"feature_dim": 0, "resize_length": 100}, r"field 'feature_dim'.*positive integer"),
    ({"feature_dim": 64.5, "resize_length": 100}, r"field 'feature_dim'.*positive integer"),
    ({"feature_dim": 64, "fps": 30.0, "num_frames": 16}, r"field 'feat_stride'.*strided"),
    ({"feature_dim": 64, "fps": -1, "feat_stride": 4, "num_frames": 16}, r"field 'fps'"),
    ({"feature_dim": 64, "resize_length": 0}, r"field 'resize_length'.*positive"),
])
def test_feature_meta_errors(tmp_path, content, message):
    path = tmp_path / "features.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(FscalError, match=r"features\.json.*" + message):
        FeatureMeta.load(tmp_path)


# --- resampling --------------------------------------------------------------------------------

def test_resample_identity_at_same_length():
    np.testing.assert_array_equal(resample(X, 7), X)


@pytest.mark.parametrize("T, length", [(10, 25), (25, 10), (100, 128), (5, 5)])
def test_resample_keeps_a_linear_ramp(T, length):
    ramp = np.stack([np.arange(T), 3 - 2 * np.arange(T)], axis=1).astype(np.float32)  # (T, 2)
    out = resample(ramp, length)
    # new snippet j samples the old axis at its centre (j + 0.5) * T / length, i.e. old index
    # (j + 0.5) * T / length - 0.5, clamped to the first/last old centre
    pos = np.clip((np.arange(length) + 0.5) * T / length - 0.5, 0, T - 1)
    assert out.shape == (length, 2) and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[:, 0], pos, atol=1e-4)
    np.testing.assert_allclose(out[:, 1], 3 - 2 * pos, atol=1e-4)


def test_resample_torch_matches_numpy():
    out = resample(torch.from_numpy(X), 16)
    assert isinstance(out, torch.Tensor) and out.shape == (16, 5)
    np.testing.assert_allclose(out.numpy(), resample(X, 16), rtol=1e-6)


def test_resample_keeps_a_constant():
    np.testing.assert_allclose(resample(np.full((9, 3), 2.5, np.float32), 40), 2.5)


def test_crop_reads_bin_centres_of_the_window():
    ramp = np.arange(10, dtype=np.float32)[:, None]                          # value = snippet index
    # [2, 6) in 4 bins: centres 2.5 .. 5.5 on the line = the centres of snippets 2 .. 5
    np.testing.assert_allclose(crop(ramp, 2.0, 6.0, 4)[:, 0], [2, 3, 4, 5])
    # [2, 4) in 4 bins: centres 2.25 .. 3.75, i.e. values 1.75 .. 3.25 between snippet centres
    np.testing.assert_allclose(crop(ramp, 2.0, 4.0, 4)[:, 0], [1.75, 2.25, 2.75, 3.25])
    np.testing.assert_allclose(crop(ramp, 0.0, 10.0, 7), resample(ramp, 7))      # whole axis = resample


# --- seconds <-> index -------------------------------------------------------------------------

STRIDED = FeatureMeta(feature_dim=2048, fps=30.0, feat_stride=4, num_frames=16)


def test_seconds_to_index_hand_worked_values():
    # resized: 15 s into a 60 s video on a 128-snippet axis is a quarter of the way: 32
    assert seconds_to_index(15.0, duration=60.0, num_snippets=128) == pytest.approx(32.0)
    # strided (THUMOS14 I3D): feature i's 16-frame window is centred on frame 4 i + 8, i.e. on
    # second (4 i + 8) / 30. At t = 1 s: i = (30 - 8) / 4 = 5.5, and snippet centres sit at
    # i + 0.5 on the line, so the position is 6.0 on the file's axis of 100 features ...
    assert seconds_to_index(1.0, duration=99.0, num_snippets=100, meta=STRIDED,
                            feat_len=100) == pytest.approx(6.0)
    # ... and 6.0 * 128 / 100 = 7.68 once the 100 features are resampled to 128
    assert seconds_to_index(1.0, duration=99.0, num_snippets=128, meta=STRIDED,
                            feat_len=100) == pytest.approx(7.68)
    # the centre of feature 0 (frame 8, 0.2667 s) lands on the centre of snippet 0
    assert seconds_to_index(8 / 30, duration=99.0, num_snippets=100, meta=STRIDED) == pytest.approx(0.5)


@pytest.mark.parametrize("meta, feat_len", [(None, None), (FeatureMeta(64, resize_length=128), None),
                                            (STRIDED, 100), (STRIDED, None)])
def test_seconds_index_round_trip(meta, feat_len):
    t = np.array([0.0, 0.37, 12.5, 59.9])
    kw = dict(duration=60.0, num_snippets=128, meta=meta, feat_len=feat_len)
    idx = seconds_to_index(t, **kw)
    np.testing.assert_allclose(index_to_seconds(idx, **kw), t, atol=1e-9)
    i = torch.tensor([0.0, 3.5, 127.0], dtype=torch.float64)
    back = seconds_to_index(index_to_seconds(i, **kw), **kw)
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, i)


def test_resized_axis_spans_the_whole_video():
    ends = seconds_to_index(np.array([0.0, 117.0]), duration=117.0, num_snippets=100)
    np.testing.assert_allclose(ends, [0.0, 100.0])
