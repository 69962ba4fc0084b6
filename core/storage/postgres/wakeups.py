"""Wake-ups across processes on PostgreSQL: LISTEN/NOTIFY on one channel.

Every process listens on ``actorbot_jobs`` with a connection of its own and turns each
notification into a local wake-up; ``notify`` wakes this process at once and sends the
NOTIFY in the background, so an admission never waits for it. A notification lost while
the listening connection was down is made up for: the listener reports the reconnect and
every waiting worker re-checks the store (a spurious wake-up costs one claim query).
"""

from __future__ import annotations

import asyncio
import logging

from core.storage.postgres.connection import Listener
from core.storage.postgres.database import Database
from core.storage.wakeups import LocalWakeups

log = logging.getLogger(__name__)

CHANNEL = "actorbot_jobs"


class PostgresWakeups:
    """``Wakeups`` shared by every process on one database."""

    def __init__(self, db: Database, url: str) -> None:
        self._db = db
        self._local = LocalWakeups()
        self._listener = Listener(url, CHANNEL, self._heard)
        self._sending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start listening; return once the LISTEN is in place."""
        await self._listener.start()

    async def aclose(self) -> None:
        """Stop listening and let notifications still on their way go out."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await self._listener.aclose()

    def _heard(self, payload: str | None) -> None:
        # None: the listener reconnected and may have missed some; wake up and re-check.
        self._local.notify()

    def notify(self) -> None:
        """Wake the workers of this process now and those of the others through NOTIFY."""
        self._local.notify()
        task = asyncio.get_running_loop().create_task(self._send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self) -> None:
        try:
            await self._db.execute("SELECT pg_notify($1, '')", CHANNEL)
        except Exception as exc:
            # Other processes then find the work at their next heartbeat, as on SQLite.
            log.warning("could not notify other processes of new work: %s", type(exc).__name__)

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification from any process, or ``timeout`` seconds."""
        return await self._local.wait(timeout)
