"""Project type and declared dependencies from the manifests present. Pure reads of files."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["project_metadata"]

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def project_metadata(root: Path, files: list[str]) -> dict[str, Any]:
    types: list[str] = []
    deps: dict[str, list[str]] = {}
    top = {f for f in files if "/" not in f}
    if "pyproject.toml" in top:
        types.append("python")
        try:
            data = tomllib.loads(_read(root / "pyproject.toml") or "")
            names = [m.group(1) for d in data.get("project", {}).get("dependencies", [])
                     if isinstance(d, str) and (m := _REQ.match(d)) is not None]
            poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
            names += [n for n in poetry if n != "python"]
            deps["pyproject.toml"] = names
        except tomllib.TOMLDecodeError:
            deps["pyproject.toml"] = []
    for req in sorted(f for f in top if f.startswith("requirements") and f.endswith(".txt")):
        if "python" not in types:
            types.append("python")
        names = []
        for line in (_read(root / req) or "").splitlines():
            if line.strip().startswith(("#", "-")):
                continue
            m = _REQ.match(line)
            if m:
                names.append(m.group(1))
        deps[req] = names
    if "package.json" in top:
        types.append("node")
        try:
            data = json.loads(_read(root / "package.json") or "{}")
            deps["package.json"] = sorted({**data.get("dependencies", {}), **data.get("devDependencies", {})})
        except json.JSONDecodeError:
            deps["package.json"] = []
    if "Cargo.toml" in top:
        types.append("rust")
        try:
            data = tomllib.loads(_read(root / "Cargo.toml") or "")
            deps["Cargo.toml"] = sorted({**data.get("dependencies", {}), **data.get("dev-dependencies", {})})
        except tomllib.TOMLDecodeError:
            deps["Cargo.toml"] = []
    if "go.mod" in top:
        types.append("go")
        names = []
        in_block = False
        for line in (_read(root / "go.mod") or "").splitlines():
            s = line.strip()
            if s.startswith("require ("):
                in_block = True
            elif in_block and s == ")":
                in_block = False
            elif in_block and s and not s.startswith("//"):
                names.append(s.split()[0])
            elif s.startswith("require ") and "(" not in s:
                names.append(s.split()[1])
        deps["go.mod"] = names
    all_deps = sorted({d for names in deps.values() for d in names})
    return {
        "project_type": types[0] if types else "unknown",
        "project_types": types,
        "dependencies": all_deps,
        "manifests": sorted(deps),
    }
