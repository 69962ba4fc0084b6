"""Replicate predictions: create on the model, poll ``urls.get``, cancel on ``urls.cancel``.

Protocol as in Replicate's docs and its official client (replicate-python
``Predictions``, ``Files``, ``Page``): ``POST /v1/models/{owner}/{name}/predictions``
with ``{"input": ...}`` answers the prediction (``id``, ``status``, ``urls.get``,
``urls.cancel``); statuses are ``starting``, ``processing``, ``succeeded``, ``failed``,
``canceled``, and ``aborted`` (a deadline passed before it started: not charged). The
``Cancel-After`` header sets that deadline at the provider. Images over 1 MB go through
the Files API (multipart field ``content``); outputs are deleted after about an hour.
The client retries only idempotent methods, and so do we: a lost create is looked up in
``GET /v1/predictions`` (newest first, ``next`` pages) by model and input.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any

import httpx

from config.models import PresetSettings, ReplicateSettings
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

DATA_URI_LIMIT = 1_000_000  # Replicate takes data: URIs for files under 1 MB
_LISTING_PAGES = 3
_CLOCK_SKEW = timedelta(minutes=2)  # between our clock and Replicate's created_at
# Replicate's moderation failures: "flagged as sensitive (E005)" and model-side wording.
_REFUSAL = re.compile(r"\bE005\b|sensitive|content polic|safety|moderat|nsfw", re.IGNORECASE)
_STATES = {
    "starting": BackendState.QUEUED,
    "processing": BackendState.RUNNING,
    "succeeded": BackendState.SUCCEEDED,
    "failed": BackendState.FAILED,
    "canceled": BackendState.CANCELED,
    "aborted": BackendState.CANCELED,
}


class ReplicateBackend(ProviderBackend):
    """One Replicate model behind the predictions API."""

    provider = "replicate"
    capabilities = BackendCapabilities(lookup=True, settles_unknown_submit=True, webhooks=True)

    def __init__(
        self,
        *,
        name: str,
        preset: PresetSettings,
        settings: ReplicateSettings,
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
            secret_setting="providers.replicate.token",
            auth={"Authorization": f"Bearer {settings.token.get_secret_value()}"},
            webhook_url=webhook_url,
        )
        self._api = settings.api_url.rstrip("/")

    def _handle(self, body: dict[str, Any]) -> str:
        prediction_id = body.get("id")
        urls = body.get("urls")
        get = urls.get("get") if isinstance(urls, dict) else None
        cancel = urls.get("cancel") if isinstance(urls, dict) else None
        if not isinstance(prediction_id, str) or not prediction_id:
            raise Malformed("replicate: no prediction id")
        base = f"{self._api}/v1/predictions/{prediction_id}"
        get = get if isinstance(get, str) else base
        cancel = cancel if isinstance(cancel, str) else base + "/cancel"
        for url in (get, cancel):
            if not same_origin(url, self._api):  # these URLs get our token
                raise Malformed(f"replicate: a prediction URL off {self._api}")
        return json.dumps(
            {"id": prediction_id, "get": get, "cancel": cancel}, separators=(",", ":")
        )

    @staticmethod
    def _urls(handle: str) -> dict[str, str]:
        try:
            urls = json.loads(handle)
        except ValueError as exc:
            raise BackendError("replicate: unreadable handle", transient=False) from exc
        if not isinstance(urls, dict) or not all(
            isinstance(urls.get(k), str) for k in ("id", "get", "cancel")
        ):
            raise BackendError("replicate: unreadable handle", transient=False)
        return urls

    def _job_id_of(self, handle: str) -> str:
        return self._urls(handle)["id"]

    async def _image(
        self, jpeg: bytes, name: str = "image.jpg", content_type: str = "image/jpeg"
    ) -> str:
        if len(jpeg) < DATA_URI_LIMIT:
            return data_uri(jpeg, content_type)
        # An upload is safe to repeat: a duplicate file costs nothing and expires.
        response = await self.http.request(
            "POST",
            f"{self._api}/v1/files",
            files={"content": (name, jpeg, content_type)},
            safe=True,
        )
        if response.status_code not in (200, 201):
            raise BackendError(
                f"replicate files: HTTP {response.status_code}: {error_text(response)}",
                transient=response.status_code >= 500,
            )
        body = json_object(response, "replicate files")
        urls = body.get("urls")
        url = urls.get("get") if isinstance(urls, dict) else None
        if not isinstance(url, str):
            raise Malformed("replicate files: no urls.get")
        return url

    async def _submit_once(self, spec: RenderSpec) -> str:
        fields = self.fields(spec)
        payload = dict(fields)
        image_field = image_field_for(self.preset, spec)
        if image_field:  # (a speech stage sends text only)
            set_field(payload, image_field, await self._image(spec.image_jpeg))
        if self.preset.reference_audio_field and spec.reference_audio:
            # The character's voice sample, sent (or uploaded) the way the image is.
            audio = await self._image(spec.reference_audio, "voice.wav", "audio/wav")
            set_field(payload, self.preset.reference_audio_field, audio)
        body: dict[str, Any] = {"input": payload}
        if self.webhook_url:
            body.update(webhook=self.webhook_url, webhook_events_filter=["completed"])
        response = await self.http.request(
            "POST",
            f"{self._api}/v1/models/{self.preset.model}/predictions",
            json=body,
            # Replicate stops the prediction itself at our deadline (aborted if not started).
            headers={"Cancel-After": f"{max(1, int(self.deadline_seconds))}s"},
            safe=False,
        )
        if response.status_code in (400, 404, 409, 422):
            reason = error_text(response)
            if _REFUSAL.search(reason):
                raise ContentFiltered(f"replicate: {reason}")
            raise BackendError(f"replicate: input refused: {reason}", transient=False)
        if response.status_code >= 400:
            raise BackendError(
                f"replicate: create HTTP {response.status_code}: {error_text(response)}",
                transient=False,
            )
        try:
            return self._handle(json_object(response, "replicate create"))
        except Malformed as exc:
            raise OutcomeUnknown(str(exc)) from exc

    async def _lookup(self, spec: RenderSpec, taken: set[str]) -> str | None:
        fields = self.fields(spec)
        since = self.sent_since(spec) - _CLOCK_SKEW
        url: str | None = f"{self._api}/v1/predictions"
        for _ in range(_LISTING_PAGES):
            if url is None or not same_origin(url, self._api):
                return None
            response = await self.http.request("GET", url, safe=True)
            if response.status_code != 200:
                raise BackendError(
                    f"replicate listing: HTTP {response.status_code}",
                    transient=response.status_code >= 500,
                )
            body = json_object(response, "replicate listing")
            results = body.get("results")
            if not isinstance(results, list):
                raise Malformed("replicate listing: no results")
            for item in results:
                if not isinstance(item, dict) or item.get("id") in taken:
                    continue
                created = _created_at(item)
                if created is not None and created < since:
                    return None  # newest first: everything further on is older still
                model = item.get("model")
                given = item.get("input")
                if (
                    (model is None or model == self.preset.model)
                    and isinstance(given, dict)
                    and all(given.get(k) == v for k, v in fields.items())
                ):
                    return self._handle(item)
            next_url = body.get("next")
            url = next_url if isinstance(next_url, str) else None
        return None

    async def _prediction(self, handle: str) -> dict[str, Any] | None:
        response = await self.http.request("GET", self._urls(handle)["get"], safe=True)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(f"replicate get: HTTP {response.status_code}", transient=True)
        return json_object(response, "replicate get")

    async def _status(self, handle: str, last: BackendStatus | None) -> BackendStatus:
        body = await self._prediction(handle)
        if body is None:
            return BackendStatus(
                BackendState.FAILED, detail="replicate: prediction unknown", transient=True
            )
        status = body.get("status")
        state = _STATES.get(str(status))
        if state is None:
            log.warning("replicate: unknown status %r; still polling", status)
            return last or BackendStatus(BackendState.QUEUED)
        error = str(body.get("error") or "")
        if state is BackendState.FAILED and _REFUSAL.search(error):
            return BackendStatus(BackendState.FILTERED, detail=f"replicate: {error[:200]}")
        if status == "aborted":
            error = "aborted at the deadline before it started (not charged)"
        return BackendStatus(state, detail=error[:200])

    async def _result_url(self, handle: str) -> str:
        body = await self._prediction(handle)
        output = body.get("output") if body else None
        if isinstance(output, list) and output:
            output = output[0]
        if isinstance(output, dict):  # some models name their files
            output = output.get(self.preset.result_field) or next(iter(output.values()), None)
        if not isinstance(output, str):
            raise BackendError(
                "replicate: no output URL", transient=False, key="job.result_expired"
            )
        return output

    async def _cancel(self, handle: str) -> None:
        urls = self._urls(handle)
        response = await self.http.request("POST", urls["cancel"], safe=True)
        if response.status_code >= 400:
            log.warning(
                "replicate: cancel of %s answered HTTP %d", urls["id"], response.status_code
            )


def _created_at(item: dict[str, Any]) -> datetime | None:
    """Return a listed prediction's ``created_at``, if it is a readable ISO 8601 time."""
    value = item.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        created = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo is not None else None
