"""Pure translation of core events and results into chat texts and button layouts.

Platform limits (message and caption length) are passed in by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.i18n import normalize_locale, render, result_notes
from core.models import EventKind, Job, JobEvent, JobState


@dataclass(frozen=True)
class ButtonSpec:
    """One inline button before it gets its opaque id."""

    action: str  # "retake" | "newline" | "switch" | "cancel" | "approve" | "deny"
    label: str


# Waiting statuses change only when the user learns something new: the ETA moves in these
# steps (seconds, rounded up) and the place in the queue is shown only when it is "next".
# A status edited on every queue move would cost users x queue length edits.
_ETA_STEPS = (60, 120, 180, 300, 600, 900, 1200, 1800, 2700, 3600)
# Counts above the exact range are shown as the largest of these they reach ("20+").
_EXACT_COUNT = 5
_COUNT_STEPS = (10, 20, 50, 100, 200, 500, 1000)
# DeliveryAddress.extra: takes of the same line made before this request (re-takes), and
# the line's first request, under which its takes are counted.
TAKE_OFFSET = "take_offset"
LINE_REQUEST = "line_request"


def format_eta(seconds: float | None, locale: str | None) -> str:
    """Return a coarse ETA such as ``under a minute``, ``about 5 min`` or ``about 2 h``."""
    if seconds is None:
        return render("eta.unknown", locale)
    step = next((step for step in _ETA_STEPS if seconds <= step), None)
    if step is None:
        return render("eta.hours", locale, hours=math.ceil(seconds / 3600))
    if step <= 60:
        return render("eta.under_minute", locale)
    if step >= 3600:
        return render("eta.hours", locale, hours=step // 3600)
    return render("eta.minutes", locale, minutes=step // 60)


def coarse_count(count: int) -> str:
    """Return a count exactly when small, else the step it reached (``20+``)."""
    if count <= _EXACT_COUNT:
        return str(count)
    return f"{max((step for step in _COUNT_STEPS if step <= count), default=_EXACT_COUNT)}+"


def place(position: int, locale: str | None) -> str:
    """Return a place in a queue: ``3rd`` in English, ``3`` in Chinese, ``20+`` when far."""
    if position > _EXACT_COUNT:
        return coarse_count(position)
    if normalize_locale(locale) != "en":
        return str(position)
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(position, "th")
    return f"{position}{suffix}"


def take_numbers(job: Job) -> tuple[int, int]:
    """Return which take of its line a job is, and of how many, counting earlier re-takes."""
    offset = int(job.address.extra.get(TAKE_OFFSET, 0))
    return job.take + offset, job.takes + offset


@dataclass(frozen=True)
class TakeHint:
    """What a status shows beside the stored state: a place in a queue, which moves quietly.

    ``provider``: a place in the provider's own queue (while the take runs there), else in
    ours (while it waits). A hint for a state the take has left is ignored.
    """

    position: int | None = None
    eta_seconds: float | None = None
    provider: bool = False


def hint_of(event: JobEvent) -> TakeHint | None:
    """Return the place in a queue an event carries, if any."""
    if event.kind is EventKind.QUEUED:
        return TakeHint(event.position, event.eta_seconds)
    if event.kind in (EventKind.STARTED, EventKind.PROGRESS) and event.position is not None:
        return TakeHint(event.position, provider=True)
    return None


def take_line(job: Job, locale: str | None, hint: TakeHint | None = None) -> str:
    """Return the one-line state of a stored take for its status message.

    A function of the stored job (and the queue place passed in), so that any process
    renders the same line. Nothing here counts seconds: a status is edited on events,
    not on a clock, so a live counter would stand still between them.
    """
    state = job.state
    if state is JobState.QUEUED:
        ours = hint if hint is not None and not hint.provider else TakeHint()
        return queued_line(ours.position, ours.eta_seconds, locale)
    if state in (JobState.SUBMITTING, JobState.RUNNING):
        if hint is not None and hint.provider and hint.position is not None and hint.position >= 1:
            # The provider queues it (its own queue, not ours): where, is news; how long
            # so far, is not.
            return render("job.provider_queue", locale, place=place(hint.position, locale))
        return render("job.started", locale)
    if state in (JobState.DOWNLOADING, JobState.DELIVERING):
        # The chat shows "sending video…" while it uploads and the video follows in
        # seconds: an edit saying so would tell the user nothing new.
        return render("job.started", locale)
    if state is JobState.DONE:
        key = "job.delivered_unconfirmed" if job.delivery_unconfirmed else "job.delivered"
        take, takes = take_numbers(job)
        return render(key, locale, seconds=job.seconds, take=take, takes=takes)
    if state is JobState.CANCELED:
        return render("job.canceled", locale)
    return render(job.error_key or "job.backend_failed", locale, **job.error_params)


def queued_line(position: int | None, eta: float | None, locale: str | None) -> str:
    """Return a waiting take's line: a coarse ETA, and whether it is next."""
    key = "job.queued_next" if position == 1 else "job.queued"
    return render(key, locale, eta=format_eta(eta, locale))


def status_text(lines: dict[int, str], takes: int, locale: str | None, limit: int) -> str:
    """Join the takes' lines into the status message text."""
    if takes <= 1:
        text = lines.get(1) or next(iter(lines.values()), "…")
    else:
        text = "\n".join(
            render("chat.take_line", locale, take=take, takes=takes, text=lines.get(take, "…"))
            for take in range(1, takes + 1)
        )
    return clip(text, limit)


def clip(text: str, limit: int) -> str:
    """Shorten text to a platform limit, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def caption(job: Job, locale: str | None, limit: int) -> str:
    """Return the caption of a result video: the line, its length and which take it is."""
    take, takes = take_numbers(job)
    notes = "".join("\n" + note for note in result_notes(job.backend, job.retake_reason, locale))
    tail = render("chat.caption", locale, line="", seconds=job.seconds, take=take, takes=takes)
    room = limit - len(tail) - len(notes)
    return render(
        "chat.caption", locale, line=clip(job.line, room), seconds=job.seconds, take=take,
        takes=takes,
    ) + notes  # fmt: skip


def album_captions(jobs: list[Job], locale: str | None, limit: int) -> list[str | None]:
    """Return the captions of an album of takes: the first item speaks for all of them."""
    first = jobs[0]
    tail = render("chat.album_caption", locale, line="", seconds=first.seconds, count=len(jobs))
    text = render(
        "chat.album_caption",
        locale,
        line=clip(first.line, limit - len(tail)),
        seconds=first.seconds,
        count=len(jobs),
    )
    return [text, *([None] * (len(jobs) - 1))]


def album_buttons_text(count: int, locale: str | None) -> str:
    """Return the short message that carries the buttons an album cannot have."""
    return render("chat.album_buttons", locale, count=count)


def result_buttons(job: Job, locale: str | None) -> list[ButtonSpec]:
    """Return the buttons under a result: another take, a new line, the other length."""
    other = 10 if job.seconds == 5 else 5
    return [
        ButtonSpec("retake", render("chat.button.retake", locale)),
        ButtonSpec("newline", render("chat.button.new_line", locale)),
        ButtonSpec("switch", render("chat.button.switch", locale, seconds=other)),
    ]


def cancel_button(locale: str | None) -> ButtonSpec:
    """Return the cancel button shown while takes are waiting."""
    return ButtonSpec("cancel", render("chat.button.cancel", locale))


def access_request_text(name: str, username: str | None, user_id: str, locale: str | None) -> str:
    """Return the admins' message about an access request: who asks, to tell them apart."""
    handle = f" @{username}" if username else ""
    return render("chat.access_request", locale, name=name or "?", username=handle, user_id=user_id)


def access_buttons(locale: str | None) -> list[ButtonSpec]:
    """Return the two buttons under an access request."""
    return [
        ButtonSpec("approve", render("chat.button.approve", locale)),
        ButtonSpec("deny", render("chat.button.deny", locale)),
    ]


def access_decided_text(
    request: str, approved: bool, admin: str, locale: str | None, limit: int
) -> str:
    """Return an access request's message once decided: the request, the outcome and by whom."""
    key = "chat.access_approved_by" if approved else "chat.access_denied_by"
    return clip(render(key, locale, request=request, admin=admin), limit)


def stats_summary(counts: dict[str, int]) -> str:
    """Return ``queued 3 · done 10`` from counts by state."""
    return " · ".join(f"{state} {count}" for state, count in sorted(counts.items())) or "0"
