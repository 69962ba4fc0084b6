"""Build the PTB Application and run it beside the worker, in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from bots.runtime import Runtime
from config.settings import TelegramSettings
from core.chatstate import ChatState
from core.failpoints import Failpoints

from .commands import set_command_menus
from .handlers import Deps, Handlers
from .ingest import Ingest, Poller
from .notifier import LOCAL_UPLOAD_LIMIT, PUBLIC_UPLOAD_LIMIT, TelegramNotifier
from .routing import PLATFORM, Me, event_key
from .status import StatusBoard
from .webhook import WebhookServer

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 5.0


def upload_limit(settings: TelegramSettings) -> int:
    """Return the largest video the bot may send: configured, or the server's limit."""
    if settings.max_upload_bytes:
        return settings.max_upload_bytes
    return LOCAL_UPLOAD_LIMIT if settings.local_mode else PUBLIC_UPLOAD_LIMIT


def build_application(settings: TelegramSettings) -> Application:  # type: ignore[type-arg]
    """Return an Application without PTB's Updater: updates are fetched by ``Poller``."""
    # PTB 22 is moving time periods from int seconds to timedelta and warns on each read of
    # the old form, even inside RetryAfter's own constructor on every 429. Opt in to the
    # new form (``retry_seconds`` handles both) so a flood wait is not also a warning.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    limiter = AIORateLimiter(
        overall_max_rate=settings.overall_max_rate,
        group_max_rate=settings.group_max_rate,
        max_retries=settings.rate_limit_retries,  # PTB's default is 0: a 429 would be final
    )
    builder = (
        ApplicationBuilder()
        .token(settings.token.get_secret_value())
        .updater(None)
        .rate_limiter(limiter)
        .media_write_timeout(120.0)
    )
    if settings.base_url:
        builder = builder.base_url(settings.base_url)
    if settings.base_file_url:
        builder = builder.base_file_url(settings.base_file_url)
    if settings.local_mode:
        builder = builder.local_mode(True)
    return builder.build()


@dataclass
class TelegramBot:
    """The running adapter: its Application and the parts tests look at."""

    app: Application  # type: ignore[type-arg]
    me: Me
    ingest: Ingest
    board: StatusBoard
    notifier: TelegramNotifier
    intake: asyncio.Task[None]


@contextlib.asynccontextmanager
async def run_telegram(runtime: Runtime) -> AsyncIterator[TelegramBot]:
    """Start the bot (polling or webhook) and register it as the Telegram notifier.

    Start it before the worker claims jobs and leave it after the worker stopped: the
    worker delivers through this bot.
    """
    settings = runtime.settings.telegram
    app = build_application(settings)
    chatstate = ChatState(runtime.store)
    failpoints = Failpoints(runtime.settings.debug.failpoints)
    await app.initialize()  # getMe: a wrong token fails here
    try:
        me = Me(app.bot.id, app.bot.username)
        board = StatusBoard(
            app.bot, runtime.store, chatstate,
            private_interval=settings.private_edit_interval_seconds,
            group_interval=settings.group_edit_interval_seconds,
        )  # fmt: skip
        notifier = TelegramNotifier(
            app.bot, board, chatstate,
            max_upload_bytes=upload_limit(settings),
            work_dir=runtime.settings.data_dir / "telegram",
            local_mode=settings.local_mode,
        )  # fmt: skip
        runtime.router.add(PLATFORM, notifier)
        ingest = Ingest(
            app, chatstate,
            lambda update: event_key(update, me, group_trigger=settings.group_trigger),
            failpoints=failpoints,
        )  # fmt: skip
        deps = Deps(
            bot=app.bot, service=runtime.service, store=runtime.store, chatstate=chatstate,
            board=board, ingest=ingest, settings=settings, prompts=runtime.settings.prompts,
            me=me,
        )  # fmt: skip
        Handlers(deps).register(app)
        await set_command_menus(app.bot)
        await app.start()
        replayed = await ingest.replay()
        if replayed:
            log.info("replaying %d stored updates", replayed)
        poller = Poller(ingest, timeout=settings.poll_timeout_seconds, failpoints=failpoints)
        webhook = WebhookServer(ingest, settings) if settings.webhook_url else None
        intake = asyncio.create_task(
            webhook.run() if webhook is not None else poller.run(), name="telegram-intake"
        )
        intake.add_done_callback(_report_intake)
        log.info("telegram bot @%s running (%s)", me.username, "webhook" if webhook else "polling")
        try:
            yield TelegramBot(app, me, ingest, board, notifier, intake)
        finally:
            intake.cancel()
            try:
                await asyncio.gather(intake, return_exceptions=True)
                if webhook is None:
                    await poller.confirm()
                await ingest.drain(_DRAIN_SECONDS)
                await board.close()
            finally:
                await app.stop()
    finally:
        await app.shutdown()


def _report_intake(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("telegram intake stopped", exc_info=task.exception())
