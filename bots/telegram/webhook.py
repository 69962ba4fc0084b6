"""Webhook intake: Telegram POSTs updates; answer 200 only once they are stored.

Telegram retries a delivery that did not get a 2xx, so a crash before the inbox commit
loses nothing, as with polling. The secret token set with setWebhook comes back in the
``X-Telegram-Bot-Api-Secret-Token`` header; anything without it is refused.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import urlsplit

from aiohttp import web
from telegram import Update

from config.settings import TelegramSettings

from .ingest import _ALLOWED_UPDATES, Ingest

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookServer:
    """Serve the webhook path and register it with Telegram."""

    def __init__(self, ingest: Ingest, settings: TelegramSettings) -> None:
        self._ingest = ingest
        self._settings = settings
        self._secret = settings.webhook_secret.get_secret_value()
        self.path = urlsplit(settings.webhook_url).path or "/"
        self.port: int | None = None

    def application(self) -> web.Application:
        """Return the aiohttp application answering the webhook path."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.path, self._receive)
        return app

    async def run(self) -> None:
        """Listen, set the webhook, and serve until canceled."""
        if not self._secret:
            raise ValueError("telegram.webhook_secret must be set in webhook mode")
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._settings.webhook_listen, self._settings.webhook_port)
            await site.start()
            await self._ingest.bot.set_webhook(
                self._settings.webhook_url,
                secret_token=self._secret,
                allowed_updates=list(_ALLOWED_UPDATES),
            )
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            log.warning("webhook call without the secret token refused")
            return web.Response(status=403)
        try:
            data = json.loads(await request.read())
            update = Update.de_json(data, self._ingest.bot)
        except (ValueError, TypeError, KeyError):
            # A 2xx: a body that cannot be parsed will not parse better when retried.
            log.warning("unparseable webhook body ignored")
            return web.Response(status=200)
        try:
            await self._ingest.accept([update])
        except Exception:
            log.exception("could not store update %s; Telegram will retry", update.update_id)
            return web.Response(status=500)
        return web.Response(status=200)
