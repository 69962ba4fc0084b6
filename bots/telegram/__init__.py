"""The Telegram adapter: python-telegram-bot 22 sharing one event loop with the worker."""

from __future__ import annotations

from .app import TelegramBot, build_application, run_telegram, upload_limit

__all__ = ["TelegramBot", "build_application", "run_telegram", "upload_limit"]
