"""The package's layout: no import cycle, short modules, process-wide settings only in the entry
point helper, the nested config (and the old flat one of the shipped checkpoints)."""
import ast
import dataclasses
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
    """The first 60 fixed 5-shot test episodes, numbers measured before the modules moved."""
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


FULL_5SHOT_60 = {"mAP@0.5": 0.6464595156074943, "average_mAP": 0.31725918863376273}   # before the change


def test_width_mismatch_is_an_error_unless_asked(tmp_path):
    world = World(DATA / "anet_like")
    cfg = get_config("tiny", feature_dim=32, steps=1, eval_every=1, val_episodes=2)
    with pytest.raises(FscalError, match=r"features\.json', field 'feature_dim'.*width 64.*feature_dim is 32"):
        train(cfg, world, tmp_path / "a", device="cpu", progress=False)
    train(cfg, world, tmp_path / "b", device="cpu", progress=False, feature_dim="data")
    assert load_model(tmp_path / "b" / "best.pt").cfg.data.feature_dim == 64
