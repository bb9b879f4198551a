"""Settings of OpenTelemetry tracing: the OPENTELEMETRY_ENABLED switch and the standard `OTEL_*`
variables the ingester reads itself (the OTLP exporter reads its headers, timeout, compression
and certificates, and the resource its OTEL_RESOURCE_ATTRIBUTES, from the environment)."""

from __future__ import annotations

from dataclasses import dataclass

from tusingest.errors import ConfigError
from tusingest.settings.env import Env

EXPORTERS = ("otlp", "console", "none")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_DEFAULT_OTLP = "http://localhost:4318"
_PROTOCOL = "http/protobuf"  # the one OTLP exporter installed


@dataclass(frozen=True)
class TracingSettings:
    """Off unless OPENTELEMETRY_ENABLED is on (and OTEL_SDK_DISABLED is not)."""

    enabled: bool = False  # OPENTELEMETRY_ENABLED
    service_name: str = "tusingest"  # OTEL_SERVICE_NAME
    exporters: tuple[str, ...] = ("otlp",)  # OTEL_TRACES_EXPORTER: otlp, console, none
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces
    otlp_endpoint: str = f"{_DEFAULT_OTLP}/v1/traces"
    sampler: str = "parentbased_always_on"  # OTEL_TRACES_SAMPLER
    sampler_ratio: float = 1.0  # OTEL_TRACES_SAMPLER_ARG, for the *traceidratio samplers


def parse_tracing(env: Env) -> TracingSettings:
    exporters = tuple(e.lower() for e in env.items("OTEL_TRACES_EXPORTER")) or ("otlp",)
    for exporter in exporters:
        if exporter not in EXPORTERS:
            raise ConfigError("OTEL_TRACES_EXPORTER", f"must be a list of {', '.join(EXPORTERS)}")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.optional(name)
        if protocol is not None and protocol != _PROTOCOL:
            raise ConfigError(name, f"only {_PROTOCOL} is supported")
    traces = env.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ("http", "https"))
    base = env.url("OTEL_EXPORTER_OTLP_ENDPOINT", ("http", "https")) or _DEFAULT_OTLP
    return TracingSettings(
        enabled=env.flag("OPENTELEMETRY_ENABLED", False)
        and not env.flag("OTEL_SDK_DISABLED", False),
        service_name=env.text("OTEL_SERVICE_NAME", "tusingest"),
        exporters=tuple(e for e in exporters if e != "none"),
        otlp_endpoint=traces or f"{base}/v1/traces",
        sampler=env.choice(
            "OTEL_TRACES_SAMPLER", "parentbased_always_on", SAMPLERS, fold=str.lower
        ),
        sampler_ratio=env.number("OTEL_TRACES_SAMPLER_ARG", 1.0, low=0, high=1),
    )
