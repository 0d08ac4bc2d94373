"""Run directories: who owns them, what a resume must match, and the data check before step 1.

A run directory ``RUN`` holds ``config.json`` (the config, the seed, the data, the thread count),
``metrics.jsonl`` (one record per step), ``last.pt`` (everything an exact resume needs, *and every
record logged so far*) and ``best.pt``. The rules:

* **A run directory is owned.** Training into a directory that already holds a run is an error
  unless the caller resumes it (``resume=True``, ``--resume``) or replaces it (``overwrite=True``,
  ``--overwrite``: the old directory is moved aside to ``RUN.replaced-N``, never deleted).
* **One training per run directory at a time**: :func:`lock_run` takes the folder's lock
  (:class:`~fscal_edu.outputs.RunLock`, naming its holder; a stale one left by a killed run is
  reported and taken over) and the run keeps it until :meth:`Run.release`, on every exit path.
* **A run directory is never among the dataset's files**, nor holds the data (refused).
* **Nothing is written before the inputs are validated**: :func:`open_run` only reads and checks,
  :func:`validate_training_data` reads every feature file the run will touch, and only then
  :meth:`Run.begin` writes.
* **A resume checks what it resumes**: the checkpoint's config, seed, data directory and feature
  width must equal the request's (an error lists the fields that differ); the thread count is
  the one stored in the run (it is part of the numbers a CPU run produces).
* **A kill at any instant leaves a resumable, consistent pair.** ``last.pt`` is written atomically
  and carries every record up to its step; a resume rewrites ``metrics.jsonl`` from it, so a torn
  last line, a lost record or a missing log cannot survive a resume.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .outputs import RUN_FILES, RunLock, check_output, move_aside, run_files  # noqa: F401 (names of this module too)
from .utils import FscalError, atomic_write_text, where

# the name bench scripts knew; the one home of atomic writes is fscal_edu.utils

RUN_KEYS = ("seed", "dataset", "threads")     # what config.json holds beside the config sections


# ---------------------------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------------------------

def _flat(d: dict, prefix: str = "") -> dict:
    """``{"data": {"shots": 5}}`` -> ``{"data.shots": 5}`` (lists and tuples compare as lists)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(stored: dict, requested: dict) -> list[str]:
    """``["optim.steps: run 20, request 40", ...]`` for every field whose value differs."""
    a, b = _flat(stored), _flat(requested)
    return [f"{k}: run {a.get(k, '(absent)')!r}, request {b.get(k, '(absent)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def run_config(cfg: Config, *, seed: int, dataset, threads: int | None) -> dict:
    """What ``config.json`` holds: the config sections, then ``seed``, ``dataset`` (the data
    directory, resolved) and ``threads`` (torch's intra-op thread count, None = torch's default)."""
    return {**cfg.to_dict(), "seed": seed, "dataset": str(Path(dataset).resolve()), "threads": threads}


def read_run_config(path) -> dict:
    """``config.json`` of a run, with a clear error for a missing or corrupt file."""
    from .utils import read_json
    raw = read_json(path, "the run's config.json")
    if not isinstance(raw, dict):
        raise FscalError(f"{where(file=path, field='config')}: expected a JSON object")
    return raw


def config_from_options(*, out, resume: bool, preset=None, shots=None, steps=None, ablate=None,
                        seed=None, query_mode=None, window_stride=None, window_pool=None) -> tuple[Config, int]:
    """The config and seed that ``fscal-edu train`` options ask for (defaults: quick, 5 shots, seed 0).

    A bare ``--resume`` (none of ``--preset --shots --steps --ablate --seed``) asks for the run's
    own config and seed, read from ``config.json``; with any of them, the request is built from
    the options and :func:`open_run` checks it against the run.
    """
    from .config import get_config
    bare = (preset is None and shots is None and steps is None and not ablate and seed is None
            and query_mode is None and window_stride is None and window_pool is None)
    if resume and bare and (Path(out) / "config.json").is_file():
        path = Path(out) / "config.json"
        raw = read_run_config(path)
        try:
            cfg = Config.from_dict({k: v for k, v in raw.items() if k not in RUN_KEYS})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FscalError(f"{where(file=path, field='config')}: {e}") from None
        return cfg, int(raw.get("seed") or 0)
    if resume and bare and (Path(out) / "last.pt").is_file():      # config.json lost: last.pt knows
        return _config_of_checkpoint(Path(out) / "last.pt")
    extra = {k: v for k, v in (("steps", steps), ("query_mode", query_mode), ("window_stride", window_stride),
                               ("window_pool", window_pool)) if v is not None}
    cfg = get_config(preset or "quick", ablate=ablate or [], shots=5 if shots is None else shots, **extra)
    return cfg, 0 if seed is None else seed


def _config_of_checkpoint(path: Path) -> tuple[Config, int]:
    """The config and seed a run's ``last.pt`` records (a bare ``--resume`` without config.json)."""
    from .checkpoints import checkpoint_config, read_checkpoint
    state = read_checkpoint(path)
    seed = ((state.get("extra") or {}).get("run") or {}).get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FscalError(f"{where(file=path, field='seed')}: the run's config.json is missing and its "
                         f"last.pt does not record the seed; resume with the run's options (--preset, "
                         f"--seed, ...)")
    return checkpoint_config(state, path), seed


# ---------------------------------------------------------------------------------------------
# Opening a run: ownership and resume checks (reads only)
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run directory about to be trained into; :func:`open_run` makes one, :meth:`begin` writes."""

    out: Path
    config: dict                              # run_config(...) of this run
    resume: bool = False
    overwrite: bool = False
    state: dict | None = None                 # the last.pt to continue from (resume only)
    records: list = field(default_factory=list)
    elapsed_s: float = 0.0                    # wall time of earlier sessions (from last.pt)
    moved_to: Path | None = None
    lock: RunLock | None = None               # held from begin() until release()
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state else 0

    @property
    def best(self) -> float:
        return float(self.state["best"]) if self.state else -1.0

    @property
    def threads(self) -> int | None:
        return self.config.get("threads")

    @property
    def log_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def begin(self) -> "Run":
        """Write the run's start: move an old run aside (``overwrite``), ``config.json``, and
        ``metrics.jsonl`` (empty, or rewritten from ``last.pt``'s records when resuming).
        Call it holding the folder's lock (:func:`lock_run`)."""
        if self.overwrite and run_files(self.out):
            self.moved_to = move_aside(self.out, field="out", what="the run that was there")
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", json.dumps(self.config, indent=1) + "\n")
        atomic_write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._t0 = time.perf_counter()
        return self

    def release(self) -> None:
        """Let go of the run folder's lock (on every exit path of a run; nothing if not held)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def log(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl`` (and to the records the next last.pt carries)."""
        self.records.append(record)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint_extra(self, record: dict | None = None) -> dict:
        """``extra`` for ``last.pt``: the run's identity, every record so far (plus ``record``, the
        one being completed) and the wall time so far, so that a resume can rebuild the log."""
        records = self.records + ([record] if record is not None else [])
        return {"run": {k: self.config.get(k) for k in RUN_KEYS}, "metrics": records,
                "time_s": round(self.elapsed(), 2)}

    def elapsed(self) -> float:
        """Wall time of the run so far, over all its sessions."""
        return self.elapsed_s + time.perf_counter() - self._t0


def open_run(out, cfg: Config, *, seed: int, dataset, threads: int | None = None, resume: bool = False,
             overwrite: bool = False, locked: bool = False) -> Run:
    """Check that ``out`` may be trained into, and, for a resume, that it is this very run.

    Reads only. Errors (:class:`FscalError`, naming the file and the field): ``out`` is a file;
    ``out`` holds a run and neither ``resume`` nor ``overwrite`` is given; ``resume`` with nothing
    to resume; an unreadable or empty ``last.pt``; a checkpoint whose config, seed, data directory
    or feature width differs from the request (all differing fields are listed). A resume takes
    the thread count stored in the run (``threads`` is then ignored). Also refused: ``out`` on or
    inside a dataset directory or holding ``dataset`` (:func:`~fscal_edu.outputs.check_output`),
    and a folder whose lock another process holds (unless ``locked``: the caller holds it).
    """
    out = Path(out)
    if resume and overwrite:
        raise FscalError(f"{where(file=out, field='out')}: resume and overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise FscalError(f"{where(file=out, field='out')}: exists and is not a directory")
    check_output(out, field="out", inputs=[dataset], overwrite=overwrite and bool(run_files(out)), run_ok=True)
    if not locked:                            # another training at work here: say so first
        RunLock(out).check_free()
    request = run_config(cfg, seed=seed, dataset=dataset, threads=threads)
    present = run_files(out)
    if not resume:
        if present and not overwrite:
            raise FscalError(f"{where(file=out, field='out')}: already holds a run ({', '.join(present)}); "
                             f"continue it with --resume (resume=True) or replace it with --overwrite "
                             f"(overwrite=True)")
        return Run(out, request, overwrite=overwrite)
    if not present:
        raise FscalError(f"{where(file=out, field='out')}: nothing to resume (no last.pt, no config.json); "
                         f"train without --resume to start this run")
    stored_cfg, stored_run, state, records, elapsed = None, {}, None, [], 0.0
    if (out / "last.pt").exists():
        from .checkpoints import read_checkpoint
        path = out / "last.pt"
        state = read_checkpoint(path)
        missing = [k for k in ("model", "optimizer", "scheduler", "step", "best", "torch_rng") if k not in state]
        if missing:
            raise FscalError(f"{where(file=path, field=missing[0])}: not a resumable checkpoint "
                             f"(lacks {', '.join(missing)}; best.pt-style files cannot be resumed)")
        stored_cfg, extra = state.get("config"), state.get("extra") or {}
        stored_run = dict(extra.get("run") or {})
        records = extra.get("metrics")
        elapsed = float(extra.get("time_s") or 0.0)
        if records is None:                       # a checkpoint of an older version: read the log
            records = _legacy_records(out / "metrics.jsonl", int(state["step"]))
        if not stored_run and (out / "config.json").is_file():
            stored_run = {k: v for k, v in read_run_config(out / "config.json").items() if k in RUN_KEYS}
        source = path
    else:                                          # killed before the first checkpoint: start again
        raw = read_run_config(out / "config.json")
        stored_cfg = {k: v for k, v in raw.items() if k not in RUN_KEYS}
        stored_run = {k: v for k, v in raw.items() if k in RUN_KEYS}
        source = out / "config.json"
    try:
        stored = Config.from_dict(stored_cfg).to_dict()
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FscalError(f"{where(file=source, field='config')}: {e}") from None
    request["threads"] = stored_run.get("threads", threads)     # the run's thread count wins
    mine, asked = dict(stored), {k: v for k, v in request.items() if k not in RUN_KEYS}
    for k in ("seed", "dataset"):
        if k in stored_run:
            mine[k], asked[k] = stored_run[k], request[k]
    diffs = [d for d in config_differences(mine, asked) if not d.split(":")[0].endswith("threads")]
    if diffs:
        raise FscalError(f"{where(file=source, field='config')}: this run cannot be resumed with "
                         f"other settings; {len(diffs)} field(s) differ: {'; '.join(diffs)} "
                         f"(resume with the run's own options, or train into another --out)")
    return Run(out, request, resume=True, state=state, records=list(records), elapsed_s=elapsed)


def lock_run(run: Run, cfg: Config, *, seed: int) -> Run:
    """Take the lock of ``run``'s folder (:class:`~fscal_edu.outputs.RunLock`: one training per
    folder at a time), check the folder again under it (another process may have written there
    since :func:`open_run` looked), then write the run's start (:meth:`Run.begin`). The returned
    run holds the lock until :meth:`Run.release`; on an error here it is already released."""
    lock = RunLock(run.out).acquire()
    try:
        again = open_run(run.out, cfg, seed=seed, dataset=run.config["dataset"], threads=run.threads,
                         resume=run.resume, overwrite=run.overwrite, locked=True)
        again.lock = lock
        return again.begin()
    except BaseException:
        lock.release()
        raise


def _legacy_records(path: Path, step: int) -> list[dict]:
    """The records of ``metrics.jsonl`` up to ``step`` (checkpoints written before the records
    travelled inside last.pt); a torn line after ``step`` is dropped, one before it is an error."""
    if not path.is_file():
        raise FscalError(f"{where(file=path, field='path')}: the run's metrics log is missing and "
                         f"its last.pt (an older format) does not carry the records")
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
            if not isinstance(record.get("step"), int):
                raise ValueError("no integer 'step'")
        except (ValueError, AttributeError) as e:
            if len(records) >= step:              # a torn line past the checkpoint: redone anyway
                break
            raise FscalError(f"{where(file=path, field=f'line {i}')}: not a metrics record ({e})") from None
        if record["step"] <= step:
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# The data check before step 1
# ---------------------------------------------------------------------------------------------

def check_class_counts(world, classes, shots: int) -> None:
    """Every class can make a ``shots``-shot episode whichever of its videos is the query."""
    from .data.annotations import instances_by_class
    by_class = instances_by_class(world.annotations)
    ann = world.root / "annotations.json"
    for c in classes:
        clips = by_class.get(c, [])
        per_video: dict[str, int] = {}
        for v, _ in clips:
            per_video[v] = per_video.get(v, 0) + 1
        for v, n in sorted(per_video.items()):
            if len(clips) - n < shots:
                raise FscalError(f"{where(file=ann, video=v, field='label')}: class {c!r} has {len(clips)} "
                                 f"clip(s) in {len(per_video)} video(s); an episode whose query is this "
                                 f"video finds only {len(clips) - n} clip(s) in other videos, fewer than "
                                 f"K = {shots}")


def training_videos(world, cfg: Config, val_episodes: list[dict]) -> list[str]:
    """Every video a run reads: those holding a base class, and the fixed val episodes' videos."""
    base = set(world.splits["base"])
    videos = {v for v, entry in world.annotations["database"].items()
              if any(a["label"] in base for a in entry["annotations"])}
    for ep in val_episodes:
        videos |= {ep["query"], *(c["video"] for c in ep["support"])}
    return sorted(videos)


def validate_training_data(world, cfg: Config, *, progress: bool = True) -> None:
    """Everything a run will read, checked once before its first step (errors name file, video, field).

    * the base split is not empty and every base class can make a K-shot episode from any of its
      videos (:func:`check_class_counts`);
    * the fixed val episodes (``episodes_val_<K>shot.json``) exist, have exactly K supports, and
      belong to the val split (:meth:`World.episodes`);
    * every feature file of a base-class video or a val episode reads as ``(T, C)`` with the
      right width and finite values (read once, so training reuses the cache).
    """
    from tqdm.auto import tqdm
    shots = cfg.data.shots
    if not world.splits.get("base"):
        raise FscalError(f"{where(file=world.root / 'splits.json', field='base')}: no base classes to "
                         f"train on")
    check_class_counts(world, world.splits["base"], shots)
    val = world.episodes("val", shots)
    for v in tqdm(training_videos(world, cfg, val), desc="check data", disable=not progress, leave=False):
        world.features(v)
