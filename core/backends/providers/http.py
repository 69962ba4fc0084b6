"""One HTTP seam for the hosted providers: transport and status errors mapped once.

Every provider call goes through :class:`ProviderHttp`, which knows whether the call is
safe to repeat. Its rules:

- A call that certainly did not reach the provider (connect error, connect or pool
  timeout, 429 before acceptance, 503) is transient: nothing was created.
- A safe call (a GET, a cancel, an upload that only wastes an asset) is retried a few
  times on transport errors and 5xx, then fails transiently.
- An unsafe call (a submit) that may have reached the provider (a read timeout, a dropped
  connection, a 5xx other than 503) raises :class:`OutcomeUnknown`: the backend must
  settle it through the provider's listing and never send it again blindly.
- 429 waits for ``Retry-After`` (bounded by the provider's patience), then retries.
- 401/403 fail for good and name the setting to check, never the key.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.errors import BackendError
from core.metrics import PROVIDER_ERRORS, PROVIDER_REQUEST

log = logging.getLogger(__name__)

_SAFE_RETRIES = 2  # extra attempts of a call that is safe to repeat
_SAFE_BACKOFF_SECONDS = 0.25
_DEFAULT_RETRY_AFTER_SECONDS = 2.0


class OutcomeUnknown(BackendError):
    """A call that is not safe to repeat may or may not have taken effect."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class Malformed(BackendError):
    """The provider answered, but not with the JSON we expect (transient, bounded)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"malformed reply: {message}", transient=True)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta or HTTP date), if any."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """Return the reply's JSON object, or raise Malformed (the provider's words are untrusted)."""
    try:
        body = response.json()
    except ValueError as exc:
        raise Malformed(f"{what}: not JSON (HTTP {response.status_code})") from exc
    if not isinstance(body, dict):
        raise Malformed(f"{what}: not a JSON object")
    return body


def same_origin(url: str, base: str) -> bool:
    """Return whether ``url`` is on the scheme and host of ``base`` (where the key may go)."""
    a, b = urlsplit(url), urlsplit(base)
    return bool(a.scheme) and (a.scheme, a.netloc) == (b.scheme, b.netloc)


def error_text(response: httpx.Response, limit: int = 300) -> str:
    """Return the provider's error message, cut short, for logs and failure details."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:limit]
    if isinstance(body, dict):
        for field in ("detail", "error", "message", "title"):
            if body.get(field):
                return str(body[field])[:limit]
    return str(body)[:limit]


class ProviderHttp:
    """Send requests to one provider with its auth header, mapping failures once."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        provider: str,
        auth: dict[str, str],
        timeout: float,
        rate_limit_patience: float,
        secret_setting: str,
    ) -> None:
        self.client = client
        self.provider = provider
        self._auth = auth
        self._timeout = timeout
        self._patience = rate_limit_patience
        self._secret_setting = secret_setting  # e.g. "providers.fal.key", never its value
        self.last_answer: float | None = None  # monotonic time of the last reply (< 500)

    async def request(
        self, method: str, url: str, *, safe: bool, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send one call; see the module docstring for what is retried and what is raised."""
        headers = {"User-Agent": "actorbot", **(self._auth if auth else {})}
        headers.update(kwargs.pop("headers", {}))
        what = f"{self.provider} {method} {urlsplit(url).path}"
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = await self.client.request(
                    method, url, headers=headers, timeout=self._timeout, **kwargs
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._failed("connect")
                # Nothing left this process: always safe to report as transient.
                if safe and attempt <= _SAFE_RETRIES:
                    await asyncio.sleep(_SAFE_BACKOFF_SECONDS * attempt)
                    continue
                raise BackendError(f"{what}: {type(exc).__name__}", transient=True) from exc
            except httpx.TransportError as exc:
                self._failed("transport")
                if not safe:
                    raise OutcomeUnknown(f"{what}: {type(exc).__name__} after sending") from exc
                if attempt <= _SAFE_RETRIES:
                    await asyncio.sleep(_SAFE_BACKOFF_SECONDS * attempt)
                    continue
                raise BackendError(f"{what}: {type(exc).__name__}", transient=True) from exc
            status = response.status_code
            PROVIDER_REQUEST.labels(provider=self.provider, method=method).observe(
                time.monotonic() - started
            )
            if status < 500:
                self.last_answer = time.monotonic()
            if status == 429 or status >= 500 or status in (401, 403):
                self._failed("rate_limited" if status == 429 else f"http_{status}")
            if status == 429:
                delay = parse_retry_after(response.headers.get("Retry-After"), time.time())
                delay = _DEFAULT_RETRY_AFTER_SECONDS if delay is None else delay
                if waited + delay > self._patience:
                    raise BackendError(f"{what}: rate limited (HTTP 429)", transient=True)
                log.info("%s: rate limited; waiting %.1fs as asked", what, delay)
                waited += delay
                await asyncio.sleep(delay)
                attempt -= 1  # a 429 was refused before acceptance: not a failed attempt
                continue
            if status >= 500:
                if safe and attempt <= _SAFE_RETRIES:
                    await asyncio.sleep(_SAFE_BACKOFF_SECONDS * attempt)
                    continue
                if safe or status == 503:
                    # 503: the provider did not take the request (overloaded, maintenance).
                    raise BackendError(f"{what}: HTTP {status}", transient=True)
                raise OutcomeUnknown(f"{what}: HTTP {status} after sending")
            if status in (401, 403):
                raise BackendError(
                    f"{what}: HTTP {status} (check {self._secret_setting})",
                    transient=False,
                    provider_refused=True,
                )
            return response

    def _failed(self, error: str) -> None:
        PROVIDER_ERRORS.labels(provider=self.provider, error=error).inc()
