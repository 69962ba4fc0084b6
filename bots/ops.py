"""The operator's endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``ops_routes`` returns them as aiohttp route definitions, so any aiohttp server of the
process can mount them; ``OpsServer`` serves them on their own port when ``[metrics]
enabled`` is set. Answers never carry a secret: readiness names what failed and the kind of
error, and the details go to the (redacting) log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bots.listening import listen
from bots.runtime import Runtime
from config.settings import MetricsSettings
from core.backends.base import probe
from core.metrics import JOBS, refresh_queue

log = logging.getLogger(__name__)

_CHECK_SECONDS = 5.0  # a probe slower than this counts as failed: readiness must answer


def ops_routes(runtime: Runtime) -> list[web.RouteDef]:
    """Return GET /metrics, /healthz and /readyz for ``runtime``."""

    async def metrics(request: web.Request) -> web.Response:
        try:
            counts = await asyncio.wait_for(runtime.storage.jobs.count_by_state(), _CHECK_SECONDS)
        except Exception as exc:
            # No stale queue depth: the gauge goes missing, which an alert can catch.
            log.warning("metrics: cannot count the queue: %r", exc)
            JOBS.clear()
        else:
            refresh_queue(counts)
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        # Answering at all shows the event loop turns.
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = await readiness(runtime)
        failing = sorted(name for name, result in checks.items() if result != "ok")
        body = {"status": "not ready" if failing else "ready", "failing": failing, "checks": checks}
        return web.json_response(body, status=503 if failing else 200)

    return [
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
    ]


async def readiness(runtime: Runtime) -> dict[str, str]:
    """Check the store takes writes, the adapters are up and the backends reachable.

    Returns "ok" or the kind of failure for each of ``store``, ``adapter:<platform>``
    and ``backend:<name>``.
    """
    checks: dict[str, str] = {}

    async def check(name: str, probe_it: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(probe_it, _CHECK_SECONDS)
        except Exception as exc:
            log.warning("readiness: %s failed: %r", name, exc)
            checks[name] = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        else:
            checks[name] = "ok"

    probes = [check("store", runtime.storage.jobs.check_writable())]
    probes += [check(f"backend:{each.name}", probe(each)) for each in runtime.backends]
    await asyncio.gather(*probes)
    for platform, adapter in runtime.adapters.items():
        if adapter is None:
            checks[f"adapter:{platform}"] = "starting"
        else:
            checks[f"adapter:{platform}"] = "ok" if adapter.ready() else "not connected"
    return dict(sorted(checks.items()))


class OpsServer:
    """Serve the operator's endpoints on ``[metrics] listen:port``."""

    def __init__(self, settings: MetricsSettings, routes: list[web.RouteDef]) -> None:
        self._settings = settings
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    async def start(self) -> None:
        """Listen on the configured address and port."""
        app = web.Application()
        app.add_routes(self._routes)
        self._runner, self.port = await listen(app, self._settings.listen, self._settings.port)
        log.info("metrics and health on %s:%d", self._settings.listen, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
