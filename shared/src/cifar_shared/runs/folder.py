"""A finished run folder, read back: its config, checkpoints, classes and input normalization.

The run-folder commands (``cifar-eval``, ``cifar-predict``, ``cifar-export-model``,
``cifar-report``), ``train()``'s resume check and qvit's ``init_from``/DGD teacher/``qvit-export``
read run folders and checkpoints here only. A run folder may come from anyone, so its files are
data: checkpoints load with ``weights_only=True`` (``load_checkpoint``), ``config.yaml`` may only
name the ``_target_`` classes this project's own configs name (``check_targets``), and every file
is found relative to the folder itself (a copied folder never reads the original's checkpoints).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cifar_shared.errors import UserError

# What a training run writes about itself: no run tool writes over these (nor over a checkpoint).
RECORDS = ("config.yaml", "config.resumed.yaml", "metrics.json", "train.log", "model_info.txt")


# --------------------------------------------------------------------------- checkpoints

def load_checkpoint(path: str | Path, fix: str, mmap: bool = False) -> dict:
    """A Lightning checkpoint as plain data: ``torch.load(weights_only=True)``, which refuses to
    run code a crafted pickle carries; any failure is one ``UserError`` ending in ``fix``."""
    import pickle

    import torch

    path = Path(path)
    try:
        if mmap:  # only torch's zip format maps; anything else is read as a whole (and refused the same way)
            with open(path, "rb") as f:
                mmap = f.read(4) == b"PK\x03\x04"
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the line below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist: {fix}") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise UserError(f"checkpoint {path} refers to {found.group(1)}, which loading would call: it is not a "
                            f"checkpoint this project's training wrote (they hold tensors and plain data only); {fix}") from None
        raise UserError(f"checkpoint {path} is unreadable (not a torch checkpoint: {type(e).__name__}): {fix}") from None
    except Exception as e:
        raise UserError(f"checkpoint {path} is unreadable ({type(e).__name__}): {fix}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"checkpoint {path} holds no state_dict (not a Lightning checkpoint): {fix}")
    return ckpt


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file and what its ModelCheckpoint state recorded when it was saved."""

    path: Path
    epoch: int | None = None  # 1-based, as train.log counts
    monitor: str | None = None
    score: float | None = None
    mode: str | None = None  # min or max: which scores are better

    def record(self) -> dict:
        """``{"path", "epoch", <monitor>: score}``: which weights a result came from."""
        out = {"path": str(self.path.resolve()), "epoch": self.epoch}
        if self.monitor:
            out[self.monitor] = self.score
        return out


def describe_checkpoint(path: Path, fix: str) -> Checkpoint:
    """The epoch and monitored score a checkpoint recorded, read memory-mapped (cheap)."""
    ckpt = load_checkpoint(path, fix, mmap=True)
    epoch = ckpt.get("epoch")
    epoch = int(epoch) + 1 if isinstance(epoch, int) else None
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("current_score") is not None:
            settings = _state_key_settings(str(key))
            mode = settings.get("mode") if settings.get("mode") in ("min", "max") else None
            return Checkpoint(path, epoch, str(state.get("monitor") or settings.get("monitor")), float(state["current_score"]), mode)
    return Checkpoint(path, epoch)


def _state_key_settings(key: str) -> dict:
    """``ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', ...}`` -> the dict (a literal only)."""
    try:
        value = ast.literal_eval(key[key.index("{"):])
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- config targets

# Where a project config puts a ``_target_``: the groups train() instantiates. Anywhere else
# (nested under the model, the data, ...) a target is something the network does not take.
TARGET_PLACES = ("model", "optim", "scheduler", "loss_hook", "callbacks.extra.*", "logger.*")


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every ``_target_`` the installed packages' own config files (and the shared groups) name."""
    from cifar_shared.registry import installed_packages

    found: set[str] = set()
    for conf in {"cifar_shared.conf", *installed_packages().values()}:
        try:
            root = resources.files(conf)
        except ModuleNotFoundError:
            continue
        stack = [root]
        while stack:
            node = stack.pop()
            for child in node.iterdir():
                if child.is_dir():
                    stack.append(child)
                elif child.name.endswith(".yaml"):
                    found |= set(re.findall(r"^\s*_target_:\s*([\w.]+)\s*(?:#.*)?$", child.read_text(), flags=re.M))
    return frozenset(found)


def _optimizer_class(target: str) -> bool:
    """``torch.optim.X`` for a torch optimizer X (a run may have swapped Adam for another one)."""
    if not re.fullmatch(r"torch\.optim\.[A-Z]\w*", target):
        return False
    import torch

    cls = getattr(torch.optim, target.rsplit(".", 1)[1], None)
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def _place(key: str) -> bool:
    parts = key.split(".")
    for place in TARGET_PLACES:
        want = place.split(".")
        if len(want) == len(parts) and all(w in ("*", p) for w, p in zip(want, parts)):
            return True
    return False


def check_targets(cfg, source: str | Path) -> None:
    """Refuse a config (read from ``source``) naming a ``_target_`` that this project's configs do
    not: Hydra's ``instantiate`` would call it, whatever it is. One line naming the key."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg
    allowed = allowed_targets()

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None:
                where = f"{key}._target_" if key else "_target_"
                if not _place(key):
                    raise UserError(f"{source}: {where}={target} is a nested target the model does not take "
                                    "(a run folder's config may name targets only at model, optim, scheduler, loss_hook, "
                                    "callbacks.extra.NAME, logger.NAME): refusing to instantiate it; use a run folder this project trained")
                if not (isinstance(target, str) and (target in allowed or (key == "optim" and _optimizer_class(target)))):
                    raise UserError(f"{source}: {where}={target} is not a class this project's configs use: refusing to "
                                    "instantiate it; install the package that trained the run, or use a run folder this project trained")
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}.{i}")

    walk(plain, "")


# --------------------------------------------------------------------------- output paths

def output_path(path: str | Path, flag: str = "--out", example: str = "out.csv", runs: tuple[Path, ...] = ()) -> Path:
    """``path`` checked before any work: not a folder, not a run's own record or checkpoint, in a
    writable folder. A mistake is one line; nothing is written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file path, e.g. {flag} {path / example}")
    resolved = path.resolve()
    own = {r.resolve() / name for r in runs for name in RECORDS}
    parent_is_run = (resolved.parent / "config.yaml").is_file()
    in_checkpoints = resolved.parent.name == "checkpoints" and (resolved.parent.parent / "config.yaml").is_file()
    if resolved.suffix == ".ckpt" or in_checkpoints:
        raise UserError(f"{flag} {path} is a checkpoint or in a run's checkpoints folder: give another path, e.g. {flag} {example}")
    if resolved in own or (parent_is_run and resolved.name in RECORDS):
        raise UserError(f"{flag} {path} is a run's own record ({resolved.name}): give another file name, e.g. {flag} {path.parent / example}")
    folder = next((p for p in [resolved.parent, *resolved.parent.parents] if p.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path} is not writable (read-only file or folder): give a path in a folder you can write to")
    return path


def write_text(path: Path, text: str, flag: str = "--out") -> None:
    """Write a run tool's output; a failing disk is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or type(e).__name__}): give {flag} a writable path") from None


# --------------------------------------------------------------------------- the folder

@dataclass
class RunFolder:
    path: Path
    cfg: DictConfig
    metrics: dict

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise UserError(f"run folder {path} does not exist: pass the output_dir of a training run")
        path = path.resolve()
        config = path / "config.yaml"
        if not config.is_file():
            raise UserError(f"{path} has no config.yaml: pass the output_dir of a training run")
        try:
            cfg = OmegaConf.load(config)
        except Exception as e:
            raise UserError(f"{config} is not readable YAML ({type(e).__name__}): the run folder is damaged") from None
        if not isinstance(cfg, DictConfig):
            raise UserError(f"{config} is not a mapping of config keys: the run folder is damaged")
        try:
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # what is checked is what is built
        except Exception as e:
            raise UserError(f"{config} does not resolve ({str(e).splitlines()[0]}): the run folder is damaged") from None
        check_targets(cfg, config)
        metrics = {}
        if (path / "metrics.json").is_file():
            try:
                metrics = json.loads((path / "metrics.json").read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{path / 'metrics.json'} is not valid JSON ({e.msg}): the run folder is damaged") from None
            if not isinstance(metrics, dict):
                raise UserError(f"{path / 'metrics.json'} is not a JSON object: the run folder is damaged")
        return cls(path, cfg, metrics)

    @property
    def package(self) -> str:
        """The registry's name of the package that built the run (``basiccnn``), else what config says."""
        from cifar_shared.registry import installed_packages

        names = {conf: name for name, conf in installed_packages().items()}
        package = self.cfg.get("package")
        return names.get(str(package), str(package)) if package else str(self.cfg.get("name") or "?")

    @property
    def checkpoint_dir(self) -> Path:
        """This folder's checkpoints. config.yaml records absolute paths of where the run was
        trained: one inside its output_dir is taken relative to this folder (a copy reads its own)."""
        recorded, out = self.cfg.get("checkpoint_dir"), self.cfg.get("output_dir")
        if recorded:
            recorded = Path(str(recorded))
            if out:
                try:
                    return self.path / recorded.relative_to(Path(str(out)))
                except ValueError:
                    pass
            if recorded.is_absolute() and recorded.is_dir():  # set apart from the run folder on purpose
                return recorded
        return self.path / "checkpoints"

    def select_checkpoint(self, which: str = "best") -> Checkpoint:
        """``best``: the best-*.ckpt with the best recorded monitor value (the run's mode; ties: the
        earliest, as training's own test took), falling back to ``last``; ``last``; or a path."""
        fix = "use --checkpoint last or PATH, or another run"
        folder = self.checkpoint_dir
        if which not in ("best", "last"):
            path = Path(which).expanduser()
            if not path.is_file():
                raise UserError(f"checkpoint {path} does not exist: use --checkpoint best, last or an existing .ckpt")
            return describe_checkpoint(path, fix)
        best = sorted(folder.glob("best-*.ckpt"))
        if which == "best" and best:
            found = [describe_checkpoint(p, fix) for p in best]
            scored = [c for c in found if c.score is not None and c.score == c.score]  # NaN never wins
            if not scored:
                return found[-1]
            configured = ((self.cfg.get("callbacks") or {}).get("checkpoint") or {}).get("mode", "max")
            sign = -1.0 if (scored[0].mode or configured) == "min" else 1.0
            return max(scored, key=lambda c: (sign * c.score, -(c.epoch or 0)))
        if (folder / "last.ckpt").is_file():
            return describe_checkpoint(folder / "last.ckpt", fix)
        raise UserError(f"{self.path} has no checkpoint in {folder}: train the run first")

    def checkpoint(self, which: str = "best") -> Path:
        """The path of ``select_checkpoint(which)``."""
        return self.select_checkpoint(which).path

    def net_state(self, checkpoint: Path, fix: str = "use --checkpoint last or another run") -> dict:
        """The network's weights in ``checkpoint`` (``net.`` keys, without the prefix; a
        torch.compile'd run's ``_orig_mod.`` dropped)."""
        state = load_checkpoint(checkpoint, fix)["state_dict"]
        state = {k.replace("._orig_mod.", ".").replace("_orig_mod.", ""): v for k, v in state.items()}
        return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}

    def classes(self) -> list[str] | None:
        return self.metrics.get("classes")

    def input_spec(self) -> tuple[list[float], list[float], tuple[int, int, int]]:
        """(mean, std, image shape) the network was trained with. Runs that predate their
        recording in metrics.json rebuild them from the run's own data config."""
        spec = self.metrics.get("input")
        if spec:
            return list(spec["mean"]), list(spec["std"]), tuple(spec["image_shape"])
        from cifar_shared.data.datamodule import ImageDataModule

        cfg = self.cfg
        dm = ImageDataModule(cfg.data, cfg.get("augment"), cfg.batch_size, cfg.seed)
        return dm.mean, dm.std, dm.image_shape

    def build_module(self, checkpoint: Path, num_classes: int | None = None):
        """The run's module (built as train() builds it), holding the checkpoint's weights, in eval mode."""
        from cifar_shared.engine.train import build_module

        num_classes = num_classes or len(self.classes() or []) or None
        state = load_checkpoint(checkpoint, "use --checkpoint last or another run")["state_dict"]
        if num_classes is None:
            confmat = state.get("test_confusion.confmat")
            if confmat is None:
                raise UserError(f"{self.path}/metrics.json names no classes and {checkpoint} records none: the run folder is incomplete")
            num_classes = int(confmat.shape[0])
        try:
            module = build_module(self.cfg, num_classes, compile=False, training=False)
        except ImportError as e:
            raise UserError(f"the run's model ({self.cfg.model.get('_target_')}) cannot be imported ({e}): install its package ({self.package})") from None
        except Exception as e:
            if isinstance(e.__cause__, UserError):
                raise e.__cause__ from None
            if "Error locating target" in str(e) or isinstance(e.__cause__, ImportError):
                raise UserError(f"the run's model ({self.cfg.model.get('_target_')}) cannot be imported: install its package ({self.package})") from None
            raise
        state = {k.replace("._orig_mod.", "."): v for k, v in state.items()}  # a torch.compile'd run
        missing, unexpected = module.load_state_dict(state, strict=False)
        if [k for k in missing if k.startswith("net.")] or [k for k in unexpected if k.startswith("net.")]:
            raise UserError(f"checkpoint {checkpoint} does not fit the run's config (different model): use the run's own checkpoint")
        return module.eval()


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Hydra-style ``group=option`` (e.g. ``data=folder``, from the shared conf groups) and
    ``key=value`` overrides on top of a run's saved config."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    groups = resources.files("cifar_shared.conf")
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value: e.g. data=folder data.root=PATH")
        option = groups / key / f"{value}.yaml"
        if "." not in key and groups.joinpath(key).is_dir():
            if not option.is_file():
                choices = sorted(p.name.removesuffix(".yaml") for p in groups.joinpath(key).iterdir() if p.name.endswith(".yaml"))
                raise UserError(f"unknown option '{value}' for {key}: choose one of {', '.join(choices)}")
            with open_dict(cfg):
                cfg[key] = OmegaConf.load(str(option))
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not (isinstance(parent, DictConfig) and leaf in parent.keys()) and not item.startswith("+"):  # `in` is False for ???
            raise UserError(f"unknown config key '{key}': check its spelling in the run's config.yaml, or add it with +{key}=VALUE")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, force_add=True)
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise UserError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    return cfg


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (``error: ...``, exit 2), not a usage block."""

    def error(self, message: str):
        print(f"error: {message}: see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def main_guard(fn) -> None:
    """Run a command body: a ``UserError`` becomes ``error: ...`` on stderr and exit 2."""
    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
