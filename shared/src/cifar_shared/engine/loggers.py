"""The run's loggers (``cfg.logger``) and what they get besides Lightning's scalars.

TensorBoard: the run's config as hyperparameters and the network's graph at fit start (once: a
resumed run's first start wrote them), the test confusion matrix as an image after testing.
W&B: online or offline, a quiet console, and the test confusion matrix as W&B's chart.

W&B logs online whenever the user has a credential wandb itself would use (``WANDB_API_KEY``, an
identity-token file, or the ``.netrc`` entry ``wandb login`` writes); only without any does the run
go offline, saying so in one line with the folder to ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import netrc
import os
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers.csv_logs import CSVLogger, ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from cifar_shared.engine.console import is_terminal
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_shared.train")

DEFAULT_WANDB_HOST = "https://api.wandb.ai"

# The hparams plugin's metric columns: scalars every run logs anyway, so the plugin shows each one's
# last value (the final test figures, the last and best val acc); none is written for it.
HPARAM_METRICS = ("test/acc", "test/f1_macro", "test/loss", "val/acc", "val/acc_best")
CONFUSION_TAG = "test/confusion_matrix"


@dataclass
class TensorBoardRun:
    """What a TensorBoard logger of ``build_loggers`` needs at fit start: the run's config, and
    whether to draw the graph (the logger config's ``log_graph``, default true)."""

    cfg: DictConfig
    graph: bool


_TENSORBOARD_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # logger -> TensorBoardRun


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
        tensorboard = "TensorBoardLogger" in str(lcfg.get("_target_", ""))
        if tensorboard:  # TensorBoardExtras draws the graph; Lightning's own try, without an example input, only warns
            extra["log_graph"] = False
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
        if tensorboard:
            _TENSORBOARD_RUNS[logger] = TensorBoardRun(cfg, bool(lcfg.get("log_graph", True)))
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


def flat_hparams(cfg: DictConfig) -> dict[str, int | float | str]:
    """The resolved config as TensorBoard's hparams plugin takes it: one ``a.b.c`` key per leaf (the
    command line's spelling), numbers as numbers, everything else as text (``true``/``false``, a
    list as ``[0.75, 1.33]``: a key that is ``auto`` in one run and ``true`` in another keeps one
    type); null leaves are left out (the plugin has no null, and a numeric key's column stays numeric)."""
    flat: dict[str, int | float | str] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            elif isinstance(value, bool):
                flat[name] = "true" if value else "false"
            elif isinstance(value, (int, float, str)):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def log_config(logger, cfg: DictConfig) -> None:
    """The run's config into ``hparams.yaml`` (as the config, nested) and into the hparams plugin
    (flat, with ``HPARAM_METRICS`` as its metric columns).

    Not ``log_hyperparams(params, metrics)`` alone: it writes the metrics' values as scalars at the
    step given, and at fit start there are none, only placeholders that would sit in the val/acc
    curve. So it gets no metrics (hparams.yaml only), and the plugin's summaries are written here
    naming the metrics, whose values the plugin then reads from the run's own scalars."""
    from torch.utils.tensorboard.summary import hparams

    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True), metrics={})  # {}: no hp_metric placeholder either
    experiment, session_start, _ = hparams(flat_hparams(cfg), dict.fromkeys(HPARAM_METRICS, 0.0))  # the values are not written
    writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams writes them
    writer.add_summary(experiment)
    writer.add_summary(session_start)  # no session end: at fit start its status is unknown


@contextlib.contextmanager
def silenced():
    """Nothing printed, warned or logged inside (by any library): the tracer's warnings (data-
    dependent branches, TorchScript's deprecation), torch's own print of a failed trace, and what
    libraries log as the tracer reads every attribute of the network (transformers' config notes)
    are about the trace, not the run."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def uncompiled(net: torch.nn.Module):
    """``net`` as it was before ``net.compile()`` (``compile: auto`` on a GPU): ``torch.jit.trace``
    refuses a compiled module, and the graph to show is the network's, not dynamo's."""
    compiled = [(m, m._compiled_call_impl) for m in net.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    for module, _ in compiled:
        module._compiled_call_impl = None
    try:
        yield
    finally:
        for module, impl in compiled:
            module._compiled_call_impl = impl


def log_graph(logger, net: torch.nn.Module, image_shape, device) -> bool:
    """The network's graph (``add_graph``: a ``torch.jit.trace`` at one zero image of the data's
    shape), or one info line when it does not trace; True if drawn. Quiet otherwise (``silenced``);
    the trace consumes none of the run's random numbers."""
    param = next(net.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32  # 16-true/bf16-true runs
    example = torch.zeros(1, *image_shape, dtype=dtype, device=device)
    try:
        with silenced(), torch.random.fork_rng(devices=[]), uncompiled(net):
            logger.experiment.add_graph(net, example)
    except Exception as e:  # whatever the tracer raises, the run goes on without the graph
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        log.info("TensorBoard: no model graph (%s does not trace: %s%s)", type(net).__name__, type(e).__name__, f": {reason}" if reason else "")
        return False
    log.debug("TensorBoard: model graph logged")
    return True


def confusion_image(matrix: list[list[float]], classes: list[str]):
    """``cifar-visualize``'s confusion-matrix figure as an RGB image, HWC uint8 (the Agg canvas)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from cifar_shared.runs.plots import confusion_figure

    canvas = FigureCanvasAgg(confusion_figure(matrix, classes))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def tensorboard_loggers(trainer: pl.Trainer) -> list:
    return [lg for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger"]


class TensorBoardExtras(pl.Callback):
    """TensorBoard beyond the scalars: at fit start, the run's config as hyperparameters
    (``log_config``) and the network's graph (``log_graph``); after each test, the confusion
    matrix (``module.confusion_matrix``) as the image ``test/confusion_matrix``, at the step the
    test scalars have.

    Once per run: a resumed fit (``trainer.ckpt_path``) writes neither again, its first start's
    event file in the same folder holds them. (The LR finder's sweep ends its own fit inside
    Lightning's finder callback, before this hook.) No state in checkpoints, so a run resumed with
    other loggers does not warn about a missing callback."""

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        if trainer.ckpt_path is not None:
            return
        image_shape = getattr(trainer.datamodule, "image_shape", None)
        net = getattr(pl_module, "net", pl_module)  # the network, without the LightningModule around it
        for logger in tensorboard_loggers(trainer):
            run = _TENSORBOARD_RUNS.get(logger)
            if run is None:  # not built by build_loggers: no config to log
                continue
            log_config(logger, run.cfg)
            if run.graph and image_shape is not None:
                log_graph(logger, net, image_shape, pl_module.device)

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        matrix = getattr(pl_module, "confusion_matrix", None)
        targets = tensorboard_loggers(trainer)
        if not matrix or not targets:
            return
        classes = [str(c) for c in (getattr(trainer.datamodule, "classes", None) or range(len(matrix)))]
        image = confusion_image(matrix, classes)
        for logger in targets:
            logger.experiment.add_image(CONFUSION_TAG, image, trainer.global_step, dataformats="HWC")


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps ``metrics.csv`` (Lightning's deletes
    it, with a warning, when the folder exists): the rows up to the checkpoint stay, the rows a
    killed run logged after it go, and the resumed run appends."""

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # the header the rows on disk have: new keys rewrite it
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def drop_rows_after(self, step: int) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], [r for r in reader if not r.get("step") or int(float(r["step"])) <= step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class CSVResume(pl.Callback):
    """On resume, cut ``metrics.csv`` back to the checkpoint's step (what a killed run logged after
    it is logged again), so the file reads as an unbroken run's."""

    @rank_zero_only
    def on_train_start(self, trainer, pl_module):
        if trainer.ckpt_path is None:
            return
        for lg in trainer.loggers:
            if isinstance(lg, ResumableCSVLogger):
                lg.experiment.drop_rows_after(trainer.global_step)


def logger_callbacks(loggers: list) -> list[pl.Callback]:
    """The callbacks the chosen loggers need."""
    kinds = {type(lg).__name__ for lg in loggers}
    return ([TensorBoardExtras()] if "TensorBoardLogger" in kinds else []) + ([WandbConfusionMatrix()] if "WandbLogger" in kinds else []) \
        + ([CSVResume()] if "ResumableCSVLogger" in kinds else [])
