"""``train(cfg)``: the straight line every package's CLI calls.

seed -> data -> model -> callbacks/loggers -> trainer -> (LR finder) -> fit (resuming) -> test.
"""

from __future__ import annotations

import functools
import logging
import platform
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import (
    EarlyStopping,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.utilities import rank_zero_only

from cifar_shared.data.datamodule import ImageDataModule
from cifar_shared.data.sources import load_source
from cifar_shared.engine.atomic import AtomicCheckpointIO, atomic_write
from cifar_shared.engine.callbacks import RunRecorder
from cifar_shared.engine.config import check_config
from cifar_shared.engine.console import ConsoleFilter, FileFilter, is_terminal, quiet_libraries
from cifar_shared.engine.extensions import run_callbacks
from cifar_shared.engine.guard import RunGuard
from cifar_shared.engine.loggers import build_loggers, logger_callbacks
from cifar_shared.engine.model_stats import ModelStats, model_stats
from cifar_shared.engine.module import ClassificationModule
from cifar_shared.engine.run_lock import LOCK_NAME, RunLock
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_shared.train")


def train(cfg: DictConfig) -> dict:
    """Train, test and return the test metrics; the run folder is ``cfg.output_dir``."""
    check_config(cfg)
    record_package(cfg)
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"output_dir {out} cannot be created ({e.strerror or type(e).__name__}): set output_dir=PATH to a writable folder") from None
    if rank_zero_only.rank != 0:  # DDP's other ranks: rank 0 holds the folder for them
        return _train_in(cfg, out)
    with RunLock(out) as lock:  # before anything is written: a second run on a live run's folder writes nothing
        return _train_in(cfg, out, lock.previous)


def _train_in(cfg: DictConfig, out: Path, stale_lock: str = "") -> dict:
    """``train``'s body, in a run folder this process may write."""
    setup_logging(out / "train.log")  # appends; everything that could replace a file waits for the checks
    if stale_lock:
        log.info("took over %s from a run that is no longer running (%s)", out / LOCK_NAME, stale_lock)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed, gpu_flag(cfg, "channels_last"))
    if cfg.get("export_dir") and rank_zero_only.rank == 0:
        from cifar_shared.data.tools import export_splits

        for line in export_splits(load_source(cfg.data), Path(cfg.export_dir)):
            log.info("%s", line)
    module = build_module(cfg, dm.num_classes)
    net = module.net
    stats = model_stats(net, dm.image_shape)
    log.info("%s: %s; %d train / %d val / %d test images, %d classes",
             cfg.get("name", "model"), stats.line(),
             len(dm.train_set), len(dm.val_set), len(dm.test_set), dm.num_classes)

    last = Path(cfg.checkpoint_dir) / "last.ckpt"
    resume = last if last.exists() else None
    lr_find = bool(cfg.get("lr_find") and cfg.lr_find.get("enabled"))
    if resume is not None:
        try:
            check_checkpoint(resume, module, cfg.get("name"))
        except UserError as e:  # the console gets it from the CLI (stderr); the run's log keeps it too
            log_to_file(f"error: {e}")
            raise
        if lr_find and cfg.lr_find.get("only"):
            raise UserError(f"--lr-find-only on a run that has already trained ({resume}): give it a new output_dir")
        log.info("resuming from %s%s", resume, " (the LR finder ran when the run started; not again)" if lr_find else "")
    if rank_zero_only.rank == 0:
        save_config(cfg, out / "config.yaml")
        write_model_info(net, model_header(cfg, dm.num_classes), dm.image_shape, out / "model_info.txt", stats)
    for stale in [*Path(cfg.checkpoint_dir).glob(".*.partial"), *out.glob(".*.partial")]:  # a write a kill cut short; the file it was replacing is intact
        stale.unlink()
    recorder = RunRecorder(out / "metrics.json", dm.classes)
    if resume is None:  # on resume the checkpoint restores it (writing now would drop metrics.json's history)
        recorder.record("input", {"mean": dm.mean, "std": dm.std, "image_shape": list(dm.image_shape)})  # for cifar-eval/predict
    ckpt_cfg = (cfg.get("callbacks") or {}).get("checkpoint") or {}
    guard = RunGuard(cfg.checkpoint_dir, cfg.get("name", "model"), ckpt_cfg.get("every_n_minutes", 10), recorder)
    trainer = build_trainer(cfg, recorder, guard)
    recorder.record("device", device_record(cfg, trainer))
    if trainer.world_size > 1 or trainer.accumulate_grad_batches > 1:
        log.info("%s", effective_batch_line(cfg.batch_size, trainer.world_size, trainer.accumulate_grad_batches))
    if resume is None and lr_find:
        from cifar_shared.engine.lr_finder import find_lr

        found = find_lr(trainer, module, dm, cfg.lr_find, out / "lr_finder.png", (cfg.get("scheduler") or {}).get("_target_"))
        picked = found["suggestion"] is not None
        found["lr_used"] = found["suggestion"] if picked else module.optimizer_factory.keywords.get("lr")
        recorder.record("lr_find", found)
        if picked:
            module.optimizer_factory = functools.partial(module.optimizer_factory, lr=found["suggestion"])
        log.info("lr of this run (OneCycle's max_lr where it defaults to it): %.4g, %s", found["lr_used"],
                 "the LR finder's pick" if picked else "the configured one")
        if cfg.lr_find.get("only"):
            log.info("lr_find.only=true: stopping after the LR finder")
            return {}

    guard.install_signals()  # Ctrl-C/SIGTERM: checkpoint, one line, exit 130/143
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)  # plain data only: a pickle cannot run code
        if guard.signum is not None:  # arrived in the last epoch's validation: last.ckpt holds the end of training
            guard.exit_interrupted(trainer.current_epoch, trainer.num_training_batches)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not cfg.get("test_after_fit", True):
            log.info("test_after_fit=false: not testing; `cifar-eval %s` tests the best checkpoint later", out)
            return {}
        # the recorder merges restored state, so testing the best checkpoint keeps every epoch's row
        results = trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False, weights_only=True)[0]
    finally:
        guard.restore_signals()
    test = {k.removeprefix("test/"): float(v) for k, v in sorted(results.items())}
    test["checkpoint"] = Path(best).name if best else "final weights"
    test["confusion_matrix"] = module.confusion_matrix
    recorder.record("test", test)
    log.info("test (%s): acc %.4f  f1_macro %.4f  loss %.4f", test["checkpoint"], test["acc"], test["f1_macro"], test["loss"])
    return test


def build_module(cfg: DictConfig, num_classes: int, compile: bool | None = None, training: bool = True) -> ClassificationModule:
    """The network (``cfg.model``) in the shared module, as training builds it; the run-folder
    commands (cifar-eval, cifar-predict, cifar-export-model) build theirs here too, without the
    loss hook (``training=False``: a distillation teacher is not needed to predict)."""
    net = instantiate(cfg.model, num_classes=num_classes)
    if gpu_flag(cfg, "compile") if compile is None else compile:
        net.compile()  # in place: the state dict keeps its keys, so CPU and GPU runs share checkpoints
    return ClassificationModule(
        net, num_classes,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        label_smoothing=cfg.get("label_smoothing", 0.0),
        channels_last=gpu_flag(cfg, "channels_last"),
        loss_hook=instantiate(cfg.loss_hook) if training and cfg.get("loss_hook") else None,
    )


def device_record(cfg: DictConfig, trainer: pl.Trainer) -> dict:
    """What ran the numbers (metrics.json ``device``): a figure means little without it."""
    device = trainer.strategy.root_device
    return {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "precision": str(trainer.precision),
        "channels_last": gpu_flag(cfg, "channels_last"),
        "compile": gpu_flag(cfg, "compile"),
        "world_size": trainer.world_size,
        "torch": str(torch.__version__),
    }


def effective_batch_line(batch_size: int, world_size: int, accumulate: int) -> str:
    """``batch_size`` is per rank: each optimizer step averages the gradients of every rank's batch
    (and of ``accumulate`` batches each), so the step sees this many images; the lr is not scaled."""
    return (f"effective batch {batch_size * world_size * accumulate} images per optimizer step "
            f"(batch_size {batch_size} per rank x {world_size} ranks x {accumulate} accumulated); lr as configured, not scaled")


def on_cuda(accelerator) -> bool:
    return torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda")


def gpu_flag(cfg: DictConfig, key: str) -> bool:
    """``channels_last`` / ``compile``: true, false, or ``auto``: on when the run trains on a CUDA GPU
    (where they pay: NHWC tensor-core convolutions, fused kernels), off on CPU (where they cost)."""
    value = cfg.get(key, False)
    if value == "auto":
        return on_cuda((cfg.get("trainer") or {}).get("accelerator", "auto"))
    return bool(value)


def resolve_determinism(tcfg: dict) -> dict:
    """``trainer.deterministic=auto``: deterministic kernels on CPU (the same command gives the same
    numbers); on a GPU the fastest ones, with cuDNN autotuning unless ``trainer.benchmark`` says."""
    if tcfg.get("deterministic", "auto") != "auto":
        return {"deterministic": tcfg.get("deterministic"), "benchmark": tcfg.get("benchmark")}
    gpu = on_cuda(tcfg.get("accelerator", "auto"))
    benchmark = tcfg.get("benchmark")
    return {"deterministic": False if gpu else "warn", "benchmark": (True if gpu else None) if benchmark is None else benchmark}


def record_package(cfg: DictConfig) -> None:
    """Set ``cfg.package`` (the conf package that built the run) when the caller has not: the CLI
    sets it; a test or script calling ``train()`` gets it from the registry by ``cfg.name``."""
    if cfg.get("package"):
        return
    from cifar_shared.registry import installed_packages

    with open_dict(cfg):
        cfg.package = installed_packages().get(str(cfg.get("name")))


def model_header(cfg: DictConfig, num_classes: int) -> str:
    """One line naming the network: the run name, the model's config keys and the class count."""
    keys = ", ".join(f"{k}={v}" for k, v in cfg.model.items() if not k.startswith("_"))
    return f"{cfg.get('name', 'model')}: {keys}{', ' if keys else ''}{num_classes} classes"


def write_model_info(net: torch.nn.Module, header: str, image_shape: tuple[int, int, int], path: Path,
                     stats: ModelStats | None = None) -> str:
    """Parameters and FLOPs per image (``model_stats``), then torchinfo's table of the network at one
    input image (layers, output shapes, parameter counts)."""
    from torchinfo import summary

    stats = stats or model_stats(net, image_shape)
    # fork_rng: its random input must not shift the run's random stream; force_eager: under
    # torch.compile its hooks were traced too, recompiling to dynamo's limit (warnings, wasted time)
    with torch.random.fork_rng(devices=[]), torch.compiler.set_stance("force_eager"):
        table = summary(net, input_size=(1, *image_shape), device="cpu", mode="eval", verbose=0, depth=3,
                        col_names=("input_size", "output_size", "num_params"))
    text = f"{header}\n{stats.line()}\n{table}\n"
    path.write_text(text)
    return text


def build_trainer(cfg: DictConfig, recorder: RunRecorder, guard: RunGuard | None = None, extra: list[pl.Callback] = ()) -> pl.Trainer:
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg["precision"] = resolve_precision(tcfg.get("precision", "auto"), tcfg.get("accelerator", "auto"))
    tcfg.update(resolve_determinism(tcfg))
    ccfg = cfg.get("callbacks") or {}
    callbacks: list[pl.Callback] = [*run_callbacks(), recorder] + ([guard] if guard is not None else []) + list(extra)
    ckpt = ccfg.get("checkpoint") or {}
    callbacks.append(EpochCheckpoint(
        dirpath=cfg.checkpoint_dir,
        filename="best-epoch{epoch:03d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        monitor=ckpt.get("monitor", "val/acc"),
        mode=ckpt.get("mode", "max"),
        save_last=True,
        save_top_k=int(ckpt.get("save_top_k", 1)),
        save_on_train_epoch_end=True,
        enable_version_counter=False,  # last.ckpt is always the file a rerun resumes from, never last-v1.ckpt
    ))
    if ckpt.get("keep_every_epoch"):  # the original basiccnn's checkpoint_epoch_N files, numbered like the log's epochs
        callbacks.append(EpochCheckpoint(dirpath=cfg.checkpoint_dir, filename="checkpoint_epoch_{epoch}", auto_insert_metric_name=False,
                                         monitor=None, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True,
                                         enable_version_counter=False))
    if ccfg.get("early_stopping"):
        callbacks.append(EarlyStopping(**OmegaConf.to_container(ccfg.early_stopping)))
    for extra in (ccfg.get("extra") or {}).values():  # a package's own callbacks (name -> {_target_: ...})
        if extra is not None:
            callbacks.append(instantiate(extra))
    # A bar only on a terminal: piped or logged output gets the epoch lines and nothing else.
    tcfg["enable_progress_bar"] = bool(tcfg.get("enable_progress_bar", True)) and is_terminal()
    if tcfg["enable_progress_bar"]:
        callbacks.append(RichProgressBar() if ccfg.get("progress_bar", "rich") == "rich" else TQDMProgressBar(refresh_rate=max(1, int(ccfg.get("refresh_rate", 20)))))
    tcfg.setdefault("enable_model_summary", False)  # model_info.txt holds the summary (torchinfo)
    loggers = build_loggers(cfg)
    return pl.Trainer(**tcfg, callbacks=[*callbacks, *logger_callbacks(loggers)], logger=loggers, default_root_dir=cfg.output_dir, use_distributed_sampler=False,
                      plugins=[AtomicCheckpointIO()])  # checkpoints written aside, then renamed


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint naming ``best-epochNNN`` by the epoch as train.log counts it (from 1).
    Its state keeps ModelCheckpoint's key, so runs saved before this class resume as before."""

    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix=None) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)


def resolve_precision(precision, accelerator: str):
    """'auto': bf16 autocast on GPUs that support it, fp16 with loss scaling on older ones, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def check_checkpoint(path: Path, module: pl.LightningModule, name: str | None = None) -> None:
    """Refuse, before anything is overwritten, a checkpoint that cannot be resumed (read as plain
    data, the run-folder tools' way: a crafted pickle runs nothing)."""
    from cifar_shared.runs.folder import load_checkpoint

    ckpt = load_checkpoint(path, "move it away to start over, or use another output_dir")
    state = ckpt["state_dict"]
    saved = ckpt.get(RunGuard.KEY)
    saved_by = saved.get("name") if isinstance(saved, dict) else None
    if name and saved_by and saved_by != name:
        raise UserError(f"checkpoint {path} was saved by a {saved_by} run, this is {name}: use another output_dir, or {saved_by}'s own command")
    expected = {k: v.shape for k, v in module.state_dict().items()}
    found = {k: getattr(v, "shape", None) for k, v in state.items()}
    if expected.keys() != found.keys() or any(expected[k] != found[k] for k in expected):
        raise UserError(f"checkpoint {path} was saved by a different model or config: use another output_dir, or the run's own config ({path.parent.parent / 'config.yaml'})")


def log_to_file(message: str) -> None:
    """A line for train.log only (the console already shows it, on stderr)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_cifar", False) and isinstance(handler, logging.FileHandler):
            handler.handle(record)


def save_config(cfg: DictConfig, path: Path) -> None:
    text = OmegaConf.to_yaml(cfg, resolve=True)
    if path.exists() and path.read_text() != text:
        log.warning("%s exists and differs from this run's config; keeping it, this run's is in %s", path, path.with_name("config.resumed.yaml"))
        atomic_write(path.with_name("config.resumed.yaml"), text.encode())
        return
    atomic_write(path, text.encode())


def close_run_logs() -> None:
    """Remove and close the handlers ``setup_logging`` added (a new run's, or a test's, streams take over)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_cifar", False)]:
        root.removeHandler(h)
        h.close()


def setup_logging(path: Path) -> None:
    """Console (stdout) + ``train.log`` (appended, so a resumed run keeps one log)."""
    close_run_logs()
    root = logging.getLogger()
    # one writer under DDP; delay: the file is made by its first line, so a run that stops on a data
    # error before logging anything leaves no empty train.log (check_config probed that it can be written)
    file = logging.FileHandler(path, mode="a", delay=True) if rank_zero_only.rank == 0 else logging.NullHandler()
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file.addFilter(FileFilter())
    console = logging.StreamHandler(sys.stdout)  # progress on stdout; stderr is for errors
    console.setLevel(logging.INFO if rank_zero_only.rank == 0 else logging.ERROR)  # DDP: each line once, by rank zero
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(ConsoleFilter())
    for h in (file, console):
        h._cifar = True
        root.addHandler(h)
    root.setLevel(logging.INFO)
    quiet_libraries()
