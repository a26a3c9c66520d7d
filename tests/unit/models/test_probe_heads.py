"""ProbeHeads against what it is documented to be: DINO's ``eval_linear.py`` LinearClassifier for
``head="linear"`` (weights ~ N(0, 0.01), zero bias), the MLP layout, standardisation with numpy's mean and
unbiased std, the outputs and category blocks by hand, and a card that rebuilds the same head."""
import numpy as np
import pytest
import torch

from facefd.models.probe.heads import ProbeHeads


def test_linear_head_is_eval_linears_classifier():
    torch.manual_seed(0)
    heads = ProbeHeads(1024, [f"a{i}" for i in range(300)])
    (last,) = heads.net
    assert isinstance(last, torch.nn.Linear) and tuple(last.weight.shape) == (300, 1024)
    assert float(last.weight.std()) == pytest.approx(0.01, rel=0.01) and abs(float(last.weight.mean())) < 1e-4
    assert torch.count_nonzero(last.bias) == 0


def test_mlp_layout_and_defaults():
    """``depth`` blocks of Linear(hidden_dim) + ReLU + Dropout, then the output layer; defaults 512 wide,
    one block, no dropout, standardised."""
    heads = ProbeHeads(16, ["a", "b"], {"c": ["x", "y", "z"]}, head="mlp")
    kinds = [(type(m).__name__, getattr(m, "out_features", getattr(m, "p", None))) for m in heads.net]
    assert kinds == [("Linear", 512), ("ReLU", None), ("Dropout", 0.0), ("Linear", 5)]
    assert heads.config == dict(num_features=16, head="mlp", hidden_dim=512, depth=1, dropout=0.0, standardize=True)
    deep = ProbeHeads(16, ["a"], head="mlp", hidden_dim=8, depth=2, dropout=0.25)
    assert [type(m).__name__ for m in deep.net] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert deep.net[0].in_features == 16 and deep.net[3].in_features == 8 and deep.net[2].p == 0.25


def test_standardised_outputs_and_blocks_by_hand():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 6)) * np.array([1, 2, 3, 4, 5, 0]) + 7
    heads = ProbeHeads(6, ["a", "b"], {"c": ["x", "y", "z"], "d": ["p", "q"]})
    heads.set_feature_statistics(torch.from_numpy(train).float())
    mean, std = train.mean(0), np.maximum(train.std(0, ddof=1), 1e-6)
    np.testing.assert_allclose(heads.feature_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(heads.feature_std.numpy(), std, rtol=1e-5)
    x = rng.normal(size=(4, 6))
    w, b = heads.net[0].weight.detach().double().numpy(), heads.net[0].bias.detach().double().numpy()
    want = ((x - mean) / std) @ w.T + b
    logits = heads(torch.from_numpy(x).float())
    np.testing.assert_allclose(logits.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    binary, blocks = heads.split(logits)
    assert torch.equal(binary, logits[:, :2]) and list(blocks) == ["c", "d"]
    assert torch.equal(blocks["c"], logits[:, 2:5]) and torch.equal(blocks["d"], logits[:, 5:7])
    raw = ProbeHeads(6, ["a"], standardize=False)
    raw.set_feature_statistics(torch.from_numpy(train).float())  # not standardised: statistics stay unused
    assert torch.equal(raw.feature_mean, torch.zeros(6)) and torch.equal(raw.feature_std, torch.ones(6))
    w = raw.net[0].weight.detach().double().numpy()
    np.testing.assert_allclose(raw(torch.from_numpy(x).float()).detach().numpy(), x @ w.T, rtol=1e-4, atol=1e-5)


def test_card_rebuilds_the_same_head():
    heads = ProbeHeads(12, ["a"], {"c": ["x", "y"]}, head="mlp", hidden_dim=4, depth=2, dropout=0.5, standardize=False)
    card = heads.card(extractor="e")
    assert card == {"format": "facefd-probe-heads", "format_version": 1, "num_features": 12, "head": "mlp",
                    "hidden_dim": 4, "depth": 2, "dropout": 0.5, "standardize": False, "attribute_names": ["a"],
                    "categories": {"c": ["x", "y"]}, "extractor": "e"}
    again = ProbeHeads.from_card(card)
    again.load_state_dict(heads.state_dict())
    x = torch.randn(3, 12)
    heads.eval(), again.eval()
    assert torch.equal(heads(x), again(x))
    assert ProbeHeads.from_card({**card, "categories": None}).categories == {}


def test_mistakes_are_named():
    with pytest.raises(ValueError, match="^head must be 'linear' or 'mlp', got 'tree'$"):
        ProbeHeads(4, ["a"], head="tree")
    with pytest.raises(ValueError, match="^a probe needs at least one binary attribute or category to predict$"):
        ProbeHeads(4)
    assert ProbeHeads(4, categories={"c": ["x", "y"]}).net[0].out_features == 2  # categories alone are enough
