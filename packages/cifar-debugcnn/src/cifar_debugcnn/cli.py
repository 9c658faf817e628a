"""Entry points: ``debugcnn-train`` and ``debugcnn-check`` (same config, same overrides)."""

from cifar_shared.engine.cli import run


def train_main() -> None:
    run("cifar_debugcnn.conf")


def check_task(cfg):
    """Imported only once the config is known good (torch imports are slow)."""
    from cifar_debugcnn.check import run_checks

    return run_checks(cfg)


def check_main() -> None:
    run("cifar_debugcnn.conf", task=check_task, config_name="check")
