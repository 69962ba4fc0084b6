"""How the core reaches adapters: the Notifier protocol and a router by platform."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.errors import DeliveryError
from core.models import Job, JobEvent
from core.storage.types import Portrait

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """An adapter's side of the job life cycle."""

    async def notify(self, event: JobEvent) -> None:
        """Show a status change to the requester (best effort: errors are logged, not raised)."""
        ...

    async def deliver(self, job: Job, video: Path) -> None:
        """Send the finished video to the job's address; raise DeliveryError if it can't."""
        ...


@runtime_checkable
class GroupNotifier(Notifier, Protocol):
    """An adapter that can send several takes of one request together (optional)."""

    async def deliver_group(self, jobs: list[Job], videos: list[Path]) -> None:
        """Send the takes' videos as one group to their request's address, or raise."""
        ...


@runtime_checkable
class PortraitNotifier(Protocol):
    """An adapter that can show drawn candidates for a new character (optional)."""

    async def show_portraits(self, portrait: Portrait, candidates: list[bytes]) -> None:
        """Show the candidates with a way to pick one; raise if they could not be shown."""
        ...

    async def portrait_failed(self, portrait: Portrait) -> None:
        """Tell the requester that drawing failed (refunded); raise if it could not be said."""
        ...


class NotifierRouter:
    """Send each job's events to the adapter of the platform it came from."""

    def __init__(self, notifiers: Mapping[str, Notifier]) -> None:
        self._notifiers = dict(notifiers)

    @property
    def platforms(self) -> tuple[str, ...]:
        """Return the platforms this process can deliver to."""
        return tuple(sorted(self._notifiers))

    def add(self, platform: str, notifier: Notifier) -> None:
        """Register the adapter for a platform."""
        self._notifiers[platform] = notifier

    async def notify(self, event: JobEvent) -> None:
        """Forward a status change; a failing adapter never stops the worker."""
        notifier = self._notifiers.get(event.job.address.platform)
        if notifier is None:
            return
        try:
            await notifier.notify(event)
        except Exception:
            log.exception("notifier for %s failed on %s", event.job.address.platform, event.kind)

    async def deliver(self, job: Job, video: Path) -> None:
        """Hand the video to the job's adapter."""
        notifier = self._notifiers.get(job.address.platform)
        if notifier is None:
            raise DeliveryError(f"no adapter for platform {job.address.platform}", permanent=False)
        await notifier.deliver(job, video)

    def delivers_groups(self, platform: str) -> bool:
        """Return whether the platform's adapter sends several takes as one group."""
        return isinstance(self._notifiers.get(platform), GroupNotifier)

    async def deliver_group(self, jobs: list[Job], videos: list[Path]) -> None:
        """Hand the takes of one request to their adapter as one group."""
        notifier = self._notifiers.get(jobs[0].address.platform)
        if not isinstance(notifier, GroupNotifier):
            raise DeliveryError(
                f"no group delivery for {jobs[0].address.platform}", permanent=False
            )
        await notifier.deliver_group(jobs, videos)

    async def show_portraits(self, portrait: Portrait, candidates: list[bytes]) -> None:
        """Hand drawn candidates to the request's adapter (none there: the store has them)."""
        notifier = self._notifiers.get(portrait.address.platform)
        if isinstance(notifier, PortraitNotifier):
            await notifier.show_portraits(portrait, candidates)

    async def portrait_failed(self, portrait: Portrait) -> None:
        """Tell the request's adapter that drawing failed."""
        notifier = self._notifiers.get(portrait.address.platform)
        if isinstance(notifier, PortraitNotifier):
            await notifier.portrait_failed(portrait)
