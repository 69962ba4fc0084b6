"""Build the PTB Application and run it beside the worker, in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from bots.adapters import AdapterUnavailable
from bots.chat.commands import ChatOptions
from bots.chat.conversation import Conversation
from bots.chat.delivery import ChatNotifier
from bots.chat.status import StatusBoard
from bots.runtime import Runtime
from config.settings import TelegramSettings
from core.failpoints import Failpoints

from .handlers import Handlers, set_command_menus
from .ingest import Ingest, Poller
from .platform import LOCAL_UPLOAD_LIMIT, PLATFORM, PUBLIC_UPLOAD_LIMIT, TelegramPlatform
from .routing import Me, event_key
from .webhook import WebhookServer

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 5.0


def upload_limit(settings: TelegramSettings) -> int:
    """Return the largest video the bot may send: configured, or the server's limit."""
    if settings.max_upload_bytes:
        return settings.max_upload_bytes
    return LOCAL_UPLOAD_LIMIT if settings.local_mode else PUBLIC_UPLOAD_LIMIT


def leaky_bucket(rate: float, window: float, burst: float = 1.0) -> tuple[float, float]:
    """Return aiolimiter's (max_rate, time_period) that pass ``rate`` calls per ``window``.

    ``AsyncLimiter(n, window)`` is a leaky bucket of size n that drains n per window: after
    a quiet spell it lets n calls through at once and n more as it drains, so PTB's
    ``AIORateLimiter(30)`` sends up to 60 messages in one second. A bucket of ``burst``
    calls that drains the rest of the rate keeps every window at ``rate`` (for rates of
    twice the burst and more), less a tenth: Telegram counts when calls arrive, and network
    delays bunch them up. (0, 0) turns the limit off, as 0 does for PTB.
    """
    if rate <= 0:
        return 0.0, 0.0
    burst = max(1.0, min(burst, rate / 2))
    drained = max(rate * 0.9 - burst, rate / 2)  # per window, besides the burst
    return burst, window * burst / drained


def build_application(settings: TelegramSettings) -> Application:  # type: ignore[type-arg]
    """Return an Application without PTB's Updater: updates are fetched by ``Poller``."""
    # PTB 22 is moving time periods from int seconds to timedelta and warns on each read of
    # the old form, even inside RetryAfter's own constructor on every 429. Opt in to the
    # new form (``retry_seconds`` handles both) so a flood wait is not also a warning.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    # The whole bot: throughput matters, so the bucket holds a tenth (a video and its
    # chat action still go together). A group: its few messages come together
    # (acknowledgement, status, video), so a quarter may.
    overall_rate = settings.overall_max_rate
    overall_burst, overall_period = leaky_bucket(overall_rate, 1.0, burst=overall_rate // 10)
    group_rate = settings.group_max_rate
    group_burst, group_period = leaky_bucket(group_rate, 60.0, burst=group_rate // 4)
    limiter = AIORateLimiter(
        overall_max_rate=overall_burst,
        overall_time_period=overall_period,
        group_max_rate=group_burst,
        group_time_period=group_period,
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
    platform: TelegramPlatform
    notifier: ChatNotifier
    intake: asyncio.Task[None]
    receiving: bool = True  # polling or a webhook; False: a worker process, sending only

    def ready(self) -> bool:
        """Return whether the bot is up: its intake alive and, when receiving, PTB running."""
        return not self.intake.done() and (self.app.running or not self.receiving)


@contextlib.asynccontextmanager
async def run_telegram(
    runtime: Runtime, *, peers: Sequence[str] = (), intake: bool = True
) -> AsyncIterator[TelegramBot]:
    """Start the bot (polling or webhook) and register it as the Telegram notifier.

    ``peers`` are the other chat platforms this deployment runs: commands that reach them
    (``/link``) are offered only when there is one. Start the bot before the worker claims
    jobs and leave it after the worker stopped: the worker delivers through this bot.
    Without ``intake`` (a worker process) it only sends and edits through the Bot API: no
    polling, no webhook, no handlers; its ``intake`` task just waits to be canceled.
    """
    if not intake:
        async with _bot_api_only(runtime) as bot:
            yield bot
        return
    settings = runtime.settings.telegram
    app = build_application(settings)
    chatstate = runtime.storage.chats
    failpoints = Failpoints(runtime.settings.debug.failpoints)
    await app.initialize()  # getMe: a wrong token fails here
    try:
        me = Me(app.bot.id, app.bot.username)
        platform, board, notifier = _outbound(runtime, app)
        ingest = Ingest(
            app, chatstate,
            lambda update: event_key(update, me, group_trigger=settings.group_trigger),
            failpoints=failpoints,
        )  # fmt: skip
        options = ChatOptions(
            admins=frozenset(str(admin) for admin in settings.admin_ids),
            photo_memory_seconds=settings.photo_memory_seconds,
            history_size=settings.history_size,
            max_takes=runtime.settings.prompts.max_takes,
            peers=tuple(peers),
        )
        conversation = Conversation(
            platform=platform, service=runtime.service, store=runtime.storage.jobs,
            chatstate=chatstate, board=board, inbox=ingest, options=options,
        )  # fmt: skip
        Handlers(conversation, board=board, ingest=ingest, settings=settings, me=me).register(app)
        await set_command_menus(app.bot, peers)
        await app.start()
        replayed = await ingest.replay()
        if replayed:
            log.info("replaying %d stored updates", replayed)
        poller = Poller(ingest, timeout=settings.poll_timeout_seconds, failpoints=failpoints)
        webhook = WebhookServer(ingest, settings) if settings.webhook_url else None
        taking = asyncio.create_task(
            webhook.run() if webhook is not None else poller.run(), name="telegram-intake"
        )
        taking.add_done_callback(_report_intake)
        log.info("telegram bot @%s running (%s)", me.username, "webhook" if webhook else "polling")
        try:
            yield TelegramBot(app, me, ingest, board, platform, notifier, taking)
        finally:
            taking.cancel()
            try:
                await asyncio.gather(taking, return_exceptions=True)
                if webhook is None:
                    await poller.confirm()
                await ingest.drain(_DRAIN_SECONDS)
                await board.close()
            finally:
                await app.stop()
    finally:
        await app.shutdown()


def _outbound(
    runtime: Runtime,
    app: Application,  # type: ignore[type-arg]
) -> tuple[TelegramPlatform, StatusBoard, ChatNotifier]:
    """Build what sends and edits through the Bot API and register it as the notifier."""
    settings = runtime.settings.telegram
    platform = TelegramPlatform(
        app.bot,
        max_upload_bytes=upload_limit(settings),
        max_download_bytes=settings.max_download_bytes,
        local_mode=settings.local_mode,
    )
    board = StatusBoard(
        platform, runtime.storage.chats, runtime.storage.jobs,
        private_interval=settings.private_edit_interval_seconds,
        group_interval=settings.group_edit_interval_seconds,
        eta=runtime.service.eta_for,
    )  # fmt: skip
    notifier = ChatNotifier(
        platform, board, runtime.storage.chats, work_dir=runtime.settings.data_dir / "telegram"
    )
    runtime.router.add(PLATFORM, notifier)
    return platform, board, notifier


@contextlib.asynccontextmanager
async def _bot_api_only(runtime: Runtime) -> AsyncIterator[TelegramBot]:
    """Run the bot for a worker process: deliveries and status edits, no updates."""
    settings = runtime.settings.telegram
    app = build_application(settings)
    await app.initialize()  # getMe: a wrong token fails here too
    try:
        me = Me(app.bot.id, app.bot.username)
        platform, board, notifier = _outbound(runtime, app)
        ingest = Ingest(app, runtime.storage.chats, lambda update: None)  # never fed
        idle = asyncio.create_task(_wait_forever(), name="telegram-outbound")
        log.info("telegram bot @%s sending only (worker role)", me.username)
        try:
            yield TelegramBot(app, me, ingest, board, platform, notifier, idle, receiving=False)
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)
            await board.close()
    finally:
        await app.shutdown()


async def _wait_forever() -> None:
    await asyncio.Event().wait()


def _report_intake(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and isinstance(task.exception(), AdapterUnavailable):
        return  # said in one line by the command that started it
    if not task.cancelled() and task.exception() is not None:
        log.critical("telegram intake stopped", exc_info=task.exception())
