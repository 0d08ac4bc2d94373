"""The speed table: training steps, inference throughput, memory, and the share of matmul peak.

For the quick and the full preset, on the CPU:

* **training step**: forward, the loss, backward, clipping and AdamW on one batch (best of a few
  steps; the batch's data loading is timed apart). Its FLOPs are counted with
  ``torch.utils.flop_counter.FlopCounterMode``; divided by the step time they give the step's
  FLOP/s, compared with a plain ``torch.mm`` of the size of the model's widest layer measured in
  the same run (the CPU's own matmul throughput here).
* **inference**: model forward and post-processing (sigmoid, decode, Soft-NMS, seconds) on
  fixed test episodes whose tensors are loaded beforehand, one episode at a time against batches
  of 32. Post-processing is timed apart, and once more with a Soft-NMS that runs all episodes of
  a batch at once (:func:`soft_nms_batched` below; same detections, checked).
* **memory**: the process's peak resident set size (``resource.getrusage``) after each part.

Writes ``bench/results/speed.json`` and the "Speed" section of ``docs/benchmarks.md``.

    python bench/speed.py [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import DOC, RESULTS as RESULTS_DIR, ROOT, atomic_write_json, busy, machine, median_ms, replace_section, write_results
from convergence import RESULTS, before, key          # the whole runs' results file, read back

from fscal_edu.checkpoints import load_model
from fscal_edu.config import get_config
from fscal_edu.data.episodes import EpisodeDataset, RandomEpisodes, World, collate
from fscal_edu.losses import fscal_loss
from fscal_edu.model import FSCAL, count_parameters
from fscal_edu.postprocess import merge_detections, to_seconds
from fscal_edu.proposals import decode, tiou
from fscal_edu.runtime import configure_process
from fscal_edu.utils import seed_everything

SECTION = "## Speed"
DATA = ROOT / "data_samples" / "anet_like"


def best_of(fn, runs: int, warm_up: bool = True) -> float:
    """Seconds of the fastest of ``runs`` calls (after one warm-up): the steadiest figure on a machine
    that runs other jobs too."""
    return median_ms(fn, runs=runs, warmup=int(warm_up))[1] / 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def make_step(cfg, world: World, steps: int = 1):
    """A model, one batch of random base episodes and a function that trains one step on it;
    also the seconds that loading the batch took (its features read from disk the first time)."""
    seed_everything(0)
    model = FSCAL(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    episodes = RandomEpisodes(world, "base", cfg.data.shots, cfg.optim.batch_size * (steps + 2), cfg.data.T, cfg.data.T_S, 0)
    load = lambda i: collate([episodes[j] for j in range(i * cfg.optim.batch_size, (i + 1) * cfg.optim.batch_size)])  # noqa: E731
    t0 = time.perf_counter()
    batch = load(0)
    load_s = time.perf_counter() - t0

    def step():
        out = model(batch["query"], batch["support"])
        loss = fscal_loss(out, batch, cfg.loss)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
    return model, step, load_s


def training_step(cfg, world: World, steps: int) -> dict:
    """Time one training step of ``cfg`` and count its FLOPs."""
    model, step, load_s = make_step(cfg, world, steps)
    with FlopCounterMode(display=False) as counter:      # counts the FLOPs, and warms up
        step()
    step_s = best_of(step, steps, warm_up=False)
    return {"preset": cfg.preset, "batch": cfg.optim.batch_size, "d": cfg.model.d, "parameters": count_parameters(model),
            "step_ms": round(1000 * step_s, 1), "data_loading_ms": round(1000 * load_s, 1),
            "gflop_per_step": round(counter.get_total_flops() / 1e9, 2),
            "step_gflops": round(counter.get_total_flops() / step_s / 1e9, 2), "peak_rss_mb": round(peak_rss_mb())}


def thread_matrix(cfg, world: World, steps: int = 5) -> list:
    """Training-step time with 1 and 2 torch threads, on an idle machine and beside 2 CPU-bound
    processes (:func:`convergence.busy`)."""
    _, step, _ = make_step(cfg, world, steps)
    rows = []
    for load in (0, 2):
        with busy(load):
            for threads in (1, 2):
                configure_process(threads=threads)
                rows.append({"threads": threads, "load": load, "step_ms": round(1000 * best_of(step, steps), 1)})
    return rows


def profile_top(cfg, world: World, steps: int = 3, n: int = 12) -> list:
    """The operators that take a training step's time (``torch.profiler``, self CPU time)."""
    _, step, _ = make_step(cfg, world, steps)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 1),
             "calls_per_step": round(e.count / steps), "share": round(e.self_cpu_time_total / total, 3)}
            for e in events[:n]]


def training_runs(seeds=(0, 1, 2)) -> dict:
    """Whole quick-preset runs (bench/convergence.py, each in a fresh process as a student's would
    be): seed 0 with the thread policy on the idle machine and beside 2 CPU-bound processes, side
    by side now; one thread per seed for the test mAP against the model before (reused if done)."""
    def conv(*args):
        subprocess.run([sys.executable, str(ROOT / "bench" / "convergence.py"), *args], check=True,
                       stdout=subprocess.DEVNULL)
    conv("--seeds", "0", "--load", "0", "--fresh")
    conv("--seeds", "0", "--load", "2", "--fresh")
    conv("--seeds", *map(str, seeds), "--threads", "1")
    done = json.loads(RESULTS.read_text())
    return {"idle": done[key(0, None, 0)], "loaded": done[key(0, None, 2)],
            "seeds": [done[key(s, 1, 0)] for s in seeds], "before": before()}


def forward_mflop(cfg) -> dict:
    """MFLOPs of one episode's forward pass (B = 1), by part of the model."""
    model = FSCAL(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, cfg.data.T, cfg.data.feature_dim), torch.randn(1, cfg.data.shots, cfg.data.T_S, cfg.data.feature_dim))
    parts = {k.split(".")[1]: sum(v.values()) / 1e6 for k, v in counter.get_flop_counts().items() if k.count(".") == 1}
    return {"total": round(counter.get_total_flops() / 1e6, 1)} | {k: round(v, 1) for k, v in parts.items()}


def mm_gflops(m: int, k: int, n: int, runs: int = 10) -> float:
    """FLOP/s of a plain ``torch.mm (m, k) @ (k, n)``: 2 m k n FLOPs per call."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    return 2 * m * k * n / best_of(lambda: torch.mm(a, b), runs) / 1e9


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------

def soft_nms_batched(segments: np.ndarray, scores: np.ndarray, sigma: float, score_floor: float, top_k: int):
    """Gaussian Soft-NMS of B episodes at once: ``segments (B, N, 2)``, ``scores (B, N)``.

    The same loop as :func:`fscal_edu.postprocess.soft_nms_1d`, but every iteration picks the best
    remaining segment of *every* episode and decays all of them with one array operation, so the
    python loop runs ``top_k`` times per batch instead of per episode. Returns ``(index, score)``,
    each ``(B, top_k)``, with index -1 where an episode has nothing left.
    """
    B = len(scores)
    decay = np.exp(-tiou(segments, segments) ** 2 / sigma)                     # (B, N, N)
    s = scores.astype(np.float64)
    alive = s >= score_floor
    index, kept = np.full((B, top_k), -1), np.zeros((B, top_k))
    rows = np.arange(B)
    for k in range(top_k):
        live = alive.any(1)                                                     # (B,)
        if not live.any():
            break
        m = np.argmax(np.where(alive, s, -np.inf), 1)                           # (B,)
        index[live, k], kept[live, k] = m[live], s[rows, m][live]
        alive[rows, m] = False
        s = s * decay[rows, m]
        alive &= s >= score_floor
    return index, kept


def episode_results(batch, segments, scores, cfg, world, results):
    """Each episode of the batch through :func:`fscal_edu.postprocess.merge_detections` (Soft-NMS,
    seconds, results entries), one episode after the other, as :func:`fscal_edu.inference.predict`."""
    for b, eid in enumerate(batch["id"]):
        results[eid] = merge_detections(segments[b], scores[b], cfg, world, video=batch["video"][b],
                                        axis=cfg.data.T)


def batched_results(batch, segments, scores, cfg, world, results):
    """:func:`episode_results` with :func:`soft_nms_batched`."""
    index, kept = soft_nms_batched(segments.double().numpy(), scores.double().numpy(), cfg.post.soft_nms_sigma,
                                   cfg.post.score_floor, cfg.post.top_k)
    for b, eid in enumerate(batch["id"]):
        n = int((index[b] >= 0).sum())
        sec = to_seconds(segments[b][index[b, :n]], duration=batch["duration"][b], num_snippets=cfg.data.T,
                         meta=world.meta, feat_len=len(world.raw_features(batch["video"][b])))
        results[eid] = [{"label": "common", "score": float(s), "segment": [float(a), float(e)]}
                        for (a, e), s in zip(sec.tolist(), kept[b, :n].astype(np.float32).tolist()) if e > a]


def inference(model, world: World, episodes: list, batch_size: int, runs: int) -> dict:
    """Episodes per second, one at a time and in batches; forward and post-processing apart."""
    cfg = model.cfg
    data = EpisodeDataset(world, episodes, cfg.data.T, cfg.data.T_S)
    items = [data[i] for i in range(len(data))]                 # tensors loaded beforehand

    def batches(size):
        return [collate(items[i:i + size]) for i in range(0, len(items), size)]

    def run(bs, post):
        """Forward + post-processing of every episode in batches of ``bs``; (seconds, fwd seconds, results)."""
        results, fwd = {}, 0.0
        t0 = time.perf_counter()
        with torch.no_grad():
            for batch in batches(bs):
                t1 = time.perf_counter()
                out = model(batch["query"], batch["support"])
                fwd += time.perf_counter() - t1
                scores = torch.sigmoid(out.logits.float())                          # (B, N)
                segments = decode(out.anchors, out.deltas.float())                  # (B, N, 2)
                post(batch, segments, scores, cfg, world, results)
        return time.perf_counter() - t0, fwd, results

    row = {"preset": cfg.preset, "episodes": len(items), "batch": batch_size}
    ways = {"one_at_a_time": (1, episode_results), "batched": (batch_size, episode_results),
            "batched_soft_nms_batched": (batch_size, batched_results)}
    timings = {name: [] for name in ways}
    for rep in range(runs + 1):                                 # round robin; round 0 warms up
        for name, (bs, post) in ways.items():
            timing = run(bs, post)
            if rep:
                timings[name].append(timing)
    for name in ways:
        total, fwd, results = min(timings[name], key=lambda r: r[0])
        row[name] = {"episodes_per_s": round(len(items) / total, 1), "forward_share": round(fwd / total, 3),
                     "forward_ms_per_episode": round(1000 * fwd / len(items), 2),
                     "post_ms_per_episode": round(1000 * (total - fwd) / len(items), 2)}
        row.setdefault("_results", {})[name] = results
    same = all(json.dumps(row["_results"]["batched"][k]) == json.dumps(row["_results"]["batched_soft_nms_batched"][k])
               for k in row["_results"]["batched"])
    del row["_results"]
    row["batched_soft_nms_same_detections"] = same
    for name in ("batched", "batched_soft_nms_batched"):
        row[f"speedup_{name}"] = round(row[name]["episodes_per_s"] / row["one_at_a_time"]["episodes_per_s"], 2)
    row["peak_rss_mb"] = round(peak_rss_mb())
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    lines = ["", f"Machine: {r['machine']}. Load average (1, 5, 15 min) when it started: {r['load_average']}. "
             f"{r.get('note') or 'Times are best-of-N, the steadiest figure when other jobs share the machine.'}", "",
             "**Training step** (forward, loss, backward, clipping, AdamW; one batch of random base "
             "episodes; data loading timed apart):", "",
             "| preset | d | batch | parameters | step (ms) | data loading (ms) | GFLOP / step | GFLOP/s | "
             "share of `torch.mm` GFLOP/s | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["training"]:
        lines.append(f"| {t['preset']} | {t['d']} | {t['batch']} | {t['parameters']:,} | {t['step_ms']:.0f} | "
                     f"{t['data_loading_ms']:.0f} | {t['gflop_per_step']:.2f} | {t['step_gflops']:.1f} | "
                     f"{t['share_of_mm']:.0%} | {t['peak_rss_mb']} |")
    mm = r["matmul"]
    lines += ["", f"`torch.mm` of the widest layer's size ({mm['shape']}): {mm['gflops']:.1f} GFLOP/s; a large "
              f"square one (1024 x 1024 x 1024): {mm['square_gflops']:.1f} GFLOP/s. FLOPs counted by "
              f"`FlopCounterMode` (matmuls and convolutions, forward and backward).", "",
              "**Inference** on fixed 5-shot test episodes, tensors loaded beforehand; model forward + "
              "post-processing (sigmoid, decode, Soft-NMS, seconds):", "",
              "| preset | episodes | way | episodes/s | forward (ms / episode) | post-processing (ms / episode) "
              "| speed-up over one at a time |", "|---|---|---|---|---|---|---|"]
    names = {"one_at_a_time": "one at a time", "batched": "batches of {b}",
             "batched_soft_nms_batched": "batches of {b}, Soft-NMS of the batch at once"}
    for i in r["inference"]:
        for way, name in names.items():
            x = i[way]
            speed = f"{i['speedup_' + way]:.1f}x" if way != "one_at_a_time" else "1x"
            lines.append(f"| {i['preset']} ({'trained' if i['trained'] else 'untrained'}) | {i['episodes']} | {name.format(b=i['batch'])} | {x['episodes_per_s']:.0f} "
                         f"| {x['forward_ms_per_episode']:.2f} | {x['post_ms_per_episode']:.2f} | {speed} |")
    q = r["inference"][0]
    lines += ["", f"Batched Soft-NMS gives the same detections as the per-episode loop: "
              f"{all(i['batched_soft_nms_same_detections'] for i in r['inference'])}. Quick preset: one episode "
              f"at a time, the forward pass is {q['one_at_a_time']['forward_share']:.0%} of the time; in batches "
              f"of {q['batch']} the forward costs {q['batched']['forward_ms_per_episode']:.1f} ms per episode and "
              f"post-processing (per-episode Soft-NMS, seconds, the results dicts) "
              f"{q['batched']['post_ms_per_episode']:.1f} ms, {1 - q['batched']['forward_share']:.0%} of the time; "
              f"running Soft-NMS for the whole batch at once brings post-processing to "
              f"{q['batched_soft_nms_batched']['post_ms_per_episode']:.1f} ms per episode.", "",
              "Forward MFLOPs of one episode, by part (`FlopCounterMode`, B = 1):", "",
              "| preset | total | " + " | ".join(k for k in q["forward_mflop"] if k != "total") + " |",
              "|---|---|" + "---|" * (len(q["forward_mflop"]) - 1)]
    for i in r["inference"]:
        f = i["forward_mflop"]
        lines.append(f"| {i['preset']} | {f['total']:.0f} | " + " | ".join(f"{v:.0f}" for k, v in f.items()
                                                                          if k != "total") + " |")
    lines += ["", ANALYSIS.format(q=q, f=r["inference"][1], mm=r["matmul"])]
    lines += targets(r) + ["", f"Reproduce: `{r['command']}`", ""]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets(r: dict) -> list:
    """The speed targets (50 % of `torch.mm`, 10 ms per quick episode, 90 % of the final validation
    mAP within 60 s, at most 2.5x slower beside two busy processes, the same test mAP within 0.02),
    with a verdict computed from each figure."""
    q, f = r["inference"][0], r["inference"][1]
    lines = ["", "**Thread count and load** (quick preset, one training step, best of 5; *loaded*: two "
             "CPU-bound python processes running beside it):", "", "| threads | idle (ms) | loaded (ms) |",
             "|---|---|---|"]
    by = {(x["threads"], x["load"]): x["step_ms"] for x in r["threads_and_load"]}
    for t in (1, 2):
        lines.append(f"| {t} | {by[t, 0]:.0f} | {by[t, 2]:.0f} |")
    lines += ["", "**Where a training step's time goes** (`torch.profiler`, quick preset, self CPU time per "
              "step):", "", "| operator | ms / step | calls / step | share |", "|---|---|---|---|"]
    lines += [f"| `{x['op']}` | {x['ms_per_step']:.1f} | {x['calls_per_step']} | {x['share']:.0%} |"
              for x in r["profile"]]
    share = r["training"][0]["share_of_mm"]
    lines += ["", f"A quick-preset training step runs at {share:.0%} of this CPU's `torch.mm` GFLOP/s "
              f"(table above; FLOPs counted by `FlopCounterMode` as before; the sparse RoIAlign product is not "
              f"counted): {verdict(share >= 0.5)} (target 50 %)."]
    lat = {i["preset"]: 1000 / i["one_at_a_time"]["episodes_per_s"] for i in r["inference"]}
    lines += [f"Per-episode inference latency, one episode at a time, {r['threads']} thread(s): quick "
              f"{lat['quick']:.1f} ms ({q['one_at_a_time']['forward_ms_per_episode']:.1f} ms forward), full "
              f"{lat['full']:.1f} ms; batched: quick {q['batched']['episodes_per_s']:.0f} and full "
              f"{f['batched']['episodes_per_s']:.0f} episodes/s. Quick latency {verdict(lat['quick'] <= 10)} "
              f"(target 10 ms)."]
    c = r.get("convergence")
    if not c:
        return lines
    lines += ["", "**Whole training runs** (quick preset, 5-shot, 700 steps of 16 episodes, 4 validations "
              "included; the thread count chosen by `train()`'s policy; `bench/convergence.py`):", "",
              "| run | threads | wall time (s) | data loading | validation mAP@0.5 by wall time | time to 90 % of "
              "final (s) | test mAP@0.5 |", "|---|---|---|---|---|---|---|"]
    for name in ("idle", "loaded"):
        x = c[name]
        curve = ", ".join(f"{p['val_mAP@0.5']:.3f} @ {p['time_s']:.0f} s" for p in x["curve"])
        wait = x["data_wait_s"] / x["train_time_s"] if x.get("data_wait_s") is not None else float("nan")
        lines.append(f"| {name} | {x['threads']} | {x['wall_s']:.0f} | {wait:.1%} | {curve} | "
                     f"{x['time_to_90pct_s']} | {x['test_mAP@0.5']:.3f} |")
    idle, loaded = c["idle"], c["loaded"]
    ratio = loaded["wall_s"] / idle["wall_s"]
    new = [x["test_mAP@0.5"] for x in c["seeds"]]
    mean_new, mean_old = sum(new) / len(new), sum(c["before"]) / len(c["before"])
    lines += ["", f"- Idle: 90 % of the final validation mAP@0.5 after {idle['time_to_90pct_s']} s: "
              f"{verdict(idle['time_to_90pct_s'] is not None and idle['time_to_90pct_s'] <= 60)} (target 60 s).",
              f"- Beside two CPU-bound processes: {loaded['wall_s']:.0f} s, {ratio:.2f}x the idle run: "
              f"{verdict(ratio <= 2.5)} (target 2.5x).",
              f"- Test mAP@0.5, seeds {', '.join(str(x['seed']) for x in c['seeds'])} (one thread each): "
              f"{', '.join(f'{v:.3f}' for v in new)}, mean {mean_new:.3f}, against {mean_old:.3f} before "
              f"({', '.join(f'{v:.3f}' for v in c['before'])}): difference {mean_new - mean_old:+.3f}, "
              f"{verdict(abs(mean_new - mean_old) <= 0.02)} (target within 0.02).",
              f"- Data loading during the idle run: {idle['data_wait_s']:.1f} s of {idle['train_time_s']:.0f} s "
              f"(the world keeps resampled clips, `World.clip`)."]
    return lines


ANALYSIS = """\
**Why batching gains little on a CPU.** One episode's forward pass is {q[forward_mflop][total]:.0f} MFLOPs of \
dense work (quick preset; {f[forward_mflop][total]:.0f} for the full preset): a single episode already keeps \
one core busy, and a batch only shares the per-call overhead (python, dispatch, small element-wise kernels): \
the quick forward goes from {q[one_at_a_time][forward_ms_per_episode]:.1f} to \
{q[batched][forward_ms_per_episode]:.1f} ms per episode, the full preset's from \
{f[one_at_a_time][forward_ms_per_episode]:.0f} to {f[batched][forward_ms_per_episode]:.0f} ms. A GPU runs a \
batch's episodes in parallel (`bench/gpu.py`). The proposal MLP's first layer runs on the T \
snippets before RoIAlign (both are linear, so they commute: `FSCAL.tokens`), 12 products (T x d) @ (d x 2d) per \
episode instead of one (361 x 12 d) @ (12 d x 2d); computed the plain way, the forward was 128 MFLOPs for the \
quick preset."""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    p.add_argument("--episodes", type=int, default=64, help="test episodes for the inference timing")
    p.add_argument("--checkpoint", default=str(ROOT / "data_samples" / "checkpoints" / "full.pt"),
                   help="quick-preset model for the inference timing (an untrained one if absent)")
    p.add_argument("--no-docs", action="store_true", help="write the JSON only")
    p.add_argument("--no-convergence", action="store_true", help="skip the (minutes long) training runs")
    p.add_argument("--note", default="", help="how the machine was used during the run (goes in the docs)")
    p.add_argument("--docs-only", action="store_true", help="rewrite the docs section from speed.json")
    args = p.parse_args(argv)
    out = RESULTS_DIR / "speed.json"
    if args.docs_only:
        result = json.loads(out.read_text())
        result["note"] = args.note or result.get("note", "")
        atomic_write_json(out, result)
        replace_section(DOC, SECTION, markdown(result))
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    convergence = {} if args.no_convergence else training_runs()
    world = World(DATA)
    configs = [get_config("quick"), get_config("full")]
    matrix = thread_matrix(configs[0], world)
    configure_process(threads=args.threads)
    here = machine()                                # this process's threads; the load of the start is `load`
    top = profile_top(configs[0], world)
    training = [training_step(cfg, world, steps) for cfg, steps in zip(configs, (5, 1))]
    m, k, n = 16 * 361, 12 * 64, 128               # quick preset's proposal MLP: (B N_Q, P d) @ (P d, 2d)
    mm = {"shape": f"({m} x {k}) @ ({k} x {n})", "gflops": round(mm_gflops(m, k, n), 1),
          "square_gflops": round(mm_gflops(1024, 1024, 1024), 1)}
    for t in training:
        t["share_of_mm"] = round(t["step_gflops"] / mm["gflops"], 3)
    episodes = world.episodes("test", 5)
    infer = []
    for cfg, n, runs in zip(configs, (args.episodes, args.episodes // 2), (5, 2)):
        seed_everything(0)
        trained = cfg.preset == "quick" and Path(args.checkpoint).is_file()
        model = load_model(args.checkpoint, device="cpu") if trained else FSCAL(cfg).eval()
        infer.append(inference(model, world, episodes[:n], 32, runs) | {"trained": trained,
                                                                        "forward_mflop": forward_mflop(cfg)})
    result = {"machine": here,
              "load_average": load, "command": "python bench/speed.py " + " ".join(argv or sys.argv[1:]),
              "training": training, "matmul": mm, "inference": infer, "threads_and_load": matrix,
              "profile": top, "convergence": convergence, "threads": args.threads}
    result["command"] = result["command"].strip()
    result["note"] = args.note
    out.parent.mkdir(exist_ok=True)
    write_results(out, result)
    print(json.dumps(result, indent=1))
    if not args.no_docs:
        replace_section(DOC, SECTION, markdown(result))


if __name__ == "__main__":
    main()
