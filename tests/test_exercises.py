"""The exercise checkers: the reference solution passes, a stub is "not attempted yet", a crash is
one line (no exception), and the common mistakes of the stage and relation exercises are named."""
import math

import numpy as np
import pytest
import torch
from einops import rearrange, reduce

from fscal_edu import exercises as ex
from fscal_edu import checking, mistakes, solutions as sol

# every checker that takes a function, with its reference solution
CHECKS = [
    (ex.check_supports_outside_query, sol.supports_outside_query),
    (ex.check_query_ground_truth, sol.query_ground_truth),
    (ex.check_seconds_to_index, sol.my_seconds_to_index),
    (ex.check_strided_seconds_to_index, sol.strided_index),
    (ex.check_tiou, sol.my_tiou),
    (ex.check_interpolated_ap, sol.my_interpolated_ap),
    (ex.check_cross_attend, sol.my_cross_attend),
    (ex.check_column_softmax, sol.my_column_attention),
    (ex.check_support_mass, sol.support_mass),
    (ex.check_coarse_tokens, sol.my_coarse_tokens),
    (ex.check_granularity_mass, sol.mass_from),
    (ex.check_stoq, sol.my_stoq),
    (ex.check_balanced_bce, sol.my_balanced_bce),
    (ex.check_relation_targets, sol.my_relation_targets),
    (ex.check_lr_factor, sol.my_lr_factor),
    (ex.check_welch_t, sol.welch_t),
]
IDS = [check.__name__ for check, _ in CHECKS]


def raises_not_implemented(*args):
    # your code here
    raise NotImplementedError


def returns_none(*args):
    ...


def returns_ellipsis(*args):
    return ...


def crashes(*args):
    return 1 / 0


@pytest.mark.parametrize("check, solution", CHECKS, ids=IDS)
def test_the_reference_solution_passes(check, solution, capsys):
    assert check(solution) is True
    out = capsys.readouterr().out
    assert "Correct!" in out and "differ" not in out


@pytest.mark.parametrize("stub", [raises_not_implemented, returns_none, returns_ellipsis, ...],
                         ids=["NotImplementedError", "None", "Ellipsis", "fn = ..."])
@pytest.mark.parametrize("check, solution", CHECKS, ids=IDS)
def test_a_stub_is_not_attempted_yet(check, solution, stub, capsys):
    assert check(stub) is False
    out = capsys.readouterr().out
    assert "not attempted yet - fill in the cell above" in out
    assert out.count("\n") == 1                        # one line, nothing else


@pytest.mark.parametrize("check, solution", CHECKS, ids=IDS)
def test_a_crash_is_one_line_not_an_exception(check, solution, capsys):
    assert check(crashes) is False
    out = capsys.readouterr().out
    assert out.startswith("crashes: your code raised ZeroDivisionError: division by zero") and out.count("\n") == 1


def test_the_checker_keeps_its_name_and_docstring():
    assert ex.check_cross_attend.__name__ == "check_cross_attend"
    assert "eqs. (1)-(2)" in ex.check_cross_attend.__doc__

# ---------------------------------------------------------------------------------------------
# compare: every output, the element, the kind of mismatch in words
# ---------------------------------------------------------------------------------------------


def test_compare_reports_every_output_and_the_element(capsys):
    want = (torch.zeros(2, 3), torch.ones(4))
    got = (torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.2]]), torch.ones(4) * 2)
    assert not ex.compare("f", got, want, names=("X", "A"))
    out = capsys.readouterr().out.splitlines()
    assert out == ["f, X: 2 of 6 elements differ; the largest difference is at index (1, 1): got 0.5, expected 0",
                   "f, A: 4 of 4 elements differ; the largest difference is at index 0: got 2, expected 1"]


@pytest.mark.parametrize("got, words", [
    (torch.zeros(3, 2), "the last two axes are swapped"),
    (torch.zeros(6), "the right number of elements, arranged differently"),
    (torch.zeros(2), "one axis too few"),
    (None, "not attempted yet"),
    ("abc", "expected an array of shape (2, 3), got a str"),
    (torch.full((2, 3), float("nan")), "6 of 6 elements are NaN or infinite"),
    (torch.zeros(2, 3, dtype=torch.long) + 1, "your values are whole numbers"),
])
def test_compare_says_what_is_wrong_in_words(got, words, capsys):
    assert not ex.compare("f", got, torch.full((2, 3), 0.5))
    assert words in capsys.readouterr().out


def test_compare_tuples(capsys):
    assert not ex.compare("f", torch.zeros(2), (torch.zeros(2), torch.zeros(2)), names=("X", "A"))
    assert "expected 2 outputs (X, A), got a Tensor" in capsys.readouterr().out
    assert not ex.compare("f", (torch.zeros(2),), (torch.zeros(2), torch.zeros(2)))
    assert "got 1 outputs" in capsys.readouterr().out
    assert ex.compare("f", (torch.zeros(2), 1.0), (np.zeros(2), torch.tensor(1.0)))
    assert ex.compare("f", np.float32(0.25), 0.25) and ex.compare("f", [0.25], 0.25)

# ---------------------------------------------------------------------------------------------
# Named mistakes: QtoS (eqs. 1-2), Dynamics-CA (coarse tokens), StoQ (eq. 6), relation targets
# ---------------------------------------------------------------------------------------------


def cross_attend(X_a, X_b, W, *, dim=-1, scale=1.0, residual=True, W_T=False):
    """Student-style eqs. (1)-(2), with the slips switched on by hand."""
    A = (scale * torch.einsum("bid,de,bje->bij", X_a, W.T if W_T else W, X_b)).softmax(dim)
    added = torch.einsum("bij,bid->bjd", A, X_a)
    return (X_b + added if residual else added), A


@pytest.mark.parametrize("wrong, named", [
    (lambda X_a, X_b, W: cross_attend(X_a, X_b, W, dim=-2), "column softmax"),
    (lambda X_a, X_b, W: cross_attend(X_a, X_b, W, residual=False), "the residual X_b is missing"),
    (lambda X_a, X_b, W: cross_attend(X_a, X_b, W, scale=X_a.shape[-1] ** -0.5), "scaled by 1/sqrt(d)"),
    (lambda X_a, X_b, W: cross_attend(X_a, X_b, W, W_T=True), "W is transposed"),
    (lambda X_a, X_b, W: (X_a + cross_attend(X_a, X_b, W)[1] @ X_b, cross_attend(X_a, X_b, W)[1]),
     "the source got updated instead of the target"),
    (lambda X_a, X_b, W: cross_attend(X_a, X_b, W, dim=-2, residual=False), "column softmax"),
])
def test_check_cross_attend_names_the_mistake(wrong, named, capsys):
    assert ex.check_cross_attend(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out
    assert "X_b_new" in out and ", A:" in out                       # both outputs reported


def test_two_mistakes_at_once_are_both_named(capsys):
    ex.check_cross_attend(lambda X_a, X_b, W: cross_attend(X_a, X_b, W, dim=-2, residual=False))
    out = capsys.readouterr().out
    assert "column softmax" in out and "residual" in out


def test_check_column_softmax_names_the_row_softmax(capsys):
    assert ex.check_column_softmax(lambda X_a, X_b, W: cross_attend(X_a, X_b, W)[1]) is False
    assert "this is the row softmax" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, named", [
    (lambda X, k: reduce(X, "b l (n k) d -> b l n d", "sum", k=k), "summed"),
    (lambda X, k: reduce(X, "b l (n k) d -> b l n d", "max", k=k), "max pooling"),
    (lambda X, k: reduce(X, "b l (k n) d -> b l n d", "mean", k=k), "consecutive"),
    (lambda X, k: torch.nn.functional.avg_pool1d(rearrange(X, "b l t d -> (b l) d t"), k, stride=1)
     .unflatten(0, X.shape[:2]).transpose(-1, -2), "the windows overlap"),
    (lambda X, k: X[:, :, ::k], "one snippet out of every k"),
])
def test_check_coarse_tokens_names_the_mistake(wrong, named, capsys):
    assert ex.check_coarse_tokens(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out


@pytest.mark.parametrize("wrong, named", [
    (lambda A, g, k: A[g == k].mean(0), "the mean over the coarse tokens"),
    (lambda A, g, k: A.sum(0), "every granularity counts"),
    (lambda A, g, k: A[g == k].sum(1), "summed along the snippets"),
])
def test_check_granularity_mass_names_the_mistake(wrong, named, capsys):
    assert ex.check_granularity_mass(wrong) is False
    assert named in capsys.readouterr().out


def stoq(Y_S, X_Q, W, *, dim=-1, scale=1.0, residual=True, norm=False):
    """Student-style eq. (6), with the slips switched on by hand."""
    Y_all = rearrange(Y_S, "b k t d -> b (k t) d")
    A = (scale * torch.einsum("bid,de,bne->bin", Y_all, W, X_Q)).softmax(dim)
    added = torch.einsum("bin,bid->bnd", A, Y_all) * (X_Q.shape[1] / Y_all.shape[1] if norm else 1)
    return X_Q + added if residual else added


@pytest.mark.parametrize("wrong, named", [
    (lambda Y_S, X_Q, W: stoq(Y_S, X_Q, W, dim=-2), "column softmax"),
    (lambda Y_S, X_Q, W: stoq(Y_S, X_Q, W, residual=False), "the residual X_Q is missing"),
    (lambda Y_S, X_Q, W: stoq(Y_S, X_Q, W, scale=1 / math.sqrt(X_Q.shape[-1])), "scaled by 1/sqrt(d)"),
    (lambda Y_S, X_Q, W: stoq(Y_S, X_Q, W, norm=True), "mass_norm is on"),
    (lambda Y_S, X_Q, W: stoq(Y_S, X_Q, W.T), "W is transposed"),
    (lambda Y_S, X_Q, W: X_Q + sum(stoq(Y_S[:, l:l + 1], X_Q, W, residual=False)
                                   for l in range(Y_S.shape[1])) / Y_S.shape[1], "the K supports are averaged"),
])
def test_check_stoq_names_the_mistake(wrong, named, capsys):
    assert ex.check_stoq(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out


def relation_targets(labels, episode_label, *, shift=1, same_class_too=False, negatives_too=False,
                     ignored=-1.0):
    """Student-style relation targets, with the slips switched on by hand."""
    own = torch.where(labels >= 0, (labels == 1).float(), ignored)
    differs = (episode_label != torch.roll(episode_label, shift)) | same_class_too
    return own, ((labels >= 0) if negatives_too else (labels == 1)) & differs[:, None]


def no_wrap(labels, episode_label):
    own, _ = relation_targets(labels, episode_label)
    differs = torch.tensor([False] + [bool(episode_label[b] != episode_label[b - 1])
                                      for b in range(1, len(episode_label))])
    return own, (labels == 1) & differs[:, None]


@pytest.mark.parametrize("wrong, named", [
    (lambda l, y: relation_targets(l, y, shift=-1), "paired with episode b+1 instead of b-1"),
    (lambda l, y: relation_targets(l, y, same_class_too=True), "episode b-1 has the same class"),
    (lambda l, y: relation_targets(l, y, negatives_too=True), "negative proposals got cross pairs too"),
    (lambda l, y: relation_targets(l, y, ignored=0.0), "ignored proposals (label -1) got target 0"),
    (no_wrap, "episode 0 has no partner"),
])
def test_check_relation_targets_names_the_mistake(wrong, named, capsys):
    assert ex.check_relation_targets(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out
    assert "the largest difference is at episode " in out and ", proposal " in out


@pytest.mark.parametrize("wrong, named", [
    (lambda l, t, v: torch.nn.functional.binary_cross_entropy_with_logits(l[v], t[v]), "plain mean"),
    (lambda l, t, v: sol.my_balanced_bce(l, t, torch.ones_like(v)), "the ignored entries"),
    (lambda l, t, v: 2 * sol.my_balanced_bce(l, t, v), "the two means are added"),
])
def test_check_balanced_bce_names_the_mistake(wrong, named, capsys):
    assert ex.check_balanced_bce(wrong) is False
    assert named in capsys.readouterr().out


def test_every_variant_without_a_mistake_is_the_reference():
    """The mistake generators start from the right answer: with no flag they give the solution's."""
    X_Q, X_S, W = ex._attention_inputs()
    assert checking.close(mistakes.cross_attend_variant(X_Q, X_S[:, 0], W), sol.my_cross_attend(X_Q, X_S[:, 0], W))
    assert checking.close(mistakes.coarse_tokens_variant(X_S, 2), sol.my_coarse_tokens(X_S, 2))
    assert checking.close(mistakes.stoq_variant(X_S, X_Q, W), sol.my_stoq(X_S, X_Q, W))
    labels, y = torch.tensor([[1, 0, -1], [1, 1, 0], [0, 1, -1]]), torch.tensor([3, 3, 5])
    assert checking.close(mistakes.relation_targets_variant(labels, y), sol.my_relation_targets(labels, y))

# ---------------------------------------------------------------------------------------------
# Answers instead of functions: the mass_norm factor (notebook 05), the predicted winner (07)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, named", [
    (3 * 16 / 64, "the inverse"), (64 / 16, "this is N_Q / T_S"), (64 / 3, "this is N_Q / K"),
])
def test_check_mass_norm_factor(answer, named, capsys):
    N_Q, K, T_S = 64, 3, 16
    assert ex.check_mass_norm_factor(sol.mass_norm_factor(N_Q, K, T_S), N_Q, K, T_S)
    assert not ex.check_mass_norm_factor(answer, N_Q, K, T_S)
    assert named in capsys.readouterr().out
    assert not ex.check_mass_norm_factor(..., N_Q, K, T_S)
    assert capsys.readouterr().out == "factor: not attempted yet - fill in the cell above\n"


def test_check_winner_not_attempted_reveals_nothing(capsys):
    episode = {"id": "e0", "label": "a", "query": "q", "support": []}
    annotations = {"database": {"q": {"duration": 10.0, "annotations": [{"label": "a", "segment": [1.0, 3.0]}]}}}
    preds = {"full": {"results": {"e0": [{"segment": [1.0, 3.0], "score": 0.9}]}},
             "blind": {"results": {"e0": [{"segment": [6.0, 8.0], "score": 0.9}]}}}
    assert ex.check_winner(..., episode, annotations, preds) is False
    assert capsys.readouterr().out == "answer: not attempted yet - fill in the cell above\n"
    assert ex.check_winner("ful", episode, annotations, preds) is False
    assert "'ful' is none of 'full', 'blind', 'tie'" in capsys.readouterr().out
    assert ex.check_winner("full", episode, annotations, preds) is True
