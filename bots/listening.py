"""Start an aiohttp application on an address: the page, metrics and provider webhooks."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def listen(
    app: web.Application, host: str, port: int, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host``:``port``; return its runner and the port bound (0: any free)."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # aiohttp keeps the listening sockets on the site's server; read the port a 0 became.
    sockets = getattr(site._server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port
