"""What the hosted-provider backends share: polling, settling lost submits, downloads.

Polling backs off while a job is unchanged, malformed replies are tolerated for a bounded
number of polls, and a submit whose outcome is unknown is settled through the listing.

Each protocol module (fal, replicate, gaga) supplies the calls; this class supplies the
rules, so that every provider keeps the same promises to the worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from config.models import PresetSettings, ProviderSettings, SpeechStageSettings
from core.backends.base import (
    BackendCapabilities,
    BackendState,
    BackendStatus,
    RenderSpec,
    SpeechStage,
)
from core.backends.download import ResultFetcher
from core.backends.presets import model_input, speech_input
from core.backends.providers.http import Malformed, OutcomeUnknown, ProviderHttp
from core.errors import BackendError

log = logging.getLogger(__name__)

_BACKOFF_GROWTH = 1.3  # an unchanged job is polled less and less often ...
_BACKOFF_MAX_FACTOR = 6.0  # ... down to one poll per six intervals
_RECONCILE_INTERVAL = 5.0
_PROBE_FRESH_SECONDS = 300.0  # a reply this recent proves the provider reachable
_PROBE_TIMEOUT = 5.0
_LOOK_BACK = timedelta(hours=2)  # a take of unknown age: listings are searched this far back


def data_uri(jpeg: bytes, content_type: str = "image/jpeg") -> str:
    """Return the image as a data: URI (never a chat platform URL, which carries a token)."""
    return f"data:{content_type};base64," + base64.b64encode(jpeg).decode()


def image_field_for(preset: PresetSettings, spec: RenderSpec) -> str:
    """Return the field the photo is sent in: a reference image beside reference audio."""
    if preset.reference_audio_field and spec.reference_audio and preset.reference_image_field:
        return preset.reference_image_field
    return preset.image_field


def set_field(payload: dict[str, Any], field: str, value: str) -> None:
    """Put ``value`` in a model's field; ``"name[]"`` sends a one-item list."""
    name = field.removesuffix("[]")
    payload[name] = [value] if field.endswith("[]") else value


@dataclass
class _Polling:
    """What this process knows about one job it polls."""

    last: BackendStatus | None = None
    interval: float = 0.0
    next_poll: float = 0.0
    malformed: int = 0
    woken: asyncio.Event = field(default_factory=asyncio.Event)  # a webhook came for it


class ProviderBackend(ABC):
    """A VideoBackend for one preset at one hosted provider."""

    capabilities = BackendCapabilities()
    provider = ""

    def __init__(
        self,
        *,
        name: str,
        preset: PresetSettings,
        settings: ProviderSettings,
        client: httpx.AsyncClient | None = None,
        deadline_seconds: float = 900.0,
        secret_setting: str,
        auth: dict[str, str],
        webhook_url: str = "",
    ) -> None:
        self.name = name
        self.preset = preset
        self.slots = settings.slots
        self.settings = settings
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient()
        self.http = ProviderHttp(
            self.client,
            provider=self.provider,
            auth=auth,
            timeout=settings.request_timeout_seconds,
            rate_limit_patience=settings.rate_limit_patience_seconds,
            secret_setting=secret_setting,
        )
        self.results = ResultFetcher(
            self.client,
            hosts=settings.result_hosts,
            allow_insecure=settings.allow_insecure,
            timeout=settings.download_timeout_seconds,
        )
        self.deadline_seconds = deadline_seconds
        # Where the provider may call us back when a job ends (empty: polling only).
        self.webhook_url = webhook_url
        self._polling: dict[str, _Polling] = {}
        self._polled_ids: dict[str, str] = {}  # provider job id -> handle, for webhooks
        self._next_poll_slot = 0.0  # the provider-wide poll budget, as a schedule
        self._held: set[str] = set()  # provider job ids this process already handed out
        # One lookup at a time: two takes with the same input must not adopt the same job.
        self._finding = asyncio.Lock()
        # A two-stage preset's first stage (see ``speech_stage``), and, on that stage's
        # own backend, what it speaks with.
        self.speech_stage: SpeechStage | None = None
        self.speaks: SpeechStageSettings | None = None

    def fields(self, spec: RenderSpec) -> dict[str, Any]:
        """Return the model's input for ``spec`` without the image: what is sent and listed."""
        if self.speaks is not None:
            return speech_input(self.speaks, spec)
        return model_input(self.preset, spec)

    async def result_url(self, handle: str) -> str:
        """Return where the finished job's file is (for a speech stage: its audio)."""
        return await self._result_url(handle)

    def sent_since(self, spec: RenderSpec) -> datetime:
        """Return the earliest time a provider job for ``spec`` can have been created."""
        if spec.submitted_after > 0:
            return datetime.fromtimestamp(spec.submitted_after, UTC)
        return datetime.now(UTC) - _LOOK_BACK

    def _taken(self, spec: RenderSpec) -> set[str]:
        """Return the provider job ids ``spec`` must not adopt (other takes hold them)."""
        taken = set(self._held)
        for handle in spec.taken:
            try:
                taken.add(self._job_id_of(handle))
            except BackendError:
                continue  # another backend's handle (a fallback preset)
        return taken

    # --- what each protocol supplies ---------------------------------------------------

    @abstractmethod
    async def _submit_once(self, spec: RenderSpec) -> str:
        """Send the submit; raise OutcomeUnknown when it may have created a job."""

    @abstractmethod
    async def _lookup(self, spec: RenderSpec, taken: set[str]) -> str | None:
        """Find our job for ``spec`` in the provider's listing (not one in ``taken``).

        Matched on the model's fields rebuilt from ``spec`` (never the image: the provider
        may list it as an uploaded file's URL), so it works after a restart.
        """

    @abstractmethod
    async def _status(self, handle: str, last: BackendStatus | None) -> BackendStatus:
        """Poll once; raise Malformed on a reply that cannot be read."""

    @abstractmethod
    async def _result_url(self, handle: str) -> str:
        """Return where the finished video can be downloaded."""

    @abstractmethod
    def _job_id_of(self, handle: str) -> str:
        """Return the provider's own job id inside a handle (for logs and de-duplication)."""

    # --- VideoBackend --------------------------------------------------------------------

    async def submit(self, spec: RenderSpec) -> str:
        """Start a job; a submit whose outcome is unknown is settled, never repeated."""
        try:
            handle = await self._submit_once(spec)
        except OutcomeUnknown as exc:
            found = await self._search(spec)
            if found is None:
                raise self._orphan(spec.job_id, exc) from exc
            handle = found
            log.warning("%s: submit for %s was lost (%s); adopted it", self.name, spec.job_id, exc)
        self._held.add(self._job_id_of(handle))
        return handle

    async def _search(self, spec: RenderSpec) -> str | None:
        """Look for the job a lost submit may have created, for a bounded time."""
        if not self.capabilities.lookup:
            return None
        give_up = time.monotonic() + self.settings.reconcile_seconds
        async with self._finding:
            while True:
                try:
                    handle = await self._lookup(spec, self._taken(spec))
                except BackendError as exc:
                    if not exc.transient:
                        raise
                    log.warning("%s: listing for %s failed (%s)", self.name, spec.job_id, exc)
                    handle = None
                if handle is not None:
                    self._held.add(self._job_id_of(handle))
                    return handle
                left = give_up - time.monotonic()
                if left <= 0:
                    return None
                await asyncio.sleep(min(_RECONCILE_INTERVAL, left))

    def _orphan(self, job_id: str, cause: BackendError) -> BackendError:
        """Return the failure of a submit that may have made a job no listing shows."""
        # Never a second paid job: fail the take (the worker refunds) and name the orphan.
        log.error(
            "%s: possible orphan: submit for job %s (%s) may have created a %s job that "
            "no listing shows; not resubmitting",
            self.name, job_id, cause, self.provider,
        )  # fmt: skip
        return BackendError(
            f"{self.provider}: submit outcome unknown ({cause}); possible orphan, not resubmitted",
            transient=False,
        )

    async def find(self, spec: RenderSpec) -> str | None:
        """Return the handle of a job submitted earlier for ``spec``, looking a bounded time.

        ``spec`` may be rebuilt from the store after a restart: the listing is matched on
        the model's fields it yields, from the take's first claim on.
        """
        return await self._search(spec)

    async def wait(self, handle: str, timeout: float) -> BackendStatus:
        """Poll until the job's state changes or ``timeout`` passes, backing off while idle."""
        give_up = time.monotonic() + timeout
        polling = self._polling.get(handle)
        if polling is None:
            polling = self._polling[handle] = _Polling(interval=self.settings.poll_interval_seconds)
            self._polled_ids[self._job_id_of(handle)] = handle
        while True:
            now = time.monotonic()
            if polling.last is not None and now < polling.next_poll:
                # Not due yet: the worker asks more often than a slow job deserves. A
                # webhook (wake) makes it due at once.
                if give_up <= now:
                    return polling.last
                polling.woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        polling.woken.wait(), min(polling.next_poll, give_up) - now
                    )
                continue
            slot = max(now, self._next_poll_slot)
            if slot > give_up:
                # Over the provider-wide budget: answer from what we know, poll next time.
                # A job never polled by this process was accepted, so it is at least queued.
                polling.next_poll = slot
                await asyncio.sleep(give_up - now)
                return polling.last or BackendStatus(BackendState.QUEUED)
            self._next_poll_slot = slot + 1.0 / self.settings.max_polls_per_second
            if slot > now:
                await asyncio.sleep(slot - now)
            try:
                status = await self._status(handle, polling.last)
            except Malformed as exc:
                polling.malformed += 1
                if polling.malformed >= self.settings.malformed_polls:
                    self._forget(handle)
                    raise BackendError(
                        f"{self.provider}: {polling.malformed} malformed replies in a row ({exc})",
                        transient=False,
                    ) from exc
                raise
            polling.malformed = 0
            changed = polling.last is None or (
                (status.state, status.queue_position)
                != (polling.last.state, polling.last.queue_position)
            )
            base = self.settings.poll_interval_seconds
            polling.interval = (
                base
                if changed
                else min(polling.interval * _BACKOFF_GROWTH, base * _BACKOFF_MAX_FACTOR)
            )
            polling.last = status
            polling.next_poll = time.monotonic() + polling.interval
            if status.is_final:
                self._forget(handle)
                return status
            if changed or time.monotonic() >= give_up:
                return status

    async def cancel(self, handle: str) -> None:
        """Ask the provider to stop the job (best effort; finished jobs are not an error)."""
        self._forget(handle)
        await self._cancel(handle)

    async def _cancel(self, handle: str) -> None:
        return None

    def _forget(self, handle: str) -> None:
        if self._polling.pop(handle, None) is not None:
            self._polled_ids.pop(self._job_id_of(handle), None)

    def wake(self, provider_job_id: str) -> bool:
        """Poll this provider job at once (a verified webhook said it changed).

        Only a poll is brought forward: the job's state still comes from the provider's
        API, so a callback can never finish, fail or alter a job by itself. Returns whether
        this backend is polling that job.
        """
        handle = self._polled_ids.get(provider_job_id)
        polling = None if handle is None else self._polling.get(handle)
        if polling is None:
            return False
        polling.next_poll = 0.0
        polling.woken.set()
        return True

    async def fetch(self, handle: str, dest: Path, max_bytes: int) -> None:
        """Download the finished video under the provider's host list and caps."""
        url = await self._result_url(handle)
        await self.results.fetch(url, dest, max_bytes=max_bytes)

    async def probe(self) -> None:
        """Raise BackendError unless the provider answered lately or answers a bare GET now.

        Any answer under 500 to the API's root (without the key: 401 or 404 is fine) shows
        the provider is reachable; a request of the bot's own that was answered in the last
        minutes shows the same at no cost.
        """
        last = self.http.last_answer
        if last is not None and time.monotonic() - last < _PROBE_FRESH_SECONDS:
            return
        try:
            response = await self.client.get(self.settings.api_url, timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.provider}: {type(exc).__name__}", transient=True) from exc
        if response.status_code >= 500:
            raise BackendError(f"{self.provider}: HTTP {response.status_code}", transient=True)
        self.http.last_answer = time.monotonic()

    async def aclose(self) -> None:
        """Close the HTTP client if this backend made it (and its speech stage's)."""
        if self.speech_stage is not None:
            await self.speech_stage.aclose()
        if self._owns_client:
            await self.client.aclose()
