"""What the operator's page shows, as pure functions over stored data (no I/O, no aiohttp)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.models import PresetSettings
from core.i18n import render
from core.models import TERMINAL_STATES, Job, JobState
from core.storage.types import UsageRow

IN_PROGRESS = "in progress"  # the outcome of a take that has not finished yet
NOT_STARTED = "not started"  # the preset of a take no worker has claimed yet


def queue_rows(waiting: Sequence[Job], active: Sequence[Job], now: float) -> list[dict[str, Any]]:
    """Return the live queue as the page shows it: waiting takes in start order, then active."""
    rows = [_queue_row(job, position, now) for position, job in enumerate(waiting, start=1)]
    rows.extend(_queue_row(job, None, now) for job in active)
    return rows


def _queue_row(job: Job, position: int | None, now: float) -> dict[str, Any]:
    return {
        "id": job.id,
        "request": job.request_id,
        "platform": job.address.platform,
        "state": job.state.value,
        "position": position,
        "age": max(0.0, now - job.created_at),
        "backend": job.backend or "",
        "take": f"{job.take}/{job.takes}",
        "line": job.line,
    }


@dataclass(frozen=True)
class Slots:
    """How many of a backend's slots are taken."""

    backend: str
    in_use: int
    capacity: int | None  # None: a backend this process does not run (another process's)


def slot_rows(in_use: Mapping[str, int], capacities: Mapping[str, int]) -> list[Slots]:
    """Return every configured backend's slots, and any other backend the store names."""
    rows = [Slots(name, in_use.get(name, 0), slots) for name, slots in capacities.items()]
    rows.extend(
        Slots(name or "?", count, None) for name, count in in_use.items() if name not in capacities
    )
    return rows


@dataclass(frozen=True)
class Failure:
    """A failed take and why, in the words the requester saw."""

    job_id: str
    platform: str
    backend: str
    finished_at: float | None
    reason: str  # the rendered message
    key: str  # its message key
    detail: str  # what the log said (never shown to the requester)


def failures(jobs: Iterable[Job], locale: str = "en") -> list[Failure]:
    """Return the failed takes with their reasons rendered."""
    return [
        Failure(
            job.id,
            job.address.platform,
            job.backend or "",
            job.finished_at,
            render(job.error_key, locale, **job.error_params) if job.error_key else "",
            job.error_key or "",
            job.error_detail or "",
        )
        for job in jobs
    ]


def outcome(state: JobState) -> str:
    """Return how a take ended, or that it is still on its way."""
    return state.value if state in TERMINAL_STATES else IN_PROGRESS


def day_labels(first_day: int, days: int) -> list[str]:
    """Return ``days`` ISO dates starting ``first_day`` days after 1970-01-01."""
    epoch = dt.date(1970, 1, 1)
    return [(epoch + dt.timedelta(days=first_day + n)).isoformat() for n in range(days)]


def usage_series(
    rows: Iterable[UsageRow], by: str, first_day: int, days: int
) -> dict[str, list[float]]:
    """Return takes per day for each value of ``by`` (platform, outcome or preset)."""
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    for row in rows:
        index = row.day - first_day
        if 0 <= index < days:
            series[_category(row, by)][index] += row.takes
    return dict(sorted(series.items()))


def _category(row: UsageRow, by: str) -> str:
    if by == "platform":
        return row.platform
    if by == "outcome":
        return outcome(row.state)
    if by == "preset":
        return row.backend or NOT_STARTED
    raise ValueError(f"unknown usage category {by!r}")


def spend_series(
    rows: Iterable[UsageRow], presets: Mapping[str, PresetSettings], first_day: int, days: int
) -> dict[str, list[float]]:
    """Return the estimated spend in USD per day for each priced preset.

    An estimate: each delivered take costs the seconds the model makes for its length
    times the preset's listed ``price_per_second``. Failed takes are left out (providers
    bill what they made, which the store cannot tell apart from what they never started).
    """
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    for row in rows:
        preset = presets.get(row.backend or "")
        index = row.day - first_day
        if preset is None or preset.price_per_second is None or not 0 <= index < days:
            continue
        if row.state is not JobState.DONE:
            continue
        made = preset.durations.get(row.seconds, row.seconds)
        series[row.backend or ""][index] += row.takes * made * preset.price_per_second
    return dict(sorted(series.items()))


def total(series: Mapping[str, Sequence[float]]) -> float:
    """Return the sum of every series."""
    return sum(sum(values) for values in series.values())


def utc_offset_seconds(zone: dt.tzinfo, now: float) -> int:
    """Return how far east of UTC the zone is at ``now`` (days on the charts start there)."""
    offset = dt.datetime.fromtimestamp(now, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def today(now: float, offset_seconds: int) -> int:
    """Return the day number (days since 1970-01-01 in the zone) of ``now``."""
    return int((now + offset_seconds) // 86_400)
