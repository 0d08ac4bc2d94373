"""The checkers of the student's parts of the model: one per part of ``parts.PARTS``, each passes the
library's reference and names the known mistakes; an attempted part is kept for the model; the
grouping exercise of notebook 05; ``solutions.reveal`` shows a solution only on purpose."""
import functools
import inspect
import json

import pytest
import torch
from einops import rearrange, reduce

from fscal_edu import attention, checking, exercises as ex, exercises_parts as xp, mistakes, parts
from fscal_edu import solutions as sol
from fscal_edu.utils import FscalError


@pytest.fixture(autouse=True)
def parts_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FSCAL_PARTS", str(tmp_path / "my_parts"))
    return tmp_path / "my_parts"


def test_part_checks_cover_every_part_and_pass_its_reference(capsys):
    assert list(ex.PART_CHECKS) == list(parts.PARTS)
    for name, part in parts.PARTS.items():
        assert ex.PART_CHECKS[name](part.reference) is True, name
        out = capsys.readouterr().out
        assert "Correct!" in out and "differ" not in out, name


def _named(check, wrong, named, capsys):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out, out
    return out

# ---------------------------------------------------------------------------------------------
# Every mistake of the catalogue, computed by its variant, is named by the checker
# ---------------------------------------------------------------------------------------------


def _every_flag(known):
    return [pytest.param(flag, id=flag) for flag in known]


@pytest.mark.parametrize("flag", _every_flag(mistakes.ATTEND))
def test_check_attend_names_every_mistake_of_the_catalogue(flag, capsys):
    wrong = lambda X_a, X_b, W, axis="row", scale=1.0, mass_norm=False, mask_a=None, mask_b=None: (  # noqa: E731
        mistakes.attend_variant(X_a, X_b, W, scale, mass_norm, mask_a, mask_b, **{flag: True}))
    _named(ex.check_attend, wrong, mistakes.ATTEND[flag], capsys)


@pytest.mark.parametrize("flag", _every_flag(mistakes.QTOS))
def test_check_qtos_names_every_mistake_of_the_catalogue(flag, capsys):
    _named(ex.check_qtos, functools.partial(mistakes.qtos_variant, **{flag: True}), mistakes.QTOS[flag], capsys)


@pytest.mark.parametrize("flag", _every_flag(mistakes.COARSE_TOKENS))
def test_check_coarse_tokens_names_every_mistake_of_the_catalogue(flag, capsys):
    _named(ex.check_coarse_tokens, functools.partial(mistakes.coarse_tokens_variant, **{flag: True}),
           mistakes.COARSE_TOKENS[flag], capsys)


@pytest.mark.parametrize("flag", _every_flag(mistakes.DYNAMICS))
def test_check_dynamics_names_every_mistake_of_the_catalogue(flag, capsys):
    _named(ex.check_dynamics, functools.partial(mistakes.dynamics_variant, **{flag: True}),
           mistakes.DYNAMICS[flag], capsys)


@pytest.mark.parametrize("flag", _every_flag(mistakes.STOQ))
def test_check_stoq_names_every_mistake_of_the_catalogue(flag, capsys):
    _named(ex.check_stoq, functools.partial(mistakes.stoq_variant, **{flag: True}), mistakes.STOQ[flag], capsys)


def test_every_part_variant_without_a_mistake_is_the_reference():
    for case in xp.attend_cases().values():
        X_a, X_b, W, scale, mass_norm, mask_a, mask_b = case
        assert checking.close(mistakes.attend_variant(*case), attention.cross_attend(
            X_a, X_b, W, scale=scale, mass_norm=mass_norm, mask_a=mask_a, mask_b=mask_b))
    for case in xp.qtos_cases().values():
        assert checking.close(mistakes.qtos_variant(*case), attention.qtos_part(*case))
    for case in xp.coarse_cases().values():
        assert checking.close(mistakes.coarse_tokens_variant(*case), attention.coarse_part(*case))
    for case in xp.dynamics_cases().values():
        assert checking.close(mistakes.dynamics_variant(*case), attention.dynamics_part(*case))
    for case in xp.stoq_cases().values():
        assert checking.close(mistakes.stoq_variant(*case), attention.stoq_part(*case))


def test_the_coarse_tokens_reference_is_the_stage_with_its_own_convolutions():
    X = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    stage = attention.DynamicsCA(6, (2, 4)).double()
    with torch.no_grad():
        for p in stage.parameters():
            p.normal_()
        w = {k: (stage.w[str(k)].weight, stage.w[str(k)].bias) for k in (2, 4)}
        assert checking.close(mistakes.coarse_tokens_variant(X, w), stage.coarse_tokens(X))

# ---------------------------------------------------------------------------------------------
# Mistakes written as a student would write them
# ---------------------------------------------------------------------------------------------



def _added(A, X_a, X_b, mask_a, mask_b, mass_norm):
    """The added term A^T X_a, times N_b / N_a (real tokens) with the mass normalisation."""
    added = torch.einsum("...ij,...id->...jd", A, X_a)
    if mass_norm:
        N_a = X_a.shape[-2] if mask_a is None else mask_a.sum(-1)[..., None, None]
        N_b = X_b.shape[-2] if mask_b is None else mask_b.sum(-1)[..., None, None]
        added = added * N_b / N_a
    return added

def attend_mask_after_softmax(X_a, X_b, W, *, axis="row", scale=1.0, mass_norm=False, mask_a=None, mask_b=None):
    A = (scale * torch.einsum("...id,de,...je->...ij", X_a, W, X_b)).softmax(-1)
    if mask_a is not None:
        A = A * mask_a[..., :, None]
    if mask_b is not None:
        A = A * mask_b[..., None, :]
    return X_b + _added(A, X_a, X_b, mask_a, mask_b, mass_norm), A


def attend_counts_padding(X_a, X_b, W, *, axis="row", scale=1.0, mass_norm=False, mask_a=None, mask_b=None):
    X, A = attention.cross_attend(X_a, X_b, W, scale=scale, mask_a=mask_a, mask_b=mask_b)
    return (X_b + (X - X_b) * X_b.shape[-2] / X_a.shape[-2] if mass_norm else X), A


def attend_scale_after_softmax(X_a, X_b, W, *, axis="row", scale=1.0, mass_norm=False, mask_a=None, mask_b=None):
    _, A = attention.cross_attend(X_a, X_b, W, mask_a=mask_a, mask_b=mask_b)
    A = scale * A
    X, _ = attention.cross_attend(X_a, X_b, W, mask_a=mask_a, mask_b=mask_b)
    return X_b + _added(A, X_a, X_b, mask_a, mask_b, mass_norm), A


@pytest.mark.parametrize("wrong, named", [
    (attend_mask_after_softmax, "the mask is not applied before the softmax"),
    (attend_counts_padding, "the mass normalisation counts padded tokens"),
    (attend_scale_after_softmax, "the scale is applied after the softmax"),
])
def test_check_attend_names_a_students_mistake(wrong, named, capsys):
    out = _named(ex.check_attend, wrong, named, capsys)
    assert "attend, plain: Correct!" in out                  # the cases it gets right say so


def test_check_attend_without_leading_axes_says_how(capsys):
    def no_broadcast(X_a, X_b, W, *, axis="row", scale=1.0, mass_norm=False, mask_a=None, mask_b=None):
        if X_a.dim() != 3:
            torch.einsum("bid,de,bje->bij", X_a, W, X_b)
        return attention.cross_attend(X_a, X_b, W, scale=scale, mass_norm=mass_norm, mask_a=mask_a, mask_b=mask_b)
    assert ex.check_attend(no_broadcast) is False
    out = capsys.readouterr().out
    assert "write the einsums with '...'" in out and "no_broadcast: your code raised RuntimeError" in out


def qtos_joint(X_Q, X_S, W, mask_Q, attend):
    X, A = attend(X_Q, rearrange(X_S, "b k t d -> b (k t) d"), W, mask_a=mask_Q)
    return rearrange(X, "b (k t) d -> b k t d", k=X_S.shape[1]), A


def qtos_loop_without_mask(X_Q, X_S, W, mask_Q, attend):
    outs = [attend(X_Q, X_S[:, l], W) for l in range(X_S.shape[1])]
    return torch.stack([X for X, _ in outs], 1), torch.stack([A for _, A in outs], 1)


def test_check_qtos_names_a_students_mistake(capsys):
    _named(ex.check_qtos, qtos_joint, "that is the joint ablation", capsys)
    out = _named(ex.check_qtos, qtos_loop_without_mask, "mask_Q is not passed on", capsys)
    assert "QtoS, no padding: Correct!" in out            # a loop over the supports is right


def dynamics_own_only(X_S_prime, X_S_tilde, W, attend, mask_a=None):
    return attend(X_S_prime, X_S_tilde, W)


def test_check_dynamics_names_own_only(capsys):
    _named(ex.check_dynamics, dynamics_own_only, "that is own_only", capsys)


def coarse_ignores_w(X_S_tilde, w):
    return torch.cat([reduce(X_S_tilde, "b l (n k) d -> b l n d", "mean", k=k) for k in w], dim=-2)


def coarse_no_bias(X_S_tilde, w):
    X = rearrange(X_S_tilde, "b l t d -> (b l) d t")
    out = [torch.nn.functional.conv1d(X, weight, None, stride=k) for k, (weight, _) in w.items()]
    return rearrange(torch.cat(out, -1), "(b l) d n -> b l n d", b=X_S_tilde.shape[0])


def test_check_coarse_tokens_names_a_students_mistake(capsys):
    out = _named(ex.check_coarse_tokens, coarse_ignores_w, "the window mean, w_k's starting value", capsys)
    assert "the untrained w_k (window means): Correct!" in out
    _named(ex.check_coarse_tokens, coarse_no_bias, "the bias is missing", capsys)


def stoq_mask_on_source(Y_S, X_Q, W, mask_Q, attend):
    return attend(rearrange(Y_S, "b k t d -> b (k t) d"), X_Q, W, mask_a=mask_Q)


def stoq_per_support(Y_S, X_Q, W, mask_Q, attend):
    outs = [attend(Y_S[:, l], X_Q, W, mask_b=mask_Q) for l in range(Y_S.shape[1])]
    return X_Q + sum(X - X_Q for X, _ in outs), torch.cat([A for _, A in outs], 1)


def test_check_stoq_names_a_students_mistake(capsys):
    _named(ex.check_stoq, stoq_mask_on_source, "mask_Q on the source side", capsys)
    _named(ex.check_stoq, stoq_per_support, "each support attended on its own", capsys)

# ---------------------------------------------------------------------------------------------
# Notebook 05: under the row softmax the grouping matters only through the mass normalisation
# ---------------------------------------------------------------------------------------------


def test_grouping_matters_only_with_mass_norm_or_the_column_softmax():
    table = xp.grouping_table(sol.stoq_per_support)
    assert table["row"] < 1e-12
    assert table["row + mass_norm"] > 0.1 and table["column"] > 0.1


def test_check_stoq_per_support_prints_the_table(capsys):
    assert ex.check_stoq_per_support(sol.stoq_per_support)
    out = capsys.readouterr().out
    assert "  row " in out and out.count("not the same") == 2
    # all K*T_S at once is not "per support": named as a wrong answer, no table
    joint = lambda Y_S, X_Q, W, attend: attention.stoq_part(Y_S, X_Q, W, None, attend)[0]  # noqa: E731
    assert ex.check_stoq_per_support(joint) is False
    out = capsys.readouterr().out
    assert "per support, row: Correct!" in out and "per support, column:" in out and "the same" not in out


@pytest.mark.parametrize("answer, ok, hint", [
    (["row + mass_norm", "column"], True, None),
    ({"column", "row + mass_norm"}, True, None),
    (["row", "row + mass_norm", "column"], False, "under the row softmax each source snippet"),
    (["column"], False, "T_S for one support alone, K*T_S for all at once"),
    ("row + mass_norm", False, "the column softmax normalises each proposal's column"),
])
def test_check_grouping(answer, ok, hint, capsys):
    assert ex.check_grouping(answer) is ok
    out = capsys.readouterr().out
    assert ("Correct!" in out) is ok
    assert hint is None or hint in out


def test_check_grouping_refuses_an_unknown_setting(capsys):
    assert ex.check_grouping(["rows"]) is False
    assert "'rows' is none of 'row', 'row + mass_norm', 'column'" in capsys.readouterr().out
    assert ex.check_grouping(...) is False
    assert capsys.readouterr().out == "answer: not attempted yet - fill in the cell above\n"

# ---------------------------------------------------------------------------------------------
# An attempted part is kept for the model; the library's use of the checkers keeps nothing
# ---------------------------------------------------------------------------------------------


def my_stoq(Y_S, X_Q, W, mask_Q, attend):
    return attend(rearrange(Y_S, "b k t d -> b (k t) d"), X_Q, W, mask_b=mask_Q)


def my_stub(Y_S, X_Q, W, mask_Q, attend):
    raise NotImplementedError


def test_an_attempted_part_is_kept_right_or_wrong(parts_folder, capsys):
    assert ex.check_stoq(my_stoq)
    kept = json.loads((parts_folder / "stoq.json").read_text())
    assert kept["function"] == "my_stoq" and "mask_b=mask_Q" in kept["source"]
    assert parts.load()["stoq"](*xp.stoq_cases()["no padding"])[0].shape == (2, 7, 6)
    assert not ex.check_qtos(qtos_joint)                  # wrong, and kept: notebook 07 names it
    assert (parts_folder / "qtos.json").exists()


def test_a_stub_a_reference_and_a_quiet_check_keep_nothing(parts_folder, capsys):
    assert not ex.check_stoq(my_stub)
    assert ex.check_stoq(attention.stoq_part)
    n = len(checking.VERDICTS)
    assert checking.verdict_of(ex.check_stoq, my_stoq) == "correct"
    assert checking.verdict_of(ex.check_qtos, qtos_joint).startswith("wrong: all supports as one clip")
    assert len(checking.VERDICTS) == n and capsys.readouterr().out.count("\n") == 3   # the two checks above
    assert not parts_folder.exists()


def test_a_lambda_is_checked_but_not_kept_and_says_so_in_one_line(parts_folder, capsys):
    assert ex.check_stoq(lambda Y_S, X_Q, W, m, attend: attention.stoq_part(Y_S, X_Q, W, m, attend))
    out = capsys.readouterr().out.splitlines()
    assert sum("not saved" in line or "not kept" in line for line in out) == 1
    assert not (parts_folder / "stoq.json").exists()

# ---------------------------------------------------------------------------------------------
# reveal: one line without sure, the source with it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*parts.PARTS, "lr_factor", "my_lr_factor", "welch_t", "support_mass",
                                  "stoq_per_support", "cross_attend", "mass_norm_factor"])
def test_reveal_without_sure_is_one_line_without_code(name, capsys):
    sol.reveal(name)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "sure=True" in out
    source = inspect.getsource(sol.revealable()[name.removeprefix("my_")][1])
    assert not any(line.strip() in out for line in source.splitlines()[1:] if len(line.strip()) > 12)
    sol.reveal(name, sure=True)
    assert source in capsys.readouterr().out


def test_reveal_shows_the_library_reference_of_a_part(capsys):
    for name, part in parts.PARTS.items():
        assert sol.revealable()[name][1] is part.reference
    sol.reveal("qtos", sure=True)
    assert inspect.getsource(attention.qtos_part) in capsys.readouterr().out


def test_reveal_of_an_unknown_name_lists_the_exercises():
    with pytest.raises(FscalError, match=r"field 'name': 'qtoss' is not an exercise; .*qtos"):
        sol.reveal("qtoss")
