"""Token buckets per key. Pure: the caller passes the time; nothing blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..actors.lru import LruCache

__all__ = ["RateLimiter", "Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # the burst
    remaining: int  # whole requests left
    retry_after: float  # seconds until one request is allowed (0 if allowed)
    reset: float  # seconds until the bucket is full


class RateLimiter:
    """One bucket per key (an agent's ``sub``), each with its own rate and burst.

    At most ``max_keys`` buckets are kept; the least recently used is dropped first (a
    dropped bucket comes back full, which only ever errs towards allowing).
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: LruCache[str, list[float]] = LruCache(max_keys)  # key -> [tokens, stamp]

    def take(self, key: str, rate: float, burst: int, now: float) -> Decision:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [float(burst), now]
            self._buckets.put(key, bucket)
        else:
            bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return Decision(True, burst, int(bucket[0]), 0.0, (burst - bucket[0]) / rate)
        wait = (1.0 - bucket[0]) / rate
        return Decision(False, burst, 0, max(wait, 1e-3), (burst - bucket[0]) / rate)


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
