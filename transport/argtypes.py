"""Value types of the ``orchestra`` commands and their settings: each turns one text (a flag's,
an environment variable's or a config file's value) into a value, or refuses it with one line
(``argparse.ArgumentTypeError``) that says what would be accepted."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = [
    "IntIn", "NumberIn", "OneOf", "boolean", "existing_dir", "existing_file", "host", "identifier",
    "int_in", "number_in", "one_of", "project_entry",
]


class NumberIn:
    """A finite number from ``lo`` to ``hi`` (``unit`` names it in the refusal)."""

    __slots__ = ("lo", "hi", "unit")

    def __init__(self, lo: float, hi: float, unit: str = "") -> None:
        self.lo, self.hi, self.unit = lo, hi, unit

    @property
    def accepts(self) -> str:
        what = f"a number of {self.unit}" if self.unit else "a number"
        return f"{what} from {self.lo:g} to {self.hi:g}"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.accepts}")
        return value


def number_in(lo: float, hi: float, unit: str = "") -> NumberIn:
    return NumberIn(lo, hi, unit)


class IntIn:
    """A whole number from ``lo`` to ``hi``."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    @property
    def accepts(self) -> str:
        return f"an integer from {self.lo} to {self.hi}"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.accepts}") from None
        if not self.lo <= value <= self.hi:
            raise argparse.ArgumentTypeError(f"{value} is not {self.accepts}")
        return value


def int_in(lo: int, hi: int) -> IntIn:
    return IntIn(lo, hi)


class OneOf:
    """One of ``choices``, in any case; the value is the choice as written here."""

    __slots__ = ("choices",)

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    @property
    def accepts(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def __call__(self, text: str) -> str:
        for choice in self.choices:
            if choice.casefold() == text.casefold():
                return choice
        raise argparse.ArgumentTypeError(f"{text!r} is not {self.accepts}")


def one_of(*choices: str) -> OneOf:
    return OneOf(choices)


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


def host(text: str) -> str:
    """A host name or an IP address to listen on."""
    if not text or text != text.strip() or any(c.isspace() or ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or IP address")
    return text


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
