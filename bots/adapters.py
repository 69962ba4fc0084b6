"""The adapters ``actorbot run`` can start (chat bots, the web page), and what turns each on.

A new platform is one more ``Adapter`` in ``ADAPTERS``: the CLI, ``doctor`` and the log
redaction read this list and name no platform themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bots.runtime import Runtime
from config.settings import Settings


class AdapterUnavailable(Exception):
    """An adapter could not start for a reason the operator can fix (text is safe to show)."""

    def __init__(self, headline: str, advice: str) -> None:
        super().__init__(f"{headline} {advice}")
        self.headline = headline
        self.advice = advice


class Running(Protocol):
    """A started adapter."""

    @property
    def intake(self) -> asyncio.Task[None]:
        """Return the task that takes the platform's events in; the process stops with it."""
        ...

    def ready(self) -> bool:
        """Return whether it is connected and taking (or sending) platform traffic."""
        ...


# (runtime, the other platforms running, whether to take the platform's events in)
Start = Callable[[Runtime, Sequence[str], bool], contextlib.AbstractAsyncContextManager[Running]]


@dataclass(frozen=True)
class Adapter:
    """One chat platform the process can serve."""

    name: str
    variable: str  # the environment variable holding its credential, for the operator
    origin: str  # where that credential comes from
    token: Callable[[Settings], str]  # empty: not configured
    secrets: Callable[[Settings], list[str]]  # values the logs must never show
    start: Start  # run it beside the worker; without intake it only sends (a worker process)
    chat: bool = True  # a chat platform: its users may /link their accounts on the others


@contextlib.asynccontextmanager
async def _start_telegram(
    runtime: Runtime, peers: Sequence[str], intake: bool
) -> AsyncIterator[Running]:
    # Imported here: ``actorbot generate`` never loads a platform library.
    from telegram.error import InvalidToken, NetworkError

    from bots.telegram import run_telegram

    try:
        async with run_telegram(runtime, peers=peers, intake=intake) as bot:
            yield bot
    except InvalidToken as exc:
        raise AdapterUnavailable(
            "Telegram refused the bot token.", "Check it with @BotFather."
        ) from exc
    except NetworkError as exc:
        raise AdapterUnavailable(
            "Cannot reach the Telegram Bot API.", "Check the network."
        ) from exc


@contextlib.asynccontextmanager
async def _start_discord(
    runtime: Runtime, peers: Sequence[str], intake: bool
) -> AsyncIterator[Running]:
    import aiohttp
    import discord

    from bots.discord import run_discord

    try:
        async with run_discord(runtime, peers=peers, intake=intake) as bot:
            yield bot
    except discord.LoginFailure as exc:
        raise AdapterUnavailable(
            "Discord refused the bot token.",
            "Check it in the Developer Portal (Bot > Reset Token).",
        ) from exc
    except (aiohttp.ClientConnectorError, discord.GatewayNotFound) as exc:
        raise AdapterUnavailable("Cannot reach Discord.", "Check the network.") from exc


@contextlib.asynccontextmanager
async def _start_web(
    runtime: Runtime, peers: Sequence[str], intake: bool
) -> AsyncIterator[Running]:
    from bots.web import run_web

    web = runtime.settings.web
    try:
        async with run_web(runtime, intake=intake) as page:
            yield page
    except OSError as exc:
        raise AdapterUnavailable(
            f"Cannot serve the web page on {web.listen}:{web.port} ({exc.strerror}).",
            "Set web.port to a free port.",
        ) from exc


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        name="telegram",
        variable="ACTORBOT_TELEGRAM__TOKEN",
        origin="from @BotFather",
        token=lambda s: s.telegram.token.get_secret_value(),
        # PTB logs call parameters at DEBUG, setWebhook's secret_token among them.
        secrets=lambda s: [
            s.telegram.token.get_secret_value(),
            s.telegram.webhook_secret.get_secret_value(),
        ],
        start=_start_telegram,
    ),
    Adapter(
        name="discord",
        variable="ACTORBOT_DISCORD__TOKEN",
        origin="from the Discord Developer Portal",
        token=lambda s: s.discord.token.get_secret_value(),
        # Interaction tokens are blanked by shape (bots/logs.py): no list names them.
        secrets=lambda s: [s.discord.token.get_secret_value()],
        start=_start_discord,
    ),
    Adapter(
        name="web",
        variable="ACTORBOT_WEB__TOKEN",
        origin="any random string of 16+ characters, with web.enabled = true",
        # Configured only when enabled: the token alone serves nothing.
        token=lambda s: s.web.token.get_secret_value() if s.web.enabled else "",
        secrets=lambda s: [s.web.token.get_secret_value()],
        start=_start_web,
        chat=False,
    ),
)


def configured(settings: Settings) -> list[Adapter]:
    """Return the adapters whose credentials are set."""
    return [adapter for adapter in ADAPTERS if adapter.token(settings)]


def secrets(settings: Settings) -> list[str]:
    """Return every adapter's secrets, for log redaction."""
    return [secret for adapter in ADAPTERS for secret in adapter.secrets(settings)]
