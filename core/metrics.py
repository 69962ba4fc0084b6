"""The Prometheus metrics of one process, defined once.

Counters and histograms live in each process (the default registry): Prometheus scrapes
every process and ``sum()`` adds them up. The queue gauge is different: it is read from
the store at scrape time (``refresh_queue``), so every process reports the same, true
depth when they share a PostgreSQL store. No label carries a user id: labels are states,
outcomes, reasons (message keys), backends, providers, platforms and codes, all bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from config.models import PresetSettings
from core.backends.base import VideoBackend
from core.backends.presets import made_seconds
from core.models import Job, JobState

# Seconds: waits run from a second to an hour, runs from a preview's seconds to a
# hosted model's minutes.
_WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_RUN_BUCKETS = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 1800.0)
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

JOBS = Gauge("actorbot_jobs", "Jobs in the store by state, read at scrape time.", ["state"])
JOB_WAIT = Histogram(
    "actorbot_job_wait_seconds",
    "Time from admission until a backend took the job.",
    ["backend"],
    buckets=_WAIT_BUCKETS,
)
JOB_RUN = Histogram(
    "actorbot_job_run_seconds",
    "Time a backend worked on a job, from its claim until the backend's final state.",
    ["backend"],
    buckets=_RUN_BUCKETS,
)
JOBS_FINISHED = Counter(
    "actorbot_jobs_finished_total",
    "Jobs that reached a final state, by outcome and reason (the message key).",
    ["outcome", "reason"],
)
TAKE_CHECK_FAILURES = Counter(
    "actorbot_take_check_failures_total",
    "Finished takes that failed the take check, by reason.",
    ["reason"],
)
PROVIDER_REQUEST = Histogram(
    "actorbot_provider_request_duration_seconds",
    "Duration of HTTP requests to a hosted provider that got an answer.",
    ["provider", "method"],
    buckets=_REQUEST_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "actorbot_provider_request_errors_total",
    "HTTP requests to a hosted provider that failed: transport, rate_limited or the status.",
    ["provider", "error"],
)
PLATFORM_ERRORS = Counter(
    "actorbot_platform_api_errors_total",
    "Errors from a chat platform's API, by platform and code.",
    ["platform", "code"],
)
CREDITS_DEBITED = Counter(
    "actorbot_credits_debited_total", "Credits charged at admission.", ["platform"]
)
CREDITS_REFUNDED = Counter(
    "actorbot_credits_refunded_total", "Credits paid back for failed or canceled takes."
)
FLOOD_REFUSALS = Counter(
    "actorbot_flood_refusals_total", "Requests refused by the flood guard.", ["platform"]
)
ESTIMATED_SPEND = Counter(
    "actorbot_estimated_spend_usd_total",
    "Estimated provider spend: the preset's price per second times the seconds it made.",
    ["preset"],
)
MADE_SECONDS = Counter(
    "actorbot_video_seconds_total", "Seconds of video made by a provider preset.", ["preset"]
)


def refresh_queue(counts: Mapping[JobState, int]) -> None:
    """Set the queue gauge from the store's counts (every state, zero when absent)."""
    for state in JobState:
        JOBS.labels(state=state.value).set(counts.get(state, 0))


def job_finished(to: JobState, fields: Mapping[str, Any], refunded: int) -> None:
    """Count a committed move into ``to`` (if final) and the credits it paid back."""
    if refunded > 0:
        CREDITS_REFUNDED.inc(refunded)
    if not to.is_terminal:
        return
    reason = fields.get("error_key")
    if to is JobState.DONE:
        reason = "unconfirmed" if fields.get("delivery_unconfirmed") else "delivered"
    JOBS_FINISHED.labels(outcome=to.value, reason=reason or "unknown").inc()


def jobs_canceled(canceled: Sequence[tuple[str, int]], key: str) -> list[str]:
    """Count takes a ban canceled (with their refunds, once committed); return their ids."""
    for _, paid in canceled:
        job_finished(JobState.CANCELED, {"error_key": key}, paid)
    return [job_id for job_id, _ in canceled]


def job_started(job: Job, backend: str) -> None:
    """Observe how long a job waited for its first claim (not a retry's or re-take's)."""
    if job.started_at is not None and job.attempts <= 1 and job.retake_reason is None:
        JOB_WAIT.labels(backend=backend).observe(max(0.0, job.started_at - job.created_at))


def job_ran(running: Job, backend: str, now: float) -> None:
    """Observe how long the backend worked on a job, from its move to RUNNING until now."""
    JOB_RUN.labels(backend=backend).observe(max(0.0, now - running.updated_at))


def take_made(backend: VideoBackend, requested_seconds: int) -> None:
    """Count a take a provider preset made: its seconds and, if priced, its estimated cost."""
    preset = getattr(backend, "preset", None)
    if not isinstance(preset, PresetSettings):
        return  # the preview renderer and a job-API server cost nothing we know of
    made = made_seconds(preset, requested_seconds)
    MADE_SECONDS.labels(preset=backend.name).inc(made)
    if preset.price_per_second is not None:
        ESTIMATED_SPEND.labels(preset=backend.name).inc(preset.price_per_second * made)
