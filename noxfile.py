"""Test sessions: one per package and Python, each in its own environment from the lock file.

`uvx nox` runs them all; `uvx nox -s basiccnn` runs one package on every Python,
`uvx nox -s basiccnn-3.12` one cell of the matrix; `uvx nox -s bench` prints loader speed.

The first Python runs every test; the others skip the tests marked `slow` (real-data learning
runs, fault injection with subprocesses): those check numbers and process behaviour that do not
depend on the interpreter, and running them three times would triple CI's time.
"""

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]

# session name -> (workspace package, extras, test folder)
PACKAGES = {
    "shared": ("cifar-shared", ["albumentations", "test"], "shared/tests"),
    "basiccnn": ("cifar-basiccnn", ["export", "cluster"], "packages/cifar-basiccnn/tests"),
    "resnet": ("cifar-resnet", [], "packages/cifar-resnet/tests"),
    "debugcnn": ("cifar-debugcnn", [], "packages/cifar-debugcnn/tests"),
    "perceiver": ("cifar-perceiver", [], "packages/cifar-perceiver/tests"),
    "qvit": ("cifar-qvit", [], "packages/cifar-qvit/tests"),
}
nox.options.sessions = ["lint", *PACKAGES]


def _expose_pyenv_pythons() -> None:
    """uv finds only the pyenv Pythons that are active; make every installed 3.11-3.13 findable."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    if not (root / "versions").is_dir():
        return
    active = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    installed = sorted(p.name for p in (root / "versions").iterdir())
    wanted = [v for v in installed if any(v == p or v.startswith(p + ".") for p in PYTHONS)]
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys([*active, *wanted]))


_expose_pyenv_pythons()


def sync(session: nox.Session, package: str, extras: list[str]) -> None:
    """Install exactly the package and its locked dependencies into the session's venv."""
    extra_args = [f"--extra={e}" for e in extras]
    session.run_install(
        "uv", "sync", "--frozen", f"--package={package}", *extra_args, f"--python={session.virtualenv.location}/bin/python",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )
    session.install("pytest>=8")  # the model packages' sessions; cifar-shared's own gets it from its `test` extra


def make_test_session(name: str, package: str, extras: list[str], tests: str) -> None:
    @nox.session(name=name, python=PYTHONS)
    def _tests(session: nox.Session) -> None:
        sync(session, package, extras)
        quick = [] if session.python == PYTHONS[0] else ["-m", "not slow"]
        session.run("pytest", tests, "-q", "--durations=8", *quick, *session.posargs)

    _tests.__doc__ = f"Tests of {package}, alone in its own environment."


for _name, (_package, _extras, _tests) in PACKAGES.items():
    make_test_session(_name, _package, _extras, _tests)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff over the whole repo."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """Training-batch throughput: batch loader vs a textbook torchvision pipeline (not run by default)."""
    sync(session, "cifar-shared", ["albumentations"])
    session.run("cifar-bench-loader", *session.posargs)
