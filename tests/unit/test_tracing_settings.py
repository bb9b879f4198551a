"""Tracing settings: off by default, the OPENTELEMETRY_ENABLED switch and the standard `OTEL_*`
variables, named errors for bad values; the sampler they configure."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from tusingest.errors import ConfigError
from tusingest.settings.app import Settings
from tusingest.settings.tracing import TracingSettings
from tusingest.tracing import sampler


def test_off_by_default_with_the_standard_defaults() -> None:
    tracing = Settings.from_env({}).tracing
    assert tracing == TracingSettings()
    assert tracing.enabled is False
    assert tracing.service_name == "tusingest"
    assert tracing.exporters == ("otlp",)
    assert tracing.otlp_endpoint == "http://localhost:4318/v1/traces"
    assert tracing.sampler == "parentbased_always_on"


def test_an_endpoint_alone_does_not_turn_tracing_on() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "otlp"}
    assert Settings.from_env(env).tracing.enabled is False


def test_every_variable_is_read() -> None:
    tracing = Settings.from_env(
        {
            "OPENTELEMETRY_ENABLED": "true",
            "OTEL_SERVICE_NAME": "ingester-eu",
            "OTEL_TRACES_EXPORTER": "Console, otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    ).tracing
    assert tracing == TracingSettings(
        enabled=True,
        service_name="ingester-eu",
        exporters=("console", "otlp"),
        otlp_endpoint="https://collector.example:4318/v1/traces",
        sampler="parentbased_traceidratio",
        sampler_ratio=0.25,
    )


def test_the_traces_endpoint_wins_as_given() -> None:
    tracing = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom/path",
        }
    ).tracing
    assert tracing.otlp_endpoint == "http://traces:4318/custom/path"


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"OPENTELEMETRY_ENABLED": "on"}, True),
        ({"OPENTELEMETRY_ENABLED": "false"}, False),
        ({"OPENTELEMETRY_ENABLED": "true", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OPENTELEMETRY_ENABLED": "true", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_the_switch(env: dict[str, str], enabled: bool) -> None:
    assert Settings.from_env(env).tracing.enabled is enabled


def test_exporter_none_exports_nothing() -> None:
    assert Settings.from_env({"OTEL_TRACES_EXPORTER": "none"}).tracing.exporters == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENTELEMETRY_ENABLED", "maybe"),
        ("OTEL_TRACES_EXPORTER", "jaeger"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector:4317"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.variable == name


def _decision(sampler_name: str, kind: SpanKind, *, parent_sampled: bool | None) -> Decision:
    """What the configured sampler decides for a span; `parent_sampled` None: no parent."""
    chosen = sampler(TracingSettings(enabled=True, sampler=sampler_name, sampler_ratio=0.0))
    context = None
    if parent_sampled is not None:
        flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT)
        parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
    return chosen.should_sample(context, 0x1234, "span", kind).decision


@pytest.mark.parametrize(
    ("name", "kind", "parent_sampled", "decision"),
    [
        ("parentbased_always_on", SpanKind.SERVER, None, Decision.RECORD_AND_SAMPLE),
        ("parentbased_always_on", SpanKind.SERVER, False, Decision.DROP),
        ("always_on", SpanKind.SERVER, False, Decision.RECORD_AND_SAMPLE),
        ("always_off", SpanKind.SERVER, True, Decision.DROP),
        ("parentbased_always_off", SpanKind.SERVER, None, Decision.DROP),
        ("parentbased_always_off", SpanKind.SERVER, True, Decision.RECORD_AND_SAMPLE),
        ("traceidratio", SpanKind.INTERNAL, None, Decision.DROP),  # ratio 0
        ("parentbased_traceidratio", SpanKind.INTERNAL, True, Decision.RECORD_AND_SAMPLE),
        # A call outside any trace (a capacity poll) is never recorded; one within a trace is.
        ("always_on", SpanKind.CLIENT, None, Decision.DROP),
        ("parentbased_always_on", SpanKind.CLIENT, True, Decision.RECORD_AND_SAMPLE),
    ],
)
def test_sampler(
    name: str, kind: SpanKind, parent_sampled: bool | None, decision: Decision
) -> None:
    assert _decision(name, kind, parent_sampled=parent_sampled) is decision
