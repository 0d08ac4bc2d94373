"""The memory-mapped float16 feature store (fscal_edu/data/store.py)."""
import json
import os
import warnings
import pickle
import shutil

import numpy as np
import pytest

from fscal_edu.data.features import read_features
from fscal_edu.data.store import FeatureStore, cache_dir_for
from fscal_edu.utils import FscalError

from conftest import DATA

SHIPPED = DATA / "anet_like"


@pytest.fixture
def small(tmp_path):
    """A dataset directory with 12 of the shipped feature files (the store reads nothing else)."""
    root = tmp_path / "world"
    (root / "features").mkdir(parents=True)
    for p in sorted((SHIPPED / "features").glob("*.npy"))[:12]:
        shutil.copy2(p, root / "features" / p.name)
    return root


def test_store_is_float16_memmap_views_equal_to_the_files(small):
    store = FeatureStore(small, 64)
    assert len(store) == 12
    for p in sorted((small / "features").glob("*.npy")):
        x = store[p.stem]
        assert isinstance(x, np.memmap) and x.dtype == np.float16 and not x.flags.writeable
        assert np.shares_memory(x, store.pack)                 # a view of the one map, no copy
        np.testing.assert_array_equal(x.astype(np.float32), read_features(p))   # float16 files: exact
    assert store.pack.shape == (12 * 128, 64)
    assert store.path.parent == small / ".fscal_cache"


def test_store_is_built_once_and_rebuilt_when_a_file_changes(small):
    first = FeatureStore(small, 64)
    vid = next(iter(first.index))
    before = np.array(first[vid])
    built = first.path.stat().st_mtime_ns
    again = FeatureStore(small, 64)
    assert again.path == first.path and again.path.stat().st_mtime_ns == built     # reused, not rebuilt
    x = np.load(small / "features" / f"{vid}.npy")
    np.save(small / "features" / f"{vid}.npy", (x * 2)[:100])                    # other values, shorter
    changed = FeatureStore(small, 64)
    assert changed.path != first.path
    assert changed[vid].shape == (100, 64)
    np.testing.assert_array_equal(changed[vid], (before * 2)[:100].astype(np.float16))
    assert sorted(p.name for p in (small / ".fscal_cache").iterdir()) == sorted(
        [changed.path.name, changed.path.with_suffix(".json").name])           # the stale pack is gone


def test_float32_features_are_rounded_to_float16(small):
    vid = "extra_video"
    x = np.random.default_rng(0).normal(size=(7, 64)).astype(np.float32)
    np.save(small / "features" / f"{vid}.npy", x)
    store = FeatureStore(small, 64)
    np.testing.assert_array_equal(store[vid], x.astype(np.float16))
    assert store.length(vid) == 7


@pytest.mark.parametrize("kind, message", [
    ("nan", "field 'feats'.*NaN or inf"),
    ("wide", "field 'feature_dim'.*width 32"),
    ("huge", "field 'feats'.*do not fit the float16 feature store"),
])
def test_bad_files_stop_the_build_naming_file_and_video(small, kind, message):
    vid = "bad_video"
    x = np.ones((16, 32 if kind == "wide" else 64), np.float32)
    if kind == "nan":
        x[3, 3] = np.nan
    if kind == "huge":
        x[0, 0] = 1e6
    np.save(small / "features" / f"{vid}.npy", x)
    with pytest.raises(FscalError, match=f"bad_video.npy', video 'bad_video', {message}"):
        FeatureStore(small, 64).index


def test_pickle_carries_paths_not_data(small):
    store = FeatureStore(small, 64)
    vid = next(iter(store.index))
    blob = pickle.dumps(store)
    assert len(blob) < 1000                          # a spawned DataLoader worker gets no copy
    np.testing.assert_array_equal(pickle.loads(blob)[vid], store[vid])


def test_read_only_dataset_uses_the_user_cache(small, tmp_path, monkeypatch):
    monkeypatch.setenv("FSCAL_CACHE_DIR", str(tmp_path / "usercache"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith(".fscal_cache") else real_access(p, m))
    folder = cache_dir_for(small)
    assert folder.parent == tmp_path / "usercache"
    assert len(FeatureStore(small, 64)) == 12


# --- the cache is derived data: any inconsistency rebuilds it, with one warning line -----------

def test_content_rewritten_in_place_with_same_size_and_mtime_is_seen(small):
    first = FeatureStore(small, 64)
    vid = next(iter(first.index))
    path = small / "features" / f"{vid}.npy"
    st = path.stat()
    x = np.load(path)
    np.save(path, -x)                                   # same shape, dtype: same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old modification time
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    again = FeatureStore(small, 64)
    np.testing.assert_array_equal(again[vid], -x)


def _pair(store):
    return store.path, store.path.with_suffix(".json")


def _corrupt(kind, pack, index, vid, store):
    if kind == "truncated pack":
        pack.write_bytes(pack.read_bytes()[:1000])
    elif kind == "empty pack":
        pack.write_bytes(b"")
    elif kind == "garbled pack header":
        pack.write_bytes(b"garbage!" * 20 + pack.read_bytes()[160:])
    elif kind == "missing pack":
        pack.unlink()
    elif kind == "missing index":
        index.unlink()
    elif kind == "truncated index":
        index.write_text(index.read_text()[:50])
    elif kind == "empty index":
        index.write_text("")
    elif kind == "index without a video":
        meta = json.loads(index.read_text())
        del meta["videos"][vid]
        index.write_text(json.dumps(meta))
    elif kind == "index entry garbled":
        meta = json.loads(index.read_text())
        meta["videos"][vid] = "x"
        index.write_text(json.dumps(meta))
    elif kind == "index a list":
        index.write_text("[1, 2]")
    elif kind == "wrong shape":
        start, n = store.index[vid]
        arr = np.array(np.load(pack))[:-5]
        np.save(pack, arr)
    elif kind in ("nan in the pack", "garbled rows"):
        start, n = store.index[vid]
        arr = np.load(pack, mmap_mode="r+")
        arr[start + 3, 5] = np.nan if kind == "nan in the pack" else 1234.0
        arr.flush()
        del arr


CORRUPTIONS = ["truncated pack", "empty pack", "garbled pack header", "missing pack", "missing index",
               "truncated index", "empty index", "index without a video", "index entry garbled",
               "index a list", "wrong shape", "nan in the pack", "garbled rows"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_inconsistent_cache_is_rebuilt_with_one_warning(small, kind):
    first = FeatureStore(small, 64)
    vid = sorted(first.index)[5]
    expected = {v: np.array(first[v]) for v in first.index}
    del first
    store = FeatureStore(small, 64)
    pack, index = _pair(store)
    _corrupt(kind, pack, index, vid, store)
    del store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = FeatureStore(small, 64)
        got = {v: np.array(again[v]) for v in again.index}
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "\n" not in message and "feature cache is inconsistent" in message and "rebuilding" in message
    assert sorted(got) == sorted(expected)
    for v in expected:
        np.testing.assert_array_equal(got[v], expected[v])
    with warnings.catch_warnings():                     # the rebuilt cache is clean: no second warning
        warnings.simplefilter("error")
        fresh = FeatureStore(small, 64)
        for v in fresh.index:
            fresh[v]


def test_nan_in_the_cache_never_reaches_the_model(small):
    store = FeatureStore(small, 64)
    vid = sorted(store.index)[0]
    start, n = store.index[vid]
    arr = np.load(store.path, mmap_mode="r+")
    arr[start:start + n] = np.nan
    arr.flush()
    del arr, store
    with pytest.warns(UserWarning, match="feature cache is inconsistent"):
        x = FeatureStore(small, 64)[vid]
    assert np.isfinite(x).all()


def test_a_command_on_a_garbled_cache_rebuilds_it_with_one_warning_line(tmp_path, capsys):
    from worlds import copy_world, run_cli
    world = copy_world(tmp_path / "w")
    assert run_cli(capsys, "evaluate", "--data", world, "--baseline", "prototype")[0] == 0
    index = next((world / ".fscal_cache").glob("features-*.json"))
    index.write_text(index.read_text()[:-40])                     # a torn index
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = run_cli(capsys, "evaluate", "--data", world, "--baseline", "prototype")
    assert rc == 0 and "Traceback" not in err
    cache = [str(w.message) for w in caught if "feature cache" in str(w.message)]
    assert len(cache) == 1 and "inconsistent" in cache[0] and "\n" not in cache[0], cache
    assert "mAP" in out
