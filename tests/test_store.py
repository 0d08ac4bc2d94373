"""The memory-mapped float16 feature store (fscal_edu/data/store.py)."""
import os
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
