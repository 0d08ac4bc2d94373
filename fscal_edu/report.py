"""Results files -> the numbers and sentences that notebooks 00-02 and 08 and README.md state.

Every figure a text of the course states comes from ``bench/results/*.json`` through one of these
functions, so the text follows the measurements when a results file changes:

* :func:`hypotheses_markdown`: the paper's hypothesis for a stage next to what this package
  measured about it (ablations trained from scratch, and stages skipped in the shipped model);
* :func:`claims_table` and :func:`claims_summary`: notebook 08's verdict table and its reading;
* :func:`training_time`, :func:`shipped_checkpoint`, :func:`sweep_plan`: times and the seed-0 model;
* :func:`readme_quotes`: the sentences README.md quotes (``tests/test_report.py`` checks them);
* notebook 08's section 9 (the model's defaults and the world mechanisms, ``defaults.json`` and
  ``mechanisms.json``): :mod:`fscal_edu.report_stages`.

The tests themselves (Welch's t with Welch-Satterthwaite df, two-sided p, Holm over the list) are
:func:`fscal_edu.diagnostics.ablation_tests` on :mod:`fscal_edu.stats`. A claim's verdict reads
them at level :data:`ALPHA`: **holds** when removing the mechanism costs accuracy (p < ALPHA),
**reversed** when the model is better without it (p < ALPHA), **not shown** otherwise.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from . import stages
from .diagnostics import ablation_tests, probe_results
from .runtime import shipped
from .stats import format_p
from .utils import read_json

ALPHA = 0.05                   # the level of every verdict

# variant -> (what it removes, the paper's hypothesis it tests, the probe that skips it in the shipped model)
CONTROLS = {
    "blind": ("the supports", "the supports carry the information: a model must read them (FS-CAL is not "
              "plain action detection)", None),
    "prototype": ("training", "a learned comparison beats training-free prototype matching", None),
}
OTHER_VARIANTS = {
    "joint": ("individual treatment of the supports in stage 1", "each support attended alone beats all "
              "supports as one joint clip", None),
    "column": ("the row softmax", "every source token spreading one unit of attention over the targets (row "
               "softmax, our reading of the equations) beats a column softmax", None),
    "no_relation": ("the auxiliary relation module (notebook 06)", "the relation module with cross-episode "
                    "negatives helps training", None),
}
# a registered stage -> (the notebook that teaches it, the paper's hypothesis about it)
STAGE_HYPOTHESES = {
    "qtos": ("notebook 03", "the query's context recalibrates each support, so that supports filmed in other "
             "scenes match the query better"),
    "dynamics": ("notebook 04", "the coarse temporal dynamics of all supports let the model tell apart actions "
                 "made of the same parts in another order (twins)"),
    "stoq": ("notebook 05", "the supports emphasize the query proposals that resemble them and suppress the others"),
}
NUMBER_WORDS = {2: "both", 3: "all three", 4: "all four", 5: "all five", 6: "all six"}


def stage_variants() -> tuple:
    """``no_<name>`` for every registered stage, in the order they run: ``("no_qtos", "no_dynamics", "no_stoq")``."""
    return tuple(f"no_{name}" for name in stages.names())


def hypotheses() -> dict:
    """Every variant -> (what it removes, the paper's hypothesis it tests, the probe that skips it in
    the shipped model): the controls, ``no_<name>`` for each registered stage (its title and place
    from the registry), the other variants, and ``no_stages``. Read from the registry when called."""
    out = dict(CONTROLS)
    for i, s in enumerate(stages.registered()):
        where_taught, hypothesis = STAGE_HYPOTHESES.get(s.name, (None, f"{s.source} attending to {s.target} helps"))
        place = f"stage {i + 1}" + (f", {where_taught}" if where_taught else "")
        out[f"no_{s.name}"] = (f"{s.title} ({place})", hypothesis, f"skip {s.name}")
    out |= OTHER_VARIANTS
    n = len(stages.names())
    every = NUMBER_WORDS.get(n, f"all {n}")
    out["no_stages"] = (f"{every} stages", f"the {every.removeprefix('all ')} cross-attention stages together "
                        "help (a control we add)", "skip " + "+".join(stages.names()))
    return out


def load_results(name: str, results_dir=None) -> dict:
    """``bench/results/<name>.json`` (found by :func:`fscal_edu.runtime.shipped`, also in an
    installed package), or ``results_dir/<name>.json``, parsed."""
    folder = Path(results_dir) if results_dir is not None else shipped("results")
    return read_json(folder / f"{name}.json", f"the results file {name}.json")


def mean_sd(v: dict) -> str:
    """A summary cell ``{"mean", "sd", "n"}`` as ``0.542 ± 0.027`` (the mean alone when n = 1)."""
    return f"{v['mean']:.3f}" if v.get("n", 2) < 2 else f"{v['mean']:.3f} ± {v['sd']:.3f}"


def summary_entry(ablations: dict, model: str, shots: int = 5, steps: int | None = None) -> dict | None:
    """The summary row of ``model`` at ``shots`` (``steps``: the full model's longest by default;
    the prototype, which is not trained, has steps 0)."""
    if steps is None:
        steps = full_steps(ablations, shots)
    rows = [s for s in ablations["summary"] if s["model"] == model and s["shots"] == shots]
    return next((s for s in rows if s["steps"] == (0 if model == "prototype" else steps)), None)


def full_steps(ablations: dict, shots: int = 5) -> int | None:
    """The longest training of the full model at ``shots``: the step count every test compares at."""
    return max((s["steps"] for s in ablations["summary"] if s["model"] == "full" and s["shots"] == shots),
               default=None)


def full_seeds(ablations: dict, shots: int = 5) -> list[float]:
    """The full model's per-seed test mAP@0.5 at its longest training."""
    steps = full_steps(ablations, shots)
    return [r["mAP@0.5"] for r in ablations["runs"]
            if r["model"] == "full" and r["shots"] == shots and r["steps"] == steps]


def claim_verdict(test: dict | None, alpha: float = ALPHA, n_tests: int | None = None) -> str:
    """The verdict on the claim "the mechanism the variant removes helps", from one entry of
    :func:`~fscal_edu.diagnostics.ablation_tests` (diff = variant - full)."""
    if test is None:
        return "not tested"
    w, p_holm = test["welch"], test["p_holm"]
    if w.p >= alpha:
        return "not shown: within the seeds' noise"
    word = "**holds**" if w.diff < 0 else "**reversed**: better without it"
    if p_holm >= alpha:
        word += f" (not after Holm's correction{f' for {n_tests} tests' if n_tests else ''}, p_Holm = {p_holm:.2f})"
    return word


def welch_text(test: dict) -> str:
    """``Δ +0.035, t = +1.8, df = 3.8, p = 0.16``."""
    w = test["welch"]
    return f"Δ {w.diff:+.3f}, t = {w.t:+.1f}, df = {w.df:.1f}, {format_p(w.p)}"


def probe_text(probes: dict, probe: str) -> str | None:
    """The shipped model with ``probe`` applied at inference, against as trained, with the paired
    bootstrap 95 % interval of the change (``bench/results/probes.json``)."""
    res = probe_results(probes)
    if probe not in res:
        return None
    p, base = res[probe], res["as trained"]["mAP@0.5"]
    ci = p["ci95_delta"]
    interval = f" (95 % interval of the change {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    return f"{p['mAP@0.5']:.3f} against {base:.3f} as trained{interval}"


def hypotheses_markdown(ablations: dict, probes: dict, variants=None, shots: int = 5) -> str:
    """For each variant (default: :func:`stage_variants`): the paper's hypothesis, and what this
    package measured about it."""
    tests = ablation_tests(ablations, shots)
    full = summary_entry(ablations, "full", shots)
    lines, known = [], hypotheses()
    for v in variants if variants is not None else stage_variants():
        what, hypothesis, probe = known[v]
        s, t = summary_entry(ablations, v, shots), tests.get(v)
        line = f"- **{what[0].upper() + what[1:]}.** *The paper's hypothesis:* {hypothesis}."
        if s is not None and t is not None:
            line += (f" *Measured here* (`{v}`, trained from scratch, {len(s['seeds'])} seeds of {s['steps']} steps, "
                     f"{shots}-shot test mAP@0.5): {mean_sd(s['mAP@0.5'])} against the full model's "
                     f"{mean_sd(full['mAP@0.5'])} ({welch_text(t)}): {claim_verdict(t, n_tests=len(tests))}.")
        if probe and probe_text(probes, probe):
            line += (f" The shipped full model (one seed, `full.pt`) with it skipped at inference: "
                     f"{probe_text(probes, probe)}.")
        lines.append(line)
    return "\n".join(lines)


def hypothesis_brief(ablations: dict, variant: str, shots: int = 5) -> str:
    """One line: what switching ``variant`` off did to the test mAP@0.5, and the verdict."""
    t = ablation_tests(ablations, shots).get(variant)
    if t is None:
        return f"`{variant}`: not in the results file"
    return f"`{variant}` ({welch_text(t)}): {claim_verdict(t)}"


def support_probes_text(probes: dict) -> str:
    """What the shipped full model does when its supports are changed at inference (probes.json)."""
    res = probe_results(probes)
    base = res["as trained"]["mAP@0.5"]
    what = {"reversed": "every support clip played backwards", "shuffled": "the snippets of every support shuffled",
            "twin supports": "the supports of the common class's twin", "other-class supports":
            "the supports of another, unrelated test class"}
    parts = [f"{text}: {res[name]['mAP@0.5']:.3f}" + (f" (mean of {len(res[name]['draws'])} draws)"
                                                      if len(res[name]["draws"]) > 1 else "")
             for name, text in what.items() if name in res]
    return (f"The shipped full model (one seed, `data_samples/checkpoints/full.pt`) scores {base:.3f} test mAP@0.5 "
            f"(5-shot) with the episodes' own supports; "
            f"with {'; with '.join(parts)} (`bench/results/probes.json`).")


def order_sentence(ablations: dict, probes: dict, shots: int = 5) -> str:
    """Does the trained model read the supports' order, and does it need Dynamics-CA for it?
    (reversed and twin supports in probes.json against the ``no_dynamics`` test)."""
    res = probe_results(probes)
    t = ablation_tests(ablations, shots).get("no_dynamics")
    hurt = {k: res[k]["ci95_delta"] is not None and res[k]["ci95_delta"][1] < 0
            for k in ("reversed", "twin supports") if k in res}
    if not hurt:
        return ""
    cost = lambda k: f"{-res[k]['delta']:.3f}"  # noqa: E731
    first = ("So the trained model does read the order of its supports" if hurt.get("reversed") else
             "Reversing the supports does not cost the trained model beyond the bootstrap interval")
    first += (f" (played backwards they cost it {cost('reversed')} mAP@0.5)" if hurt.get("reversed") else "")
    first += (f", and it tells the twin's supports from the right ones (they cost it {cost('twin supports')})"
              if hurt.get("twin supports") else ", but it does not tell the twin's supports from the right ones")
    if t is None:
        return first + "."
    needed = t["welch"].p < ALPHA and t["welch"].diff < 0
    stage = stages.title("dynamics")
    return first + (f". Training without {stage} makes it worse: the stage carries that order." if needed else
                    f". Yet training without {stage} does not make it worse ({welch_text(t)}): the order reaches "
                    "the classifier another way, and notebook 08 looks for it.")


def switches_table(ablations: dict) -> str:
    """The variants of the results file, what each changes and the claim it tests (markdown)."""
    what = {s["model"]: s["what"] for s in ablations["summary"]}
    lines = ["| variant | what it changes | the paper's claim it tests |", "|---|---|---|"]
    lines += [f"| `{v}` | {what[v]} | {h[1][0].upper() + h[1][1:]} |" for v, h in hypotheses().items() if v in what]
    return "\n".join(lines)


def claims_table(ablations: dict, shots: int = 5) -> str:
    """Notebook 08's verdict table: each claim against the variant that removes its mechanism."""
    tests = ablation_tests(ablations, shots)
    full = summary_entry(ablations, "full", shots)
    seeds = full_seeds(ablations, shots)
    lines = [f"Full model, {shots}-shot, {len(full['seeds'])} seeds of {full['steps']} steps: test mAP@0.5 "
             f"{mean_sd(full['mAP@0.5'])}. Δ = variant − full; Welch's t-test of the two sets of seeds "
             f"(Welch–Satterthwaite df, two-sided p), Holm's adjustment over the {len(tests)} tests; "
             f"a verdict needs p < {ALPHA}.", "",
             "| the paper's claim | variant | mAP@0.5 | Δ | t | df | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, (_, hypothesis, _) in hypotheses().items():
        s = summary_entry(ablations, v, shots)
        if s is None:
            continue
        claim = hypothesis[0].upper() + hypothesis[1:]
        delta = s["mAP@0.5"]["mean"] - full["mAP@0.5"]["mean"]
        t = tests.get(v)
        if t is not None:
            w = t["welch"]
            lines.append(f"| {claim} | `{v}` | {mean_sd(s['mAP@0.5'])} | {delta:+.3f} | {w.t:+.1f} | {w.df:.1f} | "
                         f"{format_p(w.p).removeprefix('p = ').removeprefix('p ')} | {t['p_holm']:.2g} | "
                         f"{claim_verdict(t)} |")
        else:       # the prototype: not trained, one number, no seeds to test
            below = seeds and s["mAP@0.5"]["mean"] < min(seeds)
            verdict = (f"**holds**: below every seed of the full model (lowest {min(seeds):.3f})" if below
                       else "not shown")
            lines.append(f"| {claim} | `{v}` | {mean_sd(s['mAP@0.5'])} | {delta:+.3f} | - | - | - | - | {verdict} |")
    return "\n".join(lines)


def _names(variants) -> str:
    names = [f"`{v}`" for v in variants]
    return "none" if not names else names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def claims_summary(ablations: dict, shots: int = 5) -> str:
    """The verdict table in words: which claims hold, which are reversed, which the seeds cannot show."""
    tests = ablation_tests(ablations, shots)
    holds = [v for v, t in tests.items() if t["welch"].p < ALPHA and t["welch"].diff < 0]
    reversed_ = [v for v, t in tests.items() if t["welch"].p < ALPHA and t["welch"].diff > 0]
    unclear = [v for v, t in tests.items() if t["welch"].p >= ALPHA]
    stage_offs = [v for v in (*stage_variants(), "no_stages") if v in tests]
    stage_helps = [v for v in stage_offs if v in holds]
    full = summary_entry(ablations, "full", shots)
    higher = [v for v in tests if summary_entry(ablations, v, shots)["mAP@0.5"]["mean"] > full["mAP@0.5"]["mean"]]
    out = [f"**What holds** ({shots}-shot, p < {ALPHA}): {_names(holds)}"
           + (" — removing it costs accuracy beyond the seeds' noise." if holds else ".")]
    out.append(f"**Reversed** (the model is better without the mechanism, p < {ALPHA}): {_names(reversed_)}"
               + ("" if not reversed_ else
                  f"; after Holm's correction for {len(tests)} tests: "
                  + ", ".join(f"`{v}` p_Holm = {tests[v]['p_holm']:.2f}" for v in reversed_)) + ".")
    out.append(f"**Not shown** (within the seeds' noise): {_names(unclear)}.")
    out.append(f"So on this world, at this budget, {'no' if not stage_helps else 'only ' + _names(stage_helps)} "
               f"cross-attention stage makes the full model better: of the {len(stage_offs)} stage ablations "
               f"({_names(stage_offs)}), {len(stage_helps)} cost accuracy, and {len(higher)} of the {len(tests)} "
               f"variants score higher on average than the full model ({_names(higher)}).")
    return "\n\n".join(out)


def shots_paragraph(ablations: dict, shots: int = 1) -> str:
    """The ``shots``-shot rows of the table in words, for every step count trained."""
    steps_all = sorted({s["steps"] for s in ablations["summary"] if s["shots"] == shots and s["model"] == "full"})
    tests = ablation_tests(ablations, shots)
    out = []
    for steps in steps_all:
        get = lambda m: summary_entry(ablations, m, shots, steps)  # noqa: E731
        others = [s for s in ablations["summary"] if s["shots"] == shots and s["steps"] == steps
                  and s["model"] not in ("full", "blind", "prototype", "joint")]
        text = (f"**{shots}-shot, {steps} steps** ({len(get('full')['seeds'])} seeds): full "
                f"{mean_sd(get('full')['mAP@0.5'])}, blind {mean_sd(get('blind')['mAP@0.5'])}"
                + (f", prototype {get('prototype')['mAP@0.5']['mean']:.3f}" if get("prototype") else "")
                + (f"; the other variants {min(s['mAP@0.5']['mean'] for s in others):.3f} to "
                   f"{max(s['mAP@0.5']['mean'] for s in others):.3f}" if others else "") + ".")
        if steps == full_steps(ablations, shots) and tests:
            sig = [v for v, t in tests.items() if t["welch"].p < ALPHA]
            if sig:
                text += f" Tests at {steps} steps: " + "; ".join(
                    f"`{v}` {welch_text(tests[v])}, {claim_verdict(tests[v])}" for v in sig) + "."
            else:
                text += f" At {steps} steps no variant differs from the full model at p < {ALPHA}"
                text += (f", the blind control included (`blind` {welch_text(tests['blind'])})." if "blind" in tests
                         else ".")
        out.append(text)
    return "\n\n".join(out)


def why_markdown(ablations: dict, shots: int = 5) -> str:
    """Measured leads on why the full model is not above its ablations (``ablations["diagnostics"]``)."""
    full = summary_entry(ablations, "full", shots)
    tests = ablation_tests(ablations, shots)
    lines = []
    if "no_stages" in tests:
        s = summary_entry(ablations, "no_stages", shots)
        lines.append("1. **The head already compares every proposal with the supports.** The relation classifier "
                     "(notebook 06, our reconstruction) reads `[x_n; s; x_n * s; |x_n - s|]` with an *aligned* "
                     "support summary `s` that keeps the supports' temporal order, so support information and "
                     "order reach the classifier without any stage. With all three stages off (`no_stages`) the "
                     f"model scores {mean_sd(s['mAP@0.5'])} ({welch_text(tests['no_stages'])}).")
    diag = ablations.get("diagnostics") or {}
    stoq = diag.get("stoq_added_term")
    if stoq:
        sizes, shared = stoq["relative_size"], stoq["shared_energy"]
        lines.append(f"2. **StoQ blurs the proposals.** Section 7 measures it on the shipped model; over the "
                     f"{len(sizes)} seeds of the table, StoQ adds to each proposal token a term "
                     f"{'/'.join(f'{a:.2f}' for a in sizes)} times its size, and "
                     f"{'/'.join(f'{b:.0%}' for b in shared)} of that term's energy is one vector shared by every "
                     f"proposal of the episode ({stoq['episodes']} test episodes). A shared offset cannot rank the "
                     "proposals of one query; it dilutes each proposal's own evidence.")
    curves = diag.get("val_curves")
    if curves and "full" in curves and "no_stoq" in curves:
        fmt = lambda m: "/".join(f"{v:.3f}" for v in curves[m].values())  # noqa: E731
        lines.append(f"3. **A short budget favours shallow paths.** Each run is {full['steps']} steps. Mean "
                     f"validation mAP@0.5 at steps {'/'.join(curves['full'])}: full {fmt('full')}, "
                     f"`no_stoq` {fmt('no_stoq')}: the variant with one stage fewer learns faster, and the "
                     "full model has flattened by the end. The paper's numbers come from converged models on "
                     "real features.")
    return "\n".join(lines)


def training_time(speed: dict) -> dict:
    """One quick-preset training, idle and loaded (``bench/results/speed.json``, "convergence")."""
    conv = speed["convergence"]
    idle, loaded = conv["idle"], conv["loaded"]
    machine = speed["machine"].split(",")
    cores = next((m.strip() for m in machine if "CPU core" in m), "")
    return {"steps": idle["steps"], "preset": idle["preset"], "cores": cores,
            "idle_s": idle["wall_s"], "idle_threads": idle["threads"],
            "loaded_s": loaded["wall_s"], "loaded_threads": loaded["threads"], "busy": loaded["load"]}


def training_time_text(speed: dict) -> str:
    """``700 steps: 73 s on an idle 2-core CPU (2 threads), 144 s beside 2 busy processes (1 thread)``."""
    t = training_time(speed)
    cpu = t["cores"].replace(" CPU cores", "-core CPU").replace(" CPU core", "-core CPU")
    return (f"{t['steps']} steps: {t['idle_s']:.0f} s on an idle {cpu} ({t['idle_threads']} threads), "
            f"{t['loaded_s']:.0f} s beside {t['busy']} busy processes ({t['loaded_threads']} thread"
            f"{'s' if t['loaded_threads'] != 1 else ''})")


def shipped_checkpoint(train_seeds: list) -> dict:
    """The shipped ``full.pt`` is seed 0 of ``bench/train_seeds.py``: its test mAP@0.5 and all seeds'."""
    full = sorted((r for r in train_seeds if r["model"] == "full"), key=lambda r: r["seed"])
    values = [r["mAP@0.5"] for r in full]
    return {"seed0": values[0], "seeds": values, "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def shipped_checkpoint_text(train_seeds: list) -> str:
    s = shipped_checkpoint(train_seeds)
    return (f"The shipped `full.pt` is seed 0 of {len(s['seeds'])} trainings of the quick preset "
            f"(`bench/results/train_seeds.json`): test mAP@0.5 {s['seed0']:.3f}; the {len(s['seeds'])} seeds score "
            f"{' / '.join(f'{v:.3f}' for v in s['seeds'])}, mean {s['mean']:.3f} ± {s['sd']:.3f}. One seed is one "
            f"draw; the tables compare means over seeds.")


def sweep_plan(ablations: dict, speed: dict, shots=(5, 1)) -> dict:
    """What rerunning the shipped sweep costs: the trainings it holds at each shot count's longest
    step count, timed at speed.json's idle CPU training and at the sweep's own (shared machine) times."""
    runs = [r for r in ablations["runs"] if r["shots"] in shots and r["model"] != "prototype"
            and not r.get("same_as") and r["steps"] == full_steps(ablations, r["shots"])]
    t = training_time(speed)
    return {"trainings": len(runs), "steps": sorted({r["steps"] for r in runs}), "shots": list(shots),
            "seeds": sorted({r["seed"] for r in runs}), "models": sorted({r["model"] for r in runs}),
            "idle_minutes": len(runs) * t["idle_s"] / 60, "idle_s_each": t["idle_s"],
            "recorded_hours": sum(r["train_s"] for r in runs) / 3600}


def readme_quotes(results_dir=None) -> list[str]:
    """The sentences README.md quotes from the results files, exactly as it must print them."""
    ab, speed = load_results("ablations", results_dir), load_results("speed", results_dir)
    kills, seeds = load_results("kill_resume", results_dir), load_results("train_seeds", results_dir)
    cell = lambda m: mean_sd(summary_entry(ab, m, 5)["mAP@0.5"])  # noqa: E731
    full = summary_entry(ab, "full", 5)
    return [f"{len(full['seeds'])} seeds of {full['steps']} steps each, 5-shot test episodes, mAP@0.5): full model "
            f"{cell('full')}, support-blind control {cell('blind')}, prototype matching {cell('prototype')}",
            f"one quick-preset training of {training_time_text(speed)}",
            f"(seed 0, {shipped_checkpoint(seeds)['seed0']:.3f}; `bench/results/train_seeds.json`)",
            f"`bench/kill_resume.py`: {kills['killed']} random kills"]


# What a timeline picture shows, in one sentence computed from what it draws

def on_instances(curve, x, spans) -> dict:
    """Compare a curve drawn on the query's time line (``curve`` at times ``x``) inside the
    instances ``spans (G, 2)`` and outside them: the means and their ratio, and ``direction``
    ``"on"`` (inside at least 1.25 times outside), ``"off"`` (at most 0.8 times) or ``"even"``."""
    curve, x = np.asarray(curve, dtype=float), np.asarray(x, dtype=float)
    inside = np.zeros(len(x), dtype=bool)
    for s, e in np.asarray(spans, dtype=float).reshape(-1, 2):
        inside |= (x >= s) & (x < e)
    if not inside.any() or inside.all():
        return {"inside": None, "outside": None, "ratio": None, "direction": "even", "cover": float(inside.mean())}
    a, b = float(curve[inside].mean()), float(curve[~inside].mean())
    ratio = a / b if b > 0 else float("inf")
    return {"inside": a, "outside": b, "ratio": ratio, "cover": float(inside.mean()),
            "direction": "on" if ratio >= 1.25 else "off" if ratio <= 0.8 else "even"}


def timeline_sentence(stage: str, found: dict) -> str:
    """One sentence saying where to look in :func:`fscal_edu.viz.attention.attention_timeline_figure`
    for ``stage``, with the direction :func:`on_instances` found in the curve it draws."""
    name = stages.get(stage).short
    received = stages.get(stage).layout == "support_to_query"
    what = f"{name}'s {'mass' if received else 'concentration'} (the top curve)"
    if found["ratio"] is None:
        return f"{what}: this query has no instance of the common action to compare with."
    verb = {"on": "peaks on the common action's instances (red)",
            "off": "avoids the common action's instances (red)",
            "even": "is about the same on the common action's instances (red) as elsewhere"}[found["direction"]]
    return (f"{what} {verb}: {found['inside']:.2f} there on average against {found['outside']:.2f} "
            f"elsewhere in the query.")
