from cifar_shared.engine.cli import compose_config


def test_defaults_of_the_original_project():
    cfg = compose_config("cifar_basiccnn.conf", [])
    assert cfg.data.name == "cifar10" and cfg.seed == 42 and cfg.batch_size == 128
    assert cfg.trainer.max_epochs == 100
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == 1e-3
    assert cfg.scheduler._target_.endswith("plateau") and cfg.scheduler.factor == 0.1 and cfg.scheduler.patience == 2
    assert cfg.augment.crop_padding == 4 and cfg.augment.flip is True
    assert list(cfg.data.mean) == [0.4914, 0.4822, 0.4465] and list(cfg.data.std) == [0.2470, 0.2435, 0.2616]  # measured (cifar-stats)
    assert cfg.model.widths == [32, 64, 128] and cfg.model.dropout == 0.5


def test_original_keys_keep_working():
    cfg = compose_config("cifar_basiccnn.conf", ["lr=0.0005", "batch_size=64", "epochs=50", "checkpoint_dir=/tmp/ck", "log_dir=/tmp/lg", "output_dir=/tmp/run"])
    assert cfg.optim.lr == 0.0005 and cfg.batch_size == 64 and cfg.trainer.max_epochs == 50
    assert cfg.checkpoint_dir == "/tmp/ck" and cfg.logger.tensorboard.save_dir == "/tmp/lg"


def test_groups_swap_by_name():
    cfg = compose_config("cifar_basiccnn.conf", ["optim=sgd", "scheduler=onecycle", "data=cifar100", "augment=flip_affine_cutout", "logger=csv"])
    assert cfg.optim.momentum == 0.9 and cfg.scheduler._target_.endswith("onecycle")
    assert cfg.data.name == "cifar100" and cfg.augment.affine.degrees == 45
    assert set(cfg.logger) == {"tensorboard", "csv"}


def test_package_is_registered_for_shared_tools():
    from cifar_shared.engine.cli import compose_config
    from cifar_shared.registry import installed_packages

    conf = installed_packages()["basiccnn"]
    assert compose_config(conf, []).name == "basiccnn"


def test_experiment_original_is_the_originals_recipe_and_normalization():
    cfg = compose_config("cifar_basiccnn.conf", ["experiment=original"])
    assert cfg.trainer.max_epochs == 89 and cfg.data.name == "cifar10" and cfg.optim.lr == 1e-3 and cfg.batch_size == 128
    assert cfg.scheduler._target_.endswith("plateau")
    assert list(cfg.data.std) == [0.2023, 0.1994, 0.2010]  # the original's; the default is the measured one
