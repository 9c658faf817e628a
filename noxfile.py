"""Test sessions: one per package and Python, each in its own environment from the lock file.

`uvx nox` runs them all; `uvx nox -s basiccnn` runs one package on every Python,
`uvx nox -s basiccnn-3.12` one cell of the matrix; `uvx nox -s bench` prints loader speed;
`uvx nox -s mutants` measures the tests' mutation score (slow, not in the default run; docs/testing.md);
`uvx nox -s lr_finder` checks each package's `--lr-find` against its configured lr on the real subset
(three seeds a package, six for debugcnn; 1.5 to 2 hours in all on 2 cores, most of it resnet's;
not in the default run either).

The first Python runs every test; the others skip the tests marked `slow` (real-data learning
runs, fault injection with subprocesses): those check numbers and process behaviour that do not
depend on the interpreter, and running them three times would triple CI's time.
"""

import fnmatch
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
        marks = "not lr_finder" if session.python == PYTHONS[0] else "not slow and not lr_finder"
        session.run("pytest", tests, "-q", "--durations=8", "-m", marks, *session.posargs)

    _tests.__doc__ = f"Tests of {package}, alone in its own environment."


for _name, (_package, _extras, _tests) in PACKAGES.items():
    make_test_session(_name, _package, _extras, _tests)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff over the whole repo."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHONS[0])
def lr_finder(session: nox.Session) -> None:
    """Does `--lr-find` help? Per package, three seeds (debugcnn six) on the real subset with the configured lr and
    with the finder first: the finder's mean val acc must be at least the default's minus one point
    (tests marked `lr_finder`; they skip without ../shared/data). `-- NAME ...` runs some packages."""
    for name in session.posargs or [n for n in PACKAGES if n != "shared"]:
        package, extras, tests = PACKAGES[name]
        sync(session, package, extras)
        session.run("pytest", tests, "-q", "-s", "-m", "lr_finder")


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """Training-batch throughput: batch loader vs a textbook torchvision pipeline (not run by default)."""
    sync(session, "cifar-shared", ["albumentations"])
    session.run("cifar-bench-loader", *session.posargs)


# --------------------------------------------------------------------------- mutation testing
# `uvx nox -s mutants` (slow, not in the default run; CI runs it weekly): mutmut mutates the pure-logic
# modules below and reruns the tests that reach each mutated function. docs/testing.md has the score and
# the surviving mutants. mutmut wants one src/ tree and one tests/ tree, so the session stages both
# under .nox/mutants/tmp/tree (the repo itself is never touched) with its config in setup.cfg there.
MUTMUT = "mutmut==3.8.1"  # pinned: its config keys and result codes changed across 3.x
MUTANT_TARGET = 0.80  # the session fails below this score
# workspace package -> its folder; their src/ trees are staged together
MUTANT_PACKAGES = {"cifar-shared": "shared", "cifar-perceiver": "packages/cifar-perceiver", "cifar-qvit": "packages/cifar-qvit"}
MUTANT_FILES = [  # files mutmut mutates (paths in the staged src/)
    "cifar_shared/data/augment.py",
    "cifar_shared/engine/schedulers.py",
    "cifar_shared/engine/lr_finder.py",
    "cifar_shared/engine/metrics.py",
    "cifar_shared/runs/report.py",
    "cifar_perceiver/config_file.py",
    "cifar_qvit/quant.py",
]
# the functions whose mutants count (mutmut's names; fnmatch patterns): whole modules, except the LR
# finder's sweep driver and the two plotting functions (Lightning runs and figures, not logic)
MUTANT_SCOPE = [
    "cifar_shared.data.augment.*",
    "cifar_shared.engine.schedulers.*",
    "cifar_shared.engine.metrics.*",
    *(f"cifar_shared.engine.lr_finder.x_{f}*" for f in ("rule_for", "valley_index", "divergence_index", "smoothing_beta", "smooth", "pick_lr")),
    *(f"cifar_shared.runs.report.x_{f}*" for f in ("run_folders", "model_stats", "wall_time", "sweep_key", "describe", "_num", "_time", "table", "report")),
    "cifar_perceiver.config_file.*",
    "cifar_qvit.quant.*",
]
MUTANT_TESTS = [  # fast unit tests that reach those functions (globs, repo paths), with their conftest.py
    "shared/tests/conftest.py",
    "shared/tests/test_augment.py",
    "shared/tests/test_augment_policies.py",
    "shared/tests/test_per_sample.py",
    "shared/tests/test_engine_parts.py",
    "shared/tests/test_mutants_*.py",
    "packages/cifar-perceiver/tests/conftest.py",
    "packages/cifar-perceiver/tests/test_config_file.py",
    "packages/cifar-perceiver/tests/test_mutants_*.py",
    "packages/cifar-perceiver/configs/*.yaml",  # the sample file test_config_file.py reads
    "packages/cifar-qvit/tests/conftest.py",
    "packages/cifar-qvit/tests/test_quant.py",
    "packages/cifar-qvit/tests/test_mutants_*.py",
]
# mutmut result -> counted as killed (True), not killed (False), or left out (None)
MUTANT_COUNTS = {"killed": True, "timeout": True, "segfault": True, "survived": False, "no tests": False,
                 "suspicious": False, "skipped": None, "not checked": None}


def _stage_mutants_tree(root: Path) -> None:
    import shutil

    if root.exists():
        shutil.rmtree(root)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in MUTANT_PACKAGES.values():
        shutil.copytree(Path(folder) / "src", root / "src", ignore=skip, dirs_exist_ok=True)
    tests = sorted({p for pattern in MUTANT_TESTS for p in Path().glob(pattern)})
    for path in tests:  # under tests/, at their repo paths (test files find their data by relative path)
        (root / "tests" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / "tests" / path)
    shutil.copy2("pyproject.toml", root / "pyproject.toml")  # pytest's settings; no [tool.mutmut] in it
    test_files = [f"tests/{p}" for p in tests if p.name.startswith("test_")]
    lines = "\n    ".join
    (root / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate =\n    {lines(f'src/{f}' for f in MUTANT_FILES)}\n"
        f"pytest_add_cli_args_test_selection =\n    {lines(test_files)}\n"
        "pytest_add_cli_args =\n    -m\n    not slow and not gpu\n    -p\n    no:cacheprovider\n"
        "use_git_change_detection = false\n"
    )


@nox.session(python=PYTHONS[0])
def mutants(session: nox.Session) -> None:
    """Mutation score of the pure-logic modules (mutmut; slow, not run by default). Args go to
    `mutmut run`, e.g. `uvx nox -s mutants -- --max-children 1`."""
    session.run_install(
        "uv", "sync", "--frozen", *(f"--package={p}" for p in MUTANT_PACKAGES), "--extra=albumentations",
        f"--python={session.virtualenv.location}/bin/python",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )
    session.install("pytest>=8", MUTMUT)
    root = Path(session.create_tmp()).resolve() / "tree"
    _stage_mutants_tree(root)
    session.chdir(root)
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # parallelism is mutmut's children, one core each
    log = root / "mutmut.log"  # its progress, and a line per mutant at the end: too much for the console
    session.log(f"mutmut run: about 20 min on 2 cores, one mutant at a time; its output goes to {log}")
    with log.open("w") as out:
        try:
            session.run("mutmut", "run", *session.posargs, *MUTANT_SCOPE, env=one_thread, stdout=out, stderr=out)
        except nox.command.CommandFailed:
            print(log.read_text()[-5000:])
            raise
    results = session.run("mutmut", "results", "--all", "true", silent=True, env=one_thread)
    if results is None:  # --install-only
        return
    status = {}
    for line in results.splitlines():
        name, sep, result = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatchcase(name, p) for p in MUTANT_SCOPE):
            status[name] = result
    counted = {name: MUTANT_COUNTS.get(result, False) for name, result in status.items()}
    killed = sum(1 for v in counted.values() if v is True)
    total = sum(1 for v in counted.values() if v is not None)
    if not total:
        session.error("mutmut reported no mutants in scope")
    survivors = sorted(name for name, v in counted.items() if v is False)
    for name in survivors:
        print(f"    {status[name]}: {name}")
    by_result = {r: sum(1 for s in status.values() if s == r) for r in sorted(set(status.values()))}
    score = killed / total
    print(f"mutation score: {score:.2f}")
    print(f"mutants: {killed} killed of {total} ({', '.join(f'{n} {r}' for r, n in by_result.items())}; "
          "a timeout or a crash counts as killed, no test as survived); `mutmut show NAME` in "
          f"{root} shows one")
    if score < MUTANT_TARGET:
        session.error(f"mutation score {score:.2f} is below the target {MUTANT_TARGET:.2f}")
