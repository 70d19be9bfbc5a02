"""HttpProvider: a provider reached over HTTP, its answers mapped onto our errors."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import httpx

from ..errors import (
    AuthorizationFailed,
    Forbidden,
    InvalidInput,
    ProviderBusy,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,
    UnsupportedOperation,
    ValidationFailed,
)
from ..jobs import ProviderJob
from ..tracing import active_provider

__all__ = ["HttpProvider", "parse_retry_after"]

#: An HTTP field name: a token of RFC 9110's characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: Status code to the error raised for it. 404 means the resource or route
#: is not there: retrying will not make it appear, so it is permanent.
_STATUS_ERRORS: dict[int, tuple[type[ProviderError], str]] = {
    400: (ValidationFailed, "Validation error"),
    401: (AuthorizationFailed, "Authorization failed"),
    403: (Forbidden, "Forbidden"),
    404: (InvalidInput, "Invalid input: not found"),
    405: (UnsupportedOperation, "Unsupported operation"),
    408: (ProviderTimeout, "Timeout"),
    422: (ValidationFailed, "Validation error"),
    429: (ProviderBusy, "Provider busy"),
    501: (UnsupportedOperation, "Unsupported operation"),
    502: (ServiceUnavailable, "Service unavailable"),
    503: (ServiceUnavailable, "Service unavailable"),
    504: (ProviderTimeout, "Timeout"),
}
#: Longest provider error text kept in an exception message.
_MAX_DETAIL_CHARS = 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = body.get("error") or body.get("message") or body.get("detail") or body
    text = str(body).strip()
    return text[:_MAX_DETAIL_CHARS] or response.reason_phrase


class HttpProvider:
    """Runs operations by ``POST {base_url}/operations/{operation}`` with the job as JSON.

    The job's id goes in ``X-Job-Id`` and its idempotency key in
    ``Idempotency-Key`` (or the header ``idempotency_header`` names).

    A 2xx answer's JSON body (its text if it is not JSON, ``None`` when empty)
    is the result. Errors: 400/422 validation, 401 authorization, 403 forbidden,
    404 and any other 4xx invalid input, 405/501 unsupported, 408/504 and client
    timeouts timeout, 429 busy, 502/503 and any other 5xx service unavailable, a
    refused connection a connection error; ``Retry-After`` on 429/503 is carried
    as ``retry_after_s``. Every error carries its category, so the URL in its
    text never decides the classification.

    Args:
        base_url: The provider's base URL, for example ``http://rg-provider:8080``.
        timeout_s: Read / write timeout in seconds. Default 30.
        connect_timeout_s: Connect timeout in seconds. Default 5.
        headers: Extra headers sent with every call (for example authorization).
        idempotency_header: The header that carries the job's
            :attr:`~provider_jobs.jobs.ProviderJob.idempotency_key`, the same on
            every attempt and redelivery of a job; ``None`` sends none. Default
            ``Idempotency-Key``.
        transport: An httpx transport, for tests. Default: a real network transport.
        tracer_provider: An OpenTelemetry ``TracerProvider``: each call is a CLIENT span, in the
            job's trace, that sends ``traceparent``. Default ``None``: the global one if one is
            set; with none (or without ``opentelemetry-instrumentation-httpx``) no span.

    Raises:
        ValueError: ``idempotency_header`` is not an HTTP header name.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        idempotency_header: str | None = "Idempotency-Key",
        transport: httpx.BaseTransport | None = None,
        tracer_provider: Any = None,
    ) -> None:
        if idempotency_header is not None and not (
            isinstance(idempotency_header, str) and _HEADER_NAME.fullmatch(idempotency_header)
        ):
            raise ValueError(
                f"idempotency_header={idempotency_header!r} is not allowed: expected an HTTP header name "
                "such as 'Idempotency-Key' (letters, digits, '-'), or none to send no key"
            )
        self.base_url = base_url.rstrip("/")
        self.idempotency_header = idempotency_header
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            headers=headers,
            transport=transport,
        )
        if active_provider(tracer_provider) is not None:
            from ..tracing import instrument_httpx

            instrument_httpx(self._client, tracer_provider)

    def __repr__(self) -> str:
        return f"HttpProvider({self.base_url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def execute(self, job: ProviderJob) -> Any:
        url = f"{self.base_url}/operations/{job.operation}"
        headers = {"X-Job-Id": job.job_id}
        if self.idempotency_header is not None:
            headers[self.idempotency_header] = job.idempotency_key
        try:
            response = self._client.post(url, json=job.to_message(), headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"Timeout calling {url}: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise ProviderConnectionError(f"Connection error calling {url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"Connection error calling {url}: {type(exc).__name__}: {exc}"
            ) from exc

        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                # The operation succeeded; retrying it because the body is not JSON would run it twice.
                return response.text
        status = response.status_code
        error_class, label = _STATUS_ERRORS.get(status) or (
            (ServiceUnavailable, "Service unavailable") if status >= 500 else (InvalidInput, "Invalid input")
        )
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        raise error_class(
            f"{label}: HTTP {status} from {url}: {_detail(response)}",
            status_code=status,
            retry_after_s=retry_after,
        )
