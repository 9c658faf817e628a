"""Kill a training run at chosen moments, rerun it, compare with an unbroken run.

Used by the fault-injection tests (``cifar_shared.testing.fault_suite``) and by hand::

    python -m cifar_shared.testing.faults cli OUT_ROOT basiccnn-train data=cifar10 ... epochs=4 \\
        --kills kill@40,ckpt_write:2,val_batch:5,int@30,batch:120

runs the command once unbroken into OUT_ROOT/unbroken, then once into OUT_ROOT/broken where each
``--kills`` entry is one attempt that dies there (``CIFAR_FAULT``, see ``engine.resilience``, or
a signal from outside after some seconds, ``kill@S`` / ``int@S`` / ``term@S``),
then one clean attempt to finish, and prints whether the two ``metrics.json`` are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# Fields that measure the machine, not the run: wall times differ between any two runs.
VOLATILE = {"time_s"}


def comparable(metrics: dict) -> dict:
    """``metrics.json`` without the wall-clock fields (``VOLATILE``); everything else must match."""
    out = {k: v for k, v in metrics.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in row.items() if k not in VOLATILE} for row in metrics.get("history", [])]
    return out


def load(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def attempt(cmd: list[str], fault: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """One run. ``fault``: a ``CIFAR_FAULT`` spec (the process kills itself there), or
    ``int@SECONDS`` / ``term@SECONDS`` / ``kill@SECONDS``: that signal from outside after SECONDS."""
    env = {k: v for k, v in os.environ.items() if k != "CIFAR_FAULT"}
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
        env["CIFAR_FAULT"] = fault
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def broken_run(cmd: list[str], kills: list[str], timeout: float = 900) -> list[subprocess.CompletedProcess]:
    """One attempt per fault, then a clean one; returns every attempt's result."""
    results = [attempt(cmd, k, timeout) for k in kills]
    results.append(attempt(cmd, None, timeout))
    return results


def config_command(config_yaml: Path) -> list[str]:
    """Run ``train`` on a resolved config file in a fresh interpreter (the tests' subprocess)."""
    return [sys.executable, "-m", "cifar_shared.testing.faults", "run", str(config_yaml)]


def run_config(path: str) -> None:
    """The CLI's job without Hydra: UserError -> one line, exit 2; signals exit 130/143."""
    from omegaconf import OmegaConf

    from cifar_shared.engine.cli import fail
    from cifar_shared.engine.train import train
    from cifar_shared.errors import UserError

    try:
        train(OmegaConf.load(path))
    except UserError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cifar_shared.testing.faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="train on a resolved config.yaml (test helper)")
    r.add_argument("config")
    c = sub.add_parser("cli", help="unbroken vs killed-and-rerun, for a *-train command")
    c.add_argument("out_root", type=Path)
    c.add_argument("command", nargs=argparse.REMAINDER)
    args, rest = p.parse_known_args(argv)
    if args.what == "run":
        run_config(args.config)
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
