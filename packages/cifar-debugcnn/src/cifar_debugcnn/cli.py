"""Entry points: ``debugcnn-train`` and ``debugcnn-check`` (same config, same overrides).

The original project's argparse flags (``--use_cifar10 --max_epochs 10 ...``) are mapped to Hydra
keys by the shared ``run()`` from the table ``conf/original_keys.yaml``.

The model's values are checked here, before torch is imported: a mistake is one line in a second.
"""

import sys

from omegaconf import DictConfig

from cifar_shared.engine.cli import run
from cifar_shared.engine.config import check_rules
from cifar_shared.errors import UserError

# DebugCNN's arguments (conf/model/debugcnn.yaml), as the shared rule table takes them
MODEL_RULES = [
    ("model.widths", "ints", lambda v: len(v) >= 1 and min(v) >= 1, "a non-empty list of conv channel counts >= 1"),
    ("model.hidden", "ints", lambda v: all(h >= 1 for h in v), "a list of hidden-layer widths >= 1 (may be empty)"),
    ("model.dropout", "number", lambda v: 0 <= v < 1, "a probability in [0, 1)"),
]


def check_image_size(image_size: int, blocks: int) -> None:
    """Each block halves the image with a 2x2 max-pool: the side must be a multiple of 2**blocks."""
    shrink = 2 ** blocks
    if image_size < shrink or image_size % shrink:
        raise UserError(
            f"model cannot take {image_size} px images: its {blocks} 2x2 max-pools need a multiple of {shrink} "
            f"(e.g. data.image_size={max(shrink, -(-image_size // shrink) * shrink)})"
        )


def check_values(cfg: DictConfig) -> None:
    check_rules(cfg, MODEL_RULES)


def check_debugcnn(cfg: DictConfig) -> None:
    """The values, then whether the network can take the images (debugcnn-check reports the latter
    in its table instead, as its 'model builds' check)."""
    check_values(cfg)
    size = cfg.model.get("image_size")
    if isinstance(size, int) and size >= 1:
        check_image_size(size, len(cfg.model.widths))


def train_main() -> None:
    run("cifar_debugcnn.conf", check=check_debugcnn)


def check_task(cfg):
    """Imported only once the config is known good (torch imports are slow)."""
    from cifar_debugcnn.check import run_checks

    return run_checks(cfg)


def check_main() -> None:
    # The checks write nothing: Hydra's run folder is the current one, not a new outputs/ folder.
    run("cifar_debugcnn.conf", task=check_task, argv=[*sys.argv[1:], "hydra.run.dir=."], check=check_values)
