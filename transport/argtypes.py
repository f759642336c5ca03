"""Argument types shared by the ``orchestra`` commands: a bad value is one line, exit 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["number_in"]


def number_in(lo: float, hi: float, unit: str = "") -> Callable[[str], float]:
    """A finite number from ``lo`` to ``hi`` (``unit`` names it in the refusal)."""
    what = f"a number of {unit}" if unit else "a number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} from {lo:g} to {hi:g}")
        return value
    parse.__name__ = unit or "number"
    return parse
