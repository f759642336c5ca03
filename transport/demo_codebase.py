"""The example code base that `orchestra demo` gives its fleet to work on.

A small but real Python project: an inventory library in several modules, a command line, and
unittest tests that pass (so the fleet's test runs mean something), with a few things a
reviewer, a security auditor and a documentation expert can find: TODO markers, a function
without a docstring, a hard-coded credential and an ``eval``. Deterministic: the same files
every time, so two runs of the demo do the same work.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["MODULES", "write_codebase"]

#: module -> source; each has a test module under tests/
MODULES: dict[str, str] = {
    "models": '''"""Items and stock levels."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One kind of thing kept in stock."""

    sku: str
    name: str
    unit_price_cents: int

    def __post_init__(self) -> None:
        if not self.sku or self.unit_price_cents < 0:
            raise ValueError("an item needs a sku and a price of at least 0")


@dataclass
class StockLevel:
    """How many of an item are on hand, and when to reorder."""

    item: Item
    on_hand: int = 0
    reorder_at: int = 5

    def needs_reorder(self) -> bool:
        return self.on_hand <= self.reorder_at

    def take(self, count: int) -> None:
        # TODO: record who took the items
        if count > self.on_hand:
            raise ValueError(f"only {self.on_hand} of {self.item.sku} on hand")
        self.on_hand -= count
''',
    "pricing": '''"""Prices, discounts and tax."""

from .models import Item

TAX_RATE = 0.2


def price(item: Item, count: int, discount_percent: int = 0) -> int:
    """The price in cents of ``count`` items after a discount, before tax."""
    if not 0 <= discount_percent <= 100:
        raise ValueError("a discount is a percentage from 0 to 100")
    gross = item.unit_price_cents * count
    return gross - gross * discount_percent // 100


def with_tax(cents: int) -> int:
    return round(cents * (1 + TAX_RATE))


def bulk_discount(count: int) -> int:
    """The discount earned by buying ``count`` at once."""
    # FIXME: the tiers should come from configuration
    if count >= 100:
        return 15
    if count >= 20:
        return 5
    return 0
''',
    "storage": '''"""Keeping the stock in a JSON file."""

import json
from pathlib import Path

from .models import Item, StockLevel

# a credential left in the code: the security auditor should flag it
BACKUP_PASSWORD = "hunter2-backup"


def save(levels: list[StockLevel], path: Path) -> None:
    """Write the stock levels to ``path``."""
    rows = [
        {"sku": s.item.sku, "name": s.item.name, "price": s.item.unit_price_cents,
         "on_hand": s.on_hand, "reorder_at": s.reorder_at}
        for s in levels
    ]
    path.write_text(json.dumps(rows, indent=2))


def load(path: Path) -> list[StockLevel]:
    """Read the stock levels written by :func:`save`."""
    rows = json.loads(path.read_text())
    return [StockLevel(Item(r["sku"], r["name"], r["price"]), r["on_hand"], r["reorder_at"]) for r in rows]
''',
    "reports": '''"""Reports over the stock."""

from .models import StockLevel
from .pricing import price


def reorder_list(levels: list[StockLevel]) -> list[str]:
    """The skus to reorder, in order."""
    return sorted(s.item.sku for s in levels if s.needs_reorder())


def stock_value(levels: list[StockLevel]) -> int:
    return sum(price(s.item, s.on_hand) for s in levels)


def summary(levels: list[StockLevel]) -> str:
    """One line per item, then the total value."""
    lines = [f"{s.item.sku:<8} {s.item.name:<20} {s.on_hand:>5}" for s in levels]
    lines.append(f"total value: {stock_value(levels) / 100:.2f}")
    return "\\n".join(lines)
''',
    "cli": '''"""A command line over the stock file."""

import sys
from pathlib import Path

from .reports import reorder_list, summary
from .storage import load


def main(argv: list[str]) -> int:
    """``inventory FILE [summary|reorder|calc EXPR]``."""
    if len(argv) < 2:
        print("usage: inventory FILE [summary|reorder|calc EXPR]", file=sys.stderr)
        return 2
    levels = load(Path(argv[1]))
    command = argv[2] if len(argv) > 2 else "summary"
    if command == "reorder":
        print("\\n".join(reorder_list(levels)))
    elif command == "calc":
        # TODO: a safe expression parser; eval is what the security auditor should flag
        print(eval(argv[3]))
    else:
        print(summary(levels))
    return 0
''',
}

TESTS: dict[str, str] = {
    "models": '''import unittest

from inventory.models import Item, StockLevel


class ModelsTest(unittest.TestCase):
    def test_reorder(self):
        level = StockLevel(Item("A1", "bolt", 10), on_hand=3)
        self.assertTrue(level.needs_reorder())

    def test_take(self):
        level = StockLevel(Item("A1", "bolt", 10), on_hand=10)
        level.take(4)
        self.assertEqual(level.on_hand, 6)
        with self.assertRaises(ValueError):
            level.take(7)
''',
    "pricing": '''import unittest

from inventory.models import Item
from inventory.pricing import bulk_discount, price, with_tax


class PricingTest(unittest.TestCase):
    def test_price_and_discount(self):
        self.assertEqual(price(Item("B2", "nut", 250), 4, 10), 900)

    def test_tax(self):
        self.assertEqual(with_tax(1000), 1200)

    def test_bulk(self):
        self.assertEqual([bulk_discount(n) for n in (1, 20, 100)], [0, 5, 15])
''',
    "storage": '''import tempfile
import unittest
from pathlib import Path

from inventory.models import Item, StockLevel
from inventory.storage import load, save


class StorageTest(unittest.TestCase):
    def test_round_trip(self):
        levels = [StockLevel(Item("C3", "washer", 5), 12, 4)]
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "stock.json"
            save(levels, path)
            self.assertEqual(load(path), levels)
''',
    "reports": '''import unittest

from inventory.models import Item, StockLevel
from inventory.reports import reorder_list, stock_value, summary


class ReportsTest(unittest.TestCase):
    def setUp(self):
        self.levels = [StockLevel(Item("Z9", "gear", 100), 2), StockLevel(Item("A1", "bolt", 10), 50)]

    def test_reorder_list(self):
        self.assertEqual(reorder_list(self.levels), ["Z9"])

    def test_value(self):
        self.assertEqual(stock_value(self.levels), 700)
        self.assertIn("total value: 7.00", summary(self.levels))
''',
    "cli": '''import io
import tempfile
import unittest
from contextlib import redirect_stdout
from pathlib import Path

from inventory.cli import main
from inventory.models import Item, StockLevel
from inventory.storage import save


class CliTest(unittest.TestCase):
    def test_reorder(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "stock.json"
            save([StockLevel(Item("Z9", "gear", 100), 2)], path)
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertEqual(main(["inventory", str(path), "reorder"]), 0)
            self.assertEqual(out.getvalue().strip(), "Z9")
''',
}

README = """# inventory

A small stock-keeping library: items and stock levels (`models`), prices and tax (`pricing`),
a JSON file store (`storage`), reports (`reports`) and a command line (`cli`).

Run the tests with `python -m unittest discover -s tests -t .`.
"""

PYPROJECT = """[project]
name = "inventory"
version = "0.3.0"
requires-python = ">=3.9"
dependencies = []
"""


def write_codebase(root: Path, *, git: bool = True) -> list[str]:
    """Write the example project under ``root`` (a git repository with one commit when
    ``git``); returns the module names, one work item each."""
    package = root / "inventory"
    (root / "tests").mkdir(parents=True, exist_ok=True)
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Stock keeping."""\n')
    (root / "tests" / "__init__.py").write_text("")
    for name, source in MODULES.items():
        (package / f"{name}.py").write_text(source)
        (root / "tests" / f"test_{name}.py").write_text(TESTS[name])
    (root / "README.md").write_text(README)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".gitignore").write_text("__pycache__/\n")
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "orchestra demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
               "GIT_COMMITTER_NAME": "orchestra demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}
        run = {"check": True, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], **run)  # type: ignore[call-overload]
        subprocess.run(["git", "-C", str(root), "add", "-A"], **run)  # type: ignore[call-overload]
        subprocess.run(["git", "-C", str(root), "commit", "-qm", "inventory 0.3.0"], **run)  # type: ignore[call-overload]
    return list(MODULES)
