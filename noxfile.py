"""Test sessions: one per package, each in its own environment from the lock file.

`uvx nox` runs them all; `uvx nox -s basiccnn` runs one; `uvx nox -s bench` prints loader speed.
"""

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "shared", "basiccnn", "resnet", "qvit"]

# session name -> (workspace package, extras, test folder)
PACKAGES = {
    "shared": ("cifar-shared", ["albumentations"], "shared/tests"),
    "basiccnn": ("cifar-basiccnn", [], "packages/cifar-basiccnn/tests"),
    "resnet": ("cifar-resnet", [], "packages/cifar-resnet/tests"),
    "qvit": ("cifar-qvit", [], "packages/cifar-qvit/tests"),
}


def sync(session: nox.Session, package: str, extras: list[str]) -> None:
    """Install exactly the package and its locked dependencies into the session's venv."""
    extra_args = [f"--extra={e}" for e in extras]
    session.run_install(
        "uv", "sync", "--frozen", f"--package={package}", *extra_args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )
    session.install("pytest>=8")


def make_test_session(name: str, package: str, extras: list[str], tests: str) -> None:
    @nox.session(name=name, python="3.11")
    def _tests(session: nox.Session) -> None:
        sync(session, package, extras)
        session.run("pytest", tests, "-q", *session.posargs)

    _tests.__doc__ = f"Tests of {package}, alone in its own environment."


for _name, (_package, _extras, _tests) in PACKAGES.items():
    make_test_session(_name, _package, _extras, _tests)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over the whole repo."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Training-batch throughput: batch loader vs a textbook torchvision pipeline (not run by default)."""
    sync(session, "cifar-shared", ["albumentations"])
    session.run("cifar-bench-loader", *session.posargs)
