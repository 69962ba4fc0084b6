"""The GAGA platform (GAGA-1), as observed in public client code, not published docs.

Bearer key; ``POST /v1/assets`` (multipart ``file``) answers an asset ``id`` (a number);
``POST /v1/generations`` with ``model``, ``resolution``, ``aspectRatio``, ``source``
``{type: image, content: <asset id>}`` and ``chunks`` ``[{duration, conditions: [{type:
text, content: <line>}]}]`` answers a generation ``id``; ``GET /v1/generations/{id}``
answers ``status`` (pending / processing / completed or success / failed) and the result
in ``url`` or ``creations[].url``. Everything is parsed tolerantly: an unknown status
keeps polling until the job's deadline. No listing and no cancel have been seen, so a
submit whose answer was lost cannot be reconciled: the take fails with a refund and a log
line naming the possible orphan; it is never sent twice.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from config.models import GagaSettings, PresetSettings
from core.backends.base import BackendCapabilities, BackendState, BackendStatus, RenderSpec
from core.backends.presets import made_seconds
from core.backends.providers.common import ProviderBackend
from core.backends.providers.http import Malformed, OutcomeUnknown, error_text, json_object
from core.errors import BackendError, ContentFiltered

log = logging.getLogger(__name__)

_STATES = {
    "pending": BackendState.QUEUED,
    "queued": BackendState.QUEUED,
    "waiting": BackendState.QUEUED,
    "processing": BackendState.RUNNING,
    "running": BackendState.RUNNING,
    "generating": BackendState.RUNNING,
    "completed": BackendState.SUCCEEDED,
    "success": BackendState.SUCCEEDED,
    "succeeded": BackendState.SUCCEEDED,
    "failed": BackendState.FAILED,
    "error": BackendState.FAILED,
    "canceled": BackendState.CANCELED,
    "cancelled": BackendState.CANCELED,
}
_REFUSAL = re.compile(r"sensitive|content polic|moderat|nsfw|violat|审核|敏感", re.IGNORECASE)


def _id(value: Any) -> str | None:
    # Ids are numbers (Java longs) in the observed client; accept strings as well.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isalnum():
        return value.strip()
    return None


class GagaBackend(ProviderBackend):
    """GAGA-1 on the GAGA platform."""

    provider = "gaga"
    capabilities = BackendCapabilities(settles_unknown_submit=True, cancel=False)

    def __init__(
        self,
        *,
        name: str,
        preset: PresetSettings,
        settings: GagaSettings,
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
            secret_setting="providers.gaga.key",
            auth={"Authorization": f"Bearer {settings.key.get_secret_value()}"},
            webhook_url=webhook_url,
        )
        self._api = settings.api_url.rstrip("/")

    def _job_id_of(self, handle: str) -> str:
        return handle

    async def _asset(self, jpeg: bytes) -> int | str:
        # Uploading twice only leaves an unused asset: safe to repeat.
        response = await self.http.request(
            "POST",
            f"{self._api}/v1/assets",
            files={"file": ("image.jpg", jpeg, "image/jpeg")},
            safe=True,
        )
        if response.status_code >= 400:
            raise BackendError(
                f"gaga assets: HTTP {response.status_code}: {error_text(response)}",
                transient=response.status_code >= 500,
            )
        asset = _id(json_object(response, "gaga assets").get("id"))
        if asset is None:
            raise Malformed("gaga assets: no id")
        return int(asset) if asset.isdigit() else asset

    async def _submit_once(self, spec: RenderSpec) -> str:
        asset = await self._asset(spec.image_jpeg)
        prompt = self.preset.prompt.format(
            line=spec.line, speech=spec.speech, language=spec.language
        )
        body = {
            "model": self.preset.model,
            "resolution": "720p",
            "aspectRatio": "16:9",
            **self.preset.extra,
            "source": {"type": "image", "content": asset},
            "chunks": [
                {
                    "duration": made_seconds(self.preset, spec.seconds),
                    "conditions": [{"type": "text", "content": prompt}],
                }
            ],
        }
        response = await self.http.request(
            "POST", f"{self._api}/v1/generations", json=body, safe=False
        )
        if 400 <= response.status_code < 500:
            reason = error_text(response)
            if _REFUSAL.search(reason):
                raise ContentFiltered(f"gaga: {reason}")
            raise BackendError(
                f"gaga: generation refused (HTTP {response.status_code}): {reason}",
                transient=False,
            )
        try:
            generation = _id(json_object(response, "gaga generations").get("id"))
        except Malformed as exc:
            raise OutcomeUnknown(str(exc)) from exc
        if generation is None:
            raise OutcomeUnknown("gaga generations: no id in an accepted reply")
        return generation

    async def _lookup(self, spec: RenderSpec, taken: set[str]) -> str | None:
        return None  # no listing has been observed

    async def _generation(self, handle: str) -> dict[str, Any] | None:
        response = await self.http.request("GET", f"{self._api}/v1/generations/{handle}", safe=True)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(f"gaga get: HTTP {response.status_code}", transient=True)
        body = json_object(response, "gaga get")
        # Some gateways wrap the object in {"data": ...}.
        data = body.get("data")
        return data if isinstance(data, dict) and "status" in data else body

    async def _status(self, handle: str, last: BackendStatus | None) -> BackendStatus:
        body = await self._generation(handle)
        if body is None:
            return BackendStatus(BackendState.FAILED, detail="gaga: generation unknown")
        status = str(body.get("status", "")).lower()
        state = _STATES.get(status)
        if state is None:
            log.warning("gaga: unknown status %r for %s; still polling", status, handle)
            return last or BackendStatus(BackendState.QUEUED)
        reason = str(body.get("error") or body.get("message") or body.get("reason") or "")
        if state is BackendState.FAILED and _REFUSAL.search(reason):
            return BackendStatus(BackendState.FILTERED, detail=f"gaga: {reason[:200]}")
        if state is BackendState.SUCCEEDED and _result(body) is None:
            # Finished, but the file is not listed yet: keep polling.
            return last or BackendStatus(BackendState.RUNNING)
        progress = body.get("progress")
        return BackendStatus(
            state,
            detail=reason[:200],
            progress=progress / 100 if isinstance(progress, int | float) and progress > 1 else None,
        )

    async def _result_url(self, handle: str) -> str:
        body = await self._generation(handle)
        url = _result(body) if body else None
        if url is None:
            raise BackendError("gaga: no result URL", transient=False, key="job.result_expired")
        return url


def _result(body: dict[str, Any]) -> str | None:
    url = body.get("url")
    if isinstance(url, str) and url:
        return url
    creations = body.get("creations")
    if isinstance(creations, list):
        for creation in creations:
            if isinstance(creation, dict) and isinstance(creation.get("url"), str):
                return str(creation["url"])
    return None
