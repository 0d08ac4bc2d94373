"""The ``fscal-edu`` command line: one argparse subcommand per job.

The package's only command-line code. Each subcommand's work is a library function of the module
that teaches it, called with plain values (paths, a config, numbers); this file only wires
arguments, checks them (argparse types: counts >= 1, seeds >= 0, devices that exist), calls that
function and prints.

Failures: bad input (:class:`~fscal_edu.utils.FscalError`, a file that is not UTF-8, a folder
that cannot be written) is one line on stderr, ``fscal-edu CMD: error: file '...', video '...',
field '...': what is wrong``, exit code 2; a Ctrl-C is one line saying where the run can resume,
exit code 130; a reader of stdout that leaves early (``| head``) ends the command quietly, exit
code 0; anything else is a bug in fscal-edu: the traceback, then one line asking for a report,
exit code 1. Output folders follow :mod:`fscal_edu.outputs` (never over a dataset, a run or an
input; ``--overwrite`` moves the old output aside).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path

from . import stages
from .config import ABLATIONS, PRESETS
from .data.synthetic import PROFILES
from .outputs import LeavableStdout, silence_stdout
from .runtime import configure_process
from .utils import FscalError, check_device, where


# ---------------------------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------------------------

def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def stages_arg(text: str) -> tuple:
    """An argparse type: a comma-separated list of registered cross-attention stages
    (:func:`fscal_edu.stages.names`, read when the option is parsed)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in stages.names()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of stages among {','.join(stages.names())}, "
                                         f"got {text!r}")
    return tuple(dict.fromkeys(names))


def device_arg(text: str) -> str | None:
    """An argparse type: ``auto`` (None: the best available), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``, and present on this machine."""
    try:
        return check_device(text)
    except FscalError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------

def _generate(args):
    from .data.synthetic import write_world
    stats = write_world(args.out, args.profile, args.seed, overwrite=args.overwrite)
    print(f"wrote the {args.profile}-like world (seed {args.seed}) to {args.out}")
    for k, v in stats.items():
        print(f"  {k:24s} {v:.3f}" if isinstance(v, float) else f"  {k:24s} {v}")


def _demo(args):
    from .demo import run_demo
    print(json.dumps(run_demo(args.data, seed=args.seed, force_train=args.train, out=args.out)))


def _train(args):
    """Train, then print the files written and the summary as a last line of JSON."""
    from .distributed import env_world
    from .runs import config_from_options
    from .train import train
    mode, pool = args.query_mode, args.window_pool
    options = (args.preset, args.shots, args.steps, args.seed, args.window_stride, pool)
    bare_resume = args.resume and mode is None and not args.ablate and all(o is None for o in options)
    if mode in (None, "auto") and not bare_resume:   # the training instances' lengths against the window
        mode, auto_pool = _auto_query_mode(args.data, args.preset or "quick")
        pool = auto_pool if pool is None else pool
    cfg, seed = config_from_options(out=args.out, resume=args.resume, preset=args.preset, shots=args.shots,
                                    steps=args.steps, ablate=args.ablate, seed=args.seed, query_mode=mode,
                                    window_stride=args.window_stride, window_pool=pool)
    summary = train(cfg, args.data, args.out, seed=seed, device=args.device, resume=args.resume,
                    overwrite=args.overwrite, threads=args.threads, feature_dim="data",
                    precision=args.precision, workers=args.workers)
    written = [name for name in ("best.pt", "last.pt", "config.json", "metrics.jsonl")
               if (Path(args.out) / name).is_file()]
    if env_world()[0] == 0:                       # under torchrun, rank 0 speaks for the run
        print(f"wrote {args.out}/: {', '.join(written)}")
        print(json.dumps(summary))


def _auto_query_mode(data, preset: str) -> tuple[str, int]:
    """``--query-mode auto``: the rule of :func:`~fscal_edu.data.sampling.query_mode_rule`, said in one
    line with the statistics it read; returns the mode and the pool."""
    from .config import get_config
    from .data.episodes import World
    from .data.sampling import query_mode_rule
    choice = query_mode_rule(World(data), T=get_config(preset).data.T)
    print(choice.reason + "".join(f"; {k.replace('_', ' ')} {v:.0f}" for k, v in choice.stats.items()))
    return choice.mode, choice.pool


def _evaluate(args):
    """The metric table, then one JSON object as the last line."""
    from .data.episodes import World
    if args.skip and args.baseline:
        raise FscalError(f"{where(field='skip')}: --skip bypasses stages of a trained model; the "
                         f"{args.baseline} baseline has none")
    if args.out:
        from .outputs import check_output_file
        check_output_file(args.out, inputs=[args.checkpoint, args.data], overwrite=args.overwrite)
    world = World(args.data)
    if args.baseline:
        from .baselines import evaluate_prototype
        metrics, results = evaluate_prototype(world, args.split, args.shots)
        name = f"baseline {args.baseline}"
    else:
        from .checkpoints import load_model
        from .inference import evaluate_model
        from .utils import get_device
        device = get_device(args.device)
        model = load_model(args.checkpoint, feature_dim=world.meta.feature_dim, device=device)
        metrics, results = evaluate_model(model, world, args.split, args.shots, device=device, progress=True,
                                          workers=args.workers, skip=args.skip, query_mode=args.query_mode,
                                          window_merge=args.window_merge or None)
        skipped = [name for name in stages.names() if name in args.skip]
        name = args.checkpoint + (f" (skipping {', '.join(skipped)})" if skipped else "")
    if args.out:
        from .outputs import write_output_file
        write_output_file(args.out, json.dumps(results))
    print(f"{name}: {args.split} split, {args.shots}-shot, {len(world.episodes(args.split, args.shots))} episodes")
    print("tIoU   pooled mAP   per-class mAP")
    for t, a, b in zip(metrics["tiou_thresholds"], metrics["mAP"], metrics["per_class"]["mAP"]):
        print(f"{t:.2f}   {a:.4f}       {b:.4f}")
    print(f"avg    {metrics['average_mAP']:.4f}       {metrics['per_class']['average_mAP']:.4f}")
    print(json.dumps({"mAP@0.5": metrics["mAP@0.5"], "average_mAP": metrics["average_mAP"],
                      "per_class_mAP@0.5": metrics["per_class"]["mAP@0.5"], "split": args.split,
                      "shots": args.shots}))


def _score(args):
    """``score GT.json PRED.json [--subset S]``: the table, then one JSON line."""
    from .evaluation import evaluate_detection, format_table
    result = evaluate_detection(args.ground_truth, args.predictions, subset=args.subset)
    print(format_table(result))
    print(json.dumps({k: result[k] for k in ("mAP@0.5", "average_mAP", "mAP", "tiou_thresholds")}))


def _prepare(args):
    from collections import Counter
    from .data.prepare import format_summary, prepare
    s = prepare(args)
    m = ", ".join(f"{k} {v}" for k, v in s["feature_meta"].items())
    print(f"prepared {s['dataset']} in {s['out']}: features {s['features']} ({m})\n")
    print(format_summary(s["splits"], Counter(s["dropped"]), s["notes"]))
    _auto_query_mode(s["out"], "quick")          # what train --query-mode auto will pick, and why


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subparser per subcommand, each with its handler as ``func``."""
    p = argparse.ArgumentParser(prog="fscal-edu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_generate_and_demo, _add_train, _add_evaluate_and_score, _add_prepare, _add_teaching):
        add(sub, count=int_at_least(1), seed=int_at_least(0))
    return p


def _add_generate_and_demo(sub, *, count, seed) -> None:
    g = sub.add_parser("generate", help="write the synthetic feature world")
    g.add_argument("--profile", choices=list(PROFILES), default="anet")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=seed, default=0)
    g.add_argument("--overwrite", action="store_true",
                   help="replace a world in --out (the old one is moved aside to OUT.replaced-N first)")
    g.set_defaults(func=_generate)

    d = sub.add_parser("demo", help="the main job: a tour of the shipped world and the model")
    d.add_argument("--data", default=None, help="world directory (default: the shipped anet_like)")
    d.add_argument("--seed", type=seed, default=0)
    d.add_argument("--train", action="store_true", help="train from scratch even if checkpoints are shipped")
    d.add_argument("--out", default="runs/demo", help="where --train writes its runs")
    d.set_defaults(func=_demo)


def _add_train(sub, *, count, seed) -> None:
    t = sub.add_parser("train", help="train the model on the base classes of a world")
    t.add_argument("--data", required=True, help="world directory (features, annotations, splits)")
    t.add_argument("--preset", choices=list(PRESETS), default=None, help="default quick")
    t.add_argument("--shots", type=count, default=None, help="K (default 5)")
    t.add_argument("--seed", type=seed, default=None, help="default 0")
    t.add_argument("--out", required=True, help="run directory for best.pt, last.pt, metrics.jsonl")
    t.add_argument("--ablate", choices=sorted(ABLATIONS), action="append", default=None,
                   help="switch a part off (repeatable)")
    t.add_argument("--steps", type=count, default=None, help="override the preset's step count")
    t.add_argument("--device", type=device_arg, default=None,
                   help="auto, cpu, cuda, cuda:N or mps (default auto: the best available)")
    t.add_argument("--threads", type=count, default=None,
                   help="torch's CPU threads (stored in the run; a resume uses the run's own)")
    run = t.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue RUN/last.pt exactly; alone, with the run's own options")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out (the old one is moved aside to OUT.replaced-N first)")
    t.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA, float32 elsewhere")
    t.add_argument("--workers", type=seed, default=None,
                   help="DataLoader processes per training process (default 2 on CUDA, else 0)")
    t.add_argument("--query-mode", choices=["auto", "resample", "window"], default=None,
                   help="how a query becomes T snippets: the whole video resampled, or windows of T "
                        "snippets (auto, the default for a new run, decides from the training instances' "
                        "lengths against the window and says why)")
    t.add_argument("--window-stride", type=seed, default=None,
                   help="snippets between two query windows (default 0: T // 2)")
    t.add_argument("--window-pool", type=count, default=None,
                   help="windows at a coarser rate: each query row the mean of this many feature rows")
    t.set_defaults(func=_train)


def _add_evaluate_and_score(sub, *, count, seed) -> None:
    e = sub.add_parser("evaluate", help="evaluate a checkpoint or a baseline on fixed episodes")
    e.add_argument("--data", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--baseline", choices=["prototype"])
    e.add_argument("--split", choices=["val", "test"], default="test")
    e.add_argument("--shots", type=count, default=5)
    e.add_argument("--out", default=None, help="write the predictions (ActivityNet results JSON)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (moved aside to OUT.replaced-N first)")
    e.add_argument("--device", type=device_arg, default=None)
    e.add_argument("--threads", type=count, default=None, help="torch's CPU threads")
    e.add_argument("--workers", type=seed, default=0, help="DataLoader processes that build the batches (default 0)")
    e.add_argument("--query-mode", choices=["resample", "window"], default=None,
                   help="read the queries another way than the checkpoint was trained with (a probe)")
    e.add_argument("--window-merge", action="store_true",
                   help="merge detections that meet at a window edge into one segment before Soft-NMS")
    e.add_argument("--skip", type=stages_arg, default=(),
                   help="bypass these cross-attention stages of the checkpoint's model at inference "
                        f"(comma list of {', '.join(stages.names())}): probes a trained model without "
                        f"retraining")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("score", help="score an ActivityNet results JSON against ground truth")
    s.add_argument("ground_truth")
    s.add_argument("predictions")
    s.add_argument("--subset", default=None)
    s.set_defaults(func=_score)


def _add_prepare(sub, *, count, seed) -> None:
    r = sub.add_parser(
        "prepare", help="build a dataset directory from real features, annotations and a split file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check every feature file against the annotations (missing, extra, width, NaN, length "
                    "vs duration), then write\nOUT/features (symlinks), features.json, annotations.json, "
                    "splits.json, fixed val/test episodes for\nK = 1 and 5 and prepare.json, and print a "
                    "summary table. Bad input stops with one line naming\nthe file, the video and the "
                    "field; --drop-missing / --drop-bad leave such videos out instead.",
        epilog="choices: annotation rows with start >= end or outside the video are dropped, rows sticking "
               "out are clipped\n(both counted); without --resize-length or --fps/--feat-stride/--num-frames, "
               "files of one length are\nresized features, files of different lengths strided ones (thumos14 "
               "defaults: fps 30, feat_stride 4,\nnum_frames 16); strided files must have about duration * fps "
               "/ feat_stride rows (--length-tolerance);\nTHUMOS14's standard split has no val classes: kept "
               "so, unless --val-from-base N; classes that cannot\nmake a K-shot episode are skipped and "
               "reported. More in fscal_edu/data/prepare.py.")
    r.add_argument("--features", required=True, help="folder of feature files <video_id>.npy|npz|csv|pt")
    r.add_argument("--annotations", required=True, nargs="+", metavar="FILE",
                   help="ActivityNet JSON or TSP ground-truth CSV files (a CSV's subset from its name: "
                        "train/valid/test, or write SUBSET=FILE)")
    r.add_argument("--dataset", required=True, choices=["activitynet", "thumos14"],
                   help="picks the split of a split file that holds several, and the feature defaults")
    r.add_argument("--split-file", required=True,
                   help='{"base", "val", "test"} class lists, or a file keyed by dataset '
                        '("activitynet-1.3", "thumos14")')
    r.add_argument("--out", required=True, help="the dataset directory to write (new or empty)")
    r.add_argument("--resize-length", type=count, default=None,
                   help="resized features: every file has N rows (default: detected from the files)")
    r.add_argument("--fps", type=float, default=None, help="strided features: frames per second")
    r.add_argument("--feat-stride", type=count, default=None, help="strided features: frames between two rows")
    r.add_argument("--num-frames", type=count, default=None, help="strided features: frames one row summarises")
    r.add_argument("--feature-dim", type=count, default=None,
                   help="the feature width (default: the width most files have)")
    r.add_argument("--length-tolerance", type=float, default=0.1,
                   help="strided files may differ from duration * fps / feat_stride rows by this share "
                        "(or num_frames / feat_stride + 1 rows, whichever is larger; default 0.1)")
    r.add_argument("--drop-missing", action="store_true", help="leave out videos without a feature file")
    r.add_argument("--drop-bad", action="store_true",
                   help="leave out videos whose feature file is unreadable, of another width, holds NaN or "
                        "has the wrong length")
    r.add_argument("--copy", action="store_true", help="copy the feature files instead of linking them")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the old one is moved aside to OUT.replaced-N first)")
    r.add_argument("--val-from-base", type=seed, default=0, metavar="N",
                   help="move N base classes (drawn with --seed) to val, for a split without val classes")
    r.add_argument("--val-episodes", type=seed, default=200, help="fixed val episodes per K (default 200)")
    r.add_argument("--test-episodes", type=seed, default=1000, help="fixed test episodes per K (default 1000)")
    r.add_argument("--seed", type=seed, default=0, help="episodes use seed * 1000 + K (default 0)")
    r.set_defaults(func=_prepare)


def _site(args):
    from .course import course_root
    from .outputs import check_output
    from .site import build_site
    root = course_root(args.root)
    r = build_site(check_output(args.out, inputs=[root / "notebooks", root / "docs"]), root)
    print(f"wrote {len(r['pages'])} pages to {args.out}/ ({r['bytes'] / 1e6:.1f} MB, {r['seconds']:.0f} s): "
          f"open {Path(args.out) / 'index.html'} in a browser (no network needed)")


def _course_release(args):
    from .course import course_root, release
    from .outputs import check_output
    notebooks = course_root(args.root) / "notebooks"
    written = release(notebooks, check_output(args.out, inputs=[notebooks]))
    print(f"wrote the student version of {len(written)} notebooks to {args.out}/")


def _course_grade(args):
    from .course import course_root, grade
    from .outputs import check_output
    data = grade(args.submissions, check_output(args.out, inputs=[args.submissions]), cwd=course_root(args.root) / "notebooks", timeout=args.timeout,
                 only=args.notebook)
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"), end="")
    print(f"graded {len(data['students'])} students: {args.out}/grades.csv, grades.json, summary.md")


def _add_teaching(sub, *, count, seed) -> None:
    s = sub.add_parser("site", help="the course as a static website that works offline")
    s.add_argument("--out", required=True, help="folder for index.html, the pages and assets/")
    s.add_argument("--root", default=None, help="the course's checkout (default: here, or the editable install's)")
    s.set_defaults(func=_site)
    c = sub.add_parser("course", help="the teacher's kit: hand out the notebooks, grade them")
    csub = c.add_subparsers(dest="action", required=True)
    r = csub.add_parser("release", help="write the student version of the notebooks (no reference solution)")
    r.add_argument("--out", required=True)
    r.add_argument("--root", default=None, help="the course's checkout (default: here, or the editable install's)")
    r.set_defaults(func=_course_release)
    g = csub.add_parser("grade", help="run every submitted notebook headless and tabulate the checkers' verdicts")
    g.add_argument("submissions", help="a folder: one folder of notebooks, or one notebook, per student")
    g.add_argument("--out", required=True, help="folder for grades.csv, grades.json and summary.md")
    g.add_argument("--timeout", type=count, default=600, help="seconds per notebook (default 600)")
    g.add_argument("--notebook", action="append", default=None,
                   help="grade only this notebook file name, e.g. 03_qtos_context_ca.ipynb (repeatable)")
    g.add_argument("--root", default=None, help="the course's checkout, where the notebooks run")
    g.set_defaults(func=_course_grade)


# ---------------------------------------------------------------------------------------------
# One line per failure
# ---------------------------------------------------------------------------------------------

def _close_bars() -> None:
    """End any progress bar left open by an exception, so the message starts on its own line."""
    try:
        from tqdm import tqdm
        for bar in list(getattr(tqdm, "_instances", [])):
            bar.close()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _resume_hint(args) -> str:
    """Where an interrupted ``train`` can resume from."""
    if args.command != "train":
        return ""
    out = Path(args.out)
    if (out / "last.pt").is_file():
        try:
            from .checkpoints import read_checkpoint
            step = f"step {read_checkpoint(out / 'last.pt')['step']}"
        except (FscalError, KeyError):
            step = "its last checkpoint"
        return (f"; the run can resume from {step} ({str(out / 'last.pt')!r}): repeat the command with "
                f"--resume" + (" instead of --overwrite" if args.overwrite else ""))
    if (out / "config.json").is_file():
        return ("; no checkpoint was written yet: repeat the command with --resume to start the run "
                "again from step 0")
    return "; nothing of the run was written"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command

    def fail(message: str) -> int:
        _close_bars()
        print(f"fscal-edu {command}: error: {message}", file=sys.stderr)
        return 2

    old_format, stdout = warnings.formatwarning, sys.stdout
    warnings.formatwarning = lambda message, *a, **k: f"fscal-edu {command}: warning: {message}\n"
    sys.stdout = LeavableStdout(stdout)
    try:
        configure_process(threads=getattr(args, "threads", None))   # only some subcommands have --threads
        code = int(args.func(args) or 0)
        sys.stdout.flush()             # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError as e:       # stdout's reader left (`... | head`): the work is done, end quietly
        if e.filename is not None:
            return fail(f"{where(file=e.filename, field='path')}: {e.strerror}")
        silence_stdout()
        return 0
    except KeyboardInterrupt:
        _close_bars()
        print(f"fscal-edu {command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except FscalError as e:            # bad input: a clear message, no traceback
        return fail(_one_line(e))
    except UnicodeDecodeError as e:    # a text file that is not UTF-8 is bad input too
        return fail(f"{where(field='encoding')}: a file is not UTF-8 text ({_one_line(e)})")
    except OSError as e:               # a folder that cannot be created, a full disk, no permission
        return fail(f"{where(file=e.filename, field='path')}: {e.strerror or _one_line(e)}")
    except Exception:                  # noqa: BLE001 - anything else is a bug: show where it happened
        _close_bars()
        traceback.print_exc()
        print(f"fscal-edu {command}: this is a bug in fscal-edu, please report it (the command line and "
              f"the traceback above)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning, sys.stdout = old_format, stdout


if __name__ == "__main__":
    sys.exit(main())
