"""Which model packages are installed: each declares itself under one entry-point group.

A package's ``pyproject.toml`` has::

    [project.entry-points."cifar_monorepo.packages"]
    basiccnn = "cifar_basiccnn.conf"      # run name -> the package's Hydra config package

so shared code (fault-injection tests, ``cifar-eval`` on any run folder) finds every package,
new ones included, without a list to keep in step.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

GROUP = "cifar_monorepo.packages"


def installed_packages() -> dict[str, str]:
    """``{name: conf_package}`` of every installed model package, sorted by name."""
    return dict(sorted((ep.name, ep.value) for ep in entry_points(group=GROUP)))


def packages_for_tests(test_file: Path) -> list[str]:
    """The package whose folder holds ``test_file`` (a package's own suites run on its model only),
    else every installed package (the shared suites, run where all are installed)."""
    installed = installed_packages()
    own = [name for name in installed if f"cifar-{name}" in Path(test_file).resolve().parts]
    return own or list(installed)
