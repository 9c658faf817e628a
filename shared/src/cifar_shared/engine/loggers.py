"""The run's loggers (``cfg.logger``) and what W&B needs besides: online or offline, a quiet
console, and the test confusion matrix.

W&B logs online whenever the user has a credential wandb itself would use (``WANDB_API_KEY``, an
identity-token file, or the ``.netrc`` entry ``wandb login`` writes); only without any does the run
go offline, saying so in one line with the folder to ``wandb sync``.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from cifar_shared.engine.console import is_terminal
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_shared.train")

DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def wandb_credential(env: Mapping[str, str], home: Path) -> str | None:
    """Where wandb would find a login, or None: the environment, then the netrc file (``NETRC``,
    else ``~/.netrc`` / ``~/_netrc``) entry for the W&B host (``WANDB_BASE_URL``, else api.wandb.ai).
    Read the way wandb reads them, without importing wandb or touching the network."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if env.get(name):
            return name
    host = urlsplit(env.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).hostname or ""
    files = [Path(env["NETRC"]).expanduser()] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in files:
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if entry and entry[2]:
            return str(path)
    return None


def wandb_offline(env: Mapping[str, str], home: Path) -> bool:
    """Offline only when there is no credential, and the user has not picked a mode (WANDB_MODE)."""
    return not env.get("WANDB_MODE") and wandb_credential(env, home) is None


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None:
            continue
        extra = {}
        if "Wandb" in str(lcfg.get("_target_", "")):
            try:
                import wandb
            except ImportError:
                raise UserError("logger=wandb needs wandb: pip install 'cifar-shared[wandb]'") from None
            if not lcfg.get("offline") and wandb_offline(os.environ, Path.home()):
                lcfg = OmegaConf.merge(lcfg, {"offline": True})
                folder = Path(lcfg.get("save_dir") or ".") / "wandb"
                log.info("W&B: no login found (`wandb login` or WANDB_API_KEY): logging offline; upload with `wandb sync %s/offline-run-*`", folder)
            if not is_terminal():  # no banners or colour codes in a piped or logged console
                os.environ.setdefault("WANDB_SILENT", "true")  # wandb's own setup reads it (warnings before init's settings apply)
                extra["settings"] = wandb.Settings(silent=True, console="off")
        logger = instantiate(lcfg, **extra)
        init_args = getattr(logger, "_wandb_init", None)
        if isinstance(init_args, dict) and init_args.get("anonymous") is None:
            init_args.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb >= 0.2x warns about on every run
        loggers.append(logger)
        log.debug("logger %s ready", name)
    return loggers


class WandbConfusionMatrix(pl.Callback):
    """After testing, the test confusion matrix (``module.confusion_matrix``, counts with rows =
    true class) goes to every W&B logger as W&B's confusion-matrix chart, ``test/confusion_matrix``."""

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        matrix = getattr(pl_module, "confusion_matrix", None)
        targets = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not matrix or not targets:
            return
        import wandb

        y_true, preds = [], []
        for true, row in enumerate(matrix):
            for pred, count in enumerate(row):
                y_true += [true] * int(count)
                preds += [pred] * int(count)
        classes = list(getattr(trainer.datamodule, "classes", None) or range(len(matrix)))
        for logger in targets:
            chart = wandb.plot.confusion_matrix(y_true=y_true, preds=preds, class_names=[str(c) for c in classes])
            logger.experiment.log({"test/confusion_matrix": chart})


def logger_callbacks(loggers: list) -> list[pl.Callback]:
    """The callbacks the chosen loggers need."""
    return [WandbConfusionMatrix()] if any(type(lg).__name__ == "WandbLogger" for lg in loggers) else []
