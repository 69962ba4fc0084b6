"""Backend for model servers that speak the actorbot job API (see docs/jobapi.md).

Operators put an open image-to-video model on their own GPU behind this small JSON
protocol. Everything the provider returns is untrusted: replies are validated, result
URLs must stay on the configured server, and downloads are capped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from config.settings import JobApiSettings
from core.backends.base import BackendCapabilities, BackendState, BackendStatus, RenderSpec
from core.errors import BackendError, ContentFiltered

log = logging.getLogger(__name__)

_STATES = {state.value: state for state in BackendState}
_PROBE_REF = "actorbot-readiness-probe"  # a client reference no job is submitted under


class JobApiBackend:
    """Submit, poll, cancel and fetch jobs on a job-API model server over HTTP."""

    name = "jobapi"
    # The job API de-duplicates on Idempotency-Key and lists jobs by client reference.
    # The model server's queue_position is its own queue (docs/jobapi.md).
    capabilities = BackendCapabilities(idempotent_submit=True, lookup=True, provider_queue=True)

    def __init__(
        self, *, settings: JobApiSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        if not settings.url:
            raise BackendError("jobapi.url is not set", transient=False)
        self.slots = settings.slots
        self._base = settings.url.rstrip("/") + "/"
        self._poll_interval = settings.poll_interval_seconds
        headers = {"User-Agent": "actorbot"}
        token = settings.token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()
        self._timeout = settings.request_timeout_seconds
        self._headers = headers
        self._last: dict[str, BackendState] = {}

    async def aclose(self) -> None:
        """Close the HTTP client if this backend made it (a shared one is the caller's)."""
        if self._owns_client:
            await self._client.aclose()

    def _url(self, path: str) -> str:
        return urljoin(self._base, path)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, translating transport failures into BackendError."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = await self._client.request(
                method, self._url(path), headers=headers, timeout=self._timeout, **kwargs
            )
        except httpx.TimeoutException as exc:
            raise BackendError(f"{method} {path}: timed out", transient=True) from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"{method} {path}: {type(exc).__name__}", transient=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise BackendError(f"{method} {path}: HTTP {response.status_code}", transient=True)
        if response.status_code in (401, 403):
            raise BackendError(
                f"{method} {path}: HTTP {response.status_code} (check jobapi.token)",
                transient=False,
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise BackendError("malformed reply: not JSON", transient=True) from exc
        if not isinstance(body, dict):
            raise BackendError("malformed reply: not an object", transient=True)
        return body

    async def submit(self, spec: RenderSpec) -> str:
        """Create a job; an unknown outcome is reconciled by client reference first."""
        payload = {
            "client_ref": spec.job_id,
            "image": "data:image/jpeg;base64," + base64.b64encode(spec.image_jpeg).decode(),
            "width": spec.width,
            "height": spec.height,
            "prompt": spec.line,
            "speech": spec.speech,
            "language": spec.language,
            "seconds": spec.seconds,
            "seed": spec.seed,
            "voice": spec.voice,
        }
        try:
            response = await self._request(
                "POST", "v1/jobs", json=payload, headers={"Idempotency-Key": spec.job_id}
            )
            if response.status_code == 422:
                self._raise_rejection(response)
            if response.status_code not in (200, 201, 202):
                raise BackendError(f"submit: HTTP {response.status_code}", transient=False)
            return self._job_id(self._json(response))
        except BackendError as exc:
            if not exc.transient:
                raise
            # The job may exist even though the answer was lost: never pay twice.
            handle = await self.find(spec)
            if handle is not None:
                log.info("submit for %s failed (%s) but the job exists", spec.job_id, exc)
                return handle
            raise

    def _raise_rejection(self, response: httpx.Response) -> None:
        body = self._json(response)
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        assert isinstance(error, dict)
        if error.get("type") == "content_policy":
            raise ContentFiltered(str(error.get("message", "content policy")))
        raise BackendError(f"rejected: {error.get('message', 'HTTP 422')}", transient=False)

    @staticmethod
    def _job_id(body: dict[str, Any]) -> str:
        job_id = body.get("id")
        if not isinstance(job_id, str) or not job_id or "/" in job_id:
            raise BackendError("malformed reply: no job id", transient=True)
        return job_id

    async def find(self, spec: RenderSpec) -> str | None:
        """Look a job up by the client reference it was submitted with."""
        response = await self._request("GET", "v1/jobs", params={"client_ref": spec.job_id})
        if response.status_code != 200:
            return None
        jobs = self._json(response).get("jobs")
        if not isinstance(jobs, list) or not jobs or not isinstance(jobs[0], dict):
            return None
        return self._job_id(jobs[0])

    async def _status(self, handle: str) -> tuple[BackendStatus, dict[str, Any]]:
        response = await self._request("GET", f"v1/jobs/{handle}")
        if response.status_code == 404:
            return BackendStatus(BackendState.FAILED, detail="job unknown to the server",
                                 transient=True), {}  # fmt: skip
        if response.status_code != 200:
            raise BackendError(f"status: HTTP {response.status_code}", transient=True)
        body = self._json(response)
        state = _STATES.get(str(body.get("status")))
        if state is None:
            raise BackendError(f"malformed reply: status {body.get('status')!r}", transient=True)
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        assert isinstance(error, dict)
        progress = body.get("progress")
        position = body.get("queue_position")
        status = BackendStatus(
            state=state,
            progress=float(progress) if isinstance(progress, int | float) else None,
            queue_position=position if isinstance(position, int) else None,
            detail=str(error.get("message", "")),
            transient=bool(error.get("retryable", False)),
        )
        return status, body

    async def wait(self, handle: str, timeout: float) -> BackendStatus:
        """Poll until the job's state changes or ``timeout`` passes."""
        give_up = time.monotonic() + timeout
        while True:
            status, _ = await self._status(handle)
            if status.state != self._last.get(handle) or status.is_final:
                self._last[handle] = status.state
                if status.is_final:
                    self._last.pop(handle, None)
                return status
            left = give_up - time.monotonic()
            if left <= 0:
                return status
            await asyncio.sleep(min(self._poll_interval, left))

    async def probe(self) -> None:
        """Raise BackendError unless the server answers a cheap listing (and takes the token).

        The job API has no health endpoint: a lookup of a reference no job carries is the
        cheapest call that proves the server is up and accepts this bot.
        """
        response = await self._request("GET", "v1/jobs", params={"client_ref": _PROBE_REF})
        if response.status_code != 200:
            raise BackendError(f"GET v1/jobs: HTTP {response.status_code}", transient=True)

    async def cancel(self, handle: str) -> None:
        """Ask the server to stop a job."""
        self._last.pop(handle, None)
        await self._request("POST", f"v1/jobs/{handle}/cancel")

    async def fetch(self, handle: str, dest: Path, max_bytes: int) -> None:
        """Stream the result to ``dest`` with a byte cap, from the server's own origin only."""
        status, body = await self._status(handle)
        if status.state is not BackendState.SUCCEEDED:
            raise BackendError(f"fetch: job is {status.state.value}", transient=True)
        url = urljoin(self._base, str(body.get("result_url") or f"v1/jobs/{handle}/result"))
        if urlsplit(url)[:2] != urlsplit(self._base)[:2]:
            raise BackendError(
                "result URL points off the model server", transient=False, key="job.bad_result"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        try:
            async with self._client.stream(
                "GET", url, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    raise BackendError(
                        f"fetch: HTTP {response.status_code}", transient=response.status_code >= 500
                    )
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise BackendError("result too large", transient=False, key="job.bad_result")
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 16):
                        received += len(chunk)
                        if received > max_bytes:
                            raise BackendError(
                                "result too large", transient=False, key="job.bad_result"
                            )
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise BackendError(f"fetch: {type(exc).__name__}", transient=True) from exc
