"""Files from users are data: the run-folder reader (``cifar_shared.runs.folder``) on crafted files.

Checkpoints and configs made here by hand (no training): a pickle whose loading would create a
file, configs naming targets Hydra would call, best checkpoints with recorded scores.
"""

import pickle
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cifar_shared import UserError
from cifar_shared.engine.cli import compose_config
from cifar_shared.registry import installed_packages
from cifar_shared.runs.folder import RunFolder, check_targets, load_checkpoint, output_path
from cifar_shared.runs.report import model_stats


class Payload:
    """Unpickling it opens (creates) ``marker``: any code could run there instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoints(folder: Path, marker: Path) -> list[Path]:
    """A torch.save zip checkpoint and a raw pickle, each carrying the payload."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"net.w": Payload(marker)}}, folder / "zip.ckpt")
    (folder / "raw.ckpt").write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    return [folder / "zip.ckpt", folder / "raw.ckpt"]


def test_crafted_pickles_are_refused_in_one_line_and_run_nothing(tmp_path):
    marker = tmp_path / "marker"
    paths = crafted_checkpoints(tmp_path / "c", marker)
    torch.load(paths[0], weights_only=False)  # the payload is live: the old loader ran it
    assert marker.exists()
    marker.unlink()
    for path in paths:
        for mmap in (False, True):
            with pytest.raises(UserError) as e:
                load_checkpoint(path, "use another run", mmap=mmap)
            assert "\n" not in str(e.value) and str(e.value).endswith("use another run")
    # the pickled global is io.open on Python 3.11, _io.open from 3.12
    assert re.search(r"refers to _?io\.open, which loading would call", str(pytest.raises(UserError, load_checkpoint, paths[0], "x").value))
    assert not marker.exists()


@pytest.mark.parametrize("package", sorted(installed_packages().values()))
def test_every_installed_packages_own_config_passes_the_target_check(package):
    for extra in ([], ["scheduler=onecycle"], ["optim=sgd"], ["logger=csv"]):
        check_targets(compose_config(package, extra), "config.yaml")


def base_config():
    return OmegaConf.to_container(compose_config("cifar_basiccnn.conf", ["data=synthetic"]), resolve=False)


@pytest.mark.parametrize("where, node, needle", [
    ("model.payload", {"_target_": "os.system", "command": "touch x"}, "model.payload._target_=os.system is a nested target"),
    ("model.f", {"_target_": "torch.load", "weights_only": False, "f": {"_target_": "io.BytesIO", "initial_bytes": "..."}},
     "model.f._target_=torch.load is a nested target"),
    ("model", {"_target_": "os.system", "command": "touch x"}, "model._target_=os.system is not a class this project's configs use"),
    ("optim", {"_target_": "cifar_shared.engine.atomic.atomic_write", "path": "/x", "data": "y"}, "optim._target_=cifar_shared"),
    ("data.extra", {"_target_": "builtins.exec", "_args_": ["print(1)"]}, "data.extra._target_=builtins.exec"),
    ("callbacks.extra.evil", {"_target_": "subprocess.run", "args": ["true"]}, "callbacks.extra.evil._target_=subprocess.run is not"),
])
def test_foreign_targets_are_refused_naming_the_key(where, node, needle):
    cfg = base_config()
    parent = cfg
    *path, leaf = where.split(".")
    for key in path:
        parent = parent.setdefault(key, {})
    parent[leaf] = node
    with pytest.raises(UserError, match="refusing to instantiate") as e:
        check_targets(OmegaConf.create(cfg), "RUN/config.yaml")
    assert str(e.value).startswith("RUN/config.yaml: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_a_torch_optimizer_is_allowed():
    cfg = base_config()
    cfg["optim"]["_target_"] = "torch.optim.RMSprop"
    check_targets(OmegaConf.create(cfg), "config.yaml")
    cfg["optim"]["_target_"] = "torch.optim.lr_scheduler"  # a module, not an optimizer
    with pytest.raises(UserError, match="optim._target_=torch.optim.lr_scheduler is not"):
        check_targets(OmegaConf.create(cfg), "config.yaml")


def write_run(folder: Path, recorded_at: Path | None = None, extra: str = "") -> Path:
    """A run folder's config.yaml as training writes it (absolute paths of where it trained)."""
    at = recorded_at or folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(f"name: basiccnn\nmodel:\n  _target_: cifar_basiccnn.model.BasicCNN\n"
                                        f"output_dir: {at}\ncheckpoint_dir: {at}/checkpoints\n{extra}")
    return folder


def test_a_target_smuggled_through_a_resolver_is_refused(tmp_path):
    run = write_run(tmp_path / "run", extra="evil: \"${oc.decode:'{_target_: os.system, command: touch x}'}\"\n")
    with pytest.raises(UserError, match=r"evil._target_=os.system is a nested target"):
        RunFolder.open(run)


def fake_best(folder: Path, epoch: int, score: float, monitor: str = "val/acc", mode: str = "max") -> Path:
    """A best checkpoint as ModelCheckpoint saves it: its state records the monitored score."""
    folder.mkdir(parents=True, exist_ok=True)
    key = f"ModelCheckpoint{{'monitor': '{monitor}', 'mode': '{mode}', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}}"
    path = folder / f"best-epoch{epoch:03d}.ckpt"
    torch.save({"epoch": epoch - 1, "state_dict": {}, "callbacks": {key: {"monitor": monitor, "current_score": torch.tensor(score)}}}, path)
    return path


@pytest.mark.parametrize("mode, scores, best_epoch", [
    ("max", [0.5, 0.9, 0.7], 2),  # the latest by name (3) is not the best
    ("max", [0.5, 0.9, 0.9], 2),  # ties: the earliest, as training's own test took it
    ("min", [0.3, 0.1, 0.2], 2),
    ("max", [0.9, float("nan"), 0.1], 1),
])
def test_best_is_chosen_by_the_recorded_score(tmp_path, mode, scores, best_epoch):
    run = write_run(tmp_path / "run")
    for epoch, score in enumerate(scores, 1):
        fake_best(run / "checkpoints", epoch, score, "val/loss" if mode == "min" else "val/acc", mode)
    chosen = RunFolder.open(run).select_checkpoint("best")
    assert chosen.path.name == f"best-epoch{best_epoch:03d}.ckpt" and chosen.epoch == best_epoch
    monitor = "val/loss" if mode == "min" else "val/acc"
    assert chosen.record() == {"path": str(chosen.path), "epoch": best_epoch, monitor: pytest.approx(scores[best_epoch - 1])}


def test_a_copied_folder_reads_its_own_checkpoints(tmp_path):
    original = tmp_path / "original"
    copy = write_run(tmp_path / "copy", recorded_at=original)  # config.yaml names the original's paths
    fake_best(original / "checkpoints", 1, 0.9)
    fake_best(copy / "checkpoints", 2, 0.5)
    assert RunFolder.open(copy).checkpoint() == copy / "checkpoints" / "best-epoch002.ckpt"


def test_a_crafted_best_checkpoint_is_refused_when_choosing(tmp_path):
    run = write_run(tmp_path / "run")
    fake_best(run / "checkpoints", 1, 0.9)
    marker = tmp_path / "marker"
    torch.save({"state_dict": {}, "x": Payload(marker)}, run / "checkpoints" / "best-epoch002.ckpt")
    with pytest.raises(UserError, match=r"best-epoch002\.ckpt refers to _?io\.open"):
        RunFolder.open(run).select_checkpoint("best")
    assert not marker.exists()


def test_output_paths_never_a_folder_a_record_or_a_checkpoint(tmp_path):
    run = write_run(tmp_path / "run")
    (run / "metrics.json").write_text("{}")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for path, needle in [(tmp_path, "is a folder"), (run / "metrics.json", "run's own record (metrics.json)"),
                         (run / "train.log", "own record"), (run / "checkpoints" / "x.csv", "in a run's checkpoints folder"),
                         (tmp_path / "elsewhere.ckpt", "is a checkpoint"), (blocker / "out.csv", "is not writable")]:
        with pytest.raises(UserError, match=re.escape(needle)):
            output_path(path, "--out", "out.csv", (run,))
    assert output_path(tmp_path / "new" / "out.csv") == tmp_path / "new" / "out.csv"
    assert (run / "metrics.json").read_text() == "{}"


def test_report_reads_the_flops_line_model_stats_writes(tmp_path):
    (tmp_path / "model_info.txt").write_text("basiccnn: ...\n620,362 parameters (620,362 trainable); FLOPs per image: "
                                             "forward 21.698 M, forward+backward 63.323 M\nTotal params: 620,362\n")
    assert model_stats(tmp_path) == ("620,362", "21.698 M")
