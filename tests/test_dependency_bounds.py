"""pyproject.toml's dependencies are true: every third-party import is declared, and the lower bounds work.

The second test installs each ``>=`` bound of the core dependencies and the ``pot`` extra exactly
(``name==bound``) into a venv that sees this environment's torch and torchvision (several GB each, so their
bounds stay unchecked here and are argued in pyproject.toml), then runs a part of the suite on it that uses
every pinned package: timm (its Mixup, optimizers, train.py loop), Accelerate (a real mixkit-train run),
POT and numba (the solvers), matplotlib (the plots), Pillow (the image folders), PyYAML and safetensors (run
directories). The venv is cached by the pins, so a second run costs the tests only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# Bounds that are not installed by the check (argued beside each pin in pyproject.toml).
NOT_INSTALLED = {"torch", "torchvision"}
# Imported modules that a declared dependency brings (torch's CUDA wheels require triton; mixkit imports it
# only on CUDA, through torch).
PROVIDED_BY = {"triton": "torch"}
# Modules that several interchangeable distributions install: OpenCV's four builds all provide `cv2`, and
# which one is installed depends on the extras chosen (ffcv's plain build here, the contrib build for SaliencyMix).
INTERCHANGEABLE = {"cv2": {"opencv-python", "opencv-python-headless", "opencv-contrib-python",
                           "opencv-contrib-python-headless"}}
# What the lower-bound environment runs: together these import every pinned package.
SUBSET = ["tests/test_timm_compat.py", "tests/test_mix_input.py", "tests/test_mix_contract.py",
          "tests/test_train_run.py", "tests/test_eval_cli.py", "tests/test_ot_contract.py",
          "tests/test_ot_numba.py", "tests/test_viz.py", "tests/test_rundir.py", "tests/test_mix_comixup.py",
          "tests/test_eval_localization.py"]


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _requirements() -> dict[str, set[str]]:
    """'core' and each extra but 'dev' (the tests' own) -> distribution names."""
    project = _project()
    groups = {"core": {_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "dev":
            groups[extra] = {_name(r) for r in requirements}
    return groups


# Modules that only the loader backends of an extra import (mixkit.data's registry loads them on first use).
BACKEND_FILES = {"mixkit/data/ffcv_loader.py": "ffcv", "mixkit/data/ffcv_ops.py": "ffcv",
                 "mixkit/data/dali_loader.py": "dali"}


def _third_party_imports() -> list[tuple[str, str, bool]]:
    """(top-level module, mixkit file, imported at module level) for every module outside the standard library.

    Parsed in a fresh interpreter: CPython 3.11 before 3.11.8 keeps a corrupted AST recursion counter after an
    earlier test's failed AST conversion (CPython issue 106905), and ``ast.parse`` then raises SystemError.
    """
    out = subprocess.run([sys.executable, __file__, "--list-imports"], capture_output=True, text=True, check=True)
    return [tuple(row) for row in json.loads(out.stdout)]


def _parse_imports() -> list[tuple[str, str, bool]]:
    found = []
    for path in sorted((ROOT / "mixkit").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        lazy = {id(node) for f in functions for node in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "mixkit" and top not in sys.stdlib_module_names:
                    found.append((top, str(path.relative_to(ROOT)), id(node) not in lazy))
    return found


@functools.cache
def _installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    names = {d.lower().replace("_", "-") for d in _installed_distributions().get(module, [])}
    if module == "nvidia":  # a namespace package: DALI ships as nvidia-dali-cuda<N>
        names = {n for n in names if n.startswith("nvidia-dali")}
    return names


def test_every_third_party_import_is_declared():
    """A module imported when its file loads is a core dependency (or its backend's extra); one imported inside a
    function is core or an extra. The dev extra (the tests' own) never counts."""
    groups = _requirements()
    everything = set().union(*groups.values())
    wrong = []
    for module, file, eager in _third_party_imports():
        if PROVIDED_BY.get(module) in groups["core"]:
            continue
        names = _distributions(module) | INTERCHANGEABLE.get(module, set())
        allowed = (groups["core"] | groups.get(BACKEND_FILES.get(file, "core"), set())) if eager else everything
        if not names & allowed:
            wrong.append(f"{file}: {module} ({', '.join(sorted(names)) or 'not installed'}, "
                         f"{'at module level' if eager else 'in a function'})")
    assert not wrong, "imports that pyproject.toml does not declare where they are needed:\n" + "\n".join(wrong)


def _lower_bound_pins() -> list[str]:
    project = _project()
    pins = []
    for requirement in list(project["dependencies"]) + list(project["optional-dependencies"]["pot"]):
        match = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
        assert match, f"{requirement!r}: every core dependency needs a >= lower bound"
        if _name(requirement) not in NOT_INSTALLED:
            pins.append(f"{_name(requirement)}=={match.group(1)}")
    return sorted(pins)


def _lower_bound_python(pins: list[str]) -> Path:
    """A cached venv holding the pins, with this environment's packages (torch) visible behind them."""
    parent = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256("\n".join([sys.version, parent, *pins]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixkit" / "dependency-bounds"
    venv = cache / key
    python = venv / "bin" / "python"
    if python.exists():
        return python
    building = cache / f"{key}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    site = Path(subprocess.run([str(building / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # After the venv's own site-packages: the pins shadow this environment's newer releases.
    (site / "zz_parent_environment.pth").write_text(parent + "\n")
    proc = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           *pins], capture_output=True, text=True)
    assert proc.returncode == 0, f"installing the lower bounds {pins} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    try:
        building.rename(venv)  # atomic: a half-built venv is never taken for a cached one
    except OSError:  # another process finished first
        shutil.rmtree(building, ignore_errors=True)
    return python


def _same_version(bound: str, installed: str) -> bool:
    """'0.30' is met by '0.30.0' (pip's == pads with zeros)."""
    def parts(v: str) -> list[int]:
        return ([int(x) for x in re.findall(r"\d+", v)] + [0] * 4)[:4]
    return parts(bound) == parts(installed)


@pytest.mark.slow
def test_lower_bounds_install_and_pass_a_part_of_the_suite():
    pins = _lower_bound_pins()
    python = _lower_bound_python(pins)
    names = [p.split("==")[0] for p in pins]
    got = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys; "
                                             "print(' '.join(m.version(p) for p in sys.argv[1:]))", *names],
                         check=True, capture_output=True, text=True).stdout.split()
    wrong = [(pin, version) for pin, version in zip(pins, got, strict=True)
             if not _same_version(pin.split("==")[1], version)]
    assert not wrong, f"the lower-bound venv does not hold the pins: {wrong}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"the suite on the lower bounds {pins} failed:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


if __name__ == "__main__" and sys.argv[1:] == ["--list-imports"]:
    print(json.dumps(_parse_imports()))
