"""Entry points: ``debugcnn-train`` and ``debugcnn-check`` (same config, same overrides).

The original project's argparse flags (``--use_cifar10 --max_epochs 10 ...``) are mapped to Hydra
keys by the shared ``run()`` from the table ``conf/original_keys.yaml``.
"""

import sys

from cifar_shared.engine.cli import run


def train_main() -> None:
    run("cifar_debugcnn.conf")


def check_task(cfg):
    """Imported only once the config is known good (torch imports are slow)."""
    from cifar_debugcnn.check import run_checks

    return run_checks(cfg)


def check_main() -> None:
    # The checks write nothing: Hydra's run folder is the current one, not a new outputs/ folder.
    run("cifar_debugcnn.conf", task=check_task, argv=[*sys.argv[1:], "hydra.run.dir=."])
