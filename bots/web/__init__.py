"""The operator's web page and playground: an adapter like the chat bots (platform "web")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bots.runtime import Runtime

from .notifier import PLATFORM, WebNotifier
from .server import WebPage

log = logging.getLogger(__name__)

__all__ = ["PLATFORM", "WebAdapter", "WebNotifier", "WebPage", "run_web"]


@dataclass
class WebAdapter:
    """The running adapter: its page (None in a worker process) and its notifier."""

    page: WebPage | None
    notifier: WebNotifier
    intake: asyncio.Task[None]

    def ready(self) -> bool:
        """Return whether the page is up (a worker process has none and needs none)."""
        return not self.intake.done() and (self.page is None or self.page.serving)


async def _serve_until_cancelled() -> None:
    await asyncio.Event().wait()  # the page's server runs on its own; this marks it alive


@contextlib.asynccontextmanager
async def run_web(runtime: Runtime, *, intake: bool = True) -> AsyncIterator[WebAdapter]:
    """Register the playground's notifier and, with ``intake``, serve the page.

    A worker process (no intake) only keeps finished playground takes where the page of an
    ingress process reads them: the same data directory.
    """
    notifier = WebNotifier(runtime.settings.data_dir / PLATFORM)
    runtime.router.add(PLATFORM, notifier)
    page = WebPage(runtime, notifier) if intake else None
    if page is not None:
        await page.start()
    idle = asyncio.create_task(_serve_until_cancelled(), name="web-intake")
    try:
        yield WebAdapter(page, notifier, idle)
    finally:
        idle.cancel()
        await asyncio.gather(idle, return_exceptions=True)
        if page is not None:
            await page.stop()
