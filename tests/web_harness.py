"""The operator's page on loopback: the real runtime, the page, and a logged-in client."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bots.runtime import Runtime, open_runtime
from bots.web import WebAdapter, run_web
from tests.conftest import make_settings

TOKEN = "correct-horse-battery-staple"


@dataclass
class Page:
    """A running page and the runtime behind it."""

    runtime: Runtime
    web: WebAdapter

    @property
    def url(self) -> str:
        assert self.web.page is not None
        return f"http://127.0.0.1:{self.web.page.port}"


@contextlib.asynccontextmanager
async def running_page(
    tmp_path: Path, *, worker: bool = False, **settings: Any
) -> AsyncIterator[Page]:
    """Start the runtime with only the web adapter (and the worker, if asked)."""
    web = {"enabled": True, "token": TOKEN, "port": 0, **settings.pop("web", {})}
    config = make_settings(tmp_path, web=web, **settings)
    async with open_runtime(config, {}) as runtime, run_web(runtime) as adapter:
        task = asyncio.create_task(runtime.worker.run()) if worker else None
        try:
            yield Page(runtime, adapter)
        finally:
            await runtime.worker.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def client() -> aiohttp.ClientSession:
    """Return a client that keeps cookies of an IP-address host (aiohttp drops them by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(session: aiohttp.ClientSession, page: Page, token: str = TOKEN) -> str:
    """Log in and return the session's CSRF token, as the page carries it."""
    async with session.post(f"{page.url}/login", data={"token": token}) as reply:
        assert reply.status == 200, await reply.text()
        text = await reply.text()
    match = re.search(r'<meta name="csrf" content="([^"]+)">', text)
    assert match is not None
    return match[1]
