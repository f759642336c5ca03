"""Run mypy --strict over the package under its installed names.

The folders ``actors/`` and ``transport/`` install as ``orchestra.actors`` and
``orchestra.transport`` (setuptools package-dir), which mypy cannot see from the source tree:
this lays out ``.typecheck/orchestra/`` with links to them and checks that. ``just lint`` runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"actors": "actors", "transport": "transport"}


def main() -> int:
    tree = ROOT / ".typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "orchestra"
    package.mkdir(parents=True)
    face = ROOT / "orchestra"
    for name in ("__init__.py", "__main__.py", "client.py", "console.py", "testing.py"):
        if (face / name).exists():  # the package's own face, when it has one
            (package / name).symlink_to(face / name)
    if not (package / "__init__.py").exists():
        (package / "__init__.py").write_text("")
    for name, folder in PACKAGES.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    return subprocess.call(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "-p", "orchestra"],
        cwd=tree,
    )


if __name__ == "__main__":
    sys.exit(main())
