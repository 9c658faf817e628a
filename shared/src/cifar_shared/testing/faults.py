"""Kill a training run at chosen moments, rerun it, compare with an unbroken run.

The fault injector is test machinery the harness installs into a run, never read by a user's run:
a fault spec ``point:N[,point:N]`` SIGKILLs the process at a chosen moment (``batch:N`` after the
training batch of global step N, ``val_batch:N`` after this process's N-th validation batch,
``ckpt_write:N`` half-way through this process's N-th checkpoint write) or sends it a signal
(``sigint:N`` / ``sigterm:N`` after global step N). ``inject(spec)`` installs it in this process
through ``cifar_shared.engine.extensions`` (a callback, and a checkpoint writer that can die
half-way); on the command line::

    python -m cifar_shared.testing.faults run CONFIG.yaml --fault batch:2     # train() on a resolved config
    python -m cifar_shared.testing.faults exec --fault batch:2 -- basiccnn-train data=synthetic epochs=1

Used by the fault-injection tests (``cifar_shared.testing.fault_suite``) and by hand::

    python -m cifar_shared.testing.faults cli OUT_ROOT basiccnn-train data=cifar10 ... epochs=4 \\
        --kills kill@40,ckpt_write:2,val_batch:5,int@30,batch:120

runs the command once unbroken into OUT_ROOT/unbroken, then once into OUT_ROOT/broken where each
``--kills`` entry is one attempt that dies there (a fault spec, run under ``exec``, or a signal
from outside after some seconds, ``kill@S`` / ``int@S`` / ``term@S``), then one clean attempt to
finish, and prints whether the two ``metrics.json`` are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl

from cifar_shared.engine.atomic import AtomicCheckpointIO
from cifar_shared.engine.extensions import run_callbacks_added

POINTS = ("batch", "val_batch", "ckpt_write", "sigint", "sigterm")

# Fields that measure the machine, not the run: wall times differ between any two runs.
VOLATILE = {"time_s"}


def comparable(metrics: dict) -> dict:
    """``metrics.json`` without the wall-clock fields (``VOLATILE``); everything else must match."""
    out = {k: v for k, v in metrics.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in row.items() if k not in VOLATILE} for row in metrics.get("history", [])]
    return out


def parse_spec(spec: str) -> dict[str, int]:
    """``"batch:3,ckpt_write:1"`` -> ``{"batch": 3, "ckpt_write": 1}``; a typo is an error, not a run that never dies."""
    points = {}
    for part in filter(None, spec.split(",")):
        name, _, count = part.partition(":")
        if name not in POINTS or not count.isdigit():
            raise ValueError(f"bad fault {part!r}: expected POINT:N with POINT one of {', '.join(POINTS)}")
        points[name] = int(count)
    return points


def _die(point: str) -> None:
    sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(point, signal.SIGKILL)
    os.kill(os.getpid(), sig)


class FaultyCheckpointIO(AtomicCheckpointIO):
    """The run's atomic checkpoint writer, SIGKILLed half-way through this process's N-th write."""

    writes = 0  # this process's checkpoint writes

    def __init__(self, die_at: int | None):
        super().__init__()
        self.die_at = die_at

    def write(self, checkpoint: dict, f) -> None:
        FaultyCheckpointIO.writes += 1
        super().write(checkpoint, f)
        if FaultyCheckpointIO.writes == self.die_at:
            f.flush()
            f.truncate(f.tell() // 2)
            _die("ckpt_write")


class FaultInjector(pl.Callback):
    """Dies (or signals itself) at the points of a fault spec; first in the trainer's callbacks, so
    a ``sigint`` lands before ``RunGuard`` looks at the batch's end and a ``batch`` kill before it saves."""

    val_batches = 0  # this process's validation batches (sanity checks aside)

    def __init__(self, points: dict[str, int]):
        self.points = points

    def _at(self, point: str, count: int) -> None:
        if self.points.get(point) == count:
            _die(point)

    def setup(self, trainer, pl_module, stage) -> None:
        if "ckpt_write" in self.points and not isinstance(trainer.strategy.checkpoint_io, FaultyCheckpointIO):
            trainer.strategy.checkpoint_io = FaultyCheckpointIO(self.points["ckpt_write"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for point in ("batch", "sigint", "sigterm"):
            self._at(point, trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            FaultInjector.val_batches += 1
            self._at("val_batch", FaultInjector.val_batches)


@contextmanager
def inject(spec: str | None):
    """Every run trained inside the ``with`` block dies at ``spec``'s points (nothing if None)."""
    if not spec:
        yield
        return
    points = parse_spec(spec)
    with run_callbacks_added(lambda: [FaultInjector(points)]):
        yield


def load(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def with_fault(cmd: list[str], spec: str) -> list[str]:
    """``cmd`` with the fault injector installed: ``config_command``'s ``run`` takes ``--fault``;
    any other command (a ``*-train`` script) runs in-process under ``exec``."""
    if cmd[1:4] == ["-m", __spec__.name, "run"]:
        return [*cmd, "--fault", spec]
    return [sys.executable, "-m", __spec__.name, "exec", "--fault", spec, "--", *cmd]


def attempt(cmd: list[str], fault: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """One run. ``fault``: a fault spec (the process kills itself there, see ``inject``), or
    ``int@SECONDS`` / ``term@SECONDS`` / ``kill@SECONDS``: that signal from outside after SECONDS."""
    env = dict(os.environ)
    if fault and "@" in fault:
        name, after = fault.split("@")
        sig = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}[name]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=float(after))
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if fault:
        cmd = with_fault(cmd, fault)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def broken_run(cmd: list[str], kills: list[str], timeout: float = 900) -> list[subprocess.CompletedProcess]:
    """One attempt per fault, then a clean one; returns every attempt's result."""
    results = [attempt(cmd, k, timeout) for k in kills]
    results.append(attempt(cmd, None, timeout))
    return results


def config_command(config_yaml: Path) -> list[str]:
    """Run ``train`` on a resolved config file in a fresh interpreter (the tests' subprocess)."""
    return [sys.executable, "-m", "cifar_shared.testing.faults", "run", str(config_yaml)]


class ReseedAtSetup(pl.Callback):
    """Reseeds the global RNG as Lightning's DDP does when fit starts (``reset_seed``, from the seed
    ``seed_everything`` recorded): a plain run with this draws the same dropout masks as a DDP run,
    so the two can be compared number for number (``test_ddp_*``). Test machinery, never in a
    user's run: the engine does not reseed (that would change every run's numbers with dropout)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        from lightning_fabric.utilities.seed import reset_seed

        reset_seed()


def run_config(path: str, fault: str | None = None, reseed: bool = False) -> None:
    """The CLI's job without Hydra: UserError -> one line, exit 2; signals exit 130/143."""
    from omegaconf import OmegaConf

    from cifar_shared.engine.cli import run_job
    from cifar_shared.engine.train import train

    with inject(fault), run_callbacks_added(lambda: [ReseedAtSetup()] if reseed else []):
        run_job(train, OmegaConf.load(path))


def exec_script(command: list[str], fault: str | None) -> None:
    """An installed console script (``basiccnn-train ...``, by name or path) in this process, with
    the fault injector installed: the real command line, test machinery added from outside."""
    from importlib.metadata import entry_points

    name = Path(command[0]).name
    found = entry_points(group="console_scripts", name=name)
    if not found:
        raise SystemExit(f"error: {name} is not an installed console script")
    main = next(iter(found)).load()
    sys.argv = [command[0], *command[1:]]
    with inject(fault):
        main()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cifar_shared.testing.faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="train on a resolved config.yaml (test helper)")
    r.add_argument("config")
    r.add_argument("--fault", help="a fault spec, e.g. batch:2,ckpt_write:1")
    r.add_argument("--reseed", action="store_true", help="reseed the global RNG at fit setup, as DDP does (ReseedAtSetup)")
    e = sub.add_parser("exec", help="a *-train console script, in this process, with --fault installed")
    e.add_argument("--fault", help="a fault spec, e.g. batch:2,ckpt_write:1")
    e.add_argument("command", nargs=argparse.REMAINDER)
    c = sub.add_parser("cli", help="unbroken vs killed-and-rerun, for a *-train command")
    c.add_argument("out_root", type=Path)
    c.add_argument("command", nargs=argparse.REMAINDER)
    args, rest = p.parse_known_args(argv)
    if args.what == "run":
        run_config(args.config, args.fault, args.reseed)
        return 0
    if args.what == "exec":
        exec_script(args.command[1:] if args.command[:1] == ["--"] else args.command, args.fault)
        return 0
    cmd = list(args.command)
    kills: list[str] = []
    if "--kills" in cmd:
        i = cmd.index("--kills")
        kills, cmd = cmd[i + 1].split(","), cmd[:i] + cmd[i + 2:]
    for name in ("unbroken", "broken"):
        if (args.out_root / name).exists():
            print(f"{args.out_root / name} exists: pick a new out_root", file=sys.stderr)
            return 2
    base = [*cmd, "trainer.enable_progress_bar=false"]
    first = attempt([*base, f"output_dir={args.out_root / 'unbroken'}"])
    print(f"unbroken: exit {first.returncode}", flush=True)
    for k, res in zip([*kills, "(clean rerun)"], broken_run([*base, f"output_dir={args.out_root / 'broken'}"], kills)):
        last = (res.stderr.strip().splitlines() or [""])[-1]
        print(f"broken, {k}: exit {res.returncode}  {last[:160]}", flush=True)
    a, b = comparable(load(args.out_root / "unbroken")), comparable(load(args.out_root / "broken"))
    print(f"history rows: unbroken {len(a['history'])}, broken {len(b['history'])}")
    print(f"test acc/loss: unbroken {a['test']['acc']:.6f}/{a['test']['loss']:.6f}, broken {b['test']['acc']:.6f}/{b['test']['loss']:.6f}")
    print("metrics.json (without time_s) EQUAL" if a == b else "metrics.json DIFFER")
    return 0 if a == b else 1


if __name__ == "__main__":
    sys.exit(main())
