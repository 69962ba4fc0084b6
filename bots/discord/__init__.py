"""The Discord adapter: translation and wiring of discord.py onto the shared conversation."""

from __future__ import annotations

from .app import DiscordBot, run_discord

__all__ = ["DiscordBot", "run_discord"]
