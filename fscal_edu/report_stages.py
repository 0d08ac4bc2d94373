"""The stage experiments' results files -> notebook 08's section 9: can the stages be made to matter?

Two experiments (and the probes of the second's models), each read from its results file so that the text follows the measurements:

* :func:`construction_markdown`: what the shipped world cannot show by construction, and the
  generator's knobs (``outlier_prob``, ``support_slack``, ``tempo_concentration``) that would let it;
* :func:`stage_story_markdown`: the one story about the stages, in numbers: a trained full model
  with its stages skipped at test time (``probes.json``, ``mechanisms.json``) against models trained
  without them (``ablations.json``, the rule of :func:`does_as_well`);
* :func:`defaults_markdown`: ``bench/results/defaults.json`` (``bench/defaults.py``): variants of the
  model's defaults (support summary, the added term of each stage, ``mass_norm``, twin negatives),
  each against today's full model, and which default the numbers support;
* :func:`mechanisms_markdown` (and :func:`mechanism_sweeps`, which the figure
  :func:`fscal_edu.viz.evaluation.mechanisms_figure` reads too): ``bench/results/mechanisms.json``
  (``bench/mechanisms.py``): for each stage, worlds in which a knob made for that stage grows, and
  Δ = full − (that stage off) at each setting; :func:`skips_markdown`: the same trained full models
  with stages bypassed at inference (does the trained model *use* a stage there?).

A mechanism **holds** when Δ grows with its knob (each setting's mean Δ above the previous one's) and,
at the strongest setting, Δ ≥ :data:`BAR` with p < :data:`~fscal_edu.report.ALPHA` (Welch's t over
the seeds, :mod:`fscal_edu.stats`). Anything short of that is said plainly.

The stages' names and titles come from the stage registry (:mod:`fscal_edu.stages`), read when a
table is written; a stage the results name but the registry does not know is shown by its name.
"""
from __future__ import annotations

import math
import statistics

from . import stages
from .report import ALPHA
from .stats import format_p, t_two_sided_p, welch

BAR = 0.05                     # the bar: Δ = full − stage off must reach this at the strongest setting
NUMBER_WORDS = {2: "both", 3: "three", 4: "four", 5: "five", 6: "six"}


def stage_title(name: str) -> str:
    """The registry's title of a stage (``"QtoS Context-CA"``), or ``name`` itself if it is not registered."""
    return stages.title(name) if name in stages.names() else name


def skip_labels() -> dict:
    """``{--skip value: column label}``: each registered stage by its short name, then all of them
    together (``"qtos,dynamics,stoq": "all three"``), as the results' ``full_skipped`` keys them."""
    names = stages.names()
    labels = {s.name: s.short for s in stages.registered()}
    if len(names) > 1:
        labels[",".join(names)] = "all " + NUMBER_WORDS.get(len(names), str(len(names)))
    return labels


def value_label(value) -> str:
    """A knob setting as text: ``(0.25, 0.5)`` for a list, the value itself otherwise."""
    return f"({', '.join(str(v) for v in value)})" if isinstance(value, (list, tuple)) else str(value)


def _mean(v: list) -> float | None:
    return statistics.mean(v) if v else None


def _sd(v: list) -> float | None:
    return statistics.stdev(v) if len(v) > 1 else None


def _test(a: list, b: list):
    """Welch's t of ``mean(a) - mean(b)``, or ``None`` when a side has fewer than 2 seeds."""
    return welch(a, b) if len(a) > 1 and len(b) > 1 else None


def mechanism_sweeps(mechanisms: dict) -> list[dict]:
    """The items of ``mechanisms.json`` grouped by sweep (an item's ``"sweep"``, else its stage), in
    file order, each setting with its statistics computed from the per-seed lists: ``full`` and
    ``off`` (the seeds of the model with the stage off), ``delta`` (mean full − mean off; the file's
    when the seeds are missing), ``se`` (standard error of that difference, ``None`` below 2 seeds
    a side) and ``welch`` (:func:`fscal_edu.stats.welch`, or ``None``)."""
    sweeps: dict[str, dict] = {}
    for it in mechanisms.get("sweeps", []):
        stage = it["stage"]
        off_key = f"no_{stage}" if f"no_{stage}" in it else next(
            (k for k, v in it.items() if k.startswith("no_") and isinstance(v, list)), None)
        full, off = list(it.get("full") or []), list(it.get(off_key) or []) if off_key else []
        delta = _mean(full) - _mean(off) if full and off else it.get("delta")
        sd_a, sd_b = _sd(full), _sd(off)
        se = math.sqrt(sd_a ** 2 / len(full) + sd_b ** 2 / len(off)) if sd_a is not None and sd_b is not None \
            else None
        name = it.get("sweep") or stage
        sweep = sweeps.setdefault(name, {"sweep": name, "stage": stage, "knob": it["knob"],
                                         "fixed": it.get("fixed") or {}, "why": it.get("why", ""),
                                         "off": off_key or f"no_{stage}", "settings": []})
        sweep["settings"].append({"value": it["value"], "label": value_label(it["value"]), "full": full, "off": off,
                                  "delta": delta, "se": se, "welch": _test(full, off)})
    return list(sweeps.values())


def sweep_title(sweep: dict) -> str:
    """``StoQ Context-CA: scene_norm (scene_span=phases)``; a sweep named other than its stage
    (several sweeps of one stage) carries its name: ``StoQ Context-CA, stoq_variants: ...``."""
    fixed = ", ".join(f"{k}={v}" for k, v in sweep["fixed"].items())
    name = stage_title(sweep["stage"]) + (f", {sweep['sweep']}" if sweep["sweep"] != sweep["stage"] else "")
    return f"{name}: {sweep['knob']}" + (f" ({fixed})" if fixed else "")


def sweep_verdict(sweep: dict) -> dict:
    """Does Δ grow with the knob, and is Δ ≥ BAR with p < ALPHA at the strongest setting?
    ``verdict`` is "holds", "does not hold", or "open" while the strongest setting lacks the
    2 seeds a side a test needs."""
    settings = sweep["settings"]
    measured = [s["delta"] for s in settings if s["delta"] is not None]
    grows = len(measured) > 1 and all(b > a for a, b in zip(measured, measured[1:]))
    last = settings[-1]
    at_bar = last["delta"] is not None and last["delta"] >= BAR
    significant = last["welch"] is not None and last["welch"].p < ALPHA
    complete = len(measured) == len(settings)
    holds = complete and grows and at_bar and significant
    return {"grows": grows, "at_bar": at_bar, "significant": significant, "complete": complete, "holds": holds,
            "verdict": "holds" if holds else "open" if last["welch"] is None else "does not hold"}


def _verdict_text(sweep: dict) -> str:
    v, settings = sweep_verdict(sweep), sweep["settings"]
    last, knob, stage = settings[-1], f"`{sweep['knob']}`", stage_title(sweep["stage"])
    trend = " → ".join(f"{s['delta']:+.3f}" if s["delta"] is not None else "not measured" for s in settings)
    measured = sum(s["delta"] is not None for s in settings)
    why = f" (*{sweep['why']}*)" if sweep.get("why") else ""
    text = f"**{sweep_title(sweep)}**{why}: **{v['verdict']}**."
    if not measured:
        return text + f" No runs yet at any of its {len(settings)} settings."
    if len(settings) == 1:
        text += f" A single setting of {knob}: no trend to read"
    elif measured < 2:
        text += f" No trend yet ({trend})"
    else:
        text += (f" Δ {'grows' if v['grows'] else 'does not grow'}{'' if v['complete'] else ' so far'} from the "
                 f"weakest to the strongest setting of {knob} ({trend})")
    if not v["complete"]:
        text += f"; {measured} of {len(settings)} settings measured"
    if last["delta"] is None:
        return text + f"; the strongest setting, {knob} = {last['label']}, has no runs yet."
    w = last["welch"]
    test = format_p(w.p) if w else f"{min(len(last['full']), len(last['off']))} seed a side, no test yet"
    text += (f". At the strongest setting, {knob} = {last['label']}, Δ = {last['delta']:+.3f} ({test}): "
             + ("at or above" if v["at_bar"] else "below") + f" the bar of +{BAR:.2f}"
             + (", and significant" if v["significant"] else f", and not significant (p ≥ {ALPHA})" if w else "")
             + ".")
    if last["delta"] < 0:
        text += f" The model with {stage} off scores higher on average than the full model there."
    return text


def mechanisms_markdown(mechanisms: dict) -> str:
    """The table of every setting (full, stage off, Δ, p, seeds) and one verdict per sweep."""
    sweeps = mechanism_sweeps(mechanisms)
    named = any(s["sweep"] != s["stage"] for s in sweeps)
    fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
    lines = [f"Machine: {mechanisms.get('machine', 'not recorded')}. Quick preset, 5-shot, fixed test episodes of "
             "each world (the anet profile with one knob set); Δ = full − the stage's ablation, both trained from "
             "scratch on the same seeds; Welch's t over the seeds (Welch–Satterthwaite df, two-sided p); "
             "settings listed weakest first.", "",
             "| " + ("sweep | " if named else "") + "stage | knob | value | fixed | full | stage off | Δ | p | "
             "seeds |",
             "|---" * (10 if named else 9) + "|"]
    for sw in sweeps:
        fixed = ", ".join(f"{k}={v}" for k, v in sw["fixed"].items()) or "-"
        for s in sw["settings"]:
            cells = [sw["stage"], f"`{sw['knob']}`", s["label"], fixed, fmt(_mean(s["full"])), fmt(_mean(s["off"])),
                     f"{s['delta']:+.3f}" if s["delta"] is not None else "not measured",
                     format_p(s["welch"].p) if s["welch"] else "-", f"{len(s['full'])} / {len(s['off'])}"]
            lines.append("| " + " | ".join(([sw["sweep"]] if named else []) + cells) + " |")
    verdicts = [sweep_verdict(sw)["verdict"] for sw in sweeps]
    lines += ["", f"**Verdicts** (a stage matters when Δ grows with its knob and reaches Δ ≥ +{BAR:.2f} with "
              f"p < {ALPHA} at the strongest setting): {verdicts.count('holds')} of {len(sweeps)} sweeps meet it"
              + (f", {verdicts.count('open')} still open (the strongest setting lacks 2 seeds a side)"
                 if "open" in verdicts else "") + ".", ""]
    lines += [f"- {_verdict_text(sw)}" for sw in sweeps]
    return "\n".join(lines)


def _runs(defaults: dict, variant: str) -> list[float]:
    return [r["mAP@0.5"] for r in defaults.get("runs", []) if r["variant"] == variant and "mAP@0.5" in r]


def defaults_markdown(defaults: dict, base: str = "full") -> str:
    """The variants of the model's defaults against ``base`` (today's defaults), and which default the
    numbers support: a variant is significantly better or worse only at p < ALPHA."""
    lines = [f"Machine: {defaults.get('machine', 'not recorded')}. Quick preset, 5-shot, fixed test episodes of "
             "`data_samples/anet_like`; each variant changes one switch of today's full model and is trained from "
             "scratch with the same budget and seeds. Δ = variant − full, Welch's t over the seeds. \"Stages "
             "skipped\": the same trained model with all three stages bypassed at inference; \"skip cost\" = as "
             "trained − stages skipped (how much the model uses its stages).", "",
             "| variant | what it changes | seeds | mAP@0.5 | Δ vs full | p | stages skipped | skip cost | "
             "learned gates (qtos / dynamics / stoq) |", "|---|---|---|---|---|---|---|---|---|"]
    base_runs, tests = _runs(defaults, base), {}
    for s in defaults["summary"]:
        v = s["variant"]
        if v != base:
            w = _test(_runs(defaults, v), base_runs)
            tests[v] = (w.diff, w.p) if w else (s.get("delta"), s.get("p"))
        delta, p = tests.get(v, (None, None))
        n = len(s.get("seeds", []))
        cells = [f"`{v}`", s.get("what", ""), str(n),
                 f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if n > 1 and s.get("sd") is not None else ""),
                 f"{delta:+.3f}" if delta is not None else "-", format_p(p) if p is not None else "-",
                 f"{s['stages_skipped_mean']:.3f}" if "stages_skipped_mean" in s else "-",
                 f"{s['skip_cost']:+.3f}" if "skip_cost" in s else "-",
                 " / ".join(f"{g:+.2f}" for g in s["gates"].values()) if s.get("gates") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    better = sorted((v for v, (d, p) in tests.items() if p is not None and p < ALPHA and d > 0),
                    key=lambda v: -tests[v][0])
    worse = [v for v, (d, p) in tests.items() if p is not None and p < ALPHA and d < 0]
    noise = [v for v in tests if v not in better and v not in worse]
    names = lambda vs: ", ".join(f"`{v}`" for v in vs) or "none"  # noqa: E731
    if better:
        d, p = tests[better[0]]
        choice = (f"**The numbers favour `{better[0]}`** over today's defaults (Δ {d:+.3f}, {format_p(p)}): "
                  f"significantly better at p < {ALPHA}")
    else:
        choice = (f"**Today's defaults (`{base}`) stay**: no variant is significantly better at p < {ALPHA}")
    choice += (f"; significantly worse: {names(worse)}; within the seeds' noise (p ≥ {ALPHA}, which is no evidence "
               f"of no difference): {names(noise)}.")
    return "\n".join(lines) + "\n\n" + choice


def skips_markdown(mechanisms: dict) -> str:
    """Each world's trained full models with stages skipped at inference: the mean cost
    ``mAP(full) − mAP(skipped)`` over the seeds probed. Sweeps that read one world share its full
    models: one row per world (an item's ``"world"``). One column per :func:`skip_labels` that the
    results hold. Empty when nothing has been probed yet."""
    rows, seen = [], set()
    labels = {k: v for k, v in skip_labels().items()
              if any((it.get("full_skipped") or {}).get(k) for it in mechanisms.get("sweeps", []))}
    for it in mechanisms.get("sweeps", []):
        skipped = it.get("full_skipped") or {}
        world = it.get("world") or (it["knob"], value_label(it["value"]), tuple(sorted(it.get("fixed", {}).items())))
        if not any(skipped.values()) or world in seen:
            continue
        seen.add(world)
        n = min(len(v) for v in skipped.values())
        full = it["full"][:n]
        costs = [statistics.mean(f - x for f, x in zip(full, skipped[k][:n])) for k in labels]
        fixed = ", ".join(f"{k}={v}" for k, v in it.get("fixed", {}).items()) or "-"
        rows.append(f"| `{it['knob']}` = {value_label(it['value'])} | {fixed} | {statistics.mean(full):.3f} | "
                    + " | ".join(f"{c:+.3f}" for c in costs) + f" | {n} |")
    if not rows:
        return ""
    head = ["The same trained full models with stages bypassed at inference (`forward(skip=...)`): the cost is "
            "mAP@0.5 as trained minus mAP@0.5 with the stage skipped, averaged over the seeds probed. A cost "
            "near 0 means the trained model does not use the stage on that world.", "",
            "| world | fixed | full | " + " | ".join(f"skip {v}" for v in labels.values()) + " | seeds |",
            "|---" * (4 + len(labels)) + "|"]
    return "\n".join(head + rows)


def pooled_markdown(mechanisms: dict) -> str:
    """Each stage over every distinct world of the sweeps (an item's ``"world"``; a world read by
    several sweeps, such as the default one, counts once): in how many worlds the stage's ablation scores higher, the mean Δ
    over the worlds, and a one-sample t-test of the per-world mean Δs against 0 (df = worlds − 1)."""
    lines = []
    for stage, name in ((s.name, s.title) for s in stages.registered()):
        worlds = {}
        for it in mechanisms.get("sweeps", []):
            full, off = it.get("full") or [], it.get(f"no_{stage}") or []
            if it["stage"] == stage and len(full) > 1 and len(off) > 1:
                worlds[it.get("world") or (tuple(full), tuple(off))] = statistics.mean(full) - statistics.mean(off)
        deltas = list(worlds.values())
        if len(deltas) < 2:
            continue
        t = statistics.mean(deltas) / (statistics.stdev(deltas) / math.sqrt(len(deltas)))
        p = t_two_sided_p(t, len(deltas) - 1)
        lines.append(f"- **{name}** over {len(deltas)} worlds (each with at least 2 seeds a side): mean Δ = "
                     f"{statistics.mean(deltas):+.3f} (t = {t:+.2f}, df = {len(deltas) - 1}, {format_p(p)}); "
                     f"the model with it off scores higher in {sum(d < 0 for d in deltas)} of {len(deltas)}.")
    if not lines:
        return ""
    return "\n".join(["**Pooled over the worlds** (Δ = full − stage off, one mean Δ per world):", ""] + lines)


# What the shipped world cannot show by construction, and the generator's knobs that would let it

WORLD_KNOBS = ("outlier_prob", "support_slack", "tempo_concentration")   # an odd support, and a freer tempo


def world_setting(world_config: dict, knob: str):
    """A knob of a synthetic world's config (``world.json``'s ``info.config``); a knob added after
    the world was written is left out of its file at the value that keeps the world as it was."""
    from .data.synthetic import LATER_KNOBS
    return world_config.get(knob, LATER_KNOBS.get(knob))


def swept_values(mechanisms: dict | None, knob: str) -> list:
    """The settings of ``knob`` that ``mechanisms.json`` trained on, in the order of the file, once each."""
    out = []
    for it in (mechanisms or {}).get("sweeps", []):
        if it["knob"] == knob and value_label(it["value"]) not in out:
            out.append(value_label(it["value"]))
    return out


def construction_markdown(world_config: dict, T_S: int, mechanisms: dict | None = None) -> str:
    """What the shipped world cannot show by construction (``world_config``: its ``world.json``'s
    ``info.config``), the generator's knobs that would let it (:data:`WORLD_KNOBS`, fields of
    :class:`fscal_edu.data.synthetic.WorldConfig`), and the settings ``mechanisms`` trained on."""
    c = {k: world_setting(world_config, k) for k in ("scene_norm", "drift_norm", "noise_norm", *WORLD_KNOBS)}
    slack = tuple(c["support_slack"])
    odd = c["outlier_prob"] > 0 or slack[1] > 0
    lines = ["- *Individual vs joint supports at 1-shot.* With K = 1 the joint clip of all supports is the one "
             "support: `joint` is the full model bit for bit (`bench/ablations.py` checks it and copies the full "
             "rows), and Dynamics-CA's \"to-all\" coarse tokens are the support's own. Only K > 1 can test either."]
    text = (f"- *Individual treatment as a guard against an odd support.* This world's config sets `outlier_prob` = "
            f"{c['outlier_prob']} and `support_slack` = {value_label(slack)}: ")
    if odd:
        text += "some supports are outliers or reach past their instance, so there are odd supports to guard against."
    else:
        text += (f"every support is an annotated instance of its class, cut at its exact boundaries and resampled "
                 f"to T_S = {T_S} snippets. Supports differ only by their video's scene (norm {c['scene_norm']}, "
                 f"drift {c['drift_norm']}), the snippet noise (norm {c['noise_norm']}) and the tempo (phase shares "
                 f"~ Dirichlet({c['tempo_concentration']})): there is no odd support to guard against, so `joint` "
                 "can only differ through the softmax's competition between supports.")
    text += (" The generator has the knobs that make them: `outlier_prob` (each support is, with that chance, an "
             "instance of the twin class or a stretch of background), `support_slack` (the supports' boundaries "
             "reach out into background or a neighbouring instance) and a lower `tempo_concentration` (a freer tempo).")
    swept = {k: swept_values(mechanisms, k) for k in WORLD_KNOBS}
    if any(swept.values()):
        text += (" Section 9 of notebook 08 trains on worlds that turn them up (`bench/results/mechanisms.json`: "
                 + "; ".join(f"`{k}` {' / '.join(v)}" for k, v in swept.items() if v) + ").")
    return "\n".join(lines + [text])


# One story about the stages: a trained model leans on them without needing them

def does_as_well(full: dict, other: dict) -> bool:
    """The rule "does as well" for two summary cells ``{"mean", "sd", "n"}`` over seeds: ``other``'s
    mean is no more than one standard deviation of the full model's seeds below the full model's mean."""
    # as well  <=>  mean(other) >= mean(full) - sd(full)
    return other["mean"] >= full["mean"] - full["sd"]


def skip_costs(mechanisms: dict, key: str) -> list[list[float]]:
    """Each world of the sweeps (once) whose full models were probed with ``key`` skipped: the
    per-seed cost ``mAP(full) − mAP(skipped)`` (positive: skipping lowers the score)."""
    out, seen = [], set()
    for it in mechanisms.get("sweeps", []):
        skipped = (it.get("full_skipped") or {}).get(key) or []
        if skipped and it.get("world") not in seen:
            seen.add(it.get("world"))
            out.append([f - s for f, s in zip(it["full"], skipped)])
    return out


def seeds_text(costs: list) -> str:
    """``3 seeds`` when every world has as many, else ``2 to 3 seeds``."""
    lo, hi = min(map(len, costs)), max(map(len, costs))
    return f"{lo} seeds" if lo == hi else f"{lo} to {hi} seeds"


def stage_story_markdown(probes: dict, ablations: dict, mechanisms: dict | None = None, shots: int = 5) -> str:
    """The numbers of the stage story: the trained full model with its stages skipped at test time
    (``probes.json``, and every world of ``mechanisms.json``), against models trained from scratch
    without them (``ablations.json``, the rule of :func:`does_as_well`)."""
    from .diagnostics import ablation_tests, probe_results
    from .report import mean_sd, summary_entry, welch_text
    names, found = stages.names(), probe_results(probes)
    base, every = found["as trained"]["mAP@0.5"], "all " + NUMBER_WORDS.get(len(names), str(len(names)))
    word = lambda d: "lowers" if d < 0 else "raises" if d > 0 else "leaves"  # noqa: E731
    lean = [f"{stage_title(n)} {found[f'skip {n}']['mAP@0.5']:.3f} ({found[f'skip {n}']['delta']:+.3f})"
            for n in names if f"skip {n}" in found]
    p = found["skip " + "+".join(names)]
    ci = p["ci95_delta"]
    ci = f", 95 % interval of the change {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else ""
    out = [f"- **Leaning on them** (the shipped full model `full.pt`, stages skipped at test time; "
           f"`bench/results/probes.json`): as trained {base:.3f}; skipped one at a time: {'; '.join(lean)}; "
           f"{every} skipped: {p['mAP@0.5']:.3f} ({p['delta']:+.3f}{ci}). Skipping all of them {word(p['delta'])} "
           f"its score" + (", by less than the bootstrap interval can tell on this one model." if p["ci95_delta"]
                          and p["ci95_delta"][0] < 0 < p["ci95_delta"][1] else ".")]
    costs = skip_costs(mechanisms or {}, ",".join(names))
    if costs:
        means = [statistics.mean(c) for c in costs]
        out.append(f"- **Across the worlds of section 9** ({len(costs)} worlds, the shipped world's settings among "
                   f"them; the full models of {seeds_text(costs)} each, `bench/results/mechanisms.json`): "
                   f"skipping {every} stages lowers the mean mAP@0.5 in {sum(m > 0 for m in means)} of {len(means)} "
                   f"worlds (mean cost {min(means):+.3f} to {max(means):+.3f}), and on "
                   f"{sum(x > 0 for c in costs for x in c)} of {sum(map(len, costs))} trained models. How much one "
                   f"trained model leans on its stages varies from seed to seed: the shipped seed-0 model above "
                   f"(cost {-p['delta']:+.3f}) leans on them "
                   f"{'less than' if -p['delta'] < statistics.mean(means) else 'at least as much as'} the average "
                   f"of these models ({statistics.mean(means):+.3f}).")
    full, tests = summary_entry(ablations, "full", shots), ablation_tests(ablations, shots)
    need = []
    for v in ("no_stages", *(f"no_{n}" for n in names)):
        s = summary_entry(ablations, v, shots)
        if s is None or v not in tests:
            continue
        w = tests[v]["welch"]
        verdict = ("worse, by more than one SD" if not does_as_well(full["mAP@0.5"], s["mAP@0.5"]) else
                   "as well (better, p < 0.05)" if w.p < ALPHA and w.diff > 0 else "as well")
        need.append(f"`{v}` {mean_sd(s['mAP@0.5'])} ({welch_text(tests[v])}): {verdict}")
    out.append(f"- **Not needing them** (trained from scratch, {len(full['seeds'])} seeds of {full['steps']} steps, "
               f"{shots}-shot; `bench/results/ablations.json`): the full model {mean_sd(full['mAP@0.5'])}; "
               + "; ".join(need) + ". \"As well\": a mean no more than one standard deviation of the full "
               "model's seeds below the full model's mean.")
    return "\n".join(out)
