"""Fuzzing the command line: mutate a copy of what a user hands ``fscal-edu``, run it, check the outcome.

    python bench/fuzz.py --mutations 1000          # counts -> bench/results/fuzz.json, docs/benchmarks.md
    python bench/fuzz.py --mutations 50 --seed 7   # another sample of mutations
    python bench/fuzz.py --report                  # the docs section again, from bench/results/fuzz.json

Each mutation is drawn from one seed (``random.Random(f"{seed}:{i}")``), so mutation ``i`` of a seed
is always the same one. It changes one thing of a copy of the shipped world ``data_samples/anet_like``
(its JSON files, a feature file, the feature cache ``.fscal_cache/``), of the checkpoint
``data_samples/checkpoints/full.pt`` or of a results file scored against ``annotations.json``:

* ``type``       a value replaced by one of another type (string, number, list, object, null, bool)
* ``size``       a number replaced by a huge, negative, zero, NaN or infinite one
* ``value``      a value of the right type but a wrong value (empty, path-like, reversed, scaled)
* ``truncate``   the file cut at a random byte
* ``duplicate``  a key repeated in one object, or an entry repeated in one list
* ``encoding``   invalid UTF-8, a byte-order mark, UTF-16, a byte flipped
* ``remove``     a field removed, or the whole file

then runs the command in this process (``fscal_edu.cli.main`` with stdout and stderr captured):
``evaluate --checkpoint`` (the world's test or val episodes, cut to two per file so that a case
is cheap), ``evaluate --baseline prototype``, ``score``, for one world mutation in ten
``train --preset tiny --steps 2``, and ``train --resume`` of a finished run whose ``last.pt``,
``config.json`` or ``metrics.jsonl`` was mutated. The outcome of a case is one of

* ``exit 0``       the command worked (for derived data such as the cache: rebuilt, one warning)
* ``clear error``  exit 2 and exactly one error line that names a file, video or field
* ``cryptic``      exit 2, but the message is not one line naming file, video or field
* ``traceback``    exit 1, a traceback, an exception out of ``main``, or more than 60 s
* ``changed input`` an input file's bytes differ after the command (a checksum of every input before
  and after; a run's files too when the command failed); this outcome wins over the others

The acceptance is no traceback and no changed input. ``tests/test_fuzz.py`` runs a short,
fixed sample of the same cases.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import DOC, RESULTS, ROOT, atomic_write_text, machine, replace_section, stamped

import numpy as np
import torch

WORLD = ROOT / "data_samples" / "anet_like"
CHECKPOINT = ROOT / "data_samples" / "checkpoints" / "full.pt"
KINDS = ("type", "size", "value", "truncate", "duplicate", "encoding", "remove")
OUTCOMES = ("exit 0", "clear error", "cryptic", "traceback", "changed input")
EPISODES_KEPT = 2                 # episodes per episodes_*.json in the copy: a case costs ~0.2 s
JSON_FILES = ("world.json", "annotations.json", "features.json", "splits.json", "episodes_test_1shot.json",
              "episodes_test_5shot.json", "episodes_val_1shot.json", "episodes_val_5shot.json")
TARGETS = {"world json": 8, "feature file": 3, "cache": 2, "checkpoint": 3, "results": 2, "run": 1}
NAMES = re.compile(r"(file|video|field) '")
CASE_SECONDS = 60


# ---------------------------------------------------------------------------------------------
# The base: a copy of the shipped world, a checkpoint, a results file, a built cache
# ---------------------------------------------------------------------------------------------

def sha(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def checksums(paths) -> dict:
    """``{path: digest}`` of every file under ``paths`` (folders walked; ``.fscal_cache`` skipped: derived)."""
    out = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and ".fscal_cache" not in f.parts:
                    out[str(f)] = sha(f)
        elif p.is_file():
            out[str(p)] = sha(p)
    return out


def run_cli(argv) -> tuple[int | None, str, str]:
    """``fscal_edu.cli.main(argv)`` in this process: (exit code or None for an escaped exception,
    stdout, stderr). An exception out of ``main`` is written to the captured stderr as a traceback."""
    import traceback
    from fscal_edu.cli import main

    class CaseTimeout(BaseException):
        pass

    def alarm(*_):
        raise CaseTimeout(f"more than {CASE_SECONDS} s")

    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    except BaseException:      # noqa: BLE001 - SystemExit, a timeout, anything main let through
        err.write(traceback.format_exc())
        code = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def make_base(folder: Path) -> Path:
    """``folder/base``: the shipped world (episodes cut to :data:`EPISODES_KEPT` per file), its built
    cache, a copy of the checkpoint and a results file of the world's test videos (``results.json``)."""
    base = folder / "base"
    world = base / "world"
    shutil.copytree(WORLD, world, ignore=shutil.ignore_patterns(".fscal_cache"))
    for name in JSON_FILES:
        if name.startswith("episodes_"):
            data = json.loads((world / name).read_text())
            data["episodes"] = data["episodes"][:EPISODES_KEPT]
            (world / name).write_text(json.dumps(data, indent=1))
    shutil.copy2(CHECKPOINT, base / "full.pt")
    gt = json.loads((world / "annotations.json").read_text())["database"]
    rng = random.Random(0)
    results = {}
    for vid, v in list(gt.items())[:40]:
        results[vid] = [{"label": a["label"], "score": round(rng.random(), 3),
                         "segment": [round(a["segment"][0] + rng.uniform(-2, 2), 2),
                                     round(a["segment"][1] + rng.uniform(-2, 2), 2)]}
                        for a in v["annotations"]]
    (base / "results.json").write_text(json.dumps({"version": "fuzz", "results": results,
                                                   "external_data": {}}, indent=1))
    code, _, err = run_cli(["evaluate", "--data", world, "--baseline", "prototype"])   # builds the cache
    if code != 0:
        raise RuntimeError(f"the unmutated world does not evaluate: {err}")
    at = copy_case(base, folder / "case")           # the run records its dataset: the path every case uses
    code, _, err = run_cli(["train", "--data", at, "--preset", "tiny", "--steps", 2, "--threads", 1,
                            "--out", base / "run"])
    shutil.rmtree(folder / "case")
    if code != 0:
        raise RuntimeError(f"the unmutated world does not train: {err}")
    return base


def copy_case(base: Path, case: Path) -> Path:
    """A copy of the base for one case: JSON files copied, feature files hard-linked (a mutation
    replaces a file, it never writes into one: checksums tell if a command did), the cache copied
    under the copy's fingerprint (so the case does not rebuild it)."""
    from fscal_edu.data.store import cache_dir_for, feature_files, fingerprint
    world = case / "world"
    (world / "features").mkdir(parents=True)
    for f in (base / "world").iterdir():
        if f.is_file():
            shutil.copy2(f, world / f.name)
    for f in (base / "world" / "features").iterdir():
        os.link(f, world / "features" / f.name)
    for name in ("full.pt", "results.json"):
        shutil.copy2(base / name, case / name)
    if (base / "run").is_dir():
        shutil.copytree(base / "run", case / "run")
    fp = fingerprint(feature_files(world / "features"), 64)
    cache = cache_dir_for(world)
    for f in (base / "world" / ".fscal_cache").iterdir():
        shutil.copy2(f, cache / re.sub(r"features-[0-9a-f]+", f"features-{fp}", f.name))
    return world


# ---------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------

BAD_KEYS = ("", " ", "../up", "a/b", "x" * 300, ".hidden", "caf\u00e9", "a\\b", "NaN", "1e999", "\x00", "con")
OTHER_TYPES = ("x", 7, -3.5, [1, 2], {"a": 1}, None, True, [], {}, "")
SIZES = (10 ** 400, -(10 ** 30), -1, 0, 1e308, -1e308, 5e-324, 2 ** 63, float("nan"), float("inf"), float("-inf"))


def paths_of(node, here=()):
    """Every path (a tuple of keys / indices) into a JSON value, the root's ``()`` first."""
    yield here
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths_of(v, here + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):                  # the first entries stand for the others
            yield from paths_of(v, here + (i,))


def get(node, path):
    for k in path:
        node = node[k]
    return node


def put(node, path, value):
    if not path:
        return value
    get(node, path[:-1])[path[-1]] = value
    return node


def wrong_value(rng: random.Random, old):
    """A value of ``old``'s type that is wrong for it."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, (int, float)):
        return rng.choice([old * 1000, -old, old + 0.5, old * 1e-6, 1, -0.0, 3])
    if isinstance(old, str):
        return rng.choice(["", " ", "../etc", "a/b", "x" * 300, old + "\u00e9\u6f22", old.upper(), "\x00",
                           "nan", "1e999", old[::-1]])
    if isinstance(old, list):
        return rng.choice([[], old[::-1], old * 3, old[:1], [old]])
    if isinstance(old, dict):
        return rng.choice([{}, {"unexpected": 1, **old}, dict(list(old.items())[:1])])
    return rng.choice(OTHER_TYPES)


def dump(node, dup_at=None, rng=None) -> str:
    """JSON text of ``node``; the object at path ``dup_at`` gets one of its keys twice (another value)."""
    def enc(n, here):
        if isinstance(n, dict):
            items = [f"{json.dumps(str(k))}: {enc(v, here + (k,))}" for k, v in n.items()]
            if here == dup_at and n:
                k = rng.choice(list(n))
                items.insert(rng.randrange(len(items) + 1), f"{json.dumps(str(k))}: {json.dumps(wrong_value(rng, n[k]))}")
            return "{" + ", ".join(items) + "}"
        if isinstance(n, list):
            return "[" + ", ".join(enc(v, here + (i,)) for i, v in enumerate(n)) + "]"
        return json.dumps(n)
    return enc(node, ())


def mutate_bytes(rng: random.Random, path: Path, kind: str) -> str:
    """Mutations that see a file as bytes: truncation, encodings, removal of the whole file."""
    data = path.read_bytes()
    if kind == "truncate":
        cut = rng.randrange(len(data))
        path.unlink()
        path.write_bytes(data[:cut])
        return f"cut at byte {cut} of {len(data)}"
    if kind == "remove":
        path.unlink()
        return "file removed"
    how = rng.choice(["invalid utf-8", "bom", "utf-16", "latin-1", "byte flip"])
    if how == "invalid utf-8":
        at = rng.randrange(len(data))
        data = data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + data[at:]
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "utf-16":
        data = data.decode("utf-8", "replace").encode("utf-16")
    elif how == "latin-1":
        data = data.replace(b'"', '"\u00e9'.encode("latin-1"), 1)
    else:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    path.unlink()
    path.write_bytes(data)
    return how


def mutate_json(rng: random.Random, path: Path, kind: str) -> str:
    """One mutation of a JSON file, described in a few words."""
    if kind in ("truncate", "encoding") or (kind == "remove" and rng.random() < 0.2):
        return mutate_bytes(rng, path, kind)
    node = json.loads(path.read_text(encoding="utf-8"))
    paths = list(paths_of(node))
    dup_at = None
    if kind == "duplicate":
        objects = [p for p in paths if isinstance(get(node, p), dict) and get(node, p)]
        lists = [p for p in paths if isinstance(get(node, p), list) and get(node, p)]
        if objects and (not lists or rng.random() < 0.5):
            dup_at, what = rng.choice(objects), "key repeated"
        else:
            at = rng.choice(lists)
            seq = get(node, at)
            seq.insert(rng.randrange(len(seq) + 1), seq[rng.randrange(len(seq))])
            what = "entry repeated"
        at = dup_at if dup_at is not None else at
    else:
        pool = [p for p in paths if p] if kind == "remove" else paths[1:] or paths
        if kind == "size":
            pool = [p for p in pool if isinstance(get(node, p), (int, float)) and not isinstance(get(node, p), bool)] or pool
        at = rng.choice(pool)
        old = get(node, at)
        if kind == "type" and rng.random() < 0.1:               # the whole file another type
            at, old = (), node
        if kind == "value" and isinstance(old, dict) and old and rng.random() < 0.5:
            key = rng.choice(list(old))
            new_key = rng.choice(BAD_KEYS)
            node = put(node, at, {(new_key if k == key else k): v for k, v in old.items()})
            what = f"key {key!r} renamed {new_key!r}"
        elif kind == "remove":
            parent = get(node, at[:-1])
            del parent[at[-1]]
            what = "removed"
        else:
            new = {"type": lambda: rng.choice([v for v in OTHER_TYPES if type(v) is not type(old)]),
                   "size": lambda: rng.choice(SIZES), "value": lambda: wrong_value(rng, old)}[kind]()
            node = put(node, at, new)
            what = f"-> {json.dumps(new)[:40]}"
    text = dump(node, dup_at, rng)
    path.unlink()
    path.write_text(text, encoding="utf-8")
    return f"{'/'.join(map(str, at)) or '(root)'} {what}"


def mutate_array(rng: random.Random, path: Path, kind: str) -> str:
    """One mutation of a ``.npy`` feature file (or the cache's pack)."""
    if kind in ("truncate", "encoding", "remove"):
        return mutate_bytes(rng, path, kind)
    x = np.load(path)
    if kind == "type":
        how = rng.choice(["int64", "complex64", "bool", "str", "object", "float64", "1-D", "3-D", "0-d"])
        y = {"int64": lambda: x.astype(np.int64), "complex64": lambda: x.astype(np.complex64) + 1j,
             "bool": lambda: x > 0, "str": lambda: x.astype(str), "object": lambda: x.astype(object),
             "float64": lambda: x.astype(np.float64), "1-D": lambda: x.ravel(),
             "3-D": lambda: x[None], "0-d": lambda: np.array(1.0)}[how]()
    elif kind == "size":
        how = rng.choice(["0 rows", "1 row", "rows x20", "width -1", "width +1", "0 columns"])
        y = {"0 rows": lambda: x[:0], "1 row": lambda: x[:1], "rows x20": lambda: np.tile(x, (20, 1)),
             "width -1": lambda: x[:, :-1], "width +1": lambda: np.pad(x, ((0, 0), (0, 1))),
             "0 columns": lambda: x[:, :0]}[how]()
    elif kind == "value":
        how = rng.choice(["nan", "inf", "-inf", "1e30", "70000", "zeros"])
        y = x.astype(np.float32)
        if how == "zeros":
            y[:] = 0
        else:
            y[rng.randrange(len(y)), rng.randrange(y.shape[1])] = float(how)
    else:                                                    # duplicate: every row twice
        how, y = "rows repeated", np.repeat(x, 2, axis=0)
    path.unlink()
    np.save(path, y, allow_pickle=True)
    return how


def mutate_names(rng: random.Random, world: Path, path: Path, kind: str) -> str:
    """Feature files under other names: renamed, a stray file or folder beside them, no folder."""
    if kind == "remove":
        shutil.rmtree(world / "features")
        return "features/ removed"
    if kind == "type":
        path.unlink()
        path.mkdir()
        (path / "x.npy").write_bytes(b"")
        return "a folder in place of the file"
    how = rng.choice(["rename", "stray file", "stray link", "other suffix"])
    if how == "rename":
        new = path.with_name(rng.choice(BAD_KEYS[:4] + (".npy", "x y", "-lead", "été")) + ".npy")
        path.rename(new)
        return f"renamed {new.name!r}"
    if how == "stray file":
        name = rng.choice(["notes.txt", "extra.npy", ".hidden.npy", "x.npz", "x.csv", "x.pt"])
        (path.parent / name).write_bytes(rng.choice([b"", b"garbage", path.read_bytes()]))
        return f"stray {name}"
    if how == "stray link":
        (path.parent / "link.npy").symlink_to(rng.choice(["/nonexistent/x.npy", path.name, "link.npy"]))
        return "stray symlink"
    new = path.with_suffix(rng.choice([".NPY", ".npz", ".csv", ".pt", ".txt"]))
    path.rename(new)
    return f"suffix {new.suffix}"


class Harmless:
    """A pickled object that names a callable: a checkpoint holding code (it would only print)."""
    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def mutate_checkpoint(rng: random.Random, path: Path, kind: str) -> str:
    """One mutation of a checkpoint: its bytes, or a value of its dictionary saved again."""
    if kind in ("truncate", "encoding") or (kind == "remove" and rng.random() < 0.3):
        return mutate_bytes(rng, path, kind)
    ck = torch.load(path, weights_only=True)
    if kind == "remove":
        part = rng.choice(["config", "model", "format", "step", "best"] + ["config"] * 3 + ["model"] * 2)
        if part in ("config", "model") and rng.random() < 0.8 and ck[part]:
            key = rng.choice(list(ck[part]))
            del ck[part][key]
            what = f"{part}/{key} removed"
        else:
            del ck[part]
            what = f"{part} removed"
    elif kind == "duplicate":
        key = rng.choice(list(ck["model"]))
        ck["model"][key + "_copy"] = ck["model"][key].clone()
        what = f"model/{key} repeated under another name"
    else:
        if rng.random() < 0.65:
            part = "config"
            key = rng.choice(list(ck["config"]))
            old = ck["config"][key]
        elif rng.random() < 0.6:
            part = "model"
            key = rng.choice(list(ck["model"]))
            old = ck["model"][key]
        else:
            part, key = "", rng.choice(sorted(ck))              # optimizer, scheduler, torch_rng in a last.pt
            old = ck[key] if isinstance(ck[key], (int, float, str, list, dict)) else None
        if part == "model":
            new = tensor_mutation(rng, old, kind)
        elif kind == "size":
            new = rng.choice([10 ** 7, 10 ** 400 if rng.random() < 0.2 else -(2 ** 40), -1, 0, float("nan"), float("inf")])
        elif kind == "type":
            new = rng.choice([v for v in OTHER_TYPES if type(v) is not type(old)] + [Harmless()])
        else:
            new = wrong_value(rng, old) if old is not None else rng.choice(["x", -5, [], None])
        if part:
            ck[part][key] = new
        else:
            ck[key] = new
        what = f"{part + '/' if part else ''}{key} -> {type(new).__name__} {str(new)[:30]}"
    path.unlink()
    try:
        torch.save(ck, path)
    except (OverflowError, RuntimeError, TypeError, ValueError):    # 10**400 does not pickle as an int
        ck.get("config", {}).pop("d", None)
        torch.save(ck, path)
        what += " (could not save; d removed instead)"
    return what


def tensor_mutation(rng: random.Random, t: torch.Tensor, kind: str):
    if kind == "size":
        return rng.choice([t.flatten(), t[..., :0], torch.cat([t, t]), t.new_zeros(()), t[None]])
    if kind == "type":
        return rng.choice([t.to(torch.int64), t.to(torch.complex64), t.tolist() if t.numel() < 50 else "x",
                           t.to(torch.bool), None])
    t = t.clone().float()
    t.view(-1)[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), 1e38])
    return t


# ---------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------

def draw(seed: int, i: int) -> dict:
    """Mutation ``i`` of ``seed``: what to mutate, how, and which command reads it."""
    rng = random.Random(f"{seed}:{i}")
    target = rng.choices(list(TARGETS), weights=list(TARGETS.values()))[0]
    kind = rng.choice(KINDS)
    return {"i": i, "seed": seed, "target": target, "kind": kind, "rng": rng}


def command(case: Path, world: Path, target: str, rng: random.Random, mutated: Path) -> list:
    split, shots = rng.choice(["test", "val"]), rng.choice([1, 5])
    m = re.fullmatch(r"episodes_(test|val)_(\d+)shot\.json", mutated.name)
    if m and rng.random() < 0.8:                     # mostly the episodes that were mutated
        split, shots = m.group(1), int(m.group(2))
    if target == "results":
        subset = rng.choice([[], [], ["--subset", "testing"], ["--subset", "nowhere"]])
        return ["score", world / "annotations.json", case / "results.json", *subset]
    if target == "run":
        return ["train", "--data", world, "--out", case / "run", "--resume"]
    if target == "checkpoint":
        return ["evaluate", "--data", world, "--checkpoint", case / "full.pt", "--split", split, "--shots", shots,
                "--threads", 1]
    pick = rng.random()
    if pick < 0.1:
        return ["train", "--data", world, "--preset", "tiny", "--steps", 2, "--shots", shots, "--threads", 1,
                "--out", case / "new-run"]
    if pick < 0.35:
        return ["evaluate", "--data", world, "--baseline", "prototype", "--split", split, "--shots", shots]
    return ["evaluate", "--data", world, "--checkpoint", case / "full.pt", "--split", split, "--shots", shots,
            "--threads", 1, "--out", case / "pred.json"]


def episode_videos(world: Path) -> set:
    """The queries and support videos of the world's episode files (those a command reads)."""
    videos = set()
    for f in world.glob("episodes_*.json"):
        for e in json.loads(f.read_text())["episodes"]:
            videos |= {e["query"]} | {s["video"] for s in e["support"]}
    return videos


def mutate(case: Path, world: Path, target: str, kind: str, rng: random.Random) -> tuple[str, str]:
    """Apply the mutation; (the file mutated, relative to the case, and what was done)."""
    if target == "world json":
        path = world / rng.choice(JSON_FILES)
        return path, mutate_json(rng, path, kind)
    if target == "feature file":
        files = sorted((world / "features").iterdir())
        used = [f for f in files if f.stem in episode_videos(world)]
        path = rng.choice(used if used and rng.random() < 0.6 else files)   # mostly a video the episodes read
        if kind in ("value", "remove", "type") and rng.random() < 0.3:
            return path, mutate_names(rng, world, path, kind)
        return path, mutate_array(rng, path, kind)
    if target == "cache":
        from fscal_edu.data.store import cache_dir_for
        path = rng.choice(sorted(cache_dir_for(world).iterdir()))
        if path.suffix == ".json":
            return path, mutate_json(rng, path, kind)
        if kind in ("type", "size", "duplicate"):     # a 14 MB pack: bytes flipped, not arrays rebuilt
            return path, mutate_bytes(rng, path, "encoding")
        return path, mutate_array(rng, path, kind)
    if target == "checkpoint":
        return case / "full.pt", mutate_checkpoint(rng, case / "full.pt", kind)
    if target == "run":                      # a run to --resume: its last.pt, config.json, metrics.jsonl
        path = case / "run" / rng.choice(["last.pt", "last.pt", "config.json", "metrics.jsonl"])
        if path.suffix == ".pt":
            return path, mutate_checkpoint(rng, path, kind)
        if path.suffix == ".json":
            return path, mutate_json(rng, path, kind)
        return path, mutate_bytes(rng, path, kind if kind in ("truncate", "remove") else "encoding")
    path = rng.choice([case / "results.json", world / "annotations.json"])
    return path, mutate_json(rng, path, kind)


def classify(code, err: str, before: dict, after: dict) -> str:
    """The outcome of a case (see the module's docstring)."""
    if before != after:
        return "changed input"
    if code is None or code == 1 or "Traceback (most recent call last)" in err:
        return "traceback"
    if code == 0:
        return "exit 0"
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in err.split("\n")]        # progress bars end in \r
    lines = [ln for ln in lines if ln and ": warning: " not in ln]
    errors = [ln for ln in lines if ": error: " in ln]
    if code == 2 and len(lines) == 1 and len(errors) == 1 and NAMES.search(errors[0]):
        return "clear error"
    return "cryptic"


def run_case(base: Path, spec: dict) -> dict:
    """Copy the base, mutate, checksum every input, run the command, checksum again, classify."""
    rng = spec["rng"]
    case = base.parent / "case"                     # one path for every case: the run's dataset, same messages
    shutil.rmtree(case, ignore_errors=True)
    try:
        world = copy_case(base, case)
        path, what = mutate(case, world, spec["target"], spec["kind"], rng)
        argv = command(case, world, spec["target"], rng, path)
        inputs = [world, case / "full.pt", case / "results.json"]
        before, run_before = checksums(inputs), checksums([case / "run"])
        t0 = time.perf_counter()
        code, _, err = run_cli(argv)
        seconds = time.perf_counter() - t0
        after = checksums(inputs)
        if code != 0:                       # a command that fails leaves a run as it found it
            before, after = before | run_before, after | checksums([case / "run"])
        outcome = classify(code, err, before, after)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    finally:
        shutil.rmtree(case, ignore_errors=True)
    rel = lambda p: str(p).replace(str(case) + "/", "")            # noqa: E731 - paths as the case saw them
    return {"i": spec["i"], "target": spec["target"], "kind": spec["kind"], "file": rel(path), "mutation": what,
            "command": " ".join(rel(a) for a in map(str, argv[:1])), "argv": [rel(a) for a in map(str, argv)],
            "exit": code, "outcome": outcome, "seconds": round(seconds, 3),
            "stderr": err if outcome in ("traceback", "cryptic", "changed input") else err.strip().split("\n")[-1][:300],
            "changed": [rel(c) for c in changed]}


# ---------------------------------------------------------------------------------------------
# The long run
# ---------------------------------------------------------------------------------------------

def compact(row: dict) -> dict:
    """A row as the results file keeps it: the argv that repeats the case, stderr's last line only
    where the command failed (all of it for a traceback), no empty fields."""
    out = {k: v for k, v in row.items() if k not in ("stderr", "changed", "command") or v}
    if row["outcome"] == "exit 0":
        out.pop("stderr", None)
    elif row["outcome"] not in ("traceback", "cryptic", "changed input"):
        out["stderr"] = row["stderr"].strip().split("\n")[-1][:240]
    return out


def write_results(result: dict) -> None:
    """``bench/results/fuzz.json``: the summary indented, then one line per case."""
    result = stamped(result)                      # "code": the fingerprint of the code that made it
    head = json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(r) for r in result["rows"])
    atomic_write_text(RESULTS / "fuzz.json", f"{head},\n \"rows\": [\n  {rows}\n ]\n}}\n")


def summarise(rows: list) -> dict:
    by_outcome = Counter(r["outcome"] for r in rows)
    by_kind = {k: dict(Counter(r["outcome"] for r in rows if r["kind"] == k)) for k in KINDS}
    by_target = {t: dict(Counter(r["outcome"] for r in rows if r["target"] == t)) for t in TARGETS}
    by_command = dict(Counter(r["command"] for r in rows))
    return {"mutations": len(rows), "by_outcome": {o: by_outcome.get(o, 0) for o in OUTCOMES},
            "by_kind": by_kind, "by_target": by_target, "by_command": by_command}


def markdown(result: dict) -> str:
    s = result["summary"]
    o = s["by_outcome"]
    commands = ", ".join(f"{n} `{c}`" for c, n in sorted(s["by_command"].items(), key=lambda kv: -kv[1]))

    def table(title: str, rows: dict) -> list:
        return ([f"| {title} | " + " | ".join(OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
                + [f"| {name} | " + " | ".join(str(counts.get(x, 0)) for x in OUTCOMES) + " |"
                   for name, counts in rows.items()] + [""])
    lines = [f"`python bench/fuzz.py --mutations {s['mutations']} --seed {result['seed']}` on {result['machine']}, "
             f"{result['seconds']:.0f} s: {s['mutations']} mutations, each of one copy of what a user hands the "
             f"command line (the shipped world's JSON files, its feature files and feature cache, the checkpoint "
             f"`full.pt`, a results file, a finished run's `last.pt`, `config.json` and `metrics.jsonl`), then one "
             f"command on it ({commands}; `train` is `--preset tiny --steps 2`, or `--resume` of the run).", "",
             f"**{o['traceback']} tracebacks and {o['changed input']} changed inputs.** {o['exit 0']} exit 0 (a "
             f"mutation the command does not read, a value still valid, or the feature cache rebuilt with one "
             f"warning), {o['clear error']} clear errors (exit 2, one line naming the file, the video or the "
             f"field), {o['cryptic']} cryptic (exit 2, but not one such line). Every input's checksum is compared "
             f"before and after each command (a run's files too when the command fails).", ""]
    lines += table("mutation kind", s["by_kind"]) + table("file mutated", s["by_target"])
    bad = [r for r in result["rows"] if r["outcome"] in ("traceback", "changed input", "cryptic")]
    if bad:
        lines += ["Cases that fail the acceptance or read badly:", ""]
        lines += [f"- #{r['i']} {r['target']} `{r['file']}` {r['kind']} ({r['mutation']}), `{r['command']}`: "
                  f"{r['outcome']}" for r in bad[:20]] + [""]
    lines += ["Per case: `bench/results/fuzz.json` (the mutation, the command, its exit code and its last line on "
              "stderr). `tests/test_fuzz.py` runs a fixed sample of the same mutations (every file and mutation "
              "kind), JSON values drawn by hypothesis, and one case in a separate process.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-docs", action="store_true", help="write bench/results/fuzz.json only")
    p.add_argument("--report", action="store_true",
                   help="run nothing: write the docs section from bench/results/fuzz.json")
    a = p.parse_args(argv)
    if a.report:
        replace_section(DOC, "## Fuzzing the command line", "\n" + markdown(json.loads((RESULTS / "fuzz.json").read_text())))
        return 0
    from fscal_edu.runtime import configure_process
    configure_process(threads=1)
    info, t0, rows = machine(), time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="fscal-fuzz-base-") as tmp:
        base = make_base(Path(tmp))
        for i in range(a.mutations):
            row = run_case(base, draw(a.seed, i))
            rows.append(row)
            print(f"{i:5d} {row['outcome']:13s} {row['target']:12s} {row['kind']:9s} {row['file']}: "
                  f"{row['mutation'][:60]} | {row['stderr'][-160:] if row['outcome'] != 'exit 0' else ''}".rstrip(),
                  flush=True)
    result = {"machine": info, "seed": a.seed, "seconds": round(time.perf_counter() - t0, 1),
              "summary": summarise(rows), "rows": [compact(r) for r in rows]}
    write_results(result)
    print(json.dumps(result["summary"]))
    if not a.no_docs:
        replace_section(DOC, "## Fuzzing the command line", "\n" + markdown(result))
    bad = result["summary"]["by_outcome"]
    return 1 if bad["traceback"] or bad["changed input"] else 0


if __name__ == "__main__":
    sys.exit(main())
