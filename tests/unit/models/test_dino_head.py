"""DINOHead: weight-normalised last layer, L2 bottleneck, safe copies."""
import copy

import pytest
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


class ReferenceHead(torch.nn.Module):
    """DINO's ``vision_transformer.DINOHead`` written out here (torch's own ``weight_norm`` hook on the
    last layer), the independent reference for layout, initialisation and checkpoint keys."""

    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048,
                 bottleneck_dim=256):
        super().__init__()
        nn = torch.nn
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.last_layer = torch.nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _kinds(module):
    mods = module if isinstance(module, torch.nn.Sequential) else [module]
    return [(type(m).__name__, tuple(p.shape for p in m.parameters())) for m in mods]


@pytest.mark.parametrize("nlayers", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("use_bn", [False, True])
def test_layout_and_checkpoint_keys_equal_dinos_head(nlayers, use_bn):
    """Layer by layer the reference's layout (ours orders BN/GELU/Linear inside the loop differently but
    builds the same sequence); the reference's state dict loads strictly and gives the same outputs."""
    kw = dict(use_bn=use_bn, nlayers=nlayers, hidden_dim=32, bottleneck_dim=8)
    ours, ref = DINOHead(16, 10, **kw), ReferenceHead(16, 10, **kw)
    assert _kinds(ours.mlp) == _kinds(ref.mlp)
    ours.load_state_dict(ref.state_dict(), strict=True)  # weight_g [10, 1] and weight_v as in DINO's files
    x = torch.randn(6, 16)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_defaults_are_dinos():
    """main_dino.py's defaults: 65536 prototypes, 3 layers, 2048 hidden, 256 bottleneck, no BN, normed
    last layer: the same parameter shapes as the reference built with them."""
    ours, ref = DINOHead(24), ReferenceHead(24, 65536)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in ours.modules())
    assert not ours.last_layer.weight_g.requires_grad


def test_initialisation_is_dinos():
    """The reference's ``trunc_normal_(std=0.02)`` on every MLP weight with zero biases, and nn.Linear's
    default for the prototype directions: uniform on +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt 5)."""
    torch.manual_seed(0)
    head = DINOHead(256, out_dim=4096, hidden_dim=512, bottleneck_dim=256)
    for layer in (m for m in head.mlp if isinstance(m, torch.nn.Linear)):
        w = layer.weight.detach()
        assert float(w.std()) == pytest.approx(0.02, rel=0.02) and float(w.abs().max()) <= 2.0
        assert torch.count_nonzero(layer.bias) == 0
    v = head.last_layer.weight_v.detach()
    bound = 1 / 256 ** 0.5
    assert float(v.abs().max()) <= bound and float(v.abs().max()) > 0.99 * bound
    assert float(v.var()) == pytest.approx(bound ** 2 / 3, rel=0.02)  # the variance of U(-b, b)
