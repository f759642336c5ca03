"""An agent type's preferences help only where they fit the code base."""

from __future__ import annotations

from pathlib import Path

from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import Signals, profile_fit, rank

from tests.actors.conftest import write_files

PYTHON_SPECIALIST = ("**/*.py", "pyproject.toml", "requirements*.txt", "setup.cfg")


def write(root: Path, files: dict[str, str]) -> ProjectIndex:
    index = ProjectIndex(write_files(root, files))
    index.refresh()
    return index


def go_project_with_a_python_script(root: Path) -> ProjectIndex:
    files = {f"server/handler{i}.go": f"package server\n\nfunc Handle{i}() {{ retry(request) }}\n" for i in range(12)}
    files.update({f"server/util{i}.go": f"package server\n\nfunc Util{i}() {{ backoff() }}\n" for i in range(12)})
    files["server/retry.go"] = "package server\n\n// retry the request with backoff\nfunc retry() { backoff(); backoff() }\n"
    files["scripts/release.py"] = "# upload release archive; retry failed upload of release archive\n"
    return write(root, files)


def test_a_language_glob_has_no_weight_where_the_language_is_barely_there(tmp_path):
    index = go_project_with_a_python_script(tmp_path)
    assert profile_fit(index, PYTHON_SPECIALIST) == {}
    task = "retry the request with backoff"
    neutral = [p for _, p, _ in rank(index, Signals(task=task))]
    specialist = [p for _, p, _ in rank(index, Signals(task=task, globs=PYTHON_SPECIALIST))]
    assert specialist == neutral and neutral[0] == "server/retry.go"
    assert neutral.index("scripts/release.py") > 10  # matched one word, among many better


def test_a_language_glob_scales_where_the_language_is_the_code_base(tmp_path):
    files = {f"pkg/m{i}.py": f"def f{i}():\n    pass\n" for i in range(9)}
    files["main.go"] = "package main\n"
    index = write(tmp_path, files)
    fit = profile_fit(index, ("**/*.py",))
    assert set(fit) == {f"pkg/m{i}.py" for i in range(9)}
    factor, addend = fit["pkg/m0.py"]
    assert 1.0 < factor <= 1.3 and addend == 0.0  # 9 of 10 sources: fit 0.8
    # a glob naming a place applies fully, however small the place
    assert profile_fit(index, ("main.go",)) == {"main.go": (1.3, 0.5)}
