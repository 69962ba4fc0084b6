"""What the current task is working on, for structured logs: job id, platform, backend.

The worker sets these around each job's task (asyncio copies the context into every task
it creates, so a job's fields never leak into another job's lines); a log formatter
(bots/logs.py, ``log_format = "json"``) adds them to every record logged meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from core.backends.base import VideoBackend
from core.models import Job

# An immutable default: nothing may change it in place.
_FIELDS: ContextVar[Mapping[str, str | int]] = ContextVar(
    "actorbot_log_fields", default=MappingProxyType({})
)


def log_fields() -> Mapping[str, str | int]:
    """Return the fields of the job the current task is handling (empty outside one)."""
    return _FIELDS.get()


@contextmanager
def logging_for(**fields: str | int | None) -> Iterator[None]:
    """Add fields (None ones are left out) to every log record until the block ends."""
    known = {name: value for name, value in fields.items() if value is not None}
    token = _FIELDS.set({**_FIELDS.get(), **known})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def set_job(job: Job, backend: VideoBackend | None = None) -> None:
    """Name this job (and the backend it is on) in the rest of the current task's logs."""
    fields: dict[str, str | int] = {
        **_FIELDS.get(),
        "job_id": job.id,
        "platform": job.address.platform,
        "attempt": job.attempts,
    }
    if backend is not None:
        fields.update(backend_fields(backend))
    _FIELDS.set(fields)


def backend_fields(backend: VideoBackend) -> dict[str, str]:
    """Return the backend and, for a hosted model, the preset a job is on."""
    provider = getattr(backend, "provider", "")
    if isinstance(provider, str) and provider:
        return {"backend": provider, "preset": backend.name}
    return {"backend": backend.name}
