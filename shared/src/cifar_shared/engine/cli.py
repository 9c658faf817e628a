"""The entry-point plumbing every ``*-train`` command shares.

Hydra does the parsing (``key=value`` overrides, ``-m`` sweeps, ``--cfg job``); this module adds
the checks that make a user's mistake one line on stderr with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import resources

from omegaconf import DictConfig, open_dict

from cifar_shared.engine.config import check_config
from cifar_shared.engine.scaling import check_launched_output_dir
from cifar_shared.errors import UserError

# Flags that read better than overrides; each maps to plain overrides.
FLAGS = {
    "--lr-find": ["lr_find.enabled=true"],
    "--lr-find-only": ["lr_find.enabled=true", "lr_find.only=true"],
}
_INSPECT = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p", "--shell-completion", "-sc", "--version"}
# Hydra's own long flags: any other ``--flag`` must be in FLAGS or the package's original-keys table.
_HYDRA_FLAGS = {f for f in _INSPECT if f.startswith("--")} | {
    "--run", "--multirun", "--config-path", "--config-name", "--config-dir", "--experimental-rerun"}
ORIGINAL_KEYS_FILE = "original_keys.yaml"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def one_line(error: Exception) -> str:
    """Hydra/OmegaConf errors span several lines; keep what names the problem and the fix."""
    text = "\n".join(str(e) for e in (error, error.__cause__, error.__context__) if e is not None)
    key = re.search(r"Key '([^']+)' is not in struct", text)
    if key:
        name = re.search(r"Could not override '([^']+)'", text)
        full = name.group(1) if name else key.group(1)
        return f"unknown config key '{full}': check its spelling (`--cfg job` prints every key), or add a new key with +{full}=VALUE"
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        return f"unknown option '{option}' for {group or 'config'}: choose one of {', '.join(options) or '(none found)'}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type", "reference_type"))]
    return "; ".join(lines[:3]) or type(error).__name__


def compose_config(conf_package: str, overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config a command would run with, for tests and for checking overrides up front."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(resources.files(conf_package)), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def checked_override_sets(overrides: list[str], multirun: bool = True) -> list[list[str]]:
    """The override lists to check up front: the plain ones, and for a ``-m`` sweep every swept
    value once (the other keys at their first value), so a bad job fails before the first one runs.
    Without ``-m`` a sweep is Hydra's error to report, so the overrides are checked as given."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not multirun:
        return [overrides]

    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts: list[str] = []
    sweeps: list[tuple[int, str, list[str]]] = []
    for o in parsed:
        if not o.is_sweep_override():
            firsts.append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # interval sweeps (for optimizers like optuna) have no values to list
            continue
        sweeps.append((len(firsts), o.get_key_element(), values))
        firsts.append(f"{o.get_key_element()}={values[0]}")
    sets = [firsts]
    for i, key, values in sweeps:
        sets += [[*firsts[:i], f"{key}={v}", *firsts[i + 1:]] for v in values[1:]]
    return sets


def load_original_keys(conf_package: str) -> dict[str, str]:
    """The package's ``conf/original_keys.yaml``: the original project's keys and flags -> the
    native key each sets (empty when the package has none)."""
    import yaml

    path = resources.files(conf_package) / ORIGINAL_KEYS_FILE
    if not path.is_file():
        return {}
    table = yaml.safe_load(path.read_text()) or {}
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise ValueError(f"{conf_package}/{ORIGINAL_KEYS_FILE} must map each original key or flag to a native key (strings)")
    return table


def map_original_keys(argv: list[str], table: dict[str, str]) -> tuple[list[str], list[str]]:
    """Rewrite the original project's command-line forms into native overrides.

    ``table`` maps an original key or flag to what it sets, as data:
    - ``training.batch_size: batch_size``: the override ``training.batch_size=256`` sets ``batch_size=256``
      (sweeps too: ``training.batch_size=64,128``);
    - ``--max_epochs: epochs``: ``--max_epochs 10`` or ``--max_epochs=10`` sets ``epochs=10``;
    - ``--use_cifar10: data=cifar10``: a bare flag sets the fixed override(s) (several: space-separated).
    Returns the native argv and one line per mapped item saying what it set. A ``--flag`` that is
    neither in the table, nor Hydra's, nor one of ``FLAGS`` is a UserError listing the known ones.
    """
    out: list[str] = []
    notes: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            if flag in _HYDRA_FLAGS or flag in FLAGS:
                out.append(arg)
                continue
            if flag not in table:
                known = sorted({*(k for k in table if k.startswith("--")), *FLAGS})
                raise UserError(f"unknown flag {flag}: the known flags are {', '.join(known)} (and Hydra's --cfg job, --help, -m); "
                                f"settings are key=value overrides")
            native = table[flag]
            if "=" in native:  # a bare flag: fixed overrides
                if eq:
                    raise UserError(f"{flag} takes no value (it sets {native})")
                out += native.split()
                notes.append(f"original flag {flag} -> {native}")
                continue
            if not eq:
                if i >= len(argv):
                    raise UserError(f"{flag} needs a value: {flag} VALUE (it sets {native})")
                value, i = argv[i], i + 1
            out.append(f"{native}={value}")
            notes.append(f"original flag {flag} {value} -> {native}={value}")
            continue
        key, eq, value = arg.partition("=")
        if eq and key in table and not arg.startswith(("+", "~")):
            out.append(f"{table[key]}={value}")
            notes.append(f"original key {key} -> {table[key]}={value}")
        else:
            out.append(arg)
    return out, notes


def translate_flags(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        out.extend(FLAGS.get(arg, [arg]))
    return out


def train_task(cfg: DictConfig):
    """The shared ``train``, imported only once the config is known good (torch imports are slow)."""
    from cifar_shared.engine.train import train

    return train(cfg)


def run_job(task, cfg: DictConfig):
    """``task(cfg)`` as a command runs it, its process ending with it: a user error is one line and
    exit 2; training's interrupt (checkpoint saved) exits 130/143, a late copy of the signal unable
    to kill the exit; Ctrl-C before training starts exits 130 with one line."""
    try:
        return task(cfg)
    except UserError as e:
        fail(str(e))
    except SystemExit as e:
        if hasattr(e, "exiting"):  # guard.Interrupted
            e.exiting()
        raise
    except KeyboardInterrupt:  # before training starts (training itself saves and exits 130)
        print("interrupted before training started; run the same command to start again", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # Hydra's instantiate wraps a UserError raised by a model's constructor
        if isinstance(e.__cause__, UserError):
            fail(str(e.__cause__))
        raise


def run(conf_package: str, task: Callable[[DictConfig], object] = train_task, argv: list[str] | None = None,
        config_name: str = "train", choices: dict[str, tuple[str, ...]] | None = None,
        check: Callable[[DictConfig], None] | None = None) -> None:
    """Run ``task`` under Hydra with the package's config; user errors exit 2 with one line.

    The original project's keys and flags (the package's ``conf/original_keys.yaml``) are mapped to
    native overrides first, one stderr line each (``map_original_keys``).

    ``choices``: the package's own closed sets of values (``{"model.stem": ("cifar", "imagenet")}``),
    checked with the shared ones before anything heavy is imported; ``check``: the package's own
    rules across keys (raise ``UserError``), run on the same composed config(s) just after.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, notes = map_original_keys(argv, load_original_keys(conf_package))
    except UserError as e:
        fail(str(e))
    for note in notes:  # quiet unless the original's forms were used
        print(note, file=sys.stderr)
    argv = translate_flags(argv)
    inspecting = any(a.split("=")[0] in _INSPECT for a in argv)
    if not inspecting:
        try:
            multirun = any(a in ("-m", "--multirun") for a in argv)
            check_launched_output_dir([a for a in argv if not a.startswith("-")])
            for overrides in checked_override_sets([a for a in argv if not a.startswith("-")], multirun):
                composed = compose_config(conf_package, overrides, config_name)
                check_config(composed, choices)
                if check is not None:
                    check(composed)
        except UserError as e:
            fail(str(e))
        except Exception as e:  # Hydra's parse/composition errors
            fail(one_line(e))

    def job(cfg: DictConfig):
        with open_dict(cfg):
            cfg.output_dir = HydraConfig.get().runtime.output_dir
            cfg.package = conf_package  # the run folder records which package built it (cifar-eval reads it)
        return run_job(task, cfg)

    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(resources.files(conf_package)), config_name=config_name, version_base="1.3")(job)()
