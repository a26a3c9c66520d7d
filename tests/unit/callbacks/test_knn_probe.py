"""k-NN attribute probe against a brute-force loop, and the online callback in a tiny DINO run."""
import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_train
from facefd.models.probe import knn_attribute_accuracy, knn_attribute_probabilities
from facefd.train import run


def brute_force(bank, labels, queries, k, t):
    out = []
    for q in queries:
        sims = [float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b))) for b in bank]
        nearest = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        w = [math.exp(sims[i] / t) for i in nearest]
        out.append([sum(wi * labels[i][a] for wi, i in zip(w, nearest)) / sum(w) for a in range(labels.shape[1])])
    return np.array(out)


def test_knn_vote_equals_brute_force():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    labels = (rng.random((60, 3)) > 0.5).astype(np.float64)
    got = knn_attribute_probabilities(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries),
                                      k=7, temperature=0.07, chunk=10)
    np.testing.assert_allclose(got.numpy(), brute_force(bank, labels, queries, 7, 0.07), rtol=1e-5, atol=1e-6)


def _on_circle(angles):
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_knn_accuracy_votes_with_dino_defaults_and_the_given_temperature():
    """DINO's ``eval_knn`` defaults (k=20, T=0.07), a given temperature, and a tie, against the brute-force
    vote. The 20 nearest of a query on a circle are 10 positives and 10 negatives, the positives a little
    nearer: the vote leans positive, and a 21st neighbour (negative) would tip it. Three neighbours, one
    positive at cosine 1 and two negatives at 0.95, vote positive at T=0.07 (weight ratio e^(0.05/0.07) ~ 2.04)
    and negative at T=0.5 (ratio 1.11). Two neighbours at the same cosine, one of each, vote exactly 0.5:
    "absent"."""
    query, yes = _on_circle(np.array([0.0])), np.ones((1, 1))
    angles = np.concatenate([np.linspace(0.040, 0.049, 10), np.linspace(0.050, 0.060, 11), np.full(9, 1.5)])
    labels = np.concatenate([np.ones(10), np.zeros(20)])[:, None]
    t = torch.from_numpy
    for k in (20, 21):  # the reference answers differ, so the default k is what decides
        assert ((brute_force(_on_circle(angles), labels, query, k, 0.07) > 0.5) == yes).mean() == (k == 20)
    got = knn_attribute_accuracy(t(_on_circle(angles)), t(labels), t(query), t(yes))
    assert got.tolist() == [1.0]

    near = _on_circle(np.array([0.0, np.arccos(0.95), -np.arccos(0.95)]))
    three = np.array([[1.0], [0.0], [0.0]])
    for temperature, expect in ((0.07, 1.0), (0.5, 0.0)):
        assert float((brute_force(near, three, query, 3, temperature) > 0.5)[0, 0]) == expect
        got = knn_attribute_accuracy(t(near), t(three), t(query), t(yes), k=3, temperature=temperature)
        assert got.tolist() == [expect]

    tie = _on_circle(np.array([0.3, -0.3]))
    assert knn_attribute_accuracy(t(tie), t(np.array([[1.0], [0.0]])), t(query), t(np.zeros((1, 1))),
                                  k=2).tolist() == [1.0]  # 0.5 is not "present"


def test_probe_beats_chance_only_when_features_carry_the_attribute():
    rng = np.random.default_rng(1)
    labels = (rng.random((600, 2)) > 0.5).astype(np.float32)
    informative = labels * 2.0 + rng.normal(scale=0.5, size=labels.shape)  # attribute visible in the features
    features = np.concatenate([informative, rng.normal(size=(600, 6))], axis=1)
    noise = rng.normal(size=(600, 8))
    t = lambda a: torch.from_numpy(a).float()  # noqa: E731
    good = knn_attribute_accuracy(t(features[:500]), t(labels[:500]), t(features[500:]), t(labels[500:]))
    blind = knn_attribute_accuracy(t(noise[:500]), t(labels[:500]), t(noise[500:]), t(labels[500:]))
    assert (good > 0.9).all()  # chance is 0.5
    assert (blind < 0.65).all()


def test_online_probe_in_a_dino_run(tmp_path, sample_root):
    cfg = compose_train(tmp_path, ["trainer.max_epochs=1"], sample_root)
    run(cfg)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    values = {int(r["epoch"]): float(r["val/knn_acc"]) for r in rows if r.get("val/knn_acc")}
    assert sorted(values) == [-1, 0] and all(0.0 < v <= 1.0 for v in values.values())  # -1: the initial network
    assert any(r.get("val/knn_acc/Wearing_Hat") for r in rows)


def test_online_linear_probe_in_a_dino_run(tmp_path, sample_root):
    cfg = compose_train(tmp_path, ["trainer.max_epochs=1", "callbacks.knn_probe.method=linear"], sample_root)
    run(cfg)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    values = {int(r["epoch"]): float(r["val/linear_acc"]) for r in rows if r.get("val/linear_acc")}
    assert sorted(values) == [-1, 0] and all(0.0 < v <= 1.0 for v in values.values())
    assert not any(r.get("val/knn_acc") for r in rows)


def _mann_whitney_auroc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_extra_linear_probe_and_cached_images_give_the_streamed_numbers(sample_root):
    """One measurement scores k-NN and the linear probe on the same features; images decoded once and kept
    (the cache) give exactly the numbers of images re-read through a DataLoader, and the linear probe's AUROC
    equals a logistic regression fitted here on features computed image by image."""
    import lightning.pytorch as pl

    from facefd.callbacks import KNNProbe
    from facefd.data import SampleFacesDataModule
    from facefd.data.transforms import EvalTransform
    from facefd.models.probe.logistic import fit_logistic_probe

    class Pooled(pl.LightningModule):  # a fixed network: colour statistics at two scales
        def forward(self, x):
            return torch.cat([x.mean((2, 3)), torch.nn.functional.avg_pool2d(x, 8).flatten(1)], 1)

    dm = SampleFacesDataModule(str(sample_root), num_images=120, image_size=32, eval_transform=EvalTransform(32),
                               batch_size=8, num_workers=0)
    dm.setup()
    net = Pooled()
    cached = KNNProbe(extra_methods=["linear"], batch_size=16)
    got = cached.measure(net, *cached._datasets(dm))["mean"]
    again = cached.measure(net, *cached._datasets(dm))["mean"]  # second time from the cache
    assert len(cached._image_cache) == 2  # bank and queries, each decoded once
    streamed_knn = KNNProbe(cache_bytes=0, batch_size=16)
    streamed_linear = KNNProbe(method="linear", cache_bytes=0, batch_size=16)
    want_knn = streamed_knn.measure(net, *streamed_knn._datasets(dm))["mean"]
    want_linear = streamed_linear.measure(net, *streamed_linear._datasets(dm))["mean"]
    assert all(v is None for v in streamed_knn._image_cache.values())  # nothing kept: streamed each time
    for key in ("acc", "bacc", "auroc"):
        assert got[key] == pytest.approx(want_knn[key], abs=1e-6) and again[key] == pytest.approx(got[key], abs=1e-6)
        assert got[f"linear_{key}"] == pytest.approx(want_linear[key], abs=1e-6)

    def features(split):  # image by image, without the callback's loaders
        return torch.stack([net(dm.eval_transform(Image.open(p).convert("RGB"))[None])[0] for p in dm.splits[split]])

    train_y, val_y = dm.labels["train"].numpy(), dm.labels["val"].numpy()
    probs = fit_logistic_probe(features("train"), dm.labels["train"], l2=1e-3).probabilities(features("val")).numpy()
    aurocs = [_mann_whitney_auroc(probs[:, j], val_y[:, j]) for j in range(val_y.shape[1])
              if 0 < val_y[:, j].sum() < len(val_y)]
    assert got["linear_auroc"] == pytest.approx(float(np.mean(aurocs)), abs=1e-5)
    assert len(train_y) > len(val_y) > 0


@pytest.mark.parametrize("started", [False, True])
def test_epoch_minus_one_recalibrates_batchnorm_unless_the_run_started_from_weights(sample_root, started):
    """A network with BatchNorm statistics that mean nothing (a random network's): the epoch -1 measurement sees
    them replaced by the bank images' own per-channel mean and unbiased variance (computed here with numpy over
    the train split, one batch holding it all), and restored afterwards. A run started from released weights
    (hparams.start) is measured with its own statistics."""
    from types import SimpleNamespace

    import lightning.pytorch as pl

    from facefd.callbacks import KNNProbe
    from facefd.data import SampleFacesDataModule
    from facefd.data.transforms import EvalTransform

    class WithBN(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(5.0)
            self.bn.running_var.fill_(0.01)
            self.hparams.start = {"source": "weights.pth"} if started else None
            self.seen = []
            self.bn.register_forward_hook(lambda m, i, o: self.seen.append(
                (m.running_mean.clone(), m.running_var.clone())) if not m.training else None)

        def forward(self, x):
            return torch.nn.functional.avg_pool2d(self.bn(x), 8).flatten(1)

    dm = SampleFacesDataModule(str(sample_root), num_images=120, image_size=32, eval_transform=EvalTransform(32),
                               batch_size=8, num_workers=0)
    dm.setup()
    net = WithBN()
    probe = KNNProbe(batch_size=1000, num_workers=0)
    trainer = SimpleNamespace(datamodule=dm, loggers=[], current_epoch=0, precision="32-true")
    probe.on_train_start(trainer, net)
    bank = np.stack([dm.eval_transform(Image.open(p).convert("RGB")).numpy() for p in dm.splits["train"]])
    want_mean = bank.mean(axis=(0, 2, 3))
    want_var = bank.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1)
    mean, var = net.seen[0]
    if started:
        assert torch.all(mean == 5.0) and torch.all(var == 0.01)
    else:
        np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-5)
        np.testing.assert_allclose(var.numpy(), want_var, rtol=1e-4)
    assert torch.all(net.bn.running_mean == 5.0) and torch.all(net.bn.running_var == 0.01)  # restored
    assert probe.history[-1]["auroc"] > 0


def test_baseline_false_scores_no_initial_network(sample_root):
    """knn_probe.baseline=false: no epoch -1 measurement (the network is never run before training)."""
    from types import SimpleNamespace

    import lightning.pytorch as pl

    from facefd.callbacks import KNNProbe
    from facefd.data import SampleFacesDataModule
    from facefd.data.transforms import EvalTransform

    class Counting(pl.LightningModule):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return x.mean((2, 3))

    dm = SampleFacesDataModule(str(sample_root), num_images=120, image_size=32, eval_transform=EvalTransform(32),
                               batch_size=8, num_workers=0)
    dm.setup()
    trainer = SimpleNamespace(datamodule=dm, loggers=[], current_epoch=0, precision="32-true")
    probe = KNNProbe(baseline=False, num_workers=0)
    probe.on_train_start(trainer, Counting())
    assert probe.history == {} and Counting.calls == 0
    KNNProbe(baseline=True, num_workers=0).on_train_start(trainer, Counting())
    assert Counting.calls > 0  # the same call with the baseline on does run it


def test_attribute_scores_and_majority_by_hand():
    """acc, balanced accuracy and AUROC per attribute, by hand on 8 queries x 3 attributes: threshold 0.5
    exclusive (0.5 is "absent"), bacc = (TPR + TNR) / 2 (a false positive in the first attribute), AUROC = the
    Mann-Whitney statistic; an attribute with one class only has NaN AUROC. The majority answer comes from the
    bank, per attribute."""
    from facefd.models.probe.knn import attribute_scores, majority_accuracy

    probs = torch.tensor([[0.9, 0.5, 0.2, 0.6], [0.8, 0.6, 0.1, 0.4], [0.65, 0.4, 0.7, 0.9], [0.6, 0.5, 0.9, 0.7],
                          [0.1, 0.7, 0.3, 0.2], [0.4, 0.2, 0.6, 0.8], [0.7, 0.9, 0.4, 0.3], [0.2, 0.5, 0.8, 0.6]])
    labels = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1],
                           [1, 1, 0, 1], [0, 1, 0, 1]])  # the last two attributes have one class only
    got = attribute_scores(probs, labels)
    p, y = probs.numpy(), labels.numpy().astype(bool)
    for j in range(4):
        pred = p[:, j] > 0.5
        assert float(got["acc"][j]) == pytest.approx(np.mean(pred == y[:, j]))
        tpr = (pred & y[:, j]).sum() / max(y[:, j].sum(), 1)
        tnr = (~pred & ~y[:, j]).sum() / (~y[:, j]).sum()
        if y[:, j].any() and not y[:, j].all():
            assert float(got["bacc"][j]) == pytest.approx((tpr + tnr) / 2)
            assert float(got["auroc"][j]) == pytest.approx(_mann_whitney_auroc(p[:, j], y[:, j].astype(float)))
        else:
            assert math.isnan(float(got["auroc"][j]))
    bank = torch.tensor([[1, 0, 0, 1], [1, 0, 1, 0], [1, 1, 0, 1], [0, 1, 0, 0]])
    majority = majority_accuracy(bank, labels)  # bank majorities: 1, 0 (a tie is "absent"), 0, 0 (a tie)
    assert majority.tolist() == pytest.approx([np.mean(y[:, 0]), np.mean(~y[:, 1]), np.mean(~y[:, 2]),
                                               np.mean(~y[:, 3])])


def test_knn_accuracy_defaults_are_dinos_eval_knn():
    """knn_attribute_accuracy without k and temperature: DINO's eval_knn (k = 20, T = 0.07), written out above."""
    rng = np.random.default_rng(4)
    bank, queries = rng.normal(size=(60, 5)), rng.normal(size=(15, 5))
    labels = (rng.random((60, 2)) > 0.4).astype(float)
    truth = (rng.random((15, 2)) > 0.4).astype(float)
    want = ((brute_force(bank, labels, queries, 20, 0.07) > 0.5) == truth).mean(0)
    got = knn_attribute_accuracy(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries),
                                 torch.from_numpy(truth))
    assert got.tolist() == pytest.approx(want.tolist())


def test_search_mistakes_are_one_sentence_each():
    """An unknown distance, feature widths that differ and a bank without a label row each are one error naming
    the values [the documented texts]."""
    from facefd.models.probe.knn import knn_search

    with pytest.raises(ValueError, match=r"^distance must be one of \('cosine', 'l2'\), got 'dot'$"):
        knn_search(torch.zeros(2, 3), torch.zeros(4, 3), 1, distance="dot")
    with pytest.raises(ValueError, match=r"^query and gallery widths differ: 3 vs 5$"):
        knn_search(torch.zeros(2, 3), torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match=r"^4 bank features but 3 label rows$"):
        knn_attribute_probabilities(torch.zeros(4, 3), torch.zeros(3, 2), torch.zeros(1, 3))
