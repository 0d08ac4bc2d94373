"""Probes of a trained model: do its three cross-attention stages carry the supports?

No training. On the fixed test episodes of ``data_samples/anet_like`` (300 5-shot episodes) the
checkpoint is scored (mAP@0.5, the FS-CAL protocol) as trained, with each subset of its stages
skipped at inference (``FSCAL.forward(skip=...)``), and with its supports edited: played
backwards, their snippets shuffled, replaced by K clips of the episode's twin class or of another
(non-twin) test class. Each difference to "as trained" comes with a paired bootstrap over the
episodes (95 % interval). Then, per stage, on all the episodes: the attention's entropy against
its maximum, how far the stage's weights moved from their start, and the share of the stage's
added term that is one vector shared by all its targets, trained and at initialisation
(``fscal_edu.diagnostics``). Writes ``bench/results/probes.json`` and the "Probes of a trained
model" section of ``docs/benchmarks.md``.

    python bench/probes.py --threads 1                      # full.pt, and blind.pt for reference
    python bench/probes.py --checkpoint runs/x/best.pt --reference none --no-docs
    python bench/probes.py --docs-only                      # rebuild the section from the JSON
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import DOC, RESULTS, ROOT, machine, replace_section, write_results

from fscal_edu import stages
from fscal_edu.checkpoints import load_model
from fscal_edu.data.episodes import EpisodeDataset, World, collate
from fscal_edu.diagnostics import (EditedSupports, replace_supports, reverse_snippets, shuffle_snippets,
                                   stage_probes, weight_drift)
from fscal_edu.evaluation import evaluate_detection, fscal_ground_truth, fscal_predictions
from fscal_edu.inference import predict
from fscal_edu.model import FSCAL
from fscal_edu.runtime import configure_process
from fscal_edu.utils import read_json

SECTION = "## Probes of a trained model"
DATA = ROOT / "data_samples" / "anet_like"
CHECKPOINTS = ROOT / "data_samples" / "checkpoints"


def title(stage: str) -> str:
    """The stage's title in tables (``"QtoS Context-CA"``), from the stage registry."""
    return stages.get(stage).title


def map50(episodes: list[dict], annotations: dict, results: dict) -> float:
    """Pooled mAP@0.5 of the FS-CAL protocol (``evaluate_fscal``'s headline number)."""
    return evaluate_detection(fscal_ground_truth(episodes, annotations, pooled=True),
                              fscal_predictions(results, episodes, pooled=True), [0.5])["mAP@0.5"]


def paired_bootstrap(episodes, annotations, base: dict, other: dict, n: int, seed: int = 0) -> list | None:
    """95 % interval of ``mAP@0.5(other) - mAP@0.5(base)`` over ``n`` resamples of the episodes
    (the same resample for both: the probes share queries, labels and ground truth)."""
    if n <= 0:
        return None
    rng, diffs = np.random.default_rng(seed), []
    for _ in range(n):
        pick = rng.integers(len(episodes), size=len(episodes))
        eps = [{**episodes[i], "id": f"{episodes[i]['id']}~{j}"} for j, i in enumerate(pick)]
        res = [{"results": {e["id"]: r["results"][episodes[i]["id"]] for e, i in zip(eps, pick)}}
               for r in (base, other)]
        diffs.append(map50(eps, annotations, res[1]) - map50(eps, annotations, res[0]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def probe_runs(model, world, episodes, draws: int) -> list[tuple]:
    """``(name, what, draw, model or wrapper, episodes, skip)`` for every probe of ``model``."""
    runs = [("as trained", "the checkpoint, nothing changed", 0, model, episodes, ())]
    present = [s for s in stages.names() if getattr(model, s) is not None]
    for r in range(1, len(present) + 1):
        for subset in itertools.combinations(present, r):
            runs.append((f"skip {'+'.join(subset)}", f"{', '.join(title(s) for s in subset)} skipped "
                         "(identity)", 0, model, episodes, subset))
    runs.append(("reversed", "every support clip played backwards", 0,
                 EditedSupports(model, reverse_snippets), episodes, ()))
    for d in range(draws):
        runs.append(("shuffled", "the snippets of every support clip shuffled", d,
                     EditedSupports(model, shuffle_snippets(d)), episodes, ()))
        runs.append(("twin supports", "K clips of the episode's twin class instead", d, model,
                     replace_supports(world, episodes, "twin", seed=d), ()))
        runs.append(("other-class supports", "K clips of a non-twin test class instead", d, model,
                     replace_supports(world, episodes, "other", seed=d), ()))
    return runs


def stage_table(model, world, episodes, batch_size: int = 50) -> dict:
    """:func:`stage_probes` over all ``episodes`` (batches weighted by their size)."""
    data = EpisodeDataset(world, episodes, model.cfg.data.T, model.cfg.data.T_S)
    sums, total = {}, 0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        n = len(batch["id"])
        for stage, values in stage_probes(model, batch["query"], batch["support"]).items():
            for k, v in values.items():
                sums.setdefault(stage, {}).setdefault(k, 0.0)
                sums[stage][k] += v * n
        total += n
    return {s: {k: round(v / total, 4) for k, v in vals.items()} for s, vals in sums.items()}


def probe_checkpoint(path: Path, world, episodes, args) -> dict:
    model = load_model(path, feature_dim=world.meta.feature_dim, device="cpu").eval()
    t0 = time.perf_counter()
    rows, base = [], None
    for name, what, draw, m, eps, skip in probe_runs(model, world, episodes, args.draws):
        results = predict(m, world, eps, skip=skip)
        score = map50(eps, world.annotations, results)
        base = base or results
        rows.append({"probe": name, "what": what, "draw": draw, "mAP@0.5": round(score, 4),
                     "ci95_delta": paired_bootstrap(eps, world.annotations, base, results, args.bootstrap,
                                                    seed=len(rows)) if rows and draw == 0 else None})
        print(f"{path.name}: {name:22s} draw {draw}  mAP@0.5 {score:.3f}", flush=True)
    out = {"checkpoint": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
           "blind": model.cfg.switches.blind, "probes": rows,
           "switches": {"softmax_axis": model.cfg.switches.softmax_axis, "mass_norm": model.cfg.switches.mass_norm},
           "stages": {}, "weight_drift": {}}
    if any(getattr(model, s) is not None for s in stages.names()):
        torch.manual_seed(args.seed)
        fresh = FSCAL(model.cfg).eval()
        out["stages"] = {"trained": stage_table(model, world, episodes), "init": stage_table(fresh, world, episodes)}
        out["weight_drift"] = {s: {k: round(v, 4) for k, v in d.items()} for s, d in weight_drift(model).items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def grouped(rows: list[dict]) -> list[dict]:
    """One line per probe: the mean (and sd) over its draws, and the interval of the first draw."""
    out = {}
    for r in rows:
        out.setdefault(r["probe"], []).append(r)
    return [{"probe": p, "what": rs[0]["what"], "scores": [r["mAP@0.5"] for r in rs],
             "mean": statistics.mean(r["mAP@0.5"] for r in rs), "ci95_delta": rs[0]["ci95_delta"]}
            for p, rs in out.items()]


def verdict(delta: float, ci) -> str:
    if ci is None:
        return "-"
    if ci[0] > 0:
        return "higher (interval above 0)"
    return "lower (interval below 0)" if ci[1] < 0 else "no change detectable (interval holds 0)"


def markdown(result: dict) -> str:
    """The docs section, written from ``probes.json`` alone (``--docs-only`` rebuilds it)."""
    lines = ["", f"Machine: {result['machine']}. `python bench/probes.py` on the {result['episodes']} fixed "
             f"{result['shots']}-shot {result['split']} episodes of `data_samples/anet_like`; no training, "
             f"{result['seconds']:.0f} s in all"
             + (f", {result['cpu_seconds']:.0f} s of CPU" if "cpu_seconds" in result else "")
             + (f" ({result['note']})" if result.get("note") else "") + ". "
             "mAP@0.5 of the FS-CAL protocol; Δ = probe − as trained; "
             f"95 % interval of Δ: paired bootstrap over the episodes ({result['bootstrap']} resamples; "
             f"for probes with {result['draws']} random draws, the first draw's). Shuffles and support "
             "replacements are seeded draws (`fscal_edu.diagnostics`): mean over the draws, each draw listed.", ""]
    for ck in result["checkpoints"]:
        rows = grouped(ck["probes"])
        base = rows[0]["mean"]
        lines += [f"**`{ck['checkpoint']}`**", "", "| probe | what it changes | mAP@0.5 | Δ | 95 % interval of Δ | reading |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            each = " (" + " / ".join(f"{s:.3f}" for s in r["scores"]) + ")" if len(r["scores"]) > 1 else ""
            ci, first = r["ci95_delta"], r is rows[0]
            delta = "-" if first else f"{r['mean'] - base:+.3f}"
            interval = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
            lines.append(f"| {r['probe']} | {r['what']} | {r['mean']:.3f}{each} | {delta} | {interval} | "
                         f"{'-' if first else verdict(r['mean'] - base, ci)} |")
        lines.append("")
        if ck["stages"]:
            tr, init = ck["stages"]["trained"], ck["stages"]["init"]
            lines += ["| stage | attention entropy / max (trained; at init) | tokens each softmax spreads over | "
                      "added term / tokens (trained; at init) | shared share of the added energy (trained; at init) | "
                      "‖W − W₀‖ / ‖W₀‖ |", "|---|---|---|---|---|---|"]
            for s in (s for s in stages.names() if s in tr):
                drift = ", ".join(f"{k} {v:.3f}" for k, v in ck["weight_drift"].get(s, {}).items())
                lines.append(f"| {title(s)} | {tr[s]['entropy']:.3f}; {init[s]['entropy']:.3f} | "
                             f"{tr[s]['spread_over']:.0f} | {tr[s]['relative_size']:.2f}; {init[s]['relative_size']:.2f} | "
                             f"{tr[s]['shared_energy']:.0%}; {init[s]['shared_energy']:.0%} | {drift} |")
            lines.append("")
        lines += reading(ck)
    lines += ["Reproduce: `" + result["command"].replace(" --no-docs", "") + "`", ""]
    return "\n".join(lines)


def reading(ck: dict) -> list[str]:
    """The probes in words, each sentence computed from the numbers."""
    rows = {r["probe"]: r for r in grouped(ck["probes"])}
    base = rows["as trained"]["mean"]
    skips = [r for p, r in rows.items() if p.startswith("skip ")]
    edits = [rows[p] for p in ("reversed", "shuffled", "twin supports", "other-class supports") if p in rows]
    out = []
    if skips:
        lo, hi = min(skips, key=lambda r: r["mean"]), max(skips, key=lambda r: r["mean"])
        quiet = [r["probe"] for r in skips if r["ci95_delta"] and r["ci95_delta"][0] <= 0 <= r["ci95_delta"][1]]
        out.append(f"- Skipping stages at inference moves mAP@0.5 from {base:.3f} to between {lo['mean']:.3f} "
                   f"(`{lo['probe']}`) and {hi['mean']:.3f} (`{hi['probe']}`); {len(quiet)} of {len(skips)} skip "
                   f"probes are indistinguishable from the model as trained (interval holds 0).")
    lower = [r for r in edits if r["ci95_delta"] and r["ci95_delta"][1] < 0]
    if edits and max(abs(r["mean"] - base) for r in edits) > 0:
        worst = min(edits, key=lambda r: r["mean"])
        moved = ", ".join(f"{r['mean']:.3f} ({r['probe']})" for r in edits)
        out.append(f"- Editing the supports moves it to {moved}; {len(lower)} of {len(edits)} edits lower it beyond "
                   f"the bootstrap interval, the most `{worst['probe']}` ({worst['mean'] - base:+.3f})"
                   + (": the model reads the supports, their order included." if len(lower) == len(edits) else "."))
    if skips and edits:
        biggest_skip = max(abs(r["mean"] - base) for r in skips)
        smallest_edit = min(abs(r["mean"] - base) for r in edits)
        out.append(f"- The largest change from skipping stages ({biggest_skip:.3f}) is "
                   f"{'smaller' if biggest_skip < smallest_edit else 'not smaller'} than the smallest change from "
                   f"editing the supports ({smallest_edit:.3f}): "
                   + ("most of what the model takes from the supports reaches its output without the stages."
                      if biggest_skip < smallest_edit else "the stages carry part of the support information."))
    if ck["stages"]:
        tr, init = ck["stages"]["trained"], ck["stages"]["init"]
        why = (": with the row softmax and the mass normalisation, the mean of the added term over a softmax's "
               "targets is the mean of its sources whatever W is, and that part cannot rank the targets"
               if ck["switches"] == {"softmax_axis": "row", "mass_norm": True} else "")
        out.append("- Share of each stage's added energy that is one vector shared by all its targets, trained "
                   "(at init): " + ", ".join(f"{title(s)} {tr[s]['shared_energy']:.0%} ({init[s]['shared_energy']:.0%})"
                                             for s in stages.names() if s in tr) + why + ".")
        moved = max((v, f"{s} {k}") for s, d in ck["weight_drift"].items() for k, v in d.items())
        out.append(f"- The stage weights moved by {min(v for d in ck['weight_drift'].values() for v in d.values()):.0%}"
                   f" to {moved[0]:.0%} of their initial norm (most: `{moved[1]}`); attention entropy over its maximum, "
                   "trained (at init): " + ", ".join(f"{title(s)} {tr[s]['entropy']:.2f} ({init[s]['entropy']:.2f})"
                                                     for s in stages.names() if s in tr) + ".")
    if not skips and edits and max(abs(r["mean"] - base) for r in edits) == 0:
        out.append("- Every support edit leaves mAP@0.5 exactly as it was: this model never reads the supports.")
    return out + [""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(CHECKPOINTS / "full.pt"))
    p.add_argument("--reference", default=str(CHECKPOINTS / "blind.pt"), help="a second checkpoint, or 'none'")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--split", default="test")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--limit", type=int, default=None, help="only the first N episodes")
    p.add_argument("--draws", type=int, default=3, help="seeded draws of each random probe")
    p.add_argument("--bootstrap", type=int, default=200, help="paired bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained model (the 'at init' column)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "probes.json"))
    p.add_argument("--doc", default=str(DOC), help="the markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="do not touch --doc")
    p.add_argument("--docs-only", action="store_true", help="rebuild the docs section from --out; nothing else")
    args = p.parse_args(argv)
    if args.docs_only:
        replace_section(Path(args.doc), SECTION, markdown(read_json(args.out, "probes.json")))
        return
    configure_process(threads=args.threads)
    here = machine()                                    # measured before the probes start
    world = World(args.data)
    episodes = world.episodes(args.split, args.shots)[:args.limit]
    t0 = time.perf_counter()
    paths = [Path(args.checkpoint)] + ([] if args.reference == "none" else [Path(args.reference)])
    result = {"machine": here,
              "command": "python bench/probes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "split": args.split, "shots": args.shots, "episodes": len(episodes), "draws": args.draws,
              "bootstrap": args.bootstrap,
              "checkpoints": [probe_checkpoint(path, world, episodes, args) for path in paths]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["cpu_seconds"] = round(time.process_time(), 1)      # the wall time counts a stopped or starved process too
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, result)
    if not args.no_docs:
        replace_section(Path(args.doc), SECTION, markdown(result))
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
