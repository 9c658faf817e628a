"""The original projects' keys and flags, mapped to native overrides from a package's table (data)."""

import pytest

from cifar_shared.engine.cli import load_original_keys, map_original_keys
from cifar_shared.errors import UserError

TABLE = {
    "training.batch_size": "batch_size",
    "--max_epochs": "epochs",
    "--learning_rate": "lr",
    "--use_cifar10": "data=cifar10",
    "--tiny": "model.size=tiny model.pretrained=null",
}


def test_original_key_overrides_map_to_native_keys_and_say_so():
    argv, notes = map_original_keys(["training.batch_size=256", "model.nbits_w=8", "--cfg", "job"], TABLE)
    assert argv == ["batch_size=256", "model.nbits_w=8", "--cfg", "job"]
    assert notes == ["original key training.batch_size -> batch_size=256"]


def test_sweeps_and_added_keys():
    argv, _ = map_original_keys(["-m", "training.batch_size=64,128", "+training.batch_size=3"], TABLE)
    assert argv == ["-m", "batch_size=64,128", "+training.batch_size=3"]  # + adds a key of that name: not the original's


def test_flags_with_values_in_both_forms_and_bare_flags():
    argv, notes = map_original_keys(["--use_cifar10", "--max_epochs", "10", "--learning_rate=0.001", "--tiny", "seed=3"], TABLE)
    assert argv == ["data=cifar10", "epochs=10", "lr=0.001", "model.size=tiny", "model.pretrained=null", "seed=3"]
    assert notes == ["original flag --use_cifar10 -> data=cifar10", "original flag --max_epochs 10 -> epochs=10",
                     "original flag --learning_rate 0.001 -> lr=0.001", "original flag --tiny -> model.size=tiny model.pretrained=null"]


def test_quiet_without_original_forms_and_hydra_flags_pass():
    argv = ["--cfg", "job", "--multirun", "--config-name=train", "--lr-find", "epochs=3", "-m"]
    assert map_original_keys(argv, TABLE) == (argv, [])


@pytest.mark.parametrize("argv, message", [
    (["--max_epoch", "3"], "unknown flag --max_epoch: the known flags are --learning_rate, --lr-find, --lr-find-only, --max_epochs, --tiny, --use_cifar10"),
    (["--max_epochs"], "--max_epochs needs a value"),
    (["--use_cifar10=yes"], "--use_cifar10 takes no value"),
])
def test_mistakes_are_one_user_error(argv, message):
    with pytest.raises(UserError, match=message):
        map_original_keys(argv, TABLE)


def test_a_package_without_a_table_maps_nothing():
    assert load_original_keys("cifar_shared.conf") == {}
