"""What a DINO run learned: the initial network as epoch -1, BN recalibration, scores, the learning curve."""
import csv
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import compose_train
from facefd.callbacks import KNNProbe
from facefd.models.batchnorm import recalibrate_batchnorm, recalibrated_batchnorm
from facefd.models.probe import attribute_scores, majority_accuracy
from facefd.train import run


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney: P(positive scores higher than negative), ties counting half, over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_scores_against_hand_computed_values():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < np.array([0.5, 0.2, 0.9])).astype(np.float32)
    probs = np.clip(labels * 0.3 + rng.random((200, 3)) * 0.7, 0, 1).astype(np.float32)
    got = attribute_scores(torch.from_numpy(probs), torch.from_numpy(labels))
    for j in range(3):
        y, p = labels[:, j], probs[:, j]
        pred = p > 0.5
        tpr, tnr = (pred & (y == 1)).sum() / (y == 1).sum(), (~pred & (y == 0)).sum() / (y == 0).sum()
        assert float(got["acc"][j]) == pytest.approx((pred == (y == 1)).mean(), abs=1e-6)
        assert float(got["bacc"][j]) == pytest.approx((tpr + tnr) / 2, abs=1e-6)
        assert float(got["auroc"][j]) == pytest.approx(rank_auroc(p, y), abs=1e-5)
    # any constant answer: balanced accuracy and AUROC 0.5, accuracy the share of the answer's class
    constant = attribute_scores(torch.ones(200, 3), torch.from_numpy(labels))
    assert torch.allclose(constant["bacc"], torch.full((3,), 0.5)) and torch.allclose(constant["auroc"], torch.full((3,), 0.5))
    one_class = attribute_scores(torch.rand(10, 1), torch.ones(10, 1))
    assert torch.isnan(one_class["auroc"]).all()


def test_majority_accuracy():
    bank = torch.tensor([[1, 0], [1, 0], [0, 1]])
    queries = torch.tensor([[1, 1], [0, 1], [1, 0], [1, 0]])
    assert majority_accuracy(bank, queries).tolist() == [0.75, 0.5]  # bank majorities: 1 and 0


def test_recalibrated_batchnorm_is_the_mean_of_batch_statistics_and_is_undone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    bn = net[1]
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    batches = [torch.randn(5, 3, 8, 8) * (i + 1) + i for i in range(3)]
    with torch.no_grad():
        acts = [net[0](b).transpose(0, 1).reshape(4, -1).double().numpy() for b in batches]
    want_mean = np.mean([a.mean(1) for a in acts], axis=0)
    want_var = np.mean([a.var(1, ddof=1) for a in acts], axis=0)  # PyTorch tracks the unbiased variance
    net.eval()
    with recalibrated_batchnorm(net, batches):
        np.testing.assert_allclose(bn.running_mean.numpy(), want_mean, rtol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), want_var, rtol=1e-5)
        assert not net.training
    assert torch.all(bn.running_mean == 7.0) and torch.all(bn.running_var == 9.0)
    assert bn.momentum == 0.1
    assert recalibrate_batchnorm(net, batches) == 3
    np.testing.assert_allclose(bn.running_mean.numpy(), want_mean, rtol=1e-5)


def test_probe_history_survives_a_checkpoint():
    probe = KNNProbe()
    probe.history = {-1: {"auroc": 0.6, "acc": 0.7, "majority_acc": 0.65}, 0: {"auroc": 0.7, "loss": 3.0}}
    other = KNNProbe()
    other.load_state_dict(probe.state_dict())
    assert other.history == probe.history


def test_a_short_run_logs_the_initial_network_and_plots_what_it_learned(tmp_path, sample_root, caplog):
    """36 steps (3 epochs of 12 batches) of the tiny DINO: epoch -1 is logged and plotted with every
    epoch's loss, and the features move away from the initial network's (their k-NN scores differ)."""
    overrides = ["trainer.max_epochs=3", "trainer.limit_train_batches=12", "model.optimizer.lr=0.02",
                 "model.momentum_teacher=0.9", "model.warmup_epochs=0", "model.freeze_last_layer=0",
                 "model.head.use_bn=true"]
    with caplog.at_level(logging.INFO, logger="facefd.callbacks.knn_probe"):
        run(compose_train(tmp_path, overrides, sample_root))
    log_dir = tmp_path / "csv" / "version_0"
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    initial_rows = [r for r in rows if r["epoch"] == "-1"]
    assert len(initial_rows) == 1 and initial_rows[0]["val/knn_auroc"] and initial_rows[0]["val/majority_acc"]
    per_epoch = {int(r["epoch"]): float(r["val/knn_auroc"]) for r in rows if r.get("val/knn_auroc")}
    assert sorted(per_epoch) == [-1, 0, 1, 2]

    curve = json.loads((log_dir / "learning_curve.json").read_text())
    epochs = {e["epoch"]: e for e in curve["epochs"]}
    assert sorted(epochs) == [-1, 0, 1, 2]
    assert epochs[-1]["auroc"] == pytest.approx(per_epoch[-1], abs=1e-6)  # the same numbers as the CSV
    assert epochs[2]["auroc"] == pytest.approx(per_epoch[2], abs=1e-6)
    assert all(np.isfinite(epochs[e]["loss"]) for e in (0, 1, 2)) and epochs[-1].get("loss") is None
    assert abs(per_epoch[2] - per_epoch[-1]) > 0.01  # the features moved (the k-NN vote of 12 attributes changed)
    # the majority answer's accuracy, computed here from the label file
    train_labels, val_labels = _split_labels(sample_root)
    majority = (train_labels.mean(0) > 0.5).astype(np.float32)
    assert curve["majority_acc"] == pytest.approx(float((val_labels == majority).mean()), abs=1e-6)

    png = Image.open(log_dir / "learning_curve.png")
    assert png.format == "PNG" and png.size[0] > 600 and np.asarray(png.convert("L")).std() > 10
    summary = [r.getMessage() for r in caplog.records if "initial network" in r.getMessage() and "->" in r.getMessage()]
    assert len(summary) == 1 and f"{per_epoch[-1]:.3f} -> epoch 2 {per_epoch[2]:.3f}" in summary[0]
    # the linear probe on the same features, in the CSV, the curve and the summary line
    linear = {int(r["epoch"]): float(r["val/linear_auroc"]) for r in rows if r.get("val/linear_auroc")}
    assert sorted(linear) == [-1, 0, 1, 2] and curve["extra_methods"] == ["linear"]
    assert epochs[2]["linear_auroc"] == pytest.approx(linear[2], abs=1e-6)
    assert f"linear probe auroc {linear[-1]:.3f} -> {linear[2]:.3f}" in summary[0]


def _split_labels(root):
    names = (root / "list_attr_celeba.txt").read_text().splitlines()
    labels = {line.split()[0]: [v == "1" for v in line.split()[1:]] for line in names[2:]}
    parts = dict(line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines())
    pick = lambda p: np.array([labels[n] for n in sorted(labels) if parts[n] == p], dtype=np.float32)  # noqa: E731
    return pick("0"), pick("1")


def test_random_extractor_is_the_network_the_resnet_run_starts_from(tmp_path):
    """`random:resnet18` rows in tables are the ResNet-18 run's own initialisation (`python train.py
    backbone=resnet18`, seed 0), weight for weight, with residual blocks switched on as in the reference (not
    timm's zero-initialised last BN scale)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from facefd.metrics.extractors import timm_extractor

    cfg = compose_train(tmp_path, ["backbone=resnet18"], tiny_run=False)
    pl.seed_everything(cfg.seed)
    instantiate(cfg.data)
    start = instantiate(cfg.model).student["backbone"].state_dict()
    random_net = timm_extractor("resnet18", random_init=True).backbone.state_dict()
    assert start.keys() == random_net.keys() and all(torch.equal(start[k], random_net[k]) for k in start)
    assert float(start["layer1.0.bn2.weight"].abs().min()) == 1.0  # zero_init_last=False: BN scales start at 1


def test_the_default_presets_precision_trains_and_scores(tmp_path, sample_root):
    """precision=auto-bf16 (the default preset's) resolves by the hardware and trains: finite losses and
    scores at every epoch, under bf16 autocast where the CPU has native bf16 (24 px local crops: at 16 px a
    strided convolution sees 1x1 maps, where oneDNN's bf16 weight gradient is unreliable)."""
    from facefd.utils.hydra import cpu_has_native_bf16

    cfg = compose_train(tmp_path, ["precision=auto-bf16", "data.train_transform.local_crop_size=24"], sample_root)
    assert cfg.trainer.precision == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
    run(cfg)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    scores = {int(r["epoch"]): float(r["val/knn_auroc"]) for r in rows if r.get("val/knn_auroc")}
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert sorted(scores) == [-1, 0, 1] and all(0.0 < v <= 1.0 for v in scores.values())


def test_default_run_is_the_quick_recipe_on_a_small_vit_that_trains_and_exports(tmp_path, sample_root):
    """The default run (and experiment=quick_vit, its name): the quick recipe with a ViT-Ti of 8-px patches
    and 5 blocks sized to the global crop; backbone=resnet18 swaps in the ResNet-18 without ViT keys. A short
    run trains the ViT, and the exported extractor rebuilds the ViT it trained (patch size, depth and image
    size read back from the card) with the teacher's weights from the run's last checkpoint."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from facefd import load_extractor

    preset = compose_train(tmp_path, [], sample_root, tiny_run=False)
    named = compose_train(tmp_path, ["experiment=quick_vit"], sample_root, tiny_run=False)
    assert OmegaConf.to_container(preset.model, resolve=True) == OmegaConf.to_container(named.model, resolve=True)
    b = preset.backbone
    assert (b.model_name, b.patch_size, b.depth, b.img_size) == ("vit_tiny_patch16_224", 8, 5, 64)
    assert preset.model.optimizer.lr == 0.01 and preset.model.head.out_dim == 1024  # the rest is experiment=quick
    assert instantiate(preset.model).embed_dim == 192
    resnet = compose_train(tmp_path, ["backbone=resnet18"], sample_root, tiny_run=False)
    assert resnet.backbone.model_name == "resnet18" and "patch_size" not in resnet.backbone
    assert resnet.model.optimizer.lr == 0.01 and resnet.model.head.out_dim == 1024

    cfg = compose_train(tmp_path, ["experiment=quick_vit", "backbone=vit_tiny8", "backbone.depth=2",
                                   "trainer.max_epochs=1", "trainer.limit_train_batches=3", "precision=32-true"],
                        sample_root)
    assert cfg.backbone.img_size == cfg.data.train_transform.global_crop_size == 32
    run(cfg)
    extractor = load_extractor(tmp_path / "extractor" / "extractor.safetensors")
    vit = extractor.backbone
    assert extractor.num_features == 192 and len(vit.blocks) == 2 and tuple(vit.patch_embed.proj.kernel_size) == (8, 8)
    state = torch.load(next((tmp_path / "checkpoints").glob("last*.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    teacher = {k[len("teacher.backbone."):]: v for k, v in state.items() if k.startswith("teacher.backbone.")}
    exported = vit.state_dict()
    assert teacher.keys() == exported.keys() and all(torch.equal(teacher[k], exported[k]) for k in teacher)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert extractor(images).shape == (2, 192)
