"""A small aiohttp receiver for provider callbacks (Replicate, fal) in the bot's process.

A callback is checked (core/backends/webhooks.py: signature, clock skew), de-duplicated,
and then only wakes the job's poll: the state always comes from the provider's API, so a
forged, replayed or lying callback changes nothing. Polling stays the fallback when
callbacks are off or lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from bots.listening import listen
from config.settings import WebhookSettings
from core.backends.base import VideoBackend
from core.backends.providers.common import ProviderBackend
from core.backends.webhooks import SeenWebhooks, WebhookRejected, verify_fal, verify_replicate

log = logging.getLogger(__name__)

_MAX_BODY = 1_000_000  # a prediction or result notice, never a file


def _fal_keys(encoded: Sequence[str]) -> list[bytes]:
    keys = []
    for text in encoded:
        try:
            keys.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            log.warning("webhooks.fal_public_keys: an entry is not base64url; ignored")
    return keys


class WebhookReceiver:
    """Serve POST /replicate and POST /fal; each verified callback wakes its job's poll."""

    def __init__(
        self,
        settings: WebhookSettings,
        backends: Sequence[VideoBackend],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._backends = [b for b in backends if isinstance(b, ProviderBackend)]
        self._clock = clock
        self._seen = SeenWebhooks()
        self._fal_keys = _fal_keys(settings.fal_public_keys)
        self._runner: web.AppRunner | None = None
        self.port = settings.port
        self.woken = 0  # callbacks that woke a job (for tests and logs)

    async def start(self) -> None:
        """Listen on the configured address and port."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/replicate", self._replicate)
        app.router.add_post("/fal", self._fal)
        self._runner, self.port = await listen(app, self._settings.listen, self._settings.port)
        log.info("provider webhooks on %s:%d", self._settings.listen, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _replicate(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = self._settings.replicate_secret.get_secret_value()
        try:
            if not secret:
                raise WebhookRejected("no webhooks.replicate_secret configured")
            delivery = verify_replicate(request.headers, body, secret, now=self._clock())
        except WebhookRejected as exc:
            log.warning("replicate webhook refused: %s", exc)
            return web.Response(status=401)
        if not self._seen.first_time(f"replicate:{delivery}"):
            return web.Response(status=200, text="duplicate")
        try:
            prediction_id = json.loads(body).get("id")
        except (ValueError, AttributeError):
            prediction_id = None
        if not isinstance(prediction_id, str):
            return web.Response(status=400)
        return self._wake("replicate", prediction_id)

    async def _fal(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if not self._fal_keys:
                raise WebhookRejected("no webhooks.fal_public_keys configured")
            request_id = verify_fal(request.headers, body, self._fal_keys, now=self._clock())
        except WebhookRejected as exc:
            log.warning("fal webhook refused: %s", exc)
            return web.Response(status=401)
        # fal re-sends the same signed message on retries: its timestamp tells them apart
        # from a new notice about the same request.
        stamp = request.headers.get("X-Fal-Webhook-Timestamp", "")
        if not self._seen.first_time(f"fal:{request_id}:{stamp}"):
            return web.Response(status=200, text="duplicate")
        return self._wake("fal", request_id)

    def _wake(self, provider: str, provider_job_id: str) -> web.Response:
        woke = any(
            backend.wake(provider_job_id)
            for backend in self._backends
            if backend.provider == provider
        )
        self.woken += woke
        # 200 either way: the job may have finished already, or live in another process.
        return web.Response(status=200, text="woken" if woke else "unknown")
