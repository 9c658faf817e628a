from cifar_qvit.cli import CHOICES
from cifar_qvit.model import SIZES
from cifar_shared.engine.cli import compose_config


def test_defaults_of_the_original_project():
    cfg = compose_config("cifar_qvit.conf", [])
    assert cfg.model.pretrained == "google/vit-large-patch16-224" and cfg.model.nbits_w == 4 and cfg.model.nbits_a == 4
    assert cfg.optim._target_ == "torch.optim.AdamW" and cfg.optim.lr == 3e-4 and cfg.batch_size == 128
    assert cfg.scheduler._target_.endswith("cosine") and cfg.scheduler.warmup_epochs == 1
    assert set(cfg.logger) == {"tensorboard", "wandb"} and cfg.trainer.precision == "auto"
    assert list(cfg.data.mean) == [0.5, 0.5, 0.5] and cfg.loss_hook is None and cfg.data.name == "cifar100"


def test_choices_match_the_model():
    assert CHOICES["model.size"] == tuple(SIZES)


def test_presets():
    cfg = compose_config("cifar_qvit.conf", ["bits=qvit", "loss_hook=dgd", "model.init_from=/runs/fp", "experiment=subset"])
    assert cfg.model.layer_bits.patch_embed.w == 8 and cfg.model.layer_bits.classifier.a == 8
    assert cfg.loss_hook.teacher_run == "/runs/fp" and cfg.data.root == "../shared/data/cifar10-subset"
    # the experiment's CIFAR-10 wins over the original's CIFAR-100 (it lost while train.yaml held the
    # override itself: "no cifar100 data under ../shared/data/cifar10-subset")
    assert cfg.data.name == "cifar10" and cfg.data.mean == cfg.model.image_mean
    assert compose_config("cifar_qvit.conf", ["experiment=subset100"]).data.name == "cifar100"
    assert compose_config("cifar_qvit.conf", []).data.name == "cifar100"


def test_package_is_registered_for_shared_tools():
    from cifar_shared.registry import installed_packages

    assert compose_config(installed_packages()["qvit"], []).name == "qvit"


def test_default_loggers_are_wandb_offline_without_a_login_and_tensorboard(tmp_path, monkeypatch):
    from cifar_shared.engine.loggers import build_loggers

    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    cfg = compose_config("cifar_qvit.conf", [f"output_dir={tmp_path}", "logger.wandb.project=myproj"])
    loggers = {type(lg).__name__: lg for lg in build_loggers(cfg)}
    assert set(loggers) == {"TensorBoardLogger", "WandbLogger"}
    assert loggers["WandbLogger"]._offline is True and loggers["WandbLogger"]._project == "myproj"


def test_qvit_presets_pass_the_run_folder_target_check():
    """A qvit run folder's config (DGD teacher, init_from) is one cifar-eval reads: its targets are allowed."""
    from cifar_shared.runs.folder import check_targets

    check_targets(compose_config("cifar_qvit.conf", ["loss_hook=dgd", "model.init_from=/runs/fp"]), "config.yaml")
