"""A request with no task: the files a newcomer opens first, filling the budget."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals

PROJECT = {
    "README.md": "# shop\nAn online shop.\n",
    "pyproject.toml": '[project]\nname = "shop"\ndependencies = ["httpx"]\n',
    "CONTRIBUTING.md": "Run the tests.\n",
    "shop/__init__.py": "from .cart import Cart\n",
    "shop/__main__.py": "from .cli import main\nmain()\n",
    "shop/cli.py": "from .cart import Cart\nfrom .pricing import price\n\ndef main():\n    pass\n",
    "shop/cart.py": "from .pricing import price\n\nclass Cart:\n    pass\n",
    "shop/pricing.py": "def price(item):\n    return 1\n",
    "shop/orders/refunds.py": "from shop.pricing import price\n\ndef refund():\n    pass\n",
    "shop/orders/invoices.py": "from shop.pricing import price\n\ndef invoice():\n    pass\n",
    "tests/test_cart.py": "from shop.cart import Cart\n\ndef test_cart():\n    Cart()\n",
    "docs/guide.md": "# Guide\n" + "words " * 50 + "\n",
    "assets/logo.png": "\x89PNG\x00\x00binary",
    ".env": "TOKEN=zqsecret\n",
}


def make_project(root: Path, git: bool = True) -> Path:
    for rel, text in PROJECT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
        subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(root), "commit", "-qm", "ISS-3 first"], check=True, env=env)
    return root


def answer_paths(root: Path, agent_type: str = "python-specialist", **kw) -> list[str]:
    engine = ContextEngine(root)
    engine.refresh()
    prefer = "test" if "test" in agent_type else None
    body = engine.build(kw.pop("issue", "NEW-1"), agent_type, "", 262144, kw.pop("previous", []),
                        Signals(prefer_kind=prefer))
    return [f["path"] for f in body["context"]["relevant_files"] if f["content"]]


@pytest.mark.parametrize("git", [True, False])
def test_no_task_opens_readme_manifests_entry_points_then_main_modules(tmp_path, git):
    paths = answer_paths(make_project(tmp_path, git))
    assert paths[:2] == ["README.md", "pyproject.toml"]
    first_entries = paths[2:5]
    assert "shop/__main__.py" in first_entries and "shop/__init__.py" in first_entries
    assert paths.index("CONTRIBUTING.md") < paths.index("shop/pricing.py")
    # the module most others import comes before the ones nobody imports
    assert paths.index("shop/pricing.py") < paths.index("shop/orders/refunds.py")
    # the budget is filled: every text file is there, the binary and the secret are not
    assert set(paths) == set(PROJECT) - {"assets/logo.png", ".env"}


def test_a_root_holding_the_repository_one_level_down(tmp_path):
    make_project(tmp_path / "shop-repo")
    (tmp_path / "notes.txt").write_text("my notes\n")
    paths = answer_paths(tmp_path)
    assert paths[:2] == ["shop-repo/README.md", "shop-repo/pyproject.toml"]
    assert "shop-repo/shop/__main__.py" in paths[2:5]


def test_files_the_issue_already_names_come_first(tmp_path):
    root = make_project(tmp_path)
    previous = [{"id": "r1", "agent_id": "a", "result": {"status": "ok", "touched": ["shop/orders/refunds.py"]}}]
    assert answer_paths(root, previous=previous)[0] == "shop/orders/refunds.py"
    assert answer_paths(root, issue="ISS-3")[0] != "README.md"  # the commit naming ISS-3 names files


def test_a_test_engineer_gets_the_tests_before_the_modules(tmp_path):
    paths = answer_paths(make_project(tmp_path), agent_type="test-engineer")
    assert paths.index("tests/test_cart.py") < paths.index("shop/pricing.py")
