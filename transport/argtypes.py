"""Value types of the ``orchestra`` commands and their settings: each turns one text (a flag's,
an environment variable's or a config file's value) into a value, or refuses it with one line
(``argparse.ArgumentTypeError``) that says what would be accepted."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "boolean", "existing_dir", "existing_file", "identifier", "int_in", "number_in", "one_of",
    "project_entry",
]


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


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """A whole number from ``lo`` to ``hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not an integer from {lo} to {hi}")
        return value
    parse.__name__ = "integer"
    return parse


def one_of(*choices: str) -> Callable[[str], str]:
    """One of ``choices``, in any case; the value is the choice as written here."""
    by_folded = {c.casefold(): c for c in choices}

    def parse(text: str) -> str:
        try:
            return by_folded[text.casefold()]
        except KeyError:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}") from None
    parse.__name__ = "choice"
    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def boolean(text: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``), in any case."""
    folded = text.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def existing_dir(text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return path


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing file")
    return path


def identifier(text: str) -> str:
    """An id as the protocol has them (``validate_id``)."""
    from ..actors.errors import InvalidRequest
    from ..actors.records import validate_id

    try:
        return validate_id("value", text)
    except InvalidRequest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an id (1 to 256 characters, no control characters, not only whitespace)"
        ) from None


def project_entry(text: str) -> tuple[str, Path]:
    """``ID=PATH``: a project and the existing directory of its code base."""
    pid, sep, path = text.partition("=")
    if not sep or not pid or not path:
        raise argparse.ArgumentTypeError(f"takes ID=PATH, got {text!r}")
    return identifier(pid), existing_dir(path)
