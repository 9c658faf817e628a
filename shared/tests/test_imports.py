"""Production code imports without pytest and without ``cifar_shared.testing``: only that package
(the tests' own) may need pytest, which is no dependency of the packages (``cifar-shared[test]``
adds it)."""

import importlib.util
import subprocess
import sys

from cifar_shared.registry import installed_packages

# In a fresh interpreter: make pytest unimportable, then import every module outside `testing`.
IMPORT_ALL = r"""
import importlib, pkgutil, sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: production code must not need pytest)", name=name)
        return None

sys.meta_path.insert(0, NoPytest())
failed = []

def import_tree(name):  # pkgutil.walk_packages would import testing/ itself to look inside it
    try:
        module = importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
        return
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        if info.name != "cifar_shared.testing" and not info.name.endswith("__main__"):
            import_tree(info.name)

for top in sys.argv[1:]:
    import_tree(top)
    print(top, "ok")
assert "pytest" not in sys.modules
failed += [f"{m} was imported by production code" for m in sys.modules if m.startswith("cifar_shared.testing")]
print("\n".join(failed) or "all imported")
sys.exit(1 if failed else 0)
"""


def test_every_production_module_imports_without_pytest():
    tops = ["cifar_shared", *(conf.split(".")[0] for conf in installed_packages().values())]
    tops = [t for t in tops if importlib.util.find_spec(t) is not None]
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL, *tops], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[:len(tops)] == [f"{t} ok" for t in tops]
