"""The wake-ups protocol: tell idle workers that work may be claimable now.

A worker with nothing to claim sleeps until the next waiting job's ``not_before`` or a
heartbeat at the latest; a wake-up cuts that short after an admission, or a change that
frees work (a slot, an in-flight cap, a re-queued take). Within one process (SQLite, the
embedded default) it is an ``asyncio.Event``; a shared engine carries it between
processes (PostgreSQL: LISTEN/NOTIFY). Workers in other processes on SQLite are not woken:
they find new work at their next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Wakeups(Protocol):
    """Notify waiting workers; wait for a notification."""

    def notify(self) -> None:
        """Wake every waiting worker; returns at once (an engine may send it in the background)."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification or ``timeout`` seconds; return whether one came.

        A notification sent while nobody waited is kept for the next ``wait``, so one that
        arrives between a claim that found nothing and the wait is not lost.
        """
        ...


class LocalWakeups:
    """``Wakeups`` within one process, on an ``asyncio.Event``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every waiting worker of this process."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification or ``timeout`` seconds; return whether one came."""
        notified = False
        with contextlib.suppress(TimeoutError):
            notified = await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        return notified
