"""The exercise checkers: the reference solution passes, a stub is "not attempted yet", a crash is
one line (no exception), and the common mistakes of the stage and relation exercises are named."""
import numpy as np
import pytest
import torch
from einops import reduce

from fscal_edu import attention, checking, losses, mistakes, proposals, solutions as sol
from fscal_edu import exercises as ex

# every checker that takes a function, with its reference solution
CHECKS = [
    (ex.check_supports_outside_query, sol.supports_outside_query),
    (ex.check_query_ground_truth, sol.query_ground_truth),
    (ex.check_seconds_to_index, sol.my_seconds_to_index),
    (ex.check_strided_seconds_to_index, sol.strided_index),
    (ex.check_tiou, proposals.tiou),
    (ex.check_interpolated_ap, sol.my_interpolated_ap),
    (ex.check_cross_attend, sol.my_cross_attend),
    (ex.check_column_softmax, sol.my_column_attention),
    (ex.check_support_mass, sol.support_mass),
    (ex.check_attend, attention.cross_attend),
    (ex.check_qtos, attention.qtos_part),
    (ex.check_coarse_tokens, attention.coarse_part),
    (ex.check_dynamics, attention.dynamics_part),
    (ex.check_granularity_mass, sol.mass_from),
    (ex.check_stoq, attention.stoq_part),
    (ex.check_stoq_per_support, sol.stoq_per_support),
    (ex.check_balanced_bce, sol.my_balanced_bce),
    (ex.check_relation_targets, losses.relation_targets),
    (ex.check_lr_factor, sol.my_lr_factor),
    (ex.check_welch_t, sol.welch_t),
]
IDS = [check.__name__ for check, _ in CHECKS]


@pytest.fixture(autouse=True)
def parts_folder(tmp_path, monkeypatch):
    """The parts a checker keeps go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("FSCAL_PARTS", str(tmp_path / "my_parts"))
    return tmp_path / "my_parts"


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
    (lambda A, g, k: A[g == k].mean(0), "the mean over the coarse tokens"),
    (lambda A, g, k: A.sum(0), "every granularity counts"),
    (lambda A, g, k: A[g == k].sum(1), "summed along the snippets"),
])
def test_check_granularity_mass_names_the_mistake(wrong, named, capsys):
    assert ex.check_granularity_mass(wrong) is False
    assert named in capsys.readouterr().out


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
    labels, y = torch.tensor([[1, 0, -1], [1, 1, 0], [0, 1, -1]]), torch.tensor([3, 3, 5])
    assert checking.close(mistakes.relation_targets_variant(labels, y), losses.relation_targets(labels, y))
    a, b = torch.tensor([[0.0, 4.0], [2.0, 9.0]]), torch.tensor([[1.0, 3.0], [5.0, 6.0], [20.0, 30.0]])
    assert checking.close(mistakes.tiou_variant(a, b), proposals.tiou(a, b))
    A = QtoS_joint_attention()
    assert checking.close(mistakes.support_mass_variant(A, 3), sol.support_mass(A, 3))
    assert np.isclose(mistakes.welch_t_variant([0.6, 0.7, 0.65], [0.5, 0.55]), sol.welch_t([0.6, 0.7, 0.65], [0.5, 0.55]))
    from fscal_edu.config import get_config
    cfg = get_config("quick")
    steps = range(cfg.optim.steps + 5)
    assert np.allclose(mistakes.lr_factor_variant(steps, cfg), [sol.my_lr_factor(s, cfg) for s in steps])


def QtoS_joint_attention():
    X_Q, X_S, _ = ex._attention_inputs()
    _, att = attention.QtoSContextCA(X_Q.shape[-1], joint=True).double()(X_Q, X_S)
    return att.A.detach()

# ---------------------------------------------------------------------------------------------
# Hints for tIoU, support_mass, Welch's t and lr_factor: the mistake is named in words
# ---------------------------------------------------------------------------------------------


def tiou_no_subtract(a, b):
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    return inter / ((a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :])


def tiou_no_clamp(a, b):
    inter = torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    return inter / ((a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter)


@pytest.mark.parametrize("wrong, named", [
    (tiou_no_subtract, "subtract the intersection"),
    (tiou_no_clamp, "clamp it at 0"),
])
def test_check_tiou_names_the_mistake(wrong, named, capsys):
    assert ex.check_tiou(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out


@pytest.mark.parametrize("wrong, named", [
    (lambda A, K: reduce(A, "b n (k t) -> b k", "mean", k=K), "this is a mean"),
    (lambda A, K: reduce(A, "b n (k t) -> b k", "sum", k=K) / A.shape[1], "averaged over the proposals"),
    (lambda A, K: reduce(A, "b n (t k) -> b k", "sum", k=K), "grouped the wrong way"),
])
def test_check_support_mass_names_the_mistake(wrong, named, capsys):
    assert ex.check_support_mass(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out


def welch_population(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))


def welch_pooled(a, b):
    a, b = np.asarray(a), np.asarray(b)
    sp2 = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return (a.mean() - b.mean()) / np.sqrt(sp2 * (1 / len(a) + 1 / len(b)))


@pytest.mark.parametrize("wrong, named", [
    (welch_population, "the population variance"),
    (welch_pooled, "Student's t with a pooled variance"),
    (lambda a, b: -sol.welch_t(a, b), "the sign is flipped"),
])
def test_check_welch_t_names_the_mistake(wrong, named, capsys):
    assert ex.check_welch_t(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out


def lr_step_over_w(step, cfg):
    return step / cfg.optim.warmup if step < cfg.optim.warmup else sol.my_lr_factor(step, cfg)


def lr_to_zero(step, cfg):
    return (sol.my_lr_factor(step, cfg) - 0.05) / 0.95 if step >= cfg.optim.warmup else sol.my_lr_factor(step, cfg)


@pytest.mark.parametrize("wrong, named", [
    (lr_step_over_w, "(step + 1) / W"),
    (lr_to_zero, "the cosine decays to 0"),
])
def test_check_lr_factor_names_the_mistake(wrong, named, capsys):
    assert ex.check_lr_factor(wrong) is False
    out = capsys.readouterr().out
    assert "a known mistake" in out and named in out

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


def test_a_mistake_repeated_over_cases_is_named_once_and_graded_once(capsys):
    assert ex.check_welch_t(welch_population) is False
    out = capsys.readouterr().out
    assert out.count("a known mistake: ") == 1 and out.count("the same known mistake as above") == 2
    assert checking.VERDICTS[-1] == {"exercise": "check_welch_t", "verdict": "wrong: " + mistakes.WELCH_T["ddof0"]}
