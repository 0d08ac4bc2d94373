"""The student's parts in the real model: the reference parts, plugged in through the student path,
train to the reference run byte for byte; a wrong part is named; stubs and broken files fall back."""
import json

import pytest
import torch
from einops import rearrange, reduce

from conftest import DATA
from fscal_edu import parts
from fscal_edu.config import get_config
from fscal_edu.train import train

WORLD = DATA / "anet_like"
CFG = dict(steps=24, eval_every=12)


def _train(out, part_set=None):
    train(get_config("tiny", **CFG), WORLD, out, seed=0, device="cpu", progress=False, threads=1, parts=part_set)
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("reference") / "run")


@pytest.fixture(autouse=True)
def own_parts_folder(tmp_path, monkeypatch):
    """Every test keeps its saved parts in its own folder."""
    monkeypatch.setenv("FSCAL_PARTS", str(tmp_path / "my_parts"))


def wrapped(fn, calls, name):
    """A fresh python function around ``fn``, counting its calls: not the reference object itself."""
    def part(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)
    return part


def test_reference_parts_through_the_student_path_give_the_reference_log_byte_for_byte(reference_run, tmp_path, capsys):
    calls = {}
    fns = {name: wrapped(p.reference, calls, name) for name, p in parts.PARTS.items()}
    mine = parts.collect(**fns)
    said = capsys.readouterr().out
    assert all(getattr(mine, n) is fns[n] for n in parts.PARTS)
    assert said.count(": yours") == len(parts.PARTS), said
    calls.clear()                                   # count the calls of training alone
    run = _train(tmp_path / "student", mine)
    assert set(calls) == set(parts.PARTS), calls    # every part ran inside training
    assert (run / "metrics.jsonl").read_bytes() == (reference_run / "metrics.jsonl").read_bytes()
    assert parts.compare_runs(reference_run, run, mine)["identical"]


def averaged_supports_stoq(Y_S, X_Q, W, mask_Q, attend):
    """A StoQ with a bug: the K supports are averaged into one clip of T_S snippets before attending
    (eq. 6 takes all K*T_S snippets as sources)."""
    return attend(reduce(Y_S, "b k t d -> b t d", "mean"), X_Q, W, mask_b=mask_Q)


def test_a_wrong_part_is_named_with_the_first_step_at_which_the_runs_differ(reference_run, tmp_path, capsys):
    mine = parts.collect(stoq=averaged_supports_stoq)
    run = _train(tmp_path / "student", mine)
    ref = (reference_run / "metrics.jsonl").read_text().splitlines()
    got = (run / "metrics.jsonl").read_text().splitlines()
    first = next(i for i, (a, b) in enumerate(zip(ref, got)) if a != b)
    capsys.readouterr()
    result = parts.compare_runs(reference_run, run, mine)
    assert not result["identical"]
    assert result["step"] == json.loads(ref[first])["step"]
    assert result["reference"] == json.loads(ref[first])[result["field"]]
    assert result["yours"] == json.loads(got[first])[result["field"]]
    assert result["explained_by"] == ["stoq"], result
    said = capsys.readouterr().out
    assert "StoQ Context-CA (notebook 05)" in said and f"step {result['step']}" in said


def test_a_stub_falls_back_to_the_reference_with_one_line(capsys):
    def my_qtos(X_Q, X_S, W, mask_Q, attend):
        raise NotImplementedError

    mine = parts.collect(qtos=my_qtos, stoq=lambda *a: None)
    said = capsys.readouterr().out.splitlines()
    assert "QtoS Context-CA (notebook 03): using the reference, yours is not attempted yet" in said
    assert "StoQ Context-CA (notebook 05): using the reference, yours is not attempted yet" in said
    assert len(said) == len(parts.PARTS)
    assert mine == parts.REFERENCE


def test_mine_uses_the_reference_while_yours_is_a_stub(capsys):
    def my_tiou(a, b):
        return None
    a, b = torch.tensor([[0.0, 4.0]]), torch.tensor([[2.0, 6.0]])
    assert parts.mine(my_tiou, parts.REFERENCE.tiou, a, b, name="tIoU").item() == pytest.approx(1 / 3)
    assert capsys.readouterr().out == "tIoU: using the reference, yours is not attempted yet\n"
    assert parts.mine(lambda a, b: a.sum(), parts.REFERENCE.tiou, a, b, name="tIoU").item() == 4.0
    assert capsys.readouterr().out == ""


SOURCE = '''
def my_relation_targets(labels, episode_label):
    partner = torch.roll(episode_label, 1, 0)
    return labels.float(), (labels == 1) & (episode_label != partner)[:, None]
'''


def test_a_part_saved_from_a_string_loads_back_and_is_used(tmp_path, capsys):
    path = tmp_path / "cell.py"
    path.write_text(SOURCE)
    space = {"torch": torch}
    exec(compile(SOURCE, str(path), "exec"), space)
    saved = parts.save("relation_targets", space["my_relation_targets"])
    assert saved == tmp_path / "my_parts" / "relation_targets.json"
    path.unlink()                                   # the source now lives in the saved file alone
    loaded = parts.load()
    assert list(loaded) == ["relation_targets"]
    labels, episode = torch.tensor([[1, 0, -1], [1, 1, 0]]), torch.tensor([3, 4])
    for got, want in zip(loaded["relation_targets"](labels, episode), parts.REFERENCE.relation_targets(labels, episode)):
        assert torch.equal(got, want)
    capsys.readouterr()
    mine = parts.collect()                          # nothing given: the saved parts
    assert "Relation targets (notebook 06): yours" in capsys.readouterr().out
    assert mine.relation_targets is not parts.REFERENCE.relation_targets
    assert parts.save("relation_targets", mine.relation_targets) == saved   # saved again from the kept source


def test_a_saved_part_that_fails_prints_one_line_and_falls_back(tmp_path, capsys):
    folder = tmp_path / "my_parts"
    folder.mkdir()
    (folder / "qtos.json").write_text(json.dumps({"part": "qtos", "function": "my_qtos",
                                                  "source": "def my_qtos(X_Q, X_S, W, mask_Q, attend)\n    pass\n"}))
    (folder / "stoq.json").write_text(json.dumps({"part": "stoq", "function": "my_stoq",
                                                  "source": "def my_stoq(Y_S, X_Q, W, mask_Q, attend):\n"
                                                            "    return undefined_name\n"}))
    mine = parts.collect()
    said = capsys.readouterr().out.splitlines()
    qtos = [ln for ln in said if ln.startswith("QtoS Context-CA (notebook 03)")]
    stoq = [ln for ln in said if ln.startswith("StoQ Context-CA (notebook 05)")]
    assert len(qtos) == 2 and "could not load" in qtos[0] and "SyntaxError" in qtos[0]
    assert qtos[1].endswith("using the reference, yours is not attempted yet")
    assert len(stoq) == 1 and "using the reference, yours raised" in stoq[0] and "NameError" in stoq[0], said
    assert mine == parts.REFERENCE


def test_unknown_part_names_are_refused():
    with pytest.raises(Exception, match="unknown part 'qtoss'"):
        parts.collect(qtoss=lambda *a: None)


def write_log(folder, losses):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n"
                                                  for i, v in enumerate(losses)))
    return folder


def reordered_stoq(Y_S, X_Q, W, mask_Q, attend):
    """Right, in another order: the snippets ordered time-major, so the softmax sums in another order."""
    X_Q_tilde, A = attend(rearrange(Y_S, "b k t d -> b (t k) d"), X_Q, W, mask_b=mask_Q)
    return X_Q_tilde, rearrange(A, "b (t k) n -> b (k t) n", k=Y_S.shape[1])


def test_logs_that_differ_when_every_part_passes_are_float_rounding(tmp_path, capsys):
    ref = write_log(tmp_path / "ref", [1.0, 0.9, 0.8])
    got = write_log(tmp_path / "got", [1.0, 0.9000009, 0.8])
    result = parts.compare_runs(ref, got, parts.Parts(stoq=reordered_stoq))
    assert (result["step"], result["field"], result["reference"], result["yours"]) == (2, "loss", 0.9, 0.9000009)
    assert result["explained_by"] == [] and result["parts"] == {"stoq": "correct"}
    assert result["max_rel_loss"] == pytest.approx(1e-6)
    assert "float rounding" in capsys.readouterr().out
    short = write_log(tmp_path / "short", [1.0, 0.9])
    assert parts.compare_runs(ref, short)["step"] == 3          # the log that stops early differs there


def test_a_right_part_that_adds_in_another_order_is_float_rounding_not_a_mistake(reference_run, tmp_path, capsys):
    mine = parts.collect(stoq=reordered_stoq)
    run = _train(tmp_path / "student", mine)
    capsys.readouterr()
    result = parts.compare_runs(reference_run, run, mine)
    assert not result["identical"] and result["explained_by"] == [], result
    worst = next(iter(result["max_rel"].values()))
    assert 0 < worst < 1e-4, result
    assert "Same up to float rounding" in capsys.readouterr().out


def test_student_model_runs_the_parts_it_is_given(capsys):
    def my_stoq(Y_S, X_Q, W, mask_Q, attend):
        return parts.REFERENCE.stoq(Y_S, X_Q, W, mask_Q, attend)
    model = parts.student_model(get_config("tiny"), stoq=my_stoq)
    assert model.stoq.part is my_stoq and model.qtos.part is parts.REFERENCE.qtos
    assert model.dynamics.coarse is parts.REFERENCE.coarse_tokens
    assert "StoQ Context-CA (notebook 05): yours" in capsys.readouterr().out
