"""Runs launched as several processes from outside (torchrun, SLURM's srun): what every rank must agree on.

Lightning reads the launcher's environment itself (``TorchElasticEnvironment``, ``SLURMEnvironment``);
what it cannot know is our run folder. The default ``output_dir`` is stamped with the time each
process starts, so ranks on different nodes would each open their own folder: a launched run must
name one (on a filesystem every node sees). docs/scaling.md has the recipes.
"""

from __future__ import annotations

import os

from cifar_shared.errors import UserError

# Launchers and the variable each sets to the number of processes in the job.
LAUNCHERS = (("torchrun", "WORLD_SIZE"), ("srun", "SLURM_NTASKS"))


def launched_world_size() -> tuple[str, int]:
    """(launcher, processes) when an outside launcher started this process as one of several, else ("", 1)."""
    for launcher, var in LAUNCHERS:
        try:
            n = int(os.environ.get(var, "1"))
        except ValueError:
            continue
        if n > 1:
            return launcher, n
    return "", 1


def check_launched_output_dir(overrides: list[str]) -> None:
    """Refuse a multi-process launch without ``output_dir=``: each rank would pick its own folder.
    Lightning's own DDP children (``trainer.devices=N`` on one machine) get ``hydra.run.dir`` from rank zero."""
    launcher, n = launched_world_size()
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if n > 1 and not keys & {"output_dir", "hydra.run.dir", "hydra.sweep.dir"}:
        raise UserError(f"this is one of {n} processes started by {launcher}: set output_dir=PATH (the same on every node, "
                        "on a shared filesystem), or each process would name its own timestamped run folder")
