"""OpenTelemetry spans of requests, off by default (``orchestra serve --otel``, the ``otel``
extra: ``pip install 'orchestra-sidecar[otel]'``).

Off, a request costs one call of a no-op context manager, and OpenTelemetry is never imported.
On, each HTTP request and each WebSocket op is a server span, child of the ``traceparent``
the client sent (if any), named after its operation. Where spans go (the SDK's tracer provider,
its exporters) is the operator's choice: the global provider is used, e.g. as set up by
``opentelemetry-instrument`` from the ``OTEL_*`` environment variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

from .observability import RequestScope

__all__ = ["NoTracing", "OtelTracing", "Tracing"]


class Tracing(Protocol):
    def span(self, scope: RequestScope, method: str, path: str) -> AbstractContextManager[Any]:
        """A context manager around serving the request of ``scope``."""
        ...


class NoTracing:
    """Tracing off: nothing is recorded."""

    def span(self, scope: RequestScope, method: str, path: str) -> AbstractContextManager[Any]:
        return nullcontext()


class OtelTracing:
    """Spans through the OpenTelemetry API (imported here, only when tracing is on)."""

    def __init__(self, version: str, provider: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = trace.get_tracer("orchestra", version, tracer_provider=provider)
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def span(self, scope: RequestScope, method: str, path: str) -> Iterator[Any]:
        parent = (self._propagator.extract({"traceparent": scope.trace.header()})
                  if scope.trace is not None else None)
        attributes = {"orchestra.request_id": scope.request_id, "orchestra.transport": scope.transport}
        if scope.transport == "http":
            attributes.update({"http.request.method": method, "url.path": path})
        with self._tracer.start_as_current_span(
            f"{method} {path}" if scope.transport == "http" else "ws", context=parent,
            kind=self._trace.SpanKind.SERVER, attributes=attributes,
        ) as span:
            try:
                yield span
            finally:
                # the operation is known once routed: it names the span (a path may not)
                span.update_name(scope.op or (f"{method} {path}" if scope.status != 404 else method))
                if scope.op is not None:
                    span.set_attribute("orchestra.op", scope.op)
                for key, value in (("enduser.id", scope.agent), ("orchestra.project", scope.project)):
                    if value is not None:
                        span.set_attribute(key, value)
                if scope.status is not None:
                    span.set_attribute("http.response.status_code" if scope.transport == "http"
                                       else "orchestra.status", scope.status)
                    if scope.status >= 500:
                        span.set_status(self._trace.StatusCode.ERROR)
