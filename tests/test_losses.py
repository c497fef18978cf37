"""ovstad.losses on hand-computed values (Eq. 1, 4, 6 of the paper)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ovstad.core import OvstadError
from ovstad.losses import info_nce, focal_classification_loss, region_text_alignment_loss


def _sig(x): return 1 / (1 + math.exp(-x))

def _focal(x, y, g):
    p = _sig(x)
    return -(1 - p) ** g * math.log(p) if y else -p ** g * math.log(1 - p)


def test_info_nce_by_hand():
    # cosines: v0.t0 = 1, v0.t1 = 0.6; v1.t0 = 0, v1.t1 = 0.8 (t1 = (0.6, 0.8), v1 = (0, 1))
    v = torch.tensor([[2., 0], [0, 3]])                   # not normalized: the loss normalizes
    t = torch.tensor([[1., 0], [0.6, 0.8]])
    temp = 0.5
    row0 = -math.log(math.exp(1 / temp) / (math.exp(1 / temp) + math.exp(0.6 / temp)))
    row1 = -math.log(math.exp(0.8 / temp) / (math.exp(0 / temp) + math.exp(0.8 / temp)))
    col0 = -math.log(math.exp(1 / temp) / (math.exp(1 / temp) + math.exp(0 / temp)))
    col1 = -math.log(math.exp(0.8 / temp) / (math.exp(0.6 / temp) + math.exp(0.8 / temp)))
    assert info_nce(v, t, temp, symmetric=False).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    assert info_nce(v, t, torch.tensor(temp)).item() == pytest.approx(((row0 + row1) / 2 + (col0 + col1) / 2) / 2, abs=1e-6)

def test_info_nce_duplicate_captions_need_no_special_case():
    # identical captions give identical columns: one-hot targets equal targets shared over both columns
    v = torch.tensor([[1., 0], [0.8, 0.6], [0, 1]])
    t = torch.tensor([[1., 0], [1, 0], [0, 1]])
    cos = (F.normalize(v, dim=-1) @ t.T).tolist()
    def ce(row, trow): return -sum(ti * (r - math.log(sum(math.exp(x) for x in row))) for r, ti in zip(row, trow))
    shared = sum(ce(cos[i], w) for i, w in enumerate([[.5, .5, 0], [.5, .5, 0], [0, 0, 1]])) / 3
    assert info_nce(v, t, 1.0, symmetric=False).item() == pytest.approx(shared, abs=1e-6)

def test_info_nce_gradient_and_errors():
    v = torch.randn(4, 8, requires_grad=True)
    info_nce(v, torch.randn(4, 8), 0.01).backward()
    assert torch.isfinite(v.grad).all()
    with pytest.raises(OvstadError, match='same shape'): info_nce(torch.randn(4, 8), torch.randn(4, 7), 0.01)

def test_focal_by_hand():
    x = torch.tensor([[1.5, -0.5, 0.2], [-2.0, 0.3, 3.0]])
    y = torch.tensor([[1., 0, 0], [0, 1, 1]])
    for g in (0.0, 1.0, 2.0):
        per = [[_focal(x[i, j].item(), y[i, j].item(), g) for j in range(3)] for i in range(2)]
        assert focal_classification_loss(x, y, gamma=g).item() == pytest.approx(sum(map(sum, per)) / 2, abs=1e-6)
        assert focal_classification_loss(x, y, gamma=g, reduction='sum').item() == pytest.approx(sum(map(sum, per)), abs=1e-6)
        torch.testing.assert_close(focal_classification_loss(x, y, gamma=g, reduction='none'), torch.tensor(per), atol=1e-6, rtol=1e-6)

def test_focal_gamma0_is_bce_and_gamma2_is_not():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5) * 3, (torch.rand(8, 5) > 0.6).float()
    bce = F.binary_cross_entropy_with_logits(x, y, reduction='none').sum(1).mean()
    torch.testing.assert_close(focal_classification_loss(x, y, gamma=0), bce)
    assert not torch.allclose(focal_classification_loss(x, y, gamma=2), bce)
    # RetinaNet's alpha is available but off by default (the paper has none)
    a = focal_classification_loss(x, y, gamma=0, alpha=0.25)
    want = (F.binary_cross_entropy_with_logits(x, y, reduction='none') * (0.25 * y + 0.75 * (1 - y))).sum(1).mean()
    torch.testing.assert_close(a, want)

def test_focal_errors():
    with pytest.raises(OvstadError, match=r'\(K, C\)'): focal_classification_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(OvstadError, match='reduction'): focal_classification_loss(torch.zeros(3, 2), torch.zeros(3, 2), reduction='avg')

def test_alignment_loss_by_hand_with_duplicate_sentences():
    r = torch.tensor([[3., 0], [0.6, 0.8], [0, 2]])
    t = torch.tensor([[1., 0], [1, 0], [0, 1]])           # pairs 0 and 1: two boxes of one tube, same sentence
    tau, g = 0.5, 2.0
    cos = (F.normalize(r, dim=-1) @ t.T).tolist()
    pos = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    want = sum(_focal(cos[i][j] / tau, pos[i][j], g) for i in range(3) for j in range(3)) / 3
    got = region_text_alignment_loss(r, t, torch.tensor([7, 7, 2]), tau, gamma=g)
    assert got.item() == pytest.approx(want, abs=1e-6)
    # read literally (only i = j positive), box 0 would be pushed away from its own sentence in column 1
    lit = sum(_focal(cos[i][j] / tau, i == j, g) for i in range(3) for j in range(3)) / 3
    assert region_text_alignment_loss(r, t, torch.tensor([0, 1, 2]), tau, gamma=g).item() == pytest.approx(lit, abs=1e-6)
    assert lit > want

def test_alignment_loss_gradients_reach_regions_only_through_inputs():
    r = torch.randn(4, 16, requires_grad=True)
    t = torch.randn(4, 16)
    tau = torch.tensor(0.07, requires_grad=True)
    region_text_alignment_loss(r, t, [0, 1, 1, 2], tau).backward()
    assert torch.isfinite(r.grad).all() and tau.grad is not None
    with pytest.raises(OvstadError, match='sentence_ids must have shape'): region_text_alignment_loss(r, t, [0, 1], 0.1)
