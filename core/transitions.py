"""Job state changes shared by the worker's backend phase and its finishing phase."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from core.errors import LeaseLost
from core.models import EventKind, Job, JobEvent, JobState
from core.notify import NotifierRouter
from core.storage import JobStore
from core.storage.types import Moved

log = logging.getLogger(__name__)

_JOB_FIELDS = frozenset(field.name for field in fields(Job))
_UNFINISHED = frozenset(state for state in JobState if not state.is_terminal)


class Transitions:
    """Commits job state changes to the store and announces failures."""

    def __init__(
        self, *, store: JobStore, notifier: NotifierRouter, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._clock = clock

    async def fail(
        self, job: Job, key: str, params: dict[str, Any] | None = None, *, detail: str = ""
    ) -> Job:
        """Fail the job for good, tell its requester, and return it as it now stands."""
        log.warning("job %s failed: %s %s", job.id, key, detail)
        failed = await self.move(
            job,
            JobState.FAILED,
            # Never over a finished job: a late failure must not undo a delivery.
            expect=_UNFINISHED,
            error_key=key,
            error_params=params or {},
            error_detail=detail,
        )
        if failed.state is not JobState.FAILED:
            return failed
        await self._notifier.notify(
            JobEvent(EventKind.FAILED, failed, error_key=key, error_params=params or {})
        )
        return failed

    async def move(
        self,
        job: Job,
        to: JobState,
        *,
        expect: frozenset[JobState] | set[JobState] | None = None,
        **fields: Any,
    ) -> Job:
        """Commit a state change and return the job as it now stands.

        If the job was not in ``expect`` nothing changes and the job is returned as read
        back from the store. The change names the lease the job was read under: if another
        worker took the job over since, nothing changes and ``LeaseLost`` is raised.
        """
        moved = await self._store.transition(job.id, to, expect=expect, lease=job.lease, **fields)
        if moved is Moved.LOST:
            raise LeaseLost(job.id)
        if not moved:
            current = await self._store.job(job.id)
            return current if current is not None else job
        known = {name: value for name, value in fields.items() if name in _JOB_FIELDS}
        if "resubmitted" in known:
            known["resubmitted"] = bool(known["resubmitted"])
        now = self._clock()
        finished = now if to.is_terminal else job.finished_at
        return replace(job, state=to, updated_at=now, finished_at=finished, **known)
