"""The original's config file, key by key and mistake by mistake, with the exact overrides and
messages: written to kill the mutants of cifar_perceiver.config_file (``uvx nox -s mutants``,
docs/testing.md). test_config_file.py checks the same mapping against the composed config."""

from importlib import resources

import pytest
import yaml

from cifar_perceiver.config_file import (
    augment_keys,
    check_input_dim,
    fourier_input_dim,
    hydra_value,
    overrides_from_file,
)
from cifar_shared import UserError


def write(tmp_path, data) -> str:
    path = tmp_path / "original.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def refused(path) -> str:
    with pytest.raises(UserError) as error:
        overrides_from_file(path)
    return str(error.value)


def test_every_section_becomes_overrides_in_the_files_order(tmp_path):
    path = write(tmp_path, {
        "device": "cpu",
        "model": {"num_freq_bands": 6, "input_dim": 29, "depth": 2, "weight_tie_layers": True, "max_freq": 10, "attn_dropout": 0.1},
        "training": {"lr": 0.001, "scheduler": "step", "step_epochs": 2, "gamma": 0.5, "mixed_precision": True,
                     "optimizer": "sgd", "batch_size": 64, "label_smoothing": 0.1, "gradient_clip_val": 1.0},
        "augmentation": {"type": "moco", "crop_scale": [0.5, 1.0], "flip": False},
    })
    assert overrides_from_file(str(path)) == [
        "trainer.accelerator=cpu",
        "model.num_freq_bands=6", "model.input_dim=29", "model.depth=2", "model.weight_tie_layers=true",
        "model.max_freq=10", "model.attn_dropout=0.1",
        "lr=0.001", "scheduler=step", "scheduler.step_epochs=2", "scheduler.gamma=0.5", "trainer.precision=auto",
        "optim=sgd", "batch_size=64", "label_smoothing=0.1", "trainer.gradient_clip_val=1.0",
        "augment=moco", "augment.crop_scale=[0.5,1.0]", "augment.flip=false",
    ]


def test_defaults_a_file_may_leave_out(tmp_path):
    assert overrides_from_file(write(tmp_path, "")) == []  # an empty file says nothing
    assert overrides_from_file(write(tmp_path, {"model": None, "training": None, "augmentation": None})) == []
    path = write(tmp_path, {"training": {"min_lr": 0.0001, "mixed_precision": False, "warmup_epochs": 1.5},
                            "augmentation": {"crop_padding": 2}, "model": {"input_dim": 37}})
    # no scheduler: cosine (so min_lr is allowed); no augmentation type: standard; input_dim 37 fits the 8 default bands
    assert overrides_from_file(path) == ["model.input_dim=37", "scheduler.min_lr=0.0001", "trainer.precision=32-true",
                                         "scheduler.warmup_epochs=1.5", "augment=crop_flip", "augment.crop_padding=2"]
    assert overrides_from_file(write(tmp_path, {"augmentation": {"type": "none"}, "device": "auto"})) == [
        "trainer.accelerator=auto", "augment=none"]
    assert overrides_from_file(write(tmp_path, {"augmentation": {"type": "randaug", "num_ops": 3, "magnitude": 5}})) == [
        "augment=randaug", "augment.num_ops=3", "augment.magnitude=5"]


def test_hydra_values():
    assert [hydra_value(v) for v in (None, True, False, 3, 0.5, 1e-4, -2)] == ["null", "true", "false", "3", "0.5", "0.0001", "-2"]
    assert hydra_value([1, "a b", None, [True]]) == "[1,'a b',null,[true]]"
    assert hydra_value({"k": 1, "j": [False, 0.25]}) == "{k:1,j:[false,0.25]}"
    assert hydra_value(()) == "[]" and hydra_value({}) == "{}"
    assert [hydra_value(v) for v in ("cosine", "a-b_c.d", "32-true", "X9")] == ["cosine", "a-b_c.d", "32-true", "X9"]
    assert [hydra_value(v) for v in ("a b", "x/y", "", "it's", "a=b")] == ["'a b'", "'x/y'", "''", "'it\\'s'", "'a=b'"]


def test_input_dim_follows_the_bands():
    assert [fourier_input_dim(b) for b in (0, 2, 8)] == [5, 13, 37]
    assert fourier_input_dim(4, channels=1) == 19 and fourier_input_dim(4, axes=3) == 30 and fourier_input_dim(1, 2, 1) == 5
    check_input_dim(None, 8)
    check_input_dim(13, 2)
    with pytest.raises(UserError) as error:
        check_input_dim(36, 8)
    assert str(error.value) == ("model.input_dim=36 disagrees with model.num_freq_bands=8: input_dim = 3 + 2 x (2 x num_freq_bands + 1) "
                                "= 37; set input_dim: 37 (or leave it out), or change num_freq_bands")


def test_augment_keys_are_the_shared_configs_keys_sorted():
    conf = resources.files("cifar_shared.conf").joinpath("augment")
    for option in ("crop_flip", "moco", "none"):
        keys = augment_keys(option)
        assert keys == sorted(yaml.safe_load(conf.joinpath(f"{option}.yaml").read_text()))
        assert "crop_padding" in keys and "pipeline" in keys


def test_unreadable_files_are_one_line_each(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert refused(missing) == f"--config {missing}: no such file"
    assert refused(tmp_path) == f"--config {tmp_path} is a folder: give the YAML file itself"
    binary = tmp_path / "model.ckpt"
    binary.write_bytes(b"\xff\xfe\x00\x81binary")
    assert refused(binary) == f"--config {binary} is not a text file (not UTF-8): give a YAML config file"
    under_a_file = binary / "config.yaml"
    assert refused(under_a_file) == f"--config {under_a_file} cannot be read (Not a directory): check the path and its permissions"
    path = write(tmp_path, "model:\n  depth: 1\n   bad: 2\ntraining: {}\n")
    assert refused(path) == f"--config {path} is not valid YAML (line 3): fix the file"
    path = write(tmp_path, "model: \x07\n")  # a reader error has no line mark
    assert refused(path) == f"--config {path} is not valid YAML: fix the file"


def test_layout_mistakes_name_the_section_or_key(tmp_path):
    path = write(tmp_path, "- a list\n")
    assert refused(path) == f"--config {path} must be a mapping with sections device, model, training, augmentation"
    path = write(tmp_path, {"zeta": 1, "alpha": 2, "model": {}})
    assert refused(path) == f"unknown section 'alpha' in {path}: known sections are device, model, training, augmentation"
    path = write(tmp_path, {"model": [1, 2]})
    assert refused(path) == f"section 'model' in {path} must be a mapping of keys to values, not [1, 2]"
    path = write(tmp_path, {"training": "fast"})
    assert refused(path) == f"section 'training' in {path} must be a mapping of keys to values, not 'fast'"
    path = write(tmp_path, {"model": {"zz": 1, "depht": 2}})
    assert refused(path) == (f"unknown key 'model.depht' in {path}: known keys of model are attn_dropout, cross_dim_head, "
                             "cross_heads, depth, ff_dropout, input_dim, latent_dim, latent_dim_head, latent_heads, max_freq, "
                             "num_freq_bands, num_latents, self_per_cross_attn, weight_tie_layers")
    path = write(tmp_path, {"augmentation": "randaug"})
    assert refused(path) == f"section 'augmentation' in {path} must be a mapping of keys to values, not 'randaug'"
    path = write(tmp_path, {"training": {"learning_rate": 0.1}})
    assert refused(path) == (f"unknown key 'training.learning_rate' in {path}: known keys of training are accumulate_grad_batches, "
                             "batch_size, epochs, gamma, gradient_clip_val, label_smoothing, lr, min_lr, mixed_precision, "
                             "optimizer, scheduler, seed, step_epochs, warmup_epochs, weight_decay")
    path = write(tmp_path, {"augmentation": {"type": "none", "strength": 3}})
    assert refused(path) == (f"unknown key 'augmentation.strength' in {path}: known keys of augmentation (type none) are "
                             f"{', '.join(sorted(['type', *augment_keys('none')]))}")


@pytest.mark.parametrize("data, message", [
    ({"device": "tpu"}, "device: 'tpu' in {path} is invalid: choose one of cuda, cpu, mps, auto"),
    ({"device": None}, "device: None in {path} is invalid: choose one of cuda, cpu, mps, auto"),
    ({"model": {"depth": 2.5}}, "model.depth: 2.5 in {path} is invalid: it must be an integer"),
    ({"model": {"depth": True}}, "model.depth: True in {path} is invalid: it must be an integer"),
    ({"model": {"max_freq": "high"}}, "model.max_freq: 'high' in {path} is invalid: it must be a number"),
    ({"model": {"max_freq": False}}, "model.max_freq: False in {path} is invalid: it must be a number"),
    ({"model": {"weight_tie_layers": 1}}, "model.weight_tie_layers: 1 in {path} is invalid: it must be true or false"),
    ({"training": {"optimizer": 3}}, "training.optimizer: 3 in {path} is invalid: it must be a name"),
    ({"training": {"optimizer": "lion"}}, "training.optimizer: 'lion' in {path} is invalid: choose one of adamw, adam, sgd"),
    ({"training": {"scheduler": "plateau"}}, "training.scheduler: 'plateau' in {path} is invalid: choose one of cosine, step"),
    ({"training": {"gamma": 0.5}}, "training.gamma in {path} applies to scheduler: step only (this file uses cosine)"),
    ({"training": {"scheduler": "step", "min_lr": 0.0}}, "training.min_lr in {path} applies to scheduler: cosine only (this file uses step)"),
    ({"training": {"step_epochs": 3, "scheduler": "step", "lr": "x"}}, "training.lr: 'x' in {path} is invalid: it must be a number"),
    ({"model": {"input_dim": 29}}, "model.input_dim=29 disagrees with model.num_freq_bands=8: input_dim = 3 + 2 x (2 x num_freq_bands + 1) "
                                   "= 37; set input_dim: 37 (or leave it out), or change num_freq_bands"),
    ({"augmentation": {"type": "autoaug"}}, "augmentation.type: 'autoaug' in {path} is invalid: choose one of standard, randaug, moco, none"),
    ({"augmentation": {"type": "randaug", "num_ops": "two"}}, "augmentation.num_ops: 'two' in {path} is invalid: it must be an integer"),
    ({"augmentation": {"magnitude": 9.5}}, "augmentation.magnitude: 9.5 in {path} is invalid: it must be an integer"),
])
def test_value_mistakes_are_exact_one_liners(tmp_path, data, message):
    path = write(tmp_path, data)
    assert refused(path) == message.format(path=path)
