"""OpenTelemetry tracing of one application: its own tracer provider (built from the settings;
the process-wide provider is never set, so two apps in one process trace apart), the server
middleware, the trace config that sends W3C `traceparent` to elements and the Admin Module, and
the pipeline's `Tracer`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import cast

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.aiohttp_server import (
    AioHttpServerInstrumentor,
    create_aiohttp_middleware,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from tusingest.ports import Attribute, Span
from tusingest.settings.tracing import TracingSettings

log = logging.getLogger(__name__)

_SCOPE = "tusingest"


class Tracing:
    """The tracing of one application: spans are made from `create_app` on, and leave while
    the app runs (`exporting`)."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        """Spans go to the configured exporters in batches, or to `exporter` (tests) one by
        one as they end."""
        self._settings = settings
        self._exporter = exporter
        self.provider = TracerProvider(
            sampler=sampler(settings),
            resource=Resource.create({SERVICE_NAME: settings.service_name}),
        )
        self.tracer = OtelTracer(self.provider.get_tracer(_SCOPE))

    @contextlib.asynccontextmanager
    async def exporting(self) -> AsyncIterator[None]:
        """Export from now on (a batch exporter runs a thread: only an app that runs starts
        one); at the end, send what is buffered and stop."""
        settings = self._settings
        if self._exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(self._exporter))
            destinations = [type(self._exporter).__name__]
        else:
            for name in settings.exporters:
                self.provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
            where = settings.otlp_endpoint.rpartition("@")[2]  # never log a password
            destinations = [f"otlp {where}" if e == "otlp" else e for e in settings.exporters]
        log.info("tracing as %s to %s, sampler %s", settings.service_name,
                 ", ".join(destinations) or "nowhere",
                 self.provider.sampler.get_description())  # fmt: skip
        try:
            yield
        finally:
            # Flushing may wait for the collector: not on the event loop.
            await asyncio.to_thread(self.provider.shutdown)

    def middleware(self) -> Middleware:
        """A server span per request (opentelemetry-instrumentation-aiohttp-server), continuing
        the caller's trace from its `traceparent`."""
        instrumentor = AioHttpServerInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            # The middleware reads module state (excluded URLs, its meters) that only
            # instrument() sets up; instrument() also swaps aiohttp's Application class for
            # every app the process makes later, which is put back at once: only the apps given
            # this middleware are traced, each with its own provider.
            application = web.Application
            with warnings.catch_warnings():  # aiohttp's about subclassing Application
                warnings.simplefilter("ignore", DeprecationWarning)
                instrumentor.instrument(tracer_provider=self.provider)
            web.Application = application  # type: ignore[misc]
        return cast(Middleware, create_aiohttp_middleware(tracer_provider=self.provider))

    def client_config(self) -> aiohttp.TraceConfig:
        """For the client session of elements and the Admin Module: a client span per call
        made within a trace, and its `traceparent` header."""
        return create_trace_config(tracer_provider=self.provider)


def sampler(settings: TracingSettings) -> Sampler:
    """OTEL_TRACES_SAMPLER (with its ratio), not recording calls made outside any trace."""
    roots: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(settings.sampler_ratio),
    }
    root = settings.sampler.removeprefix("parentbased_")
    parent_based = root != settings.sampler
    return InTraceCalls(ParentBased(roots[root]) if parent_based else roots[root])


class InTraceCalls(Sampler):
    """Drops client spans that would start a trace of their own: the capacity monitor's polls,
    registry reloads and token refreshes run every few seconds and belong to no request or
    operation. Everything else is up to `inner`."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"InTraceCalls{{{self._inner.get_description()}}}"


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=settings.service_name)
    # Headers (credentials), timeout, compression and certificates: the exporter's own
    # OTEL_EXPORTER_OTLP_* variables.
    return OTLPSpanExporter(endpoint=settings.otlp_endpoint)


class OtelTracer:
    """Implements `Tracer` on an OpenTelemetry tracer."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Attribute] | None = None) -> Iterator[Span]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield _OtelSpan(span)


class _OtelSpan:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: Attribute) -> None:
        self._span.set_attribute(key, value)
