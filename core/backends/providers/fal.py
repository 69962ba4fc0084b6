"""fal.ai queue API: submit to the model path, follow the returned URLs, cancel with PUT.

Protocol as in fal's docs and its official client (fal_client ``AsyncClient.submit``,
``AsyncRequestHandle``): the submit answers ``request_id``, ``status_url``,
``response_url`` and ``cancel_url``, which are kept in the handle rather than rebuilt;
statuses are ``IN_QUEUE`` (with ``queue_position``), ``IN_PROGRESS`` and ``COMPLETED``
(a failure carries ``error`` / ``error_type``); the result is ``{"video": {"url"}}``.
Unlike fal_client 1.0.3 we never repeat a submit that timed out: a lost answer is looked
up in the platform API's request listing (``GET /models/requests/by-endpoint`` with
``expand=payloads``), matching the input we sent.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from config.models import FalSettings, PresetSettings
from core.backends.base import BackendCapabilities, BackendState, BackendStatus, RenderSpec
from core.backends.providers.common import (
    ProviderBackend,
    data_uri,
    image_field_for,
    set_field,
)
from core.backends.providers.http import (
    Malformed,
    OutcomeUnknown,
    error_text,
    json_object,
    same_origin,
)
from core.errors import BackendError, ContentFiltered

log = logging.getLogger(__name__)

_CONTENT_POLICY = "content_policy_violation"
# fal's input errors: the same input fails the same way, so a retry would only cost.
_USER_ERRORS = {_CONTENT_POLICY, "image_too_large", "image_load_error", "file_download_error"}
_LISTING_PAGES = 5  # pages of 100 requests searched for one lost submit
_LISTING_SLACK = timedelta(minutes=10)


def _refusal(body: Any) -> str | None:
    """Return the message of a content-policy refusal in a fal error body, if it is one."""
    details = body.get("detail") if isinstance(body, dict) else body
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and item.get("type") == _CONTENT_POLICY:
                return str(item.get("msg") or "flagged by a content checker")
    if isinstance(body, dict) and body.get("error_type") == _CONTENT_POLICY:
        return str(body.get("error") or "flagged by a content checker")
    return None


def _app_path(model: str) -> str:
    """Return the queue path of a model's app: its owner and alias, without the subpath.

    Follows fal_client's ``AppId.from_endpoint_id`` / ``AsyncRequestHandle.from_request_id``
    (used only for a job found in the listing, whose URLs we never received).
    """
    parts = model.split("/")
    if parts[0] in ("workflows", "comfy") and len(parts) >= 3:
        return "/".join(parts[:3])
    return "/".join(parts[:2])


class FalBackend(ProviderBackend):
    """One fal model behind the queue API."""

    provider = "fal"
    capabilities = BackendCapabilities(
        lookup=True, settles_unknown_submit=True, webhooks=True, provider_queue=True
    )

    def __init__(
        self,
        *,
        name: str,
        preset: PresetSettings,
        settings: FalSettings,
        client: httpx.AsyncClient | None = None,
        deadline_seconds: float = 900.0,
        webhook_url: str = "",
    ) -> None:
        super().__init__(
            name=name,
            preset=preset,
            settings=settings,
            client=client,
            deadline_seconds=deadline_seconds,
            secret_setting="providers.fal.key",
            auth={"Authorization": f"Key {settings.key.get_secret_value()}"},
            webhook_url=webhook_url,
        )
        self._queue = settings.queue_url.rstrip("/")
        self._api = settings.api_url.rstrip("/")

    def _handle(self, request_id: str, status: str, response: str, cancel: str) -> str:
        for url in (status, response, cancel):
            # These URLs get our key: they must stay on the queue's own origin.
            if not same_origin(url, self._queue):
                raise Malformed(f"a request URL off {self._queue}")
        return json.dumps(
            {"id": request_id, "status": status, "response": response, "cancel": cancel},
            separators=(",", ":"),
        )

    @staticmethod
    def _urls(handle: str) -> dict[str, str]:
        try:
            urls = json.loads(handle)
        except ValueError as exc:
            raise BackendError("fal: unreadable handle", transient=False) from exc
        if not isinstance(urls, dict) or not all(
            isinstance(urls.get(k), str) for k in ("id", "status", "response", "cancel")
        ):
            raise BackendError("fal: unreadable handle", transient=False)
        return urls

    def _job_id_of(self, handle: str) -> str:
        return self._urls(handle)["id"]

    async def _submit_once(self, spec: RenderSpec) -> str:
        fields = self.fields(spec)
        payload = dict(fields)
        image_field = image_field_for(self.preset, spec)
        if image_field:  # (a speech stage sends text only)
            set_field(payload, image_field, data_uri(spec.image_jpeg))
        if self.preset.reference_audio_field and spec.reference_audio:
            audio = data_uri(spec.reference_audio, "audio/wav")
            set_field(payload, self.preset.reference_audio_field, audio)
        return await self._post(payload)

    async def _post(self, payload: dict[str, Any]) -> str:
        """Send one submit of ``payload`` to the model's queue; return the handle."""
        # fal calls the webhook when the request ends (fal_client's ``webhook_url``).
        params = {"fal_webhook": self.webhook_url} if self.webhook_url else {}
        response = await self.http.request(
            "POST", f"{self._queue}/{self.preset.model}", json=payload, params=params, safe=False
        )
        if response.status_code == 422:
            body = _body(response)
            refusal = _refusal(body)
            if refusal:
                raise ContentFiltered(f"fal: {refusal}")
            raise BackendError(f"fal: input refused: {error_text(response)}", transient=False)
        if response.status_code >= 400:
            raise BackendError(
                f"fal: submit HTTP {response.status_code}: {error_text(response)}",
                transient=False,
            )
        try:
            body = json_object(response, "fal submit")
            request_id = body.get("request_id")
            urls = [body.get(k) for k in ("status_url", "response_url", "cancel_url")]
            if not isinstance(request_id, str) or not all(isinstance(u, str) for u in urls):
                raise Malformed("fal submit: no request_id or URLs")
            return self._handle(request_id, *urls)  # type: ignore[arg-type]
        except Malformed as exc:
            # Accepted (2xx) but unreadable: the job exists, we just cannot name it.
            raise OutcomeUnknown(str(exc)) from exc

    async def _lookup(self, spec: RenderSpec, taken: set[str]) -> str | None:
        fields = self.fields(spec)
        return await self._listed(self.preset.model, fields, self.sent_since(spec), taken)

    async def _listed(
        self, model: str, fields: dict[str, Any], when: datetime, taken: set[str]
    ) -> str | None:
        """Find a request to ``model`` since ``when`` whose input has ``fields``."""
        params: dict[str, Any] = {
            "endpoint_id": model,
            "expand": "payloads",
            "limit": 100,
            "start": (when - _LISTING_SLACK).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for _ in range(_LISTING_PAGES):
            response = await self.http.request(
                "GET", f"{self._api}/models/requests/by-endpoint", params=params, safe=True
            )
            if response.status_code != 200:
                raise BackendError(
                    f"fal listing: HTTP {response.status_code}: {error_text(response)}",
                    transient=response.status_code >= 500,
                )
            body = json_object(response, "fal listing")
            items = body.get("items")
            if not isinstance(items, list):
                raise Malformed("fal listing: no items")
            for item in items:
                if not isinstance(item, dict):
                    continue
                request_id = item.get("request_id")
                payload = item.get("json_input")
                if (
                    isinstance(request_id, str)
                    and request_id not in taken
                    and isinstance(payload, dict)
                    and all(payload.get(k) == v for k, v in fields.items())
                ):
                    base = f"{self._queue}/{_app_path(model)}/requests/{request_id}"
                    return self._handle(request_id, base + "/status", base, base + "/cancel")
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not isinstance(cursor, str):
                return None
            params["cursor"] = cursor
        return None

    async def _status(self, handle: str, last: BackendStatus | None) -> BackendStatus:
        urls = self._urls(handle)
        response = await self.http.request("GET", urls["status"], safe=True)
        if response.status_code == 404:
            return BackendStatus(
                BackendState.FAILED, detail="fal: request unknown to the queue", transient=True
            )
        if response.status_code != 200 and response.status_code != 202:
            raise BackendError(f"fal status: HTTP {response.status_code}", transient=True)
        body = json_object(response, "fal status")
        status = body.get("status")
        if status == "IN_QUEUE":
            position = body.get("queue_position")
            return BackendStatus(
                BackendState.QUEUED,
                # fal counts from 0 (fal_client's Queued.position); people count from 1.
                queue_position=position + 1 if isinstance(position, int) else None,
            )
        if status == "IN_PROGRESS":
            return BackendStatus(BackendState.RUNNING)
        if status == "COMPLETED":
            error_type = body.get("error_type")
            error = body.get("error")
            if error_type == _CONTENT_POLICY:
                return BackendStatus(BackendState.FILTERED, detail=str(error or error_type))
            if error or error_type:
                return BackendStatus(
                    BackendState.FAILED,
                    detail=f"fal: {error_type or 'error'}: {str(error)[:200]}",
                    # fal does not bill server errors; input errors would fail again.
                    transient=error_type not in _USER_ERRORS,
                )
            return BackendStatus(BackendState.SUCCEEDED)
        log.warning("fal: unknown status %r for %s; still polling", status, urls["id"])
        return last or BackendStatus(BackendState.QUEUED)

    async def _result(self, handle: str) -> dict[str, Any]:
        urls = self._urls(handle)
        response = await self.http.request("GET", urls["response"], safe=True)
        if response.status_code >= 400:
            refusal = _refusal(_body(response))
            if refusal:
                raise ContentFiltered(f"fal: {refusal}")
            raise BackendError(
                f"fal result: HTTP {response.status_code}: {error_text(response)}",
                transient=False,
            )
        return json_object(response, "fal result")

    async def _result_url(self, handle: str) -> str:
        body = await self._result(handle)
        field = self.preset.result_field
        result = body.get(field)
        url = result.get("url") if isinstance(result, dict) else None
        if not isinstance(url, str):
            raise BackendError(f"fal result: no {field} URL", transient=False, key="job.bad_result")
        return url

    # --- voice ids from a sample (the preset's voice_creation, e.g. Kling's create-voice) ---

    @property
    def voice_model(self) -> str:
        """Return the model that makes voice ids for this preset ("" when it makes none)."""
        creation = self.preset.voice_creation
        return creation.model if creation is not None else ""

    @property
    def voice_poll_seconds(self) -> float:
        """Return how long to wait between looks at a voice being made."""
        return self.settings.poll_interval_seconds

    def _voice_input(self, wav: bytes) -> dict[str, Any]:
        creation = self.preset.voice_creation
        assert creation is not None, "only presets with voice_creation make voices"
        return {creation.audio_field: data_uri(wav, "audio/wav")}

    async def submit_voice(self, wav: bytes, since: float) -> str:
        """Ask the provider to make a voice id from a sample; return the request's handle.

        A submit whose answer is lost is looked up in the listing (matched on the sample),
        never repeated: not found, it fails (non-transient) naming the possible orphan.
        """
        payload = self._voice_input(wav)
        try:
            response = await self.http.request(
                "POST", f"{self._queue}/{self.voice_model}", json=payload, safe=False
            )
            if response.status_code >= 400:
                raise BackendError(
                    f"fal voice: HTTP {response.status_code}: {error_text(response)}",
                    transient=response.status_code >= 500 or response.status_code == 429,
                    key="job.voice_failed",
                )
            try:
                body = json_object(response, "fal voice submit")
                request_id = body.get("request_id")
                urls = [body.get(k) for k in ("status_url", "response_url", "cancel_url")]
                if not isinstance(request_id, str) or not all(isinstance(u, str) for u in urls):
                    raise Malformed("fal voice submit: no request_id or URLs")
                return self._handle(request_id, *urls)  # type: ignore[arg-type]
            except Malformed as exc:
                raise OutcomeUnknown(str(exc)) from exc
        except OutcomeUnknown as exc:
            found = await self.find_voice(wav, since)
            if found is not None:
                log.warning("%s: voice submit was lost (%s); adopted it", self.name, exc)
                return found
            log.error(
                "%s: possible orphan: a voice-creation request to %s may exist that no"
                " listing shows; not repeated",
                self.name, self.voice_model,
            )  # fmt: skip
            raise BackendError(
                f"fal: voice creation outcome unknown ({exc}); possible orphan, not repeated",
                transient=False,
                key="job.voice_failed",
            ) from exc

    async def find_voice(self, wav: bytes, since: float) -> str | None:
        """Return the handle of a voice-creation request for this sample made since then."""
        when = datetime.fromtimestamp(since, UTC)
        return await self._listed(self.voice_model, self._voice_input(wav), when, self._held)

    async def voice_result(self, handle: str) -> str | None:
        """Return the voice id once made, None while it is being made; raise on a failure."""
        status = await self._status(handle, None)
        if status.state in (BackendState.QUEUED, BackendState.RUNNING):
            return None
        if status.state is not BackendState.SUCCEEDED:
            raise BackendError(
                f"fal voice: {status.detail or status.state.value}",
                transient=status.transient,
                key="job.voice_failed",
            )
        response = await self.http.request("GET", self._urls(handle)["response"], safe=True)
        if response.status_code >= 400:
            raise BackendError(
                f"fal voice result: HTTP {response.status_code}: {error_text(response)}",
                transient=response.status_code >= 500,
                key="job.voice_failed",
            )
        creation = self.preset.voice_creation
        assert creation is not None
        voice_id = json_object(response, "fal voice result").get(creation.id_field)
        if not isinstance(voice_id, str | int) or not str(voice_id):
            raise BackendError(
                "fal voice result: no voice id", transient=False, key="job.voice_failed"
            )
        return str(voice_id)

    async def _cancel(self, handle: str) -> None:
        urls = self._urls(handle)
        response = await self.http.request("PUT", urls["cancel"], safe=True)
        # 400 "ALREADY_COMPLETED": nothing left to stop.
        if response.status_code >= 400 and response.status_code != 400:
            log.warning("fal: cancel of %s answered HTTP %d", urls["id"], response.status_code)


class FalImages(FalBackend):
    """One fal text-to-image model behind the same queue API: a prompt in, images out.

    Submits, lookups of a lost submit, polling and cancels are the video backend's; only
    the input (no image) and the result (``{"images": [{"url"}, ...]}``) differ.
    """

    async def _submit_once(self, spec: RenderSpec) -> str:
        return await self._post(self.fields(spec))

    async def image_urls(self, handle: str) -> list[str]:
        """Return where the finished images can be downloaded, in order."""
        images = (await self._result(handle)).get("images")
        urls = [
            image.get("url") for image in images if isinstance(image, dict)
        ] if isinstance(images, list) else []  # fmt: skip
        found = [url for url in urls if isinstance(url, str)]
        if not found:
            raise BackendError("fal result: no images", transient=False, key="job.bad_result")
        return found


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
