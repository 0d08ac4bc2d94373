"""The package's layout: no import cycle, short modules and functions, the command line only in
``cli.py``, no path into the repository, process-wide settings only in the entry point helper
(and never read back by train()), the nested config (and the old flat one of the shipped
checkpoints)."""
import ast
import dataclasses
import json
import re

import pytest
import torch

from fscal_edu.checkpoints import load_model, read_checkpoint
from fscal_edu.config import ABLATIONS, PRESETS, SECTIONS, Config, get_config
from fscal_edu.data.episodes import World
from fscal_edu.inference import evaluate_model
from fscal_edu.model import FSCAL
from fscal_edu.runtime import configure_process
from fscal_edu.train import train
from fscal_edu.utils import FscalError

from conftest import DATA, ROOT

PACKAGE = ROOT / "fscal_edu"
SHIPPED = sorted((DATA / "checkpoints").rglob("*.pt"))


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules: set) -> set:
    """Every fscal_edu module that ``path`` imports, at module level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def test_no_import_cycle_inside_the_package():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    assert graph["fscal_edu.train"] >= {"fscal_edu.checkpoints", "fscal_edu.inference"}   # the walk sees edges
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def function_spans(path) -> dict:
    """``{"Class.name" or "name": lines}`` of every function in ``path``, decorators included."""
    spans = {}

    def walk(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                spans[prefix + child.name] = child.end_lineno - first + 1
                walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
    walk(ast.parse(path.read_text()))
    return spans


def test_no_function_over_80_lines():
    long = {f"{p.relative_to(ROOT)}:{name}": n for p in PACKAGE.rglob("*.py")
            for name, n in function_spans(p).items() if n > 80}
    assert long == {}
    assert function_spans(PACKAGE / "train.py")["train"] <= 60       # train() reads as its named steps


def test_the_command_line_lives_in_cli_only():
    """No argparse, no ``main_*`` handler outside ``cli.py``; every handler there is thin."""
    for p in PACKAGE.rglob("*.py"):
        if p.name == "cli.py":
            continue
        tree = ast.parse(p.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in imported, p
        assert not [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("main_")], p
    handlers = {k: n for k, n in function_spans(PACKAGE / "cli.py").items() if k.startswith("_") and not k.startswith("_add")}
    assert {"_train", "_evaluate", "_score", "_prepare", "_generate", "_demo"} <= set(handlers)
    assert max(handlers.values()) <= 40, handlers


def test_a_bug_shows_its_traceback_and_bad_input_one_line(tmp_path, capsys, monkeypatch):
    """cli.main: an FscalError is bad input (one line, exit 2); any other exception, even a plain
    ValueError, is a bug (the traceback, one line asking for a report, exit 1)."""
    import fscal_edu.evaluation as evaluation
    from fscal_edu.cli import main
    gt = DATA / "anet_like" / "annotations.json"

    def broken(*a, **k):
        raise ValueError("an internal slip")
    monkeypatch.setattr(evaluation, "evaluate_detection", broken)
    assert main(["score", str(gt), str(gt)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: an internal slip" in err
    assert err.strip().splitlines()[-1].startswith("fscal-edu score: this is a bug in fscal-edu, please report it")

    def refused(*a, **k):
        raise FscalError("file 'x.json', field 'results': not a results file")
    monkeypatch.setattr(evaluation, "evaluate_detection", refused)
    assert main(["score", str(gt), str(gt)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "fscal-edu score: error: file 'x.json', field 'results': not a results file"


def test_shipped_data_from_the_checkout_or_a_data_directory(tmp_path, monkeypatch):
    from fscal_edu.runtime import DATA_ENV, shipped
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert (shipped("anet_like") / "world.json").is_file() and (shipped("checkpoints") / "full.pt").is_file()
    assert (shipped("results") / "ablations.json").is_file()
    (tmp_path / "results").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert shipped("results") == tmp_path / "results"
    with pytest.raises(FscalError, match=r"field 'FSCAL_DATA'.*no folder 'anet_like'"):
        shipped("anet_like")


def test_no_path_into_the_repository():
    """The package finds its data through :func:`fscal_edu.runtime.shipped`, never ``parents[N]``."""
    hits = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if re.search(r"parents\s*\[", p.read_text())]
    assert hits == []


def test_an_earlier_configure_process_does_not_change_a_run(tmp_path, monkeypatch):
    """The thread count is an argument of train(): its default is the policy, never what an
    earlier configure_process() call asked for."""
    import fscal_edu.train as training
    monkeypatch.setattr(training, "free_threads", lambda: 1)
    threads = torch.get_num_threads()
    cfg = get_config("tiny", steps=1, eval_every=1, val_episodes=2)
    try:
        configure_process(threads=2)
        train(cfg, DATA / "anet_like", tmp_path / "default", device="cpu", progress=False)
        train(cfg, DATA / "anet_like", tmp_path / "asked", device="cpu", progress=False, threads=2)
    finally:
        configure_process(threads=threads)
    stored = {name: json.loads((tmp_path / name / "config.json").read_text())["threads"] for name in ("default", "asked")}
    assert stored == {"default": 1, "asked": 2}


def test_process_wide_settings_only_in_the_entry_point_helper():
    hits = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
            if re.search(r"set_flush_denormal|set_num_threads", p.read_text())]
    assert hits == ["fscal_edu/runtime.py"]
    before = torch.is_grad_enabled(), torch.get_num_threads()
    FSCAL(get_config("tiny"))                       # building a model changes nothing global
    assert (torch.is_grad_enabled(), torch.get_num_threads()) == before


# ---------------------------------------------------------------------------------------------
# The nested config
# ---------------------------------------------------------------------------------------------

def flat(cfg: Config) -> dict:
    return {f.name: getattr(getattr(cfg, s), f.name) for s in SECTIONS for f in dataclasses.fields(SECTIONS[s])}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_round_trip_nested_and_old_flat(preset):
    for name in [None, *ABLATIONS]:
        cfg = get_config(preset, ablate=[name] if name else [])
        assert Config.from_dict(cfg.to_dict()) == cfg
        old = {**flat(cfg), "preset": cfg.preset}           # the flat form of older checkpoints
        assert Config.from_dict(old) == cfg
        assert Config.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in old.items()}) == cfg  # JSON


def test_presets_and_ablations_keep_their_values():
    quick = flat(get_config("quick"))
    assert quick == flat(Config()) | {"steps": 700, "eval_every": 175}
    tiny = flat(get_config("tiny"))
    assert {k: tiny[k] for k in ("d", "T", "T_S", "embed_layers", "anchor_lengths", "steps", "batch_size",
                                  "eval_every", "val_episodes", "warmup")} == \
        dict(d=16, T=32, T_S=8, embed_layers=1, anchor_lengths=(4, 8, 16), steps=20, batch_size=4,
             eval_every=10, val_episodes=8, warmup=2)
    for name, changes in ABLATIONS.items():
        got = flat(get_config("quick", ablate=name))
        assert {k: v for k, v in got.items() if quick[k] != v} == \
            {k: v for k, v in (changes | ({"relation": False} if name == "blind" else {})).items() if quick[k] != v}
    assert get_config("quick", ablate="blind").switches.relation is False      # blind implies no relation


def test_overrides_flat_sectioned_and_dotted():
    a = get_config("quick", shots=1, steps=40)
    assert (a.data.shots, a.optim.steps) == (1, 40)
    assert get_config("quick", data__shots=1, optim__steps=40) == a
    assert get_config("quick").replace(**{"data.shots": 1, "optim.steps": 40}) == a
    b = a.replace(d=32)
    assert (a.model.d, b.model.d) == (64, 32)                  # a copy; the original is untouched
    with pytest.raises(ValueError, match="unknown field"):
        get_config("quick", no_such_field=1)
    with pytest.raises(ValueError, match="unknown field"):
        Config.from_dict({"optim": {"d": 3}})


# ---------------------------------------------------------------------------------------------
# Shipped checkpoints (old flat config format) and the data's width
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoints_load(path):
    state = read_checkpoint(path)
    assert "d" in state["config"]                           # stored flat, before the nested config
    model = load_model(path, feature_dim=64, device="cpu")
    assert Config.from_dict(state["config"]) == model.cfg and not model.training


def test_shipped_full_checkpoint_gives_its_test_map():
    """The first 60 fixed 5-shot test episodes: the numbers the shipped checkpoint (quick preset,
    seed 0, one thread) gave when it was made; a change of the model's code that moves them is seen."""
    path = DATA / "checkpoints" / "full.pt"
    if not path.is_file():
        pytest.skip("data_samples/checkpoints/full.pt is absent")
    threads = torch.get_num_threads()
    configure_process(threads=1)
    try:
        metrics, _ = evaluate_model(load_model(path, device="cpu"), World(DATA / "anet_like"), "test", 5, limit=60)
    finally:
        configure_process(threads=threads)
    assert metrics["mAP@0.5"] == pytest.approx(FULL_5SHOT_60["mAP@0.5"], abs=1e-6)
    assert metrics["average_mAP"] == pytest.approx(FULL_5SHOT_60["average_mAP"], abs=1e-6)


FULL_5SHOT_60 = {"mAP@0.5": 0.6647788203928582, "average_mAP": 0.3331137384347405}   # when full.pt was made


def test_width_mismatch_is_an_error_unless_asked(tmp_path):
    world = World(DATA / "anet_like")
    cfg = get_config("tiny", feature_dim=32, steps=1, eval_every=1, val_episodes=2)
    with pytest.raises(FscalError, match=r"features\.json', field 'feature_dim'.*width 64.*feature_dim is 32"):
        train(cfg, world, tmp_path / "a", device="cpu", progress=False)
    train(cfg, world, tmp_path / "b", device="cpu", progress=False, feature_dim="data")
    assert load_model(tmp_path / "b" / "best.pt").cfg.data.feature_dim == 64
