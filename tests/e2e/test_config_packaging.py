"""The distribution holds every module: pyproject.toml lists every package of the tree, and a
wheel built from it (not an editable install) carries every source file, py.typed and LICENSE."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tree_packages() -> dict[str, Path]:
    """Every package of the source tree under its installed name."""
    found: dict[str, Path] = {}
    for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base).parts
            found[".".join((name, *rel))] = init.parent
    return found


def test_every_package_of_the_tree_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == set(_tree_packages())


def test_the_package_is_typed_and_licensed():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    assert (ROOT / "orchestra" / "py.typed").is_file()
    assert "Typing :: Typed" in project["classifiers"]


def test_a_wheel_carries_every_module(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("orchestra_sidecar-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in _tree_packages().items():
        for module in folder.glob("*.py"):
            assert f"{package.replace('.', '/')}/{module.name}" in names
    assert "orchestra/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("actors/", "transport/", "tests/")) for n in names)  # only `orchestra`
