"""The model's fast paths compute the same numbers as the plain ones they replace: RoIAlign as a
matrix, and the model's tokens (RoIAlign folded into the proposal MLP) as RoIAlign, then the MLP."""
import numpy as np
import pytest
import torch
from einops import rearrange

from fscal_edu.config import get_config
from fscal_edu.model import FSCAL
from fscal_edu.proposals import make_anchors, roi_align_1d, roi_align_matrix


@pytest.mark.parametrize("T, context_frac", [(128, 0.25), (32, 0.5), (16, 0.0)])
def test_roi_align_matrix_is_roi_align(T, context_frac):
    torch.manual_seed(0)
    E = torch.randn(3, T, 8)
    segments = torch.cat([make_anchors(T, (4, 8)), torch.tensor([[-3.0, 2.0], [T - 2.0, T + 5.0]])])  # edges too
    Phi = roi_align_matrix(segments, T, inside=8, context=2, context_frac=context_frac)  # (N*P, T)
    assert Phi.shape == (len(segments) * 12, T)
    assert torch.allclose(torch.sparse.sum(Phi, dim=1).to_dense(), torch.ones(len(segments) * 12))  # weights sum to 1
    R = roi_align_1d(E, segments, inside=8, context=2, context_frac=context_frac)          # (B, N, P, C)
    R_matrix = torch.stack([torch.sparse.mm(Phi, e) for e in E]).reshape(R.shape)
    assert torch.allclose(R, R_matrix, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "quick"])
def test_first_layer_first_gives_the_same_tokens(preset):
    """``MLP(RoIAlign(E))`` (the plain order) == ``tokens(E)`` (first layer on the snippets, then RoIAlign)."""
    torch.manual_seed(0)
    cfg = get_config(preset)
    model, m = FSCAL(cfg).eval(), cfg.model
    E = torch.randn(4, cfg.data.T, m.d)
    R = roi_align_1d(E, model.anchors, inside=m.roi_inside, context=m.roi_context, context_frac=m.roi_context_frac)
    plain = model.proposal_norm(model.proposal_mlp(rearrange(R, "b n p d -> b n (p d)")))   # (B, N, d)
    assert torch.allclose(plain, model.tokens(E, model.roi_Q), atol=1e-5)
    assert torch.equal(model.roi_Q.segments, model.anchors)
    # the RoIAlign operators follow from the config: nothing of them is saved with the model
    assert not [k for k in model.state_dict() if k.startswith("roi_")]
    # the support summary reads a whole clip the same way
    Y = torch.randn(4, cfg.data.T_S, m.d)
    whole = torch.tensor([[0.0, float(cfg.data.T_S)]])
    R_S = roi_align_1d(Y, whole, inside=m.roi_inside, context=m.roi_context, context_frac=m.roi_context_frac)
    plain_S = model.proposal_norm(model.proposal_mlp(rearrange(R_S, "b n p d -> b n (p d)")))
    assert torch.allclose(plain_S, model.tokens(Y, model.roi_S), atol=1e-5)


def test_first_layer_first_gradients_match():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model, m = FSCAL(cfg), cfg.model
    E = torch.randn(2, cfg.data.T, m.d, requires_grad=True)
    weight = torch.randn(2, len(model.anchors), m.d)

    def grads(tokens):
        E.grad = None
        model.zero_grad()
        (tokens() * weight).sum().backward()
        return [E.grad.clone()] + [p.grad.clone() for p in model.proposal_mlp.parameters()]

    def plain():
        R = roi_align_1d(E, model.anchors, inside=m.roi_inside, context=m.roi_context, context_frac=m.roi_context_frac)
        return model.proposal_norm(model.proposal_mlp(rearrange(R, "b n p d -> b n (p d)")))

    for a, b in zip(grads(plain), grads(lambda: model.tokens(E, model.roi_Q))):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-4)
