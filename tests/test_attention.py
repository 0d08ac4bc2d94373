"""The cross-attention primitive against a hand-written loop, and the three stages' contracts."""
import math

import pytest
import torch
from einops import reduce

from fscal_edu.attention import (
    DynamicsCA, QtoSContextCA, StoQContextCA, coarse_index, cross_attend, cross_correlation,
)
from fscal_edu.utils import FscalError


def loop_cross_attend(X_a, X_b, W, axis, scale, mass_norm, mask_a, mask_b):
    """eqs. (1)-(2) one token at a time, for one batch element: the reference."""
    N_a, N_b = len(X_a), len(X_b)
    # eq. (1): Lambda[i, j] = x_i^T W x_j
    Lambda = [[float(X_a[i] @ W @ X_b[j]) for j in range(N_b)] for i in range(N_a)]
    A = [[0.0] * N_b for _ in range(N_a)]
    if axis == "row":      # each real source spreads one unit over the real targets
        for i in range(N_a):
            if mask_a[i]:
                Z = sum(math.exp(scale * Lambda[i][j]) for j in range(N_b) if mask_b[j])
                for j in range(N_b):
                    A[i][j] = math.exp(scale * Lambda[i][j]) / Z if mask_b[j] else 0.0
    else:                  # each real target takes a convex combination of the real sources
        for j in range(N_b):
            if mask_b[j]:
                Z = sum(math.exp(scale * Lambda[i][j]) for i in range(N_a) if mask_a[i])
                for i in range(N_a):
                    A[i][j] = math.exp(scale * Lambda[i][j]) / Z if mask_a[i] else 0.0
    factor = sum(mask_b) / sum(mask_a) if mass_norm else 1.0
    # eq. (2): x~_j = x_j + sum_i A[i, j] x_i
    X_new = [X_b[j] + factor * sum(A[i][j] * X_a[i] for i in range(N_a)) for j in range(N_b)]
    return torch.stack(X_new), torch.tensor(A, dtype=torch.float64)


def random_inputs(B=2, N_a=5, N_b=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X_a = torch.randn(B, N_a, d, generator=g, dtype=torch.float64)
    X_b = torch.randn(B, N_b, d, generator=g, dtype=torch.float64)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    return X_a, X_b, W


def test_cross_correlation_is_eq1():
    X_a, X_b, W = random_inputs()
    Lambda = cross_correlation(X_a, X_b, W)
    assert Lambda.shape == (2, 5, 4)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                assert Lambda[b, i, j].item() == pytest.approx((X_a[b, i] @ W @ X_b[b, j]).item(),
                                                               abs=1e-12)


@pytest.mark.parametrize("axis", ["row", "column"])
@pytest.mark.parametrize("scale,mass_norm", [(1.0, False), (0.5, True)])
@pytest.mark.parametrize("masked", [False, True])
def test_cross_attend_matches_loop(axis, scale, mass_norm, masked):
    X_a, X_b, W = random_inputs()
    if masked:
        mask_a = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
        mask_b = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0]], dtype=torch.bool)
    else:
        mask_a, mask_b = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    X_new, A = cross_attend(X_a, X_b, W, axis=axis, scale=scale, mass_norm=mass_norm,
                            mask_a=mask_a if masked else None, mask_b=mask_b if masked else None)
    for b in range(2):
        want_X, want_A = loop_cross_attend(X_a[b], X_b[b], W, axis, scale, mass_norm,
                                           mask_a[b].tolist(), mask_b[b].tolist())
        torch.testing.assert_close(A[b], want_A, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(X_new[b], want_X, atol=1e-12, rtol=1e-10)


def test_softmax_axes_distribute_one_unit():
    X_a, X_b, W = random_inputs(N_a=6, N_b=3)
    _, A_row = cross_attend(X_a, X_b, W, axis="row")
    _, A_col = cross_attend(X_a, X_b, W, axis="column")
    torch.testing.assert_close(A_row.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(A_col.sum(-2), torch.ones(2, 3, dtype=torch.float64))
    assert not torch.allclose(A_row.sum(-2), torch.ones(2, 3, dtype=torch.float64))


def test_padded_tokens_give_and_receive_nothing():
    X_a, X_b, W = random_inputs()
    mask_a = torch.tensor([[1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    mask_b = torch.tensor([[1, 1, 1, 0]] * 2, dtype=torch.bool)
    X_new, A = cross_attend(X_a, X_b, W, mask_a=mask_a, mask_b=mask_b, mass_norm=True)
    X_a2 = X_a.clone()
    X_a2[:, 2:] = 1e3                                  # garbage in the padded sources
    X_new2, _ = cross_attend(X_a2, X_b, W, mask_a=mask_a, mask_b=mask_b, mass_norm=True)
    torch.testing.assert_close(X_new, X_new2)
    torch.testing.assert_close(X_new[:, 3], X_b[:, 3])  # the padded target is untouched
    assert (A[:, 2:] == 0).all() and (A[:, :, 3] == 0).all()


def test_bad_axis_is_a_clear_error():
    X_a, X_b, W = random_inputs()
    with pytest.raises(FscalError, match="axis"):
        cross_attend(X_a, X_b, W, axis="rows")
    with pytest.raises(FscalError, match="softmax_axis"):
        QtoSContextCA(8, axis="diagonal")


def test_wrong_shapes_name_the_field():
    X_Q, X_S = episode()
    with pytest.raises(FscalError, match=r"field 'X_S'.*\(B, K, T_S, d\).*\(2, 16, 16\)"):
        QtoSContextCA(16)(X_Q, X_S[:, 0])
    with pytest.raises(FscalError, match=r"field 'X_Q'.*d = 8"):
        StoQContextCA(8)(X_S[..., :8], X_Q)
    with pytest.raises(FscalError, match="X_S_tilde"):
        DynamicsCA(16)(X_S[0])


def episode(B=2, K=5, T_S=16, N_Q=30, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N_Q, d, generator=g), torch.randn(B, K, T_S, d, generator=g)


def assert_each_support_is_eqs_1_2(out, A, X_a, X_S, W):
    """Support l's output and attention are the bare primitive from X_a to X_S[:, l]."""
    for l in range(X_S.shape[1]):
        want, want_A = cross_attend(X_a, X_S[:, l], W)
        torch.testing.assert_close(out[:, l], want)
        torch.testing.assert_close(A[:, l], want_A)


def test_qtos_is_eqs_1_2_for_each_support():
    X_Q, X_S = (x.double() for x in episode())
    stage = QtoSContextCA(16, temperature=False, mass_norm=False, layernorm=False).double()
    with torch.no_grad():
        stage.W_QtoS.copy_(torch.randn(16, 16, dtype=torch.float64) * 0.1)
    X_S_tilde, att = stage(X_Q, X_S)
    assert att.stage == "qtos" and att.A.shape == (2, 5, 30, 16)
    assert_each_support_is_eqs_1_2(X_S_tilde, att.A, X_Q, X_S, stage.W_QtoS)


def test_qtos_supports_are_independent_unless_joint():
    X_Q, X_S = episode()
    X_S2 = X_S.clone()
    X_S2[:, 2] += 3.0                                  # change support 2 only
    individual = QtoSContextCA(16)
    out, _ = individual(X_Q, X_S)
    out2, _ = individual(X_Q, X_S2)
    torch.testing.assert_close(out[:, 1], out2[:, 1])
    assert not torch.allclose(out[:, 2], out2[:, 2])
    joint = QtoSContextCA(16, joint=True)
    out, att = joint(X_Q, X_S)
    out2, _ = joint(X_Q, X_S2)
    assert att.stage == "qtos_joint" and att.A.shape == (2, 30, 5 * 16)
    assert not torch.allclose(out[:, 1], out2[:, 1], atol=1e-4)


def test_qtos_padded_proposals_are_ignored():
    X_Q, X_S = episode()
    mask_Q = torch.ones(2, 30, dtype=torch.bool)
    mask_Q[:, 20:] = False
    stage = QtoSContextCA(16)
    out, att = stage(X_Q, X_S, mask_Q)
    X_Q2 = X_Q.clone()
    X_Q2[:, 20:] = 50.0
    out2, _ = stage(X_Q2, X_S, mask_Q)
    torch.testing.assert_close(out, out2)
    assert (att.A[:, :, 20:] == 0).all()
    want, _ = stage(X_Q[:, :20], X_S)                  # the same as not having them at all
    torch.testing.assert_close(out, want)


def test_mass_norm_applies_on_the_row_axis_only():
    X_Q, X_S = episode()
    row = [QtoSContextCA(16, mass_norm=m, layernorm=False)(X_Q, X_S)[0] for m in (True, False)]
    assert not torch.allclose(row[0], row[1])
    col = [QtoSContextCA(16, axis="column", mass_norm=m, layernorm=False)(X_Q, X_S)[0]
           for m in (True, False)]
    torch.testing.assert_close(col[0], col[1])


def test_dynamics_coarse_tokens_start_as_window_means():
    _, X_S = episode()
    stage = DynamicsCA(16, (2, 4))
    coarse = stage.coarse_tokens(X_S)
    want = torch.cat([reduce(X_S, "b k (n g) d -> b k n d", "mean", g=g) for g in (2, 4)], dim=2)
    torch.testing.assert_close(coarse, want)
    index = coarse_index(5, 16, (2, 4))
    assert len(index.support) == 5 * (8 + 4)
    assert index.support[12].item() == 1 and index.granularity[8].item() == 4
    assert index.start[9].item() == 4


def test_dynamics_is_eqs_4_5_over_all_supports():
    _, X_S = episode(K=3, T_S=8)
    X_S = X_S.double()
    stage = DynamicsCA(16, (2,), temperature=False, mass_norm=False, layernorm=False).double()
    Y_S, att = stage(X_S)
    X_S_prime = stage.coarse_tokens(X_S).reshape(2, 3 * 4, 16)   # all supports' coarse tokens
    assert att.A.shape == (2, 3, 12, 8)
    assert_each_support_is_eqs_1_2(Y_S, att.A, X_S_prime, X_S, stage.W_StoS)


def test_dynamics_own_only_isolates_the_supports():
    _, X_S = episode()
    X_S2 = X_S.clone()
    X_S2[:, 2] += 3.0
    own = DynamicsCA(16, own_only=True)
    torch.testing.assert_close(own(X_S)[0][:, 1], own(X_S2)[0][:, 1])
    assert (own(X_S)[1].A[:, 1, :12] == 0).all()       # support 1 ignores support 0's tokens
    shared = DynamicsCA(16)
    assert not torch.allclose(shared(X_S)[0][:, 1], shared(X_S2)[0][:, 1], atol=1e-4)


def test_dynamics_granularity_must_divide_T_S():
    _, X_S = episode(T_S=8)
    with pytest.raises(FscalError, match="granularities.*k=3 does not divide T_S=8"):
        DynamicsCA(16, (2, 3))(X_S)
    with pytest.raises(FscalError, match="granularities"):
        DynamicsCA(16, (0,))
    with pytest.raises(FscalError, match="granularities"):     # switched off by name, never by width
        DynamicsCA(16, ())


def test_stoq_is_eq6_and_ignores_support_order():
    X_Q, Y_S = (x.double() for x in episode())
    stage = StoQContextCA(16, temperature=False, mass_norm=False, layernorm=False).double()
    X_Q_tilde, att = stage(Y_S, X_Q)
    want, want_A = cross_attend(Y_S.reshape(2, 5 * 16, 16), X_Q, stage.W_StoQ)
    torch.testing.assert_close(X_Q_tilde, want)
    torch.testing.assert_close(att.A, want_A)
    order = torch.tensor([3, 0, 4, 1, 2])
    for module in (stage, StoQContextCA(16).double()):
        torch.testing.assert_close(module(Y_S[:, order], X_Q)[0], module(Y_S, X_Q)[0])


def test_stoq_padded_proposals_receive_nothing():
    X_Q, Y_S = episode()
    mask_Q = torch.ones(2, 30, dtype=torch.bool)
    mask_Q[1, 25:] = False
    out, att = StoQContextCA(16, layernorm=False)(Y_S, X_Q, mask_Q)
    torch.testing.assert_close(out[1, 25:], X_Q[1, 25:])
    assert (att.A[1, :, 25:] == 0).all()


def three_stages(d=16, **kw):
    return QtoSContextCA(d, **kw), DynamicsCA(d, **kw), StoQContextCA(d, **kw)


def run_three(stages, X_Q, X_S, mask_Q=None):
    qtos, dynamics, stoq = stages
    X_S_tilde, a1 = qtos(X_Q, X_S, mask_Q)
    Y_S, a2 = dynamics(X_S_tilde)
    X_Q_tilde, a3 = stoq(Y_S, X_Q, mask_Q)
    return X_Q_tilde, (a1, a2, a3)


def test_gradients_reach_every_W():
    torch.manual_seed(0)
    stages = three_stages()
    X_Q, X_S = episode()
    X_Q_tilde, atts = run_three(stages, X_Q, X_S)
    (X_Q_tilde.pow(2).sum() + sum(a.A.pow(2).sum() for a in atts)).backward()
    qtos, dynamics, stoq = stages
    for W in (qtos.W_QtoS, dynamics.W_StoS, stoq.W_StoQ, dynamics.w["2"].weight,
              dynamics.w["4"].weight):
        assert W.grad is not None and W.grad.abs().sum() > 0


@pytest.mark.parametrize("axis", ["row", "column"])
def test_cpu_autocast_bfloat16_has_no_nan(axis):
    stages = three_stages(axis=axis)
    X_Q, X_S = episode()
    mask_Q = torch.ones(2, 30, dtype=torch.bool)
    mask_Q[0, 10:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        X_Q_tilde, atts = run_three(stages, X_Q, X_S, mask_Q)
        loss = X_Q_tilde.float().pow(2).mean()
    loss.backward()
    assert torch.isfinite(X_Q_tilde).all() and all(torch.isfinite(a.A).all() for a in atts)
    assert all(torch.isfinite(p.grad).all() for s in stages for p in s.parameters())


@pytest.mark.parametrize("K,T_S,d", [(1, 16, 64), (5, 16, 64), (1, 8, 16), (5, 8, 16)])
@pytest.mark.parametrize("joint", [False, True])
def test_shapes(K, T_S, d, joint):
    X_Q, X_S = episode(B=3, K=K, T_S=T_S, N_Q=7, d=d)
    qtos, dynamics, stoq = QtoSContextCA(d, joint=joint), DynamicsCA(d), StoQContextCA(d)
    X_S_tilde, a1 = qtos(X_Q, X_S)
    Y_S, a2 = dynamics(X_S_tilde)
    X_Q_tilde, a3 = stoq(Y_S, X_Q)
    assert X_S_tilde.shape == Y_S.shape == (3, K, T_S, d) and X_Q_tilde.shape == (3, 7, d)
    assert a1.A.shape == ((3, 7, K * T_S) if joint else (3, K, 7, T_S))
    assert a2.A.shape == (3, K, K * (T_S // 2 + T_S // 4), T_S)
    assert a3.A.shape == (3, K * T_S, 7)
    assert (a1.K, a1.T_S, a3.K, a3.T_S) == (K, T_S, K, T_S)
