"""``actorbot doctor``: check that this machine can run the bot, one line per check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import av
from rich.console import Console

from bots.adapters import configured
from config.settings import Settings
from core.backends.preview.fonts import find_font
from core.backends.preview.tts import synthesize
from core.errors import ActorbotError
from core.storage import open_storage
from core.storage.postgres.connection import display_url

Check = Callable[[Settings], Awaitable[str]]


async def _config(settings: Settings) -> str:
    adapters = [adapter.name for adapter in configured(settings)]
    return (
        f"backend={settings.backend}, data_dir={settings.data_dir}, adapters={adapters or 'none'}"
    )


async def _fonts(settings: Settings) -> str:
    choice = find_font(settings.preview.font_path, need_cjk=True)
    if not choice.covers_cjk:
        raise RuntimeError(
            "no font with Chinese glyphs: install fonts-noto-cjk or fonts-wqy-microhei, "
            "or set ACTORBOT_PREVIEW__FONT_PATH"
        )
    return f"CJK subtitles with {choice.path}"


async def _speech(settings: Settings) -> str:
    english = await asyncio.to_thread(synthesize, "Hello there.", "en", None)
    chinese = await asyncio.to_thread(synthesize, "你好。", "zh", None)
    if english.duration <= 0.2 or chinese.duration <= 0.2:
        raise RuntimeError("espeak-ng produced no audio")
    return (
        f"espeak-ng speaks English ({english.duration:.1f} s)"
        f" and Mandarin ({chinese.duration:.1f} s)"
    )


async def _codecs(settings: Settings) -> str:
    missing = [name for name in ("libx264", "aac") if name not in av.codecs_available]
    if missing:
        raise RuntimeError(f"PyAV's FFmpeg lacks {', '.join(missing)}")
    return f"PyAV {av.__version__} with libx264 and AAC"


async def _store(settings: Settings) -> str:
    async with await open_storage(settings) as storage:
        counts = await storage.jobs.count_by_state()
    summary = ", ".join(f"{state.value}: {n}" for state, n in sorted(counts.items())) or "empty"
    if settings.store.engine == "postgresql":
        # Never the URL as configured: it may carry the password.
        where = f"PostgreSQL at {display_url(settings.store.url.get_secret_value())}"
    else:
        where = f"SQLite at {settings.store_path}"
    return f"{where} ({summary})"


CHECKS: tuple[tuple[str, Check], ...] = (
    ("config", _config),
    ("fonts", _fonts),
    ("speech", _speech),
    ("codecs", _codecs),
    ("store", _store),
)


async def doctor(settings: Settings, console: Console) -> int:
    """Run every check, print one line each, and return 0 only if all passed."""
    failed = 0
    for name, check in CHECKS:
        try:
            detail = await check(settings)
        except (ActorbotError, RuntimeError, OSError) as exc:
            failed += 1
            console.print(f"[red]✗ {name}[/]: {exc}")
        else:
            console.print(f"[green]✓ {name}[/]: {detail}")
    return 1 if failed else 0
