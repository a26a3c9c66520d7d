"""DINOHead: weight-normalised last layer, L2 bottleneck, safe copies."""
import copy

import torch
import torch.nn.functional as F

from facefd.models.dino import DINOHead


def test_weight_norm_formula_and_normalised_bottleneck():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(5, 16)
    z = F.normalize(head.mlp(x), dim=-1)
    v, g = head.last_layer.weight_v, head.last_layer.weight_g
    w = g * v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(head(x), z @ w.T)
    assert torch.allclose(w.norm(dim=1), torch.ones(10))  # g initialised to 1


def test_norm_last_layer_freezes_g():
    assert not DINOHead(8, 4, norm_last_layer=True).last_layer.weight_g.requires_grad
    assert DINOHead(8, 4, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_mlp_layout():
    head = DINOHead(16, 10, use_bn=True, nlayers=3, hidden_dim=32, bottleneck_dim=8)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear"]


def test_deepcopy_does_not_share_storage():
    head = DINOHead(8, 4, hidden_dim=16, bottleneck_dim=4)
    twin = copy.deepcopy(head)
    for (n, a), (_, b) in zip(head.named_parameters(), twin.named_parameters()):
        assert a.data_ptr() != b.data_ptr(), n
    with torch.no_grad():
        twin.last_layer.weight_v.add_(1.0)
    assert not torch.equal(head.last_layer.weight_v, twin.last_layer.weight_v)
