from cifar_shared.engine.cli import compose_config


def test_defaults_of_the_original_project():
    cfg = compose_config("cifar_debugcnn.conf", [])
    assert cfg.data.name == "cifar10" and cfg.data.val_fraction == 0.2 and cfg.data.image_size == 32
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == 1e-3
    assert cfg.callbacks.checkpoint.save_top_k == 3
    assert dict(cfg.callbacks.early_stopping) == {"monitor": "val/loss", "patience": 10, "mode": "min"}
    assert cfg.model.dropout == 0.5 and cfg.model.widths == [32, 64, 128, 256] and cfg.model.image_size == 32
    assert cfg.augment.flip is True and cfg.augment.rotate == 10 and cfg.augment.color_jitter.hue == 0.1
    assert cfg.callbacks.extra.probes._target_ == "cifar_debugcnn.probes.LayerProbes"
    assert cfg.callbacks.extra.probes.every_n_steps == 0


def test_model_follows_data_image_size():
    assert compose_config("cifar_debugcnn.conf", ["data.image_size=224"]).model.image_size == 224
    assert compose_config("cifar_debugcnn.conf", ["data=synthetic", "data.image_size=64"]).model.image_size == 64


def test_probes_can_be_tuned_or_turned_off():
    cfg = compose_config("cifar_debugcnn.conf", ["callbacks.extra.probes.every_n_steps=1"])
    assert cfg.callbacks.extra.probes.every_n_steps == 1
    assert compose_config("cifar_debugcnn.conf", ["callbacks.extra.probes=null"]).callbacks.extra.probes is None


def test_package_is_registered_for_shared_tools():
    from cifar_shared.registry import installed_packages

    assert compose_config(installed_packages()["debugcnn"], []).name == "debugcnn"
