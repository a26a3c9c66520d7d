"""Every config option composes, builds, and carries the values the papers / reference recipe name."""
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_train
from facefd.utils.hydra import loader_workers, resolve_precision


def test_paper_experiment_is_the_fdd_setting(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=paper", "data.root=/nonexistent"], tiny_run=False)
    assert cfg.backbone.model_name == "resnet50"
    assert cfg.data.batch_size == 16 and cfg.trainer.max_epochs == 100
    assert cfg.model.optimizer._target_ == "torch.optim.SGD" and cfg.model.optimizer.lr == 0.03
    assert cfg.model.optimizer.weight_decay == cfg.model.weight_decay_end == 1e-4
    t = cfg.data.train_transform
    assert list(t.global_crops_scale) == [0.14, 1.0] and list(t.local_crops_scale) == [0.05, 0.14]
    assert (t.global_crop_size, t.local_crop_size, t.local_crops_number) == (224, 96, 8)
    assert cfg.model.teacher_temp == 0.04 and cfg.model.momentum_teacher == 0.996 and cfg.model.clip_grad == 3.0
    model = instantiate(cfg.model)
    assert model.embed_dim == 2048  # the width of Inception-v3's pool features
    assert model.out_dim == 65536 and model.criterion.ncrops == 10


def test_reference_defaults_without_experiment(tmp_path, sample_root):
    cfg = compose_train(tmp_path, ["~experiment"], sample_root, tiny_run=False)
    m = cfg.model
    assert m.optimizer._target_ == "torch.optim.AdamW" and m.optimizer.lr == 0.0005 and m.optimizer.weight_decay == 0.04
    assert (m.weight_decay_end, m.warmup_epochs, m.min_lr, m.freeze_last_layer) == (0.4, 10, 1e-6, 1)
    assert (m.student_temp, m.center_momentum, m.head.norm_last_layer, m.head.use_bn) == (0.1, 0.9, True, False)
    assert (m.head.out_dim, m.head.hidden_dim, m.head.bottleneck_dim, m.head.nlayers) == (65536, 2048, 256, 3)
    assert (m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs) == (0.04, 0.04, 0)


@pytest.mark.parametrize("name, target, momentum", [("sgd", "torch.optim.SGD", 0.9),
                                                     ("lars", "facefd.models.optim.LARS", 0.9)])
def test_optimizer_group_gives_the_reference_momentum(tmp_path, name, target, momentum):
    cfg = compose_train(tmp_path, [f"model/optimizer={name}"])
    assert cfg.model.optimizer._target_ == target
    optimizer = instantiate(cfg.model.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.defaults["momentum"] == momentum  # a bare _target_ override would leave SGD at 0


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_sim", "multinode"])
def test_trainer_configs_compose(tmp_path, trainer):
    cfg = compose_train(tmp_path, [f"trainer={trainer}"])
    assert cfg.trainer.use_distributed_sampler is False
    if trainer in ("ddp", "multinode"):
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is True
    if trainer == "multinode":
        assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 8


@pytest.mark.parametrize("cuda,bf16,accelerator,expected", [
    (True, True, "gpu", "bf16-mixed"),      # a bf16 GPU: bf16-mixed, whatever the CPU
    (True, True, "auto", "bf16-mixed"),     # auto picks the GPU
    (True, False, "gpu", "32-true"),        # a GPU without bf16 (V100): fp32, never fp16 (DINO's loss overflows)
    (True, True, "cpu", "32-true"),         # the CPU asked for on a GPU machine (plain auto: never bf16 on the CPU)
    (False, False, "auto", "32-true"),      # no GPU
])
def test_precision_auto(monkeypatch, cuda, bf16, accelerator, expected):
    """The GPU branch runs without a GPU: torch.cuda's probes answer as the machine in each row would."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"  # an explicit choice is kept


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_bf16_on_the_cpu_follows_the_hardware(monkeypatch, native):
    """auto-bf16 (the default DINO preset) autocasts to bf16 only where the CPU multiplies bf16 natively;
    plain auto never does on the CPU."""
    import facefd.utils.hydra as hydra_utils

    monkeypatch.setattr(hydra_utils.torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(hydra_utils.torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto-bf16", "cpu") == ("bf16-mixed" if native else "32-true")
    assert resolve_precision("auto", "cpu") == "32-true"


def test_tensorboard_and_csv_loggers_build(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = compose_train(tmp_path, ["logger=many"])
    loggers = [instantiate(v) for v in cfg.logger.values()]
    assert {type(lg).__name__ for lg in loggers} == {"CSVLogger", "TensorBoardLogger"}


def test_wandb_logger_is_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = compose_train(tmp_path, ["logger=wandb"])
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match=r'pip install -e "\.\[wandb\]"'):
            instantiate(cfg.logger.wandb)
        return
    logger = instantiate(cfg.logger.wandb)
    assert logger._offline
    logger.log_metrics({"val/fdd": 1.25, "train/loss": 6.5}, step=3)  # what a run logs reaches the offline run
    logger.experiment.finish()
    runs = list(tmp_path.rglob("offline-run-*/run-*.wandb"))  # what `wandb sync` uploads later
    assert len(runs) == 1
    data = runs[0].read_bytes()  # its records keep each key and each value as JSON text
    assert b"val/fdd" in data and b"1.25" in data and b"train/loss" in data and b"6.5" in data


@pytest.mark.parametrize("name", ["train", "evaluate", "anonymize"])
def test_every_entry_config_composes_with_the_shared_safety_keys(name):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF

    GlobalHydra.instance().clear()
    overrides = {"anonymize": ["input=x", "output=y"], "evaluate": ["task=fd"]}.get(name, [])
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name=name, overrides=overrides)
    assert cfg.trust_code is False and cfg.max_image_pixels == 89_478_485 and cfg.transparency == "drop"


def test_each_evaluate_task_has_its_own_options():
    """`evaluate.py task=X --cfg job` shows what task X reads, not every task's options."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF

    def keys(task):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            return set(compose(config_name="evaluate", overrides=[f"task={task}"]).keys())

    fd, bench, anon = keys("fd"), keys("benchmark"), keys("anonymization")
    assert {"a", "b"} <= fd and not {"perturbations", "heads", "extractors", "queries"} & fd
    assert {"perturbations", "sets", "extractors"} <= bench and not {"a", "fd_extractors"} & bench
    assert {"extractors", "fd_extractors", "predictor", "grid_rows"} <= anon and "perturbations" not in anon
    tasks = {p.stem for p in (CONF / "task").glob("*.yaml")}
    from facefd.evaluation import TASKS

    assert tasks == set(TASKS)  # one config per task, no orphan


def test_loader_workers_auto_is_none_on_the_cpu(tmp_path, monkeypatch):
    """Training on the CPU, loader workers would take cores from the model's threads: auto gives 0 there,
    2 on a GPU; a number is kept, from the top-level key or data.num_workers."""
    assert loader_workers("auto", "cpu") == 0 and loader_workers("auto", "gpu") == 2
    assert loader_workers(4, "cpu") == 4 and loader_workers("3", "gpu") == 3
    cfg = compose_train(tmp_path, [], tiny_run=False)
    assert cfg.trainer.accelerator == "auto"  # Lightning's default: a GPU when there is one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cfg.data.num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cfg.data.num_workers == 2  # auto found a GPU
    cpu = compose_train(tmp_path, ["trainer=cpu"], tiny_run=False)
    assert cpu.trainer.accelerator == "cpu" and cpu.data.num_workers == 0  # trainer=cpu forces the CPU
    monkeypatch.undo()
    assert compose_train(tmp_path, ["workers=3"], tiny_run=False).data.num_workers == 3
    assert compose_train(tmp_path, ["trainer=gpu"], tiny_run=False).data.num_workers == 2
    assert compose_train(tmp_path, ["data.num_workers=5"], tiny_run=False).data.num_workers == 5
