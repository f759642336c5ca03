"""The server's Prometheus metrics, in one registry per server (two servers in one process
never share a series).

Conventions (https://prometheus.io/docs/practices/naming/): what only grows is a counter named
``*_total``; what goes up and down is a gauge; no precomputed ratios (a rate or a hit ratio is
the query's business); no ``*_created`` series. Long-poll waits, which last up to 300 s, have
their own histogram so that they do not distort the request latencies.

Figures the actors own (restarts, crashes, stored results, cache hits) are read when
``/metrics`` is scraped, through :class:`Snapshot`: the actors stay their only writers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE", "Metrics", "Snapshot", "WAIT_OPS"]

#: The content type of ``GET /metrics`` (the text format ``generate_latest`` writes).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
#: Operations whose latency is a long-poll wait (``orchestra_wait_seconds``).
WAIT_OPS = frozenset({"event.wait"})

_REQUEST_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30)
_WAIT_BUCKETS: tuple[float, ...] = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)


@dataclass
class Snapshot:
    """The figures read from the actors at a scrape (see module doc)."""

    counters: dict[str, tuple[str, float]] = field(default_factory=dict)  # name: (help, value)
    gauges: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: (supervisor, child) -> restarts since start
    child_restarts: dict[tuple[str, str], int] = field(default_factory=dict)


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        for name, (text, value) in sorted(snap.counters.items()):
            yield CounterMetricFamily(name, text, value=value)
        for name, (text, value) in sorted(snap.gauges.items()):
            yield GaugeMetricFamily(name, text, value=value)
        children = CounterMetricFamily(
            "orchestra_actor_child_restarts", "Restarts of each supervised actor since start",
            labels=["supervisor", "child"],
        )
        for (supervisor, child), restarts in sorted(snap.child_restarts.items()):
            children.add_metric([supervisor, child], restarts)
        yield children


def _bounds(op: str) -> tuple[float, ...]:
    return _WAIT_BUCKETS if op in WAIT_OPS else _REQUEST_BUCKETS


class _Requests(Collector):
    """Requests by operation and status, and their latencies by operation, kept as plain
    numbers by the one thread that serves requests (the event loop's) and turned into
    families at a scrape: a request costs a dict lookup and a ``bisect`` instead of the
    library's per-child locks and its Python loop over the buckets. The same series as a
    ``Counter`` and two ``Histogram`` s with these names, labels and buckets."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        #: op -> (count per bucket, the last one past every bound, then the sum)
        self.latencies: dict[str, list[float]] = {}

    def observe(self, op: str, status: str, seconds: float) -> None:
        key = (op, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        slots = self.latencies.get(op)
        if slots is None:
            slots = self.latencies[op] = [0.0] * (len(_bounds(op)) + 2)
        slots[bisect.bisect_left(_bounds(op), seconds)] += 1  # le: a value equal to a bound is in it
        slots[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("orchestra_requests", "Requests served, by operation and status",
                                       labels=["op", "status"])
        for (op, status), count in self.counts.items():
            requests.add_metric([op, status], count)
        yield requests
        for name, text, bounds, waits in (
            ("orchestra_request_seconds", "Request latency by operation (long-poll waits excluded)",
             _REQUEST_BUCKETS, False),
            ("orchestra_wait_seconds", "How long long-poll waits (event.wait) lasted", _WAIT_BUCKETS, True),
        ):
            family = HistogramMetricFamily(name, text, labels=["op"])
            for op, slots in self.latencies.items():
                if (op in WAIT_OPS) != waits:
                    continue
                cumulative, buckets = 0.0, []
                for bound, n in zip((*bounds, float("inf")), slots[:-1], strict=True):
                    cumulative += n
                    buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
                family.add_metric([op], buckets, slots[-1])
            yield family


class Metrics:
    """The instruments of one server; :meth:`expose` is the body of ``GET /metrics``."""

    def __init__(self, version: str) -> None:
        # process-wide switch of the library (it has no per-registry one); idempotent
        prom.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = prom.CollectorRegistry()
        prom.ProcessCollector(registry=self.registry)
        prom.PlatformCollector(registry=self.registry)
        prom.GCCollector(registry=self.registry)
        build = prom.Gauge("orchestra_build_info", "The running version (always 1)", ["version"],
                           registry=self.registry)
        build.labels(version).set(1)
        self._requests = _Requests()
        self.registry.register(self._requests)
        self.websocket_closes = prom.Counter(
            "orchestra_websocket_closes", "WebSocket connections closed, by close code",
            ["code"], registry=self.registry,
        )
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)

    def observe_request(self, op: str, status: str, seconds: float) -> None:
        """Count one request of ``op`` and its latency (a wait's in its own histogram); called
        by the event loop's thread only, as :meth:`expose` is."""
        self._requests.observe(op, status, seconds)

    def websocket_closed(self, code: int | None) -> None:
        """Count a WebSocket connection's end (``code`` None: it ended without a close frame)."""
        self.websocket_closes.labels(str(code) if code is not None else "none").inc()

    def expose(self, snapshot: Snapshot) -> bytes:
        self._snapshot.snapshot = snapshot
        return prom.generate_latest(self.registry)
