"""A bounded map that forgets its least recently used entries first. Pure: no I/O, no clock.

Every cache of the server (stored records, answers, verified tokens, rate-limit buckets,
per-generation tables) is one of these, so that each bound is stated once: by count, and by
bytes when the values have a size worth counting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``max_items`` entries and, with ``size``, at most ``max_bytes`` of them in all.

    :meth:`get` and :meth:`put` make an entry the most recently used; :meth:`peek` does not.
    Values are never None (a miss reads as None). A put past a bound drops the least recently used entries until both bounds hold again (a
    single value larger than ``max_bytes`` is not kept). Not thread-safe: one owner writes it.
    """

    __slots__ = ("max_items", "max_bytes", "_size", "_data", "bytes")

    def __init__(
        self,
        max_items: int,
        *,
        max_bytes: int | None = None,
        size: Callable[[V], int] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        #: the summed size of the values (0 without ``size``)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._data)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._data.items())

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value, without making it recently used."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        old = self._data.pop(key, None)
        if self._size is not None:
            if old is not None:
                self.bytes -= self._size(old)
            self.bytes += self._size(value)
        self._data[key] = value
        self._shrink()

    def pop(self, key: K) -> V | None:
        value = self._data.pop(key, None)
        if value is not None and self._size is not None:
            self.bytes -= self._size(value)
        return value

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def _shrink(self) -> None:
        data = self._data
        while len(data) > self.max_items or (
            self.max_bytes is not None and self.bytes > self.max_bytes and data
        ):
            _, value = data.popitem(last=False)
            if self._size is not None:
                self.bytes -= self._size(value)
