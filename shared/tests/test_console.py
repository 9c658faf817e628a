import logging

import pytest
from omegaconf import OmegaConf

from cifar_shared import UserError
from cifar_shared.engine.console import ConsoleFilter, FileFilter, quiet_libraries
from cifar_shared.runs.folder import apply_overrides


def _record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_console_keeps_our_lines_and_real_warnings_only():
    console, file = ConsoleFilter(), FileFilter()
    ours = _record("cifar_shared.run", logging.INFO, "epoch 1/2  3.0s ...")
    tip = _record("pytorch_lightning.utilities.rank_zero", logging.INFO, "💡 Tip: For seamless cloud logging ...")
    gpu = _record("lightning_fabric.utilities.rank_zero", logging.INFO, "GPU available: False, used: False")
    restoring = _record("pytorch_lightning.utilities.rank_zero", logging.INFO, "Restoring states from the checkpoint path at x")
    warning = _record("pytorch_lightning.utilities.rank_zero", logging.WARNING, "The metric val/acc is not logged: check the monitor")
    assert console.filter(ours) and console.filter(warning)
    assert not console.filter(tip) and not console.filter(gpu) and not console.filter(restoring)
    assert file.filter(restoring) and file.filter(ours) and not file.filter(tip) and not file.filter(gpu)


def test_torch_cpu_compile_notice_is_dropped_and_its_other_warnings_kept(caplog):
    """compile=true on a CPU machine with a CUDA toolkit: torch's own handler would print
    "No CUDA runtime is found, using CUDA_HOME=..." for nothing a user can act on."""
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter, not two
    lib = logging.getLogger("torch.utils.cpp_extension")
    assert len(lib.filters) == 1
    with caplog.at_level(logging.WARNING, logger="torch.utils.cpp_extension"):
        lib.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        lib.warning("Error checking compiler version for c++")
    assert [r.getMessage() for r in caplog.records] == ["Error checking compiler version for c++"]


def test_run_folder_overrides():
    run = OmegaConf.create({"seed": 3, "batch_size": 8, "data": {"name": "synthetic", "train_size": 10}})
    cfg = apply_overrides(run, ["data=folder", "data.root=/imgs", "batch_size=4"])
    assert cfg.data.name == "folder" and cfg.data.root == "/imgs" and cfg.data.split_seed == 3 and cfg.batch_size == 4
    assert run.data.name == "synthetic"  # the saved config is not changed
    with pytest.raises(UserError, match="unknown option 'cifar11' for data"):
        apply_overrides(run, ["data=cifar11"])
    with pytest.raises(UserError, match="unknown config key 'data.nope'"):
        apply_overrides(run, ["data.nope=1"])
    with pytest.raises(UserError, match="not key=value"):
        apply_overrides(run, ["data"])
