"""``trainer.accelerator=gpu`` (or cuda, mps) on a machine without one is refused by the shared
config check, before any run file is written, in every ``*-train``."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cifar_shared.engine.config import check_accelerator
from cifar_shared.errors import UserError


def cfg(accelerator):
    return OmegaConf.create({"trainer": {"accelerator": accelerator}})


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "GPU"])
def test_gpu_without_cuda_names_the_key_and_the_fix(accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as e:
        check_accelerator(cfg(accelerator))
    message = str(e.value)
    assert f"trainer.accelerator={accelerator}" in message and "CUDA" in message
    assert "trainer.accelerator=auto" in message and "trainer.accelerator=cpu" in message


def test_mps_without_mps_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="trainer.accelerator=mps asks for an Apple MPS device"):
        check_accelerator(cfg("mps"))


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_with_cuda_passes(accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_accelerator(cfg(accelerator))


def test_auto_and_cpu_pass_without_importing_torch():
    """The check runs before the heavy imports; only a value that asks for a GPU may import torch."""
    code = ("import sys; from omegaconf import OmegaConf; from cifar_shared.engine.config import check_accelerator\n"
            "for a in ('auto', 'cpu', None): check_accelerator(OmegaConf.create({'trainer': {'accelerator': a}}))\n"
            "check_accelerator(OmegaConf.create({}))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


TRAIN_COMMANDS = ["basiccnn-train", "resnet-train", "debugcnn-train", "perceiver-train", "qvit-train"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", TRAIN_COMMANDS)
def test_every_train_command_refuses_gpu_without_cuda(command, tmp_path):
    exe = Path(sys.executable).parent / command
    if not exe.exists() and shutil.which(command) is None:
        pytest.skip(f"{command} is not installed in this environment")
    run = tmp_path / "run"
    result = subprocess.run([str(exe if exe.exists() else shutil.which(command)), "trainer.accelerator=gpu", "data=synthetic",
                             f"output_dir={run}"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trainer.accelerator=gpu asks for a CUDA GPU"), result.stderr
    assert "trainer.accelerator=cpu" in lines[0] and not run.exists()
