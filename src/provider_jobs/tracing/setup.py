"""configure_tracing: a process's OpenTelemetry ``TracerProvider``, set up from the standard ``OTEL_*``
variables only; active_provider: the provider our spans go to, or ``None`` when tracing is off.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter other than
``none``, or when an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (the exporter is then
``otlp``). ``OTEL_SDK_DISABLED=true`` turns it off. The SDK itself reads the
rest: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
(and its argument), the endpoints, headers and ``OTEL_BSP_*`` batch settings.
A host application that set up its own ``TracerProvider`` keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["EXTRA_MISSING", "INSTRUMENTATION_NAME", "active_provider", "configure_tracing", "tracer_of"]

#: The instrumentation scope of our spans.
INSTRUMENTATION_NAME = "provider_jobs"
#: What a process configured for tracing without the extra installed says.
EXTRA_MISSING = "needs the otel extra: pip install 'provider-jobs[otel]'"
#: Exporters ``OTEL_TRACES_EXPORTER`` may name.
_EXPORTERS = ("otlp", "console", "none")
#: OTLP protocols this package exports with.
_PROTOCOLS = ("http/protobuf",)


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    value = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not value:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    for name in names:
        if name not in _EXPORTERS:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER={value!r} is not allowed: expected {', '.join(_EXPORTERS)}"
            )
    return [name for name in names if name != "none"]


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name)
        if value:
            if value.strip() not in _PROTOCOLS:
                raise ConfigurationError(f"{name}={value!r} is not allowed: expected {', '.join(_PROTOCOLS)}")
            return


def active_provider(tracer_provider: Any = None) -> TracerProvider | None:
    """The provider our spans go to: ``tracer_provider`` when given, else OpenTelemetry's global
    one if an application (or :func:`configure_tracing`) set a real one; ``None`` means tracing
    is off, and no hook, span or header is added.

    Args:
        tracer_provider: A ``TracerProvider`` the host application configured. Default ``None``.
    """
    if tracer_provider is not None:
        provider: TracerProvider = tracer_provider
        return provider
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    found = trace.get_tracer_provider()
    if isinstance(found, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return found


def tracer_of(tracer_provider: Any = None) -> Tracer | None:
    """Our tracer from :func:`active_provider`, or ``None`` when tracing is off.

    Args:
        tracer_provider: A ``TracerProvider`` the host application configured. Default ``None``.
    """
    provider = active_provider(tracer_provider)
    if provider is None:
        return None
    return provider.get_tracer(INSTRUMENTATION_NAME)


def configure_tracing(
    *, service_name: str, environ: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """Set up OpenTelemetry's global ``TracerProvider`` from ``OTEL_*`` variables, for an entry point.

    Returns the provider spans go to, or ``None`` when tracing is not configured
    (nothing is imported or set up then). A provider the host process already
    set is kept and returned.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES``
            names it, such as ``"provider-jobs-worker"``.
        environ: The variables. Default ``os.environ``.

    Raises:
        ConfigurationError: An exporter or protocol is not one of those allowed, or the ``otel``
            extra is not installed.
    """
    environ = os.environ if environ is None else environ
    names = _exporter_names(environ)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={','.join(names)!r} {EXTRA_MISSING}") from None
    existing = active_provider()
    if existing is not None:
        return existing
    if "otlp" in names:
        _check_protocol(environ)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER=otlp {EXTRA_MISSING}") from None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    provider = SdkTracerProvider(resource=resource)
    for name in names:
        exporter = OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
