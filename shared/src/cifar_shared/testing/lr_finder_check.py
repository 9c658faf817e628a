"""Does ``--lr-find`` help? One short run on the real subset per seed with the package's configured
lr, and one with the finder first (its pick, or the configured lr where the rule declines); each
package's slow test calls ``finder_against_default`` with its own ``train`` and config.

The check is on the mean final validation accuracy over the seeds: a finder that picks a worse lr
than the package's default (as ``valley`` did for basiccnn, -3.2 points in 15 epochs) fails it.
A package's test is ``check_finder(train, "cifar_x.conf", real_subset, tmp_path, [its budget])``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

SEEDS = (0, 1, 2)


def finder_against_default(train: Callable, config: Callable, out: Path, seeds=SEEDS) -> dict:
    """``config(output_dir, *overrides)`` -> the package's composed config; returns per seed the
    final val acc of both runs, the finder's pick (None: declined) and the lr its run used."""
    rows: dict[str, list] = {"default": [], "finder": [], "pick": [], "lr_used": []}
    for seed in seeds:
        for mode in ("default", "finder"):
            folder = Path(out) / f"{mode}_s{seed}"
            train(config(folder, f"seed={seed}", *(["lr_find.enabled=true"] if mode == "finder" else [])))
            metrics = json.loads((folder / "metrics.json").read_text())
            rows[mode].append(metrics["history"][-1]["val/acc"])
            if mode == "finder":
                rows["pick"].append(metrics["lr_find"]["suggestion"])
                rows["lr_used"].append(metrics["lr_find"]["lr_used"])
    return rows


def summary(rows: dict) -> str:
    picks = ", ".join("declined" if p is None else f"{p:.3g}" for p in rows["pick"])
    return (f"val acc, default lr: {' '.join(f'{v:.4f}' for v in rows['default'])} (mean {statistics.mean(rows['default']):.4f}); "
            f"--lr-find: {' '.join(f'{v:.4f}' for v in rows['finder'])} (mean {statistics.mean(rows['finder']):.4f}); picks: {picks}")


def assert_finder_not_worse(rows: dict, points: float = 1.0) -> None:
    """The finder's runs reach at least the default's mean val acc minus ``points``; each finder run
    used its pick, or the configured lr where the rule declined."""
    for pick, used in zip(rows["pick"], rows["lr_used"]):
        assert pick is None or used == pick, (pick, used)
    assert statistics.mean(rows["finder"]) >= statistics.mean(rows["default"]) - points / 100, summary(rows)


def check_finder(train: Callable, conf_package: str, real_subset: Path, out: Path, run: list[str], seeds=SEEDS) -> dict:
    """``experiment=subset`` of ``conf_package`` on ``real_subset`` with ``run``'s overrides (its short
    budget): both runs per seed, the summary printed, the finder held to ``assert_finder_not_worse``.
    A package whose runs spread widely over seeds passes more ``seeds`` so one point means something."""
    from cifar_shared.engine.cli import compose_config

    def config(folder, *overrides):
        return compose_config(conf_package, [
            "experiment=subset", f"data.root={real_subset}", *run, "trainer.enable_progress_bar=false", f"output_dir={folder}", *overrides,
        ])

    rows = finder_against_default(train, config, out, seeds)
    print(summary(rows))
    assert_finder_not_worse(rows)
    return rows
