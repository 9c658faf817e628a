"""The original's YAML layout mapped onto Hydra overrides; what it cannot mean is one clear line."""

from importlib import resources
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cifar_perceiver.config_file import overrides_from_file
from cifar_shared import UserError
from cifar_shared.engine.cli import compose_config

SAMPLE = Path(__file__).parents[1] / "configs" / "cifar_lightning.yaml"


def write(tmp_path, data) -> Path:
    path = tmp_path / "original.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_sample_file_maps_onto_the_composed_config():
    cfg = compose_config("cifar_perceiver.conf", overrides_from_file(SAMPLE))
    original = yaml.safe_load(SAMPLE.read_text())
    for key, value in original["model"].items():
        assert cfg.model[key] == value, key
    t = original["training"]
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (t["lr"], t["batch_size"], t["epochs"])
    assert cfg.optim.lr == t["lr"] and cfg.optim.weight_decay == t["weight_decay"]
    assert cfg.optim._target_ == "torch.optim.AdamW"
    assert cfg.scheduler._target_.endswith("schedulers.cosine") and cfg.scheduler.warmup_epochs == t["warmup_epochs"]
    assert cfg.trainer.accelerator == original["device"] and cfg.trainer.precision == "auto"
    assert cfg.trainer.accumulate_grad_batches == t["accumulate_grad_batches"]
    # augmentation: {type: randaug} without keys is the shared randaug option as it stands
    # (RandAugment's 2 ops at magnitude 9, torchvision's defaults, then crop + flip, per image)
    assert original["augmentation"] == {"type": "randaug"}
    assert [o for o in overrides_from_file(SAMPLE) if o.startswith("augment")] == ["augment=randaug"]
    shared = yaml.safe_load(resources.files("cifar_shared.conf").joinpath("augment", "randaug.yaml").read_text())
    assert OmegaConf.to_container(cfg.augment) == shared
    assert (cfg.augment.num_ops, cfg.augment.magnitude, cfg.augment.pipeline) == (2, 9, "per_sample")
    assert (cfg.augment.crop_padding, cfg.augment.flip) == (4, True)


def test_augmentation_keys_translate_to_the_policy_exactly(tmp_path):
    """type picks the shared option; every other key lands as augment.<key> with its value."""
    path = write(tmp_path, "augmentation:\n  type: randaug\n  num_ops: 3\n  magnitude: 5\n")
    overrides = overrides_from_file(path)
    assert overrides == ["augment=randaug", "augment.num_ops=3", "augment.magnitude=5"]
    cfg = compose_config("cifar_perceiver.conf", overrides)
    assert (cfg.augment.num_ops, cfg.augment.magnitude, cfg.augment.pipeline) == (3, 5, "per_sample")
    assert overrides_from_file(write(tmp_path, {"augmentation": {"type": "standard"}})) == ["augment=crop_flip"]


def test_every_section_and_key_lands_where_the_table_says(tmp_path):
    path = write(tmp_path, {
        "device": "cpu",
        "model": {"num_freq_bands": 6, "input_dim": 29, "depth": 2, "weight_tie_layers": True},
        "training": {"lr": 1e-3, "batch_size": 64, "epochs": 3, "scheduler": "step", "step_epochs": 1,
                     "gamma": 0.5, "warmup_epochs": 1, "accumulate_grad_batches": 4, "mixed_precision": False,
                     "optimizer": "sgd", "seed": 7},
        "augmentation": {"type": "moco", "crop_scale": [0.5, 1.0]},
    })
    cfg = compose_config("cifar_perceiver.conf", [*overrides_from_file(path), "epochs=5"])  # the command line wins
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.precision == "32-true"
    assert (cfg.model.num_freq_bands, cfg.model.input_dim, cfg.model.depth, cfg.model.weight_tie_layers) == (6, 29, 2, True)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.seed) == (1e-3, 64, 5, 7)
    assert cfg.scheduler._target_.endswith("schedulers.step")
    assert (cfg.scheduler.step_epochs, cfg.scheduler.gamma, cfg.scheduler.warmup_epochs) == (1, 0.5, 1)
    assert cfg.trainer.accumulate_grad_batches == 4 and cfg.optim._target_ == "torch.optim.SGD"
    assert list(cfg.augment.crop_scale) == [0.5, 1.0] and cfg.augment.grayscale_p == 0.2


@pytest.mark.parametrize("data, message", [
    ({"optimiser": {}}, "unknown section 'optimiser' in .*: known sections are device, model, training, augmentation"),
    ({"model": {"depht": 2}}, "unknown key 'model.depht' in .*: known keys of model are .*depth"),
    ({"training": {"learning_rate": 1}}, "unknown key 'training.learning_rate' .*known keys of training are .*lr"),
    ({"augmentation": {"type": "randaug", "strength": 3}}, r"unknown key 'augmentation.strength' .*\(type randaug\) are .*magnitude"),
    ({"augmentation": {"type": "autoaug"}}, "augmentation.type: 'autoaug' .* choose one of standard, randaug, moco, none"),
    ({"device": "tpu"}, "device: 'tpu' .* choose one of cuda, cpu, mps, auto"),
    ({"training": {"scheduler": "plateau"}}, "choose one of cosine, step"),
    ({"training": {"gamma": 0.5}}, "training.gamma .* applies to scheduler: step only"),
    ({"training": {"batch_size": "big"}}, "training.batch_size: 'big' .* must be an integer"),
    ({"model": {"input_dim": 36}}, r"model.input_dim=36 disagrees .* = 37; set input_dim: 37"),
    ({"model": {"input_dim": 37, "num_freq_bands": 6}}, r"model.input_dim=37 disagrees .* = 29"),
    ("device: [cpu\n", "is not valid YAML"),
    ("- a list\n", "must be a mapping with sections"),
])
def test_mistakes_are_one_line_naming_the_thing(tmp_path, data, message):
    with pytest.raises(UserError, match=message) as error:
        overrides_from_file(write(tmp_path, data))
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        overrides_from_file(tmp_path / "nope.yaml")
