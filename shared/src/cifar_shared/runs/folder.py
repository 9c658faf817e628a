"""A finished run folder, read back: its config, checkpoint, classes and input normalization.

The run-folder commands (``cifar-eval``, ``cifar-predict``, ``cifar-export-model``,
``cifar-report``) start here. ``config.yaml`` names the network by ``model._target_`` and records
``package`` (the conf package that built it), so a folder of any installed package works.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_shared.errors import UserError


@dataclass
class RunFolder:
    path: Path
    cfg: DictConfig
    metrics: dict

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"run folder {path} does not exist: pass the output_dir of a training run")
        config = path / "config.yaml"
        if not config.is_file():
            raise UserError(f"{path} has no config.yaml: pass the output_dir of a training run")
        try:
            cfg = OmegaConf.load(config)
        except Exception as e:
            raise UserError(f"{config} is not readable YAML ({type(e).__name__}): the run folder is damaged") from None
        metrics = {}
        if (path / "metrics.json").is_file():
            try:
                metrics = json.loads((path / "metrics.json").read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{path / 'metrics.json'} is not valid JSON ({e.msg}): the run folder is damaged") from None
        return cls(path, cfg, metrics)

    @property
    def package(self) -> str:
        """The registry's name of the package that built the run (``basiccnn``), else what config says."""
        from cifar_shared.registry import installed_packages

        names = {conf: name for name, conf in installed_packages().items()}
        package = self.cfg.get("package")
        return names.get(str(package), str(package)) if package else str(self.cfg.get("name") or "?")

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` (fallback ``last``), ``last``, or a path."""
        folder = Path(self.cfg.get("checkpoint_dir") or self.path / "checkpoints")
        if not folder.is_dir():
            folder = self.path / "checkpoints"  # the folder was moved: its config names the old place
        if which not in ("best", "last"):
            path = Path(which)
            if not path.is_file():
                raise UserError(f"checkpoint {path} does not exist: use --checkpoint best, last or an existing .ckpt")
            return path
        best = sorted(folder.glob("best-*.ckpt"))
        if which == "best" and best:
            return best[-1]
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
        raise UserError(f"{self.path} has no checkpoint in {folder}: train the run first (or pass --checkpoint PATH)")

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
        import torch

        from cifar_shared.engine.train import build_module

        num_classes = num_classes or len(self.classes() or []) or None
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        except Exception as e:
            raise UserError(f"checkpoint {checkpoint} is unreadable ({type(e).__name__}): use --checkpoint last or another run") from None
        if num_classes is None:
            num_classes = int(state["test_confusion.confmat"].shape[0])
        try:
            module = build_module(self.cfg, num_classes, compile=False, training=False)
        except ImportError as e:
            raise UserError(f"the run's model ({self.cfg.model.get('_target_')}) cannot be imported ({e}): install its package ({self.package})") from None
        except Exception as e:
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


def main_guard(fn) -> None:
    """Run a command body: a ``UserError`` becomes ``error: ...`` on stderr and exit 2."""
    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
