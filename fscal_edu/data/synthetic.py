"""The synthetic feature world: real video features cannot be downloaded here, so we make some.

The world is built so that few-shot common action localization is a *real* problem in it:

* **Phases.** A class is an ordered sequence of ``phases_per_class`` phase vectors drawn from a
  shared pool. An instance of the class walks through its phases in order, each phase taking a
  random share of the instance (``tempo``). A snippet inside a phase carries that phase vector.
* **Twins.** Classes come in pairs that use the *same* phases in another order. A bag-of-features
  matcher (average the snippets, compare) cannot tell twins apart; only the temporal order
  (what Dynamics-CA looks at) can.
* **Scene context.** Every video has its own scene vector, plus a slow drift, added to every
  snippet. Supports cut from other videos therefore look different from the query even for the
  same action (what QtoS Context-CA is for).
* **Distractors.** A query holds instances of the common class *and* instances of other classes
  of its split, half of them the common class's twin. A detector that finds "some action" is
  therefore wrong about half of the time: the supports are necessary.
* **Noise.** Every snippet carries Gaussian noise, larger than a phase vector, so a single
  snippet says little; a segment of them says a lot.

Every knob is a field of :class:`WorldConfig`; ``fscal-edu generate`` writes a world in the
field's formats. Same seed, same bytes.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import FscalError, check_int, check_number, read_json, where
from .features import FeatureMeta


@dataclass
class WorldConfig:
    """The knobs of the world. Norms are Euclidean norms of vectors in R^feature_dim."""

    profile: str = "anet"
    feature_dim: int = 64
    T: int = 128                      # snippets per video (features resized, ActivityNet style)
    n_base_pairs: int = 20            # twin pairs of base classes (2 classes each)
    n_val_pairs: int = 5
    n_test_pairs: int = 5
    videos_per_class: int = 15        # videos whose main class is each class
    n_phases: int = 24                # size of the shared phase pool
    phases_per_class: int = 3
    phase_norm: float = 2.0           # norm of a phase vector
    noise_norm: float = 5.0           # expected norm of the per-snippet noise
    scene_norm: float = 1.6           # norm of each video's constant scene vector
    drift_norm: float = 0.8           # norm of each video's slow scene drift
    targets: tuple = (1, 2)           # instances of the main class per video (min, max)
    distractors: tuple = (1, 2)       # instances of other classes per video (min, max)
    twin_prob: float = 0.5            # chance that a distractor is the main class's twin
    length_frac: tuple = (0.06, 0.25)  # instance length as a share of the video (min, max)
    tempo_concentration: float = 4.0  # Dirichlet concentration of phase shares (lower = freer tempo)
    duration: tuple = (30.0, 210.0)   # video duration in seconds (min, max)
    fps: float = 30.0
    # 0: features resized to T snippets per video (ActivityNet habit). > 0: one feature every
    # that many seconds (THUMOS habit: strided features, a video's length follows its duration)
    snippet_seconds: float = 0.0
    # Mechanisms that only a stage can resolve (the defaults leave the shipped world as it
    # was). twin_mode "swap": a twin differs by one swap of two neighbouring phases, a local change
    # (Dynamics-CA: coarse tokens at several granularities), instead of any reorder. scene_span
    # "phases": the scene vector lies in the span of the phase vectors, so context can look like
    # action (the Context stages). support_slack (lo, hi): each support's boundaries reach out by
    # that share of its length on each side, into background or a neighbouring instance (QtoS:
    # the query's proposals mark which support snippets matter). outlier_prob: the chance that a
    # support is an outlier, an instance of the twin class or a background stretch (supports
    # treated one by one: QtoS's independence, Dynamics-CA's "to-all").
    twin_mode: str = "reorder"
    scene_span: str = "isotropic"
    support_slack: tuple = (0.0, 0.0)
    outlier_prob: float = 0.0
    # variants_per_class: an action comes in that many variants (filmed from another side, done
    # another way), drawn per instance: variant m of a class uses phase (p + m * n_phases // V) mod
    # n_phases for each of its phases p, its twin the same shift, so twins stay twins. Supports then
    # show a mix of variants whose average matches no instance (StoQ: each proposal is scored by the
    # support snippets that resemble it; QtoS: the query marks which supports are its variant)
    variants_per_class: int = 1

    def __post_init__(self):
        for name in WORLD_RULES:        # lists (from JSON) become tuples; a bad knob names itself
            setattr(self, name, check_knob(name, getattr(self, name)))
        check_world(self)

    @property
    def n_classes(self) -> int:
        return 2 * (self.n_base_pairs + self.n_val_pairs + self.n_test_pairs)


# Each knob's type and range, checked when a WorldConfig is built and when world.json is read:
# ("int", n) an integer >= n; ("num", lo, hi) a finite number in [lo, hi] (None: open); ("pair",
# kind, lo, hi) two of those with first <= second; ("choice", a, b); ("str",).
WORLD_RULES = {
    "profile": ("str",), "feature_dim": ("int", 1), "T": ("int", 1), "n_base_pairs": ("int", 0),
    "n_val_pairs": ("int", 0), "n_test_pairs": ("int", 0), "videos_per_class": ("int", 1),
    "n_phases": ("int", 2), "phases_per_class": ("int", 0), "phase_norm": ("num", 0.0, None),
    "noise_norm": ("num", 0.0, None), "scene_norm": ("num", 0.0, None), "drift_norm": ("num", 0.0, None),
    "targets": ("pair", "int", 1, None), "distractors": ("pair", "int", 0, None),
    "twin_prob": ("num", 0.0, 1.0), "length_frac": ("pair", "num", 1e-6, 1.0),
    "tempo_concentration": ("num", 1e-6, None), "duration": ("pair", "num", 1e-3, None),
    "fps": ("num", 1e-6, None), "snippet_seconds": ("num", 0.0, None),
    "twin_mode": ("choice", "reorder", "swap"), "scene_span": ("choice", "isotropic", "phases"),
    "support_slack": ("pair", "num", 0.0, None), "outlier_prob": ("num", 0.0, 1.0),
    "variants_per_class": ("int", 1),
}


def check_knob(name: str, value, *, file=None, field: str | None = None):
    """``value`` of the knob ``name`` checked against :data:`WORLD_RULES` (a pair as a tuple), else
    an :class:`FscalError` naming ``file`` and ``field`` (default: the knob's name)."""
    kind, *args = WORLD_RULES[name]
    field = field or name
    if kind == "int":
        return check_int(value, at_least=args[0], field=field, file=file)
    if kind == "num":             # the value itself is kept (a world's files stay byte-exact)
        check_number(value, low=args[0], high=args[1], field=field, file=file)
        return value
    if kind == "pair":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise FscalError(f"{where(file=file, field=field)}: must be a pair [min, max], got {value!r:.60}")
        sub, lo, hi = args
        for v in value:
            if sub == "int":
                check_int(v, at_least=lo, field=field, file=file)
            else:
                check_number(v, low=lo, high=hi, field=field, file=file)
        pair = tuple(value)
        if pair[0] > pair[1]:
            raise FscalError(f"{where(file=file, field=field)}: need min <= max, got {list(value)}")
        return pair
    if not isinstance(value, str) or (kind == "choice" and value not in args):
        allowed = f"one of {tuple(args)}" if kind == "choice" else "a string"
        raise FscalError(f"{where(file=file, field=field)}: must be {allowed}, got {value!r:.60}")
    return value


def read_world_json(path) -> dict:
    """``world.json`` read and checked (an object; its ``info`` and ``info.config`` objects; every
    knob of ``info.config`` in range; ``info.twin`` names to names): the parsed file, or one
    :class:`FscalError` naming the file and the field, before anything is built from it."""
    raw = read_json(path, "world.json")
    if not isinstance(raw, dict):
        raise FscalError(f"{where(file=path, field='world.json')}: must be an object "
                         f"{{\"info\": ..., \"statistics\": ...}}, got a {type(raw).__name__}")
    info = raw.get("info", {})
    if not isinstance(info, dict):
        raise FscalError(f"{where(file=path, field='info')}: must be an object, got {info!r:.60}")
    for key in ("config", "twin"):
        if not isinstance(info.get(key, {}), dict):
            raise FscalError(f"{where(file=path, field=f'info.{key}')}: must be an object, got {info[key]!r:.60}")
    for name, value in info.get("config", {}).items():
        if name in WORLD_RULES:
            check_knob(name, value, file=path, field=f"info.config.{name}")
    for a, b in info.get("twin", {}).items():
        if not isinstance(b, str):
            raise FscalError(f"{where(file=path, field=f'info.twin.{a}')}: must be a class name, got {b!r:.60}")
    return raw


def check_world(cfg: WorldConfig) -> None:
    """The knobs against each other (each in its own range already)."""
    for field in ("n_base_pairs", "n_val_pairs", "n_test_pairs"):
        if getattr(cfg, field) < 2:
            raise FscalError(f"{where(field=field)}: each split needs at least 2 twin pairs (distractors "
                             f"that are not the twin come from another pair), got {getattr(cfg, field)}")
    if not 2 <= cfg.phases_per_class <= cfg.n_phases:
        raise FscalError(f"{where(field='phases_per_class')}: need 2 <= phases_per_class <= n_phases "
                         f"= {cfg.n_phases} (a twin reorders the phases), got {cfg.phases_per_class}")
    if not 1 <= cfg.variants_per_class <= cfg.n_phases:
        raise FscalError(f"{where(field='variants_per_class')}: need 1 <= variants_per_class <= n_phases "
                         f"= {cfg.n_phases}, got {cfg.variants_per_class}")
    most = cfg.targets[1] + cfg.distractors[1]
    if most * cfg.length_frac[0] >= 0.9:
        raise FscalError(f"{where(field='length_frac')}: {most} instances of at least "
                         f"{cfg.length_frac[0]} of the video cannot fit in 90% of it")


PROFILES = {
    # ActivityNet-like: few, long instances (see data_samples/README.md for the comparison).
    "anet": WorldConfig(),
    # THUMOS-like: many short instances per video, longer videos, fewer classes.
    # THUMOS-like: long videos with strided features (one every 2 s), many short instances,
    # fewer classes; small enough to ship (data_samples/thumos_like).
    "thumos": WorldConfig(profile="thumos", feature_dim=32, n_base_pairs=10, n_val_pairs=2, n_test_pairs=2,
                          videos_per_class=5, noise_norm=3.5, targets=(3, 8), distractors=(2, 5),
                          length_frac=(0.01, 0.035), duration=(480.0, 1440.0), snippet_seconds=2.0),
    # Long instances in long videos: strided features at one row per second, videos of 6-15
    # minutes holding 1-3 instances of about 1-3 minutes (15-45 % of the video): most instances are
    # longer than half a window of 128 rows. Generated at run time (bench/long_instances.py), not shipped.
    "long": WorldConfig(profile="long", feature_dim=32, n_base_pairs=10, n_val_pairs=2, n_test_pairs=2,
                        videos_per_class=5, targets=(1, 2), distractors=(0, 1), length_frac=(0.1, 0.22),
                        duration=(360.0, 900.0), snippet_seconds=1.0),
    # ActivityNet with strided features (e.g. TSP, one row per 16 frames): videos of 30-210 s at two
    # rows per second, 1-2 instances whose length is a wide share of the video (median about a
    # third, up to most of it), as in ActivityNet-1.3. Generated at run time, not shipped.
    "anet_strided": WorldConfig(profile="anet_strided", feature_dim=32, n_base_pairs=10, n_val_pairs=2,
                                n_test_pairs=2, videos_per_class=8, targets=(1, 1), distractors=(0, 1),
                                length_frac=(0.03, 0.85), snippet_seconds=0.5),
}


# knobs added after the shipped anet world: left out of world.json at these values (byte-exact)
LATER_KNOBS = {"snippet_seconds": 0.0, "twin_mode": "reorder", "scene_span": "isotropic",
               "support_slack": (0.0, 0.0), "outlier_prob": 0.0, "variants_per_class": 1}


def episode_knobs(cfg: WorldConfig) -> dict:
    """The knobs that shape a world's episodes (fixed and training), as :func:`sample_episode` takes them."""
    return {"support_slack": tuple(cfg.support_slack), "outlier_prob": float(cfg.outlier_prob)}


def resolve_config(cfg: WorldConfig | str) -> WorldConfig:
    """A profile name or a :class:`WorldConfig`, checked: a clear error instead of a crash or a hang.

    Each split needs two twin pairs (a distractor that is not the twin comes from another pair),
    a class needs two phases (so that its twin has another order), and the most instances a video
    can hold, each at its shortest, must fit in 90% of the video (the placement redraws lengths
    until they fit).
    """
    if isinstance(cfg, str):
        if cfg not in PROFILES:
            raise FscalError(f"{where(field='profile')}: unknown profile {cfg!r}; "
                             f"use one of {sorted(PROFILES)}")
        return PROFILES[cfg]                 # checked when built
    if not isinstance(cfg, WorldConfig):
        raise FscalError(f"{where(field='profile')}: must be a profile's name or a WorldConfig, got {cfg!r:.60}")
    for name in WORLD_RULES:                 # again: a knob may have been set after it was built
        check_knob(name, getattr(cfg, name))
    check_world(cfg)
    return cfg


def make_classes(cfg: WorldConfig, rng: np.random.Generator):
    """Class names, each class's phase order, twin of each class, and the split of each class."""
    names, phases, twin, split = [], [], {}, {}
    counts = {"base": cfg.n_base_pairs, "val": cfg.n_val_pairs, "test": cfg.n_test_pairs}
    pair = 0
    for split_name, n_pairs in counts.items():
        for _ in range(n_pairs):
            order = rng.choice(cfg.n_phases, size=cfg.phases_per_class, replace=False)
            other = order.copy()
            if cfg.twin_mode == "swap":           # the twin: two neighbouring phases swapped
                j = int(rng.integers(cfg.phases_per_class - 1))
                other[[j, j + 1]] = order[[j + 1, j]]
            while np.array_equal(other, order):   # the twin: same phases, another order
                other = rng.permutation(order)
            a, b = f"action_{pair:02d}a", f"action_{pair:02d}b"
            names += [a, b]
            phases += [order, other]
            twin[a], twin[b] = b, a
            split[a] = split[b] = split_name
            pair += 1
    return names, dict(zip(names, phases)), twin, split


def _place(lengths, T, rng):
    """Place segments of the given lengths (snippets) without overlap in [0, T], random gaps."""
    free = T - sum(lengths)
    if free < 0:
        return None
    order = rng.permutation(len(lengths))
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * free
    starts, pos = np.empty(len(lengths)), 0.0
    for j, i in enumerate(order):
        pos += gaps[j]
        starts[i] = pos
        pos += lengths[i]
    return np.stack([starts, starts + np.asarray(lengths)], 1)


def render_video(cfg, instances, phase_pool, class_phases, rng, T=None):
    """Features ``(T, C)`` of one video holding ``instances`` = [(label, (start, end))] in snippets
    (``T``: the video's snippets, ``cfg.T`` for resized features)."""
    C, T = cfg.feature_dim, T or cfg.T
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)   # noqa: E731
    if cfg.scene_span == "phases":   # a random mix of the phase vectors: context that looks like action
        scene = cfg.scene_norm * unit(rng.standard_normal(len(phase_pool)) @ phase_pool)   # (C,)
    else:
        scene = cfg.scene_norm * unit(rng.standard_normal(C))                # (C,)
    # slow drift: a random direction whose amplitude follows one smooth cosine over the video
    phase0, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
    t = (np.arange(T) + 0.5) / T
    drift = cfg.drift_norm * np.cos(2 * np.pi * freq * t + phase0)[:, None] * unit(rng.standard_normal(C))
    x = scene + drift + rng.standard_normal((T, C)) * cfg.noise_norm / np.sqrt(C)  # (T, C)
    centres = np.arange(T) + 0.5
    for label, (s, e) in instances:
        order = class_phases[label]
        if cfg.variants_per_class > 1:   # this instance's variant: every phase shifted in the pool
            m = int(rng.integers(cfg.variants_per_class))
            order = (np.asarray(order) + m * (cfg.n_phases // cfg.variants_per_class)) % cfg.n_phases
        shares = rng.dirichlet(np.full(len(order), cfg.tempo_concentration))
        bounds = s + np.concatenate([[0], np.cumsum(shares)]) * (e - s)
        for p, lo, hi in zip(order, bounds[:-1], bounds[1:]):
            x[(centres >= lo) & (centres < hi)] += phase_pool[p]
    return x


def generate_world(cfg: WorldConfig | str = "anet", seed: int = 0):
    """Build the world in memory: ``(features, annotations, splits, info)``.

    ``features``: {video_id: float32 (T, C)}; ``annotations``: ActivityNet JSON dict (seconds);
    ``splits``: {"base", "val", "test"}; ``info``: the config and class structure, for teaching.
    """
    cfg = resolve_config(cfg)
    rng = np.random.default_rng(seed)
    names, class_phases, twin, split = make_classes(cfg, rng)
    phase_pool = rng.standard_normal((cfg.n_phases, cfg.feature_dim))
    phase_pool *= cfg.phase_norm / np.linalg.norm(phase_pool, axis=1, keepdims=True)
    by_split = {s: [c for c in names if split[c] == s] for s in ("base", "val", "test")}
    subset_of = {"base": "training", "val": "validation", "test": "testing"}

    features, database = {}, {}
    for c in names:
        others = [o for o in by_split[split[c]] if o not in (c, twin[c])]
        for v in range(cfg.videos_per_class):
            vid = f"{split[c]}_{c}_{v:02d}"
            n_t = rng.integers(cfg.targets[0], cfg.targets[1] + 1)
            n_d = rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)
            labels = [c] * n_t + [twin[c] if rng.random() < cfg.twin_prob else others[rng.integers(len(others))]
                                  for _ in range(n_d)]
            if cfg.snippet_seconds:   # strided: the duration sets the video's snippet count
                T = int(rng.uniform(*cfg.duration) // cfg.snippet_seconds)
                duration = T * cfg.snippet_seconds
            else:
                T = cfg.T
            while True:   # draw lengths until they fit (with room to spare)
                lengths = rng.uniform(*cfg.length_frac, size=len(labels)) * T
                segs = _place(lengths, T, rng) if lengths.sum() < 0.9 * T else None
                if segs is not None:
                    break
            instances = list(zip(labels, segs))
            features[vid] = render_video(cfg, instances, phase_pool, class_phases, rng, T).astype(np.float32)
            if not cfg.snippet_seconds:
                duration = float(np.round(rng.uniform(*cfg.duration), 2))
            to_sec = duration / T       # strided: snippet u covers [u, u + 1) * snippet_seconds
            anns = sorted(({"label": lab, "segment": [round(float(s) * to_sec, 3), round(float(e) * to_sec, 3)]}
                           for lab, (s, e) in instances), key=lambda a: a["segment"][0])
            database[vid] = {"subset": subset_of[split[c]], "duration": duration, "fps": cfg.fps,
                             "annotations": anns}
    annotations = {"version": f"fscal-edu synthetic {cfg.profile} seed {seed}",
                   "taxonomy": [{"nodeName": c, "twin": twin[c], "phases": [int(p) for p in class_phases[c]]}
                                for c in names],
                   "database": database}
    splits = {k: list(v) for k, v in by_split.items()}
    config = dataclasses.asdict(cfg)
    for knob, default in LATER_KNOBS.items():   # at their defaults: world.json as before they existed
        if config[knob] == default:
            del config[knob]
    info = {"config": config, "seed": seed, "twin": twin,
            "class_phases": {c: [int(p) for p in class_phases[c]] for c in names}}
    return features, annotations, splits, info


def common_share(annotations: dict, episodes: list[dict]) -> float:
    """Mean over episodes of the share of the query's action time that belongs to the common class.

    A detector that finds "some action" and ignores the supports is right about this share of
    the time it marks; the rest is distractors.
    """
    shares = []
    for ep in episodes:
        anns = annotations["database"][ep["query"]]["annotations"]
        lens = np.array([a["segment"][1] - a["segment"][0] for a in anns])
        mine = np.array([a["label"] == ep["label"] for a in anns])
        shares.append(lens[mine].sum() / lens.sum())
    return float(np.mean(shares))


def world_statistics(annotations: dict) -> dict:
    """Instances per video, instance length / video length, action coverage, videos with several
    classes and durations: the statistics that compare a world with real ActivityNet or THUMOS14
    annotations (`data_samples/README.md`), for any ActivityNet-format dict."""
    db = annotations["database"]
    durs, per_video, ratios, coverage, multi = [], [], [], [], []
    for vid, v in db.items():
        anns = v["annotations"]
        d = v["duration"]
        lens = [a["segment"][1] - a["segment"][0] for a in anns]
        durs.append(d)
        per_video.append(len(anns))
        ratios += [ln / d for ln in lens]
        coverage.append(sum(lens) / d)
        multi.append(len({a["label"] for a in anns}) > 1)
    q = lambda a, p: float(np.percentile(a, p))   # noqa: E731
    return {
        "videos": len(db), "instances": int(sum(per_video)),
        "classes": len({a["label"] for v in db.values() for a in v["annotations"]}),
        "duration_median": q(durs, 50), "duration_p10": q(durs, 10), "duration_p90": q(durs, 90),
        "instances_per_video": float(np.mean(per_video)),
        "share_single_instance": float(np.mean(np.asarray(per_video) == 1)),
        "length_ratio_median": q(ratios, 50), "length_ratio_p10": q(ratios, 10),
        "length_ratio_p90": q(ratios, 90),
        "coverage_median": q(coverage, 50),
        "share_multi_class": float(np.mean(multi)),
    }


def write_world(out, cfg: WorldConfig | str = "anet", seed: int = 0, *,
                n_test_episodes: int = 300, n_val_episodes: int = 100, overwrite: bool = False) -> dict:
    """Generate and write a world in the field's formats; returns its statistics.

    ``out`` holds none of a world's files, or ``overwrite`` moves them aside (``OUT.replaced-N``);
    it never lies inside another dataset (:func:`fscal_edu.outputs.check_output`)."""
    from ..outputs import check_output, move_aside
    from .annotations import save_annotations, save_splits
    from .sampling import sample_episodes, save_episodes      # not .episodes: it reads world.json with this module

    cfg = resolve_config(cfg)
    out = check_output(out, field="out", replace_dataset=True, overwrite=overwrite)
    if out.exists() and not out.is_dir():
        raise FscalError(f"{where(file=out, field='out')}: is a file; give a folder")
    held = world_files(out)
    if held and not overwrite:
        raise FscalError(f"{where(file=out, field='out')}: already holds a world ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}); give a new folder, or pass --overwrite "
                         f"(overwrite=True: the old one is moved aside to {out.name}.replaced-N)")
    features, annotations, splits, info = generate_world(cfg, seed)
    if held:
        move_aside(out, field="out", what="the world that was there")
    (out / "features").mkdir(parents=True, exist_ok=True)
    for vid, x in features.items():
        np.save(out / "features" / f"{vid}.npy", x.astype(np.float16))
    if cfg.snippet_seconds:      # one feature of snippet_seconds every snippet_seconds
        frames = int(round(cfg.snippet_seconds * cfg.fps))
        FeatureMeta(feature_dim=cfg.feature_dim, fps=cfg.fps, feat_stride=frames, num_frames=frames).save(out)
    else:
        FeatureMeta(feature_dim=cfg.feature_dim, resize_length=cfg.T).save(out)
    save_annotations(annotations, out / "annotations.json")
    save_splits(splits, out / "splits.json")
    stats = world_statistics(annotations)
    for split, n in (("val", n_val_episodes), ("test", n_test_episodes)):
        for shots in (1, 5):
            eps = sample_episodes(annotations, splits[split], shots, n, seed=seed * 1000 + shots,
                                  prefix=f"{split}{shots}shot", knobs=episode_knobs(cfg))
            save_episodes(eps, out / f"episodes_{split}_{shots}shot.json")
            stats[f"common_share_{split}_{shots}shot"] = common_share(annotations, eps)
    (out / "world.json").write_text(json.dumps({"info": info, "statistics": stats}, indent=1) + "\n")
    return stats


def world_files(out) -> list[str]:
    """The names in ``out`` that :func:`write_world` writes (a world, or part of one)."""
    names = ["features", "features.json", "annotations.json", "splits.json", "world.json"]
    return [n for n in names if (Path(out) / n).exists()] + sorted(p.name for p in Path(out).glob("episodes_*.json"))
