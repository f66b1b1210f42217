"""OpenTelemetry tracer providers from the standard OTEL_* variables, shared by the engine and the facade."""

import asyncio
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def tracer_provider_from_env(service_name: str) -> trace.TracerProvider:
    """An SDK provider exporting over OTLP/HTTP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, else a no-op one.

    The exporter, sampler, batching and resource read the standard OTEL_* variables themselves; OTEL_SERVICE_NAME
    wins over `service_name`, and OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none switch tracing off.
    """
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none"
    if not endpoint or disabled:
        return trace.NoOpTracerProvider()
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


async def shutdown_tracer_provider(provider: trace.TracerProvider) -> None:
    """Export what is buffered and stop (a blocking flush, so it runs in a thread)."""
    if isinstance(provider, TracerProvider):
        await asyncio.to_thread(provider.shutdown)
