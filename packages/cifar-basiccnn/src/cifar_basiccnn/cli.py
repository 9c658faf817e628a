"""Entry points: ``basiccnn-train`` and ``basiccnn-visualize``.

The model's values are checked here, before torch is imported: a mistake is one line in a second.
"""

from omegaconf import DictConfig

from cifar_shared.engine.cli import run
from cifar_shared.engine.config import check_rules
from cifar_shared.errors import UserError
from cifar_shared.runs.plots import visualize_main

# BasicCNN's arguments (conf/model/basiccnn.yaml), as the shared rule table takes them
MODEL_RULES = [
    ("model.widths", "ints", lambda v: len(v) >= 1 and min(v) >= 1, "a non-empty list of conv channel counts >= 1"),
    ("model.hidden", "int", lambda v: v >= 1, "an integer >= 1"),
    ("model.dropout", "number", lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    ("model.image_size", "int", lambda v: v >= 1, "a positive number of pixels"),
]


def check_basiccnn(cfg: DictConfig) -> None:
    """The values, then the one thing they must agree on: the head's input width is computed from
    ``model.image_size``, so it must be the size the data arrives at and survive the max-pools."""
    check_rules(cfg, MODEL_RULES)
    model, data_size = cfg.model, cfg.data.get("image_size")
    if isinstance(data_size, int) and model.image_size != data_size:
        raise UserError(f"model.image_size={model.image_size} but data.image_size={data_size}: the classifier's input width "
                        f"follows the image size; set model.image_size={data_size} too")
    pools = 2 ** len(model.widths)
    if model.image_size < pools:
        raise UserError(f"model cannot take {model.image_size} px images: its {len(model.widths)} 2x2 max-pools need at least "
                        f"{pools} px (e.g. data.image_size={pools} model.image_size={pools})")


def train_main() -> None:
    run("cifar_basiccnn.conf", check=check_basiccnn)


__all__ = ["train_main", "visualize_main"]
