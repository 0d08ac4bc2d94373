"""The full model, its losses, training, checkpoints and resume (tiny preset, seconds each)."""
import json

import pytest
import torch

from fscal_edu.config import ABLATIONS, get_config
from fscal_edu.data.episodes import RandomEpisodes, World, collate
from fscal_edu.losses import fscal_loss
from fscal_edu.model import FSCAL, count_parameters
from fscal_edu.checkpoints import load_model, read_checkpoint, save_checkpoint
from fscal_edu.train import train
from fscal_edu.utils import FscalError, seed_everything

from conftest import DATA

WORLD = DATA / "anet_like"


@pytest.fixture(scope="module")
def world():
    return World(WORLD)


def batch_of(world, cfg, shots, n=4, seed=0):
    ds = RandomEpisodes(world, "base", shots, n, cfg.data.T, cfg.data.T_S, seed=seed)
    return collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("shots", [1, 5])
def test_forward_backward_shapes(world, shots):
    cfg = get_config("tiny", shots=shots)
    seed_everything(0)
    model = FSCAL(cfg)
    b = batch_of(world, cfg, shots)
    out = model(b["query"], b["support"])
    N = len(model.anchors)
    assert out.logits.shape == (4, N)
    assert out.deltas.shape == (4, N, 2)
    assert out.support_tokens.shape == (4, shots, cfg.data.T_S, cfg.model.d)
    assert set(out.attention) == {"qtos", "dynamics", "stoq"}
    terms = fscal_loss(out, b, cfg.loss)
    assert set(terms) == {"cls", "reg", "rel", "loss"}
    terms["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []   # every parameter, every W included, receives a gradient


def test_overfit_one_batch(world):
    cfg = get_config("tiny")
    seed_everything(0)
    model = FSCAL(cfg)
    b = batch_of(world, cfg, cfg.data.shots)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        terms = fscal_loss(model(b["query"], b["support"]), b, cfg.loss)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.3 * losses[0]


def test_blind_model_ignores_supports(world):
    cfg = get_config("tiny", ablate="blind")
    seed_everything(0)
    model = FSCAL(cfg).eval()
    b = batch_of(world, cfg, cfg.data.shots)
    out1 = model(b["query"], b["support"])
    out2 = model(b["query"], torch.randn_like(b["support"]) * 5)
    assert torch.equal(out1.logits, out2.logits) and torch.equal(out1.deltas, out2.deltas)
    assert out1.attention == {}
    # ... while the full model does read them
    full = FSCAL(get_config("tiny")).eval()
    assert not torch.allclose(full(b["query"], b["support"]).logits,
                              full(b["query"], torch.randn_like(b["support"]) * 5).logits)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_and_trains_a_step(world, name):
    cfg = get_config("tiny", ablate=name)
    model = FSCAL(cfg)
    b = batch_of(world, cfg, cfg.data.shots, n=2)
    terms = fscal_loss(model(b["query"], b["support"]), b, cfg.loss)
    assert torch.isfinite(terms["loss"])
    assert ("rel" in terms) == cfg.switches.relation     # blind implies no relation module


def test_unknown_ablation_and_preset():
    with pytest.raises(ValueError, match="unknown ablation"):
        get_config("tiny", ablate="no_such_thing")
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("huge")


def test_save_load_identical_outputs(world, tmp_path):
    cfg = get_config("tiny")
    seed_everything(0)
    model = FSCAL(cfg).eval()
    save_checkpoint(tmp_path / "m.pt", model)
    again = load_model(tmp_path / "m.pt", device="cpu")
    b = batch_of(world, cfg, cfg.data.shots)
    assert torch.equal(model(b["query"], b["support"]).logits, again(b["query"], b["support"]).logits)
    assert count_parameters(again) == count_parameters(model)


def test_corrupt_foreign_and_missing_checkpoints(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(FscalError, match="corrupt.pt.*not a readable checkpoint"):
        load_model(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(FscalError, match="foreign.pt.*field 'format'.*not an fscal-edu checkpoint"):
        load_model(foreign)
    with pytest.raises(FscalError, match="missing"):
        load_model(tmp_path / "nope.pt")
    # a truncated real checkpoint
    save_checkpoint(tmp_path / "ok.pt", FSCAL(get_config("tiny")))
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FscalError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")


def test_wrong_feature_width_for_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "m.pt", FSCAL(get_config("tiny")))
    with pytest.raises(FscalError, match="m.pt.*field 'feature_dim'.*width 64.*width 2048"):
        load_model(tmp_path / "m.pt", feature_dim=2048)
    model = FSCAL(get_config("tiny"))
    with pytest.raises(ValueError):
        model(torch.randn(1, 32, 48), torch.randn(1, 5, 8, 48))


def test_weights_that_do_not_fit_the_config(tmp_path):
    save_checkpoint(tmp_path / "m.pt", FSCAL(get_config("tiny")))
    state = read_checkpoint(tmp_path / "m.pt")
    state["config"]["model"]["d"] = 32
    torch.save(state, tmp_path / "m2.pt")
    with pytest.raises(FscalError, match=r"m2.pt', field 'model\.embed\.net\.0\.weight': shape \(16, 64, 3\)"):
        load_model(tmp_path / "m2.pt")


def test_train_writes_run_and_is_repeatable(world, tmp_path):
    cfg = get_config("tiny", steps=6, eval_every=3)
    r1 = train(cfg, world, tmp_path / "a", seed=3, device="cpu", progress=False, threads=1)
    r2 = train(cfg, world, tmp_path / "b", seed=3, device="cpu", progress=False, threads=1)
    for name in ("best.pt", "last.pt", "config.json", "metrics.jsonl"):
        assert (tmp_path / "a" / name).is_file()
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log_a] == list(range(1, 7))
    assert "val_mAP@0.5" in log_a[2] and "val_mAP@0.5" in log_a[5]
    strip = lambda log: [{k: v for k, v in x.items() if k != "time_s"} for x in log]  # noqa: E731
    assert strip(log_a) == strip(log_b)       # same seed, same numbers on CPU
    assert r1["best_val_mAP@0.5"] == r2["best_val_mAP@0.5"]


def test_resume_matches_uninterrupted_run(world, tmp_path):
    cfg = get_config("tiny", steps=8, eval_every=4)
    train(cfg, world, tmp_path / "whole", seed=1, device="cpu", progress=False, threads=1)
    train(cfg, world, tmp_path / "cut", seed=1, device="cpu", progress=False, threads=1, stop_at=4)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 4
    train(cfg, world, tmp_path / "cut", seed=1, device="cpu", progress=False, resume=True)
    a = read_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.jsonl").read_text().count("\n") == \
        (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n")


# --- a checkpoint is checked before a model is built from it --------------------------------------

def _edited_checkpoint(tmp_path, change, name="bad.pt"):
    save_checkpoint(tmp_path / "m.pt", FSCAL(get_config("tiny")))
    state = read_checkpoint(tmp_path / "m.pt")
    change(state)
    torch.save(state, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("change, field", [
    (lambda s: s.__setitem__("config", [1, 2]), "config"),
    (lambda s: s["config"]["model"].__setitem__("d", 0), "model.d"),
    (lambda s: s["config"]["model"].__setitem__("d", -4), "model.d"),
    (lambda s: s["config"]["model"].__setitem__("d", "64"), "model.d"),
    (lambda s: s["config"].__setitem__("model", [64]), "model"),
    (lambda s: s["config"]["data"].__setitem__("T", 10**7), "data.T"),
    (lambda s: s.__setitem__("model", [t for t in s["model"].values()]), "model"),
    (lambda s: s.__setitem__("step", "7"), "step"),
])
def test_a_checkpoint_config_is_checked_before_the_model_is_built(tmp_path, change, field):
    path = _edited_checkpoint(tmp_path, change)
    for read in (read_checkpoint, load_model):
        with pytest.raises(FscalError) as e:
            read(path)
        message = str(e.value)
        assert message.startswith(f"file '{path}', field '{field}'") and "\n" not in message, message


def test_nan_weights_name_the_checkpoint_and_the_parameter(tmp_path):
    name = next(k for k, v in FSCAL(get_config("tiny")).state_dict().items() if v.is_floating_point())

    def poison(state):
        state["model"][name] = state["model"][name].clone()
        state["model"][name].view(-1)[0] = float("nan")
    path = _edited_checkpoint(tmp_path, poison)
    with pytest.raises(FscalError, match=rf"^file '{path}', field 'model\.{name}': 1 of \d+ weights are NaN or inf"):
        load_model(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_with_code_is_refused_keeping_torchs_warning(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fscal-edu-checkpoint-v1", "config": _RunsCode()}, path)
    with pytest.raises(FscalError) as e:
        load_model(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"file '{path}'")
    assert "weights_only" in message and "arbitrary code execution" in message, message
    assert "this ran" not in capsys.readouterr().out


def test_train_resume_and_evaluate_read_checkpoints_through_the_same_checks(world, tmp_path, capsys):
    from worlds import assert_error, run_cli
    cfg = get_config("tiny", steps=4, eval_every=2, val_episodes=2)
    train(cfg, world, tmp_path / "run", seed=0, device="cpu", progress=False, threads=1, stop_at=2)
    last = tmp_path / "run" / "last.pt"
    state = read_checkpoint(last)
    state["config"]["model"]["d"] = "64"
    torch.save(state, last)
    with pytest.raises(FscalError, match=f"^file '{last}', field 'model.d'"):
        train(cfg, world, tmp_path / "run", seed=0, device="cpu", progress=False, threads=1, resume=True)
    assert_error(run_cli(capsys, "evaluate", "--data", world.root, "--checkpoint", last), "evaluate",
                 str(last), "field 'model.d'")
