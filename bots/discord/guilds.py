"""A guild's own rules for the bot: the channels it answers in and its daily cap of takes.

Checked before a request is acknowledged, so a refusal is private and nothing is started.
The guild's takes of the day are counted at the same moment (one atomic statement in the
store, so two members cannot both take the last ones), and given back when the request was
not admitted after all (refused by the conversation or its quota checks): only admitted
takes count against the guild.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import PromptSettings
from core.errors import PromptRejected
from core.i18n import render
from core.prompts import parse_line
from core.quotas import Quotas, time_left
from core.storage.chats import ChatStore
from core.storage.jobs import JobStore

from .platform import PLATFORM


@dataclass(frozen=True)
class Counted:
    """Takes counted against a guild's day, to give back if the request is not admitted."""

    guild_id: str
    day: str
    takes: int


def channel_list(channels: tuple[str, ...]) -> str:
    """Return channel ids as Discord mentions, for messages."""
    return ", ".join(f"<#{channel}>" for channel in channels)


class GuildRules:
    """What a guild's settings allow, and its daily count of takes."""

    def __init__(
        self,
        chats: ChatStore,
        jobs: JobStore,
        quotas: Quotas,
        prompts: PromptSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._chats = chats
        self._jobs = jobs
        self._quotas = quotas
        self._prompts = prompts
        self._clock = clock

    async def set_channels(self, guild_id: str, channels: tuple[str, ...]) -> None:
        """Set the channels the bot answers in within a guild (empty: every channel)."""
        await self._chats.set_guild_channels(PLATFORM, guild_id, channels)

    async def set_cap(self, guild_id: str, cap: int) -> None:
        """Set the guild's daily cap of takes (0: no cap)."""
        await self._chats.set_guild_cap(PLATFORM, guild_id, cap)

    def takes_of(self, line: str) -> int:
        """Return how many takes a line asks for (1 when it is refused later anyway)."""
        try:
            return parse_line(line, self._prompts).takes
        except PromptRejected:
            return 1

    async def refusal(
        self, guild_id: str, channels: tuple[str, ...], locale: str
    ) -> tuple[str | None, int]:
        """Return why a request in these channels is refused (or None) and the guild's cap."""
        rules = await self._chats.guild_settings(PLATFORM, guild_id)
        allowed = rules.allowed_channels
        if allowed and not any(channel in allowed for channel in channels):
            return render("discord.channel_not_allowed", locale, channels=channel_list(allowed)), 0
        return None, rules.daily_cap

    def full(self, cap: int, locale: str) -> str:
        """Return the refusal of a request over the guild's daily cap."""
        hours, minutes = time_left(self._quotas.day(self._clock()).resets_at, self._clock())
        return render("discord.guild_full", locale, limit=cap, hours=hours, minutes=minutes)

    async def count(
        self, guild_id: str, channels: tuple[str, ...], takes: int, locale: str
    ) -> Counted | str:
        """Count takes against the guild's day, or return why the request is refused."""
        refused, cap = await self.refusal(guild_id, channels, locale)
        if refused is not None:
            return refused
        # Counted even without a cap, so a cap set later in the day knows the day so far.
        day = self._quotas.day(self._clock()).key
        if not await self._chats.add_guild_takes(PLATFORM, guild_id, day, takes):
            return self.full(cap, locale)
        return Counted(guild_id, day, takes)

    async def settle(self, counted: Counted, source_key: str) -> None:
        """Give the takes back unless the request was admitted."""
        if await self._jobs.find_request(source_key) is None:
            guild, day = counted.guild_id, counted.day
            await self._chats.add_guild_takes(PLATFORM, guild, day, -counted.takes)
