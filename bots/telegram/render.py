"""Pure translation of core events and results into Telegram texts and button layouts."""

from __future__ import annotations

from dataclasses import dataclass

from core.i18n import render
from core.models import EventKind, Job, JobEvent

CAPTION_LIMIT = 1024  # characters in a media caption
TEXT_LIMIT = 4096  # characters in a message


@dataclass(frozen=True)
class ButtonSpec:
    """One inline button before it gets its opaque id."""

    action: str  # "retake" | "newline" | "switch" | "cancel" | "approve" | "deny"
    label: str


def format_seconds(seconds: float, locale: str | None, *, least: int = 1) -> str:
    """Return a short duration such as ``45 s`` or ``3 min`` (never below ``least`` s)."""
    if seconds < 90:
        return render("eta.seconds", locale, seconds=max(least, round(seconds)))
    return render("eta.minutes", locale, minutes=round(seconds / 60))


def elapsed_seconds(job: Job, now: float) -> float:
    """Return how long a take has been generating, in 5 s steps.

    Rounding keeps the text still between progress events, so the throttled status
    message is not edited just because a second passed.
    """
    if job.started_at is None:
        return 0.0
    return max(0.0, (now - job.started_at) // 5 * 5)


def status_line(event: JobEvent, locale: str | None, now: float) -> str:
    """Return the one-line state of a take for its status message."""
    job = event.job
    kind = event.kind
    if kind is EventKind.QUEUED:
        return queued_line(event.position, event.eta_seconds, locale)
    if kind in (EventKind.STARTED, EventKind.PROGRESS):
        elapsed = format_seconds(elapsed_seconds(job, now), locale, least=0)
        return render("job.started", locale, elapsed=elapsed)
    if kind is EventKind.DELIVERING:
        return render("job.delivering", locale)
    if kind is EventKind.DELIVERED:
        key = "job.delivered_unconfirmed" if job.delivery_unconfirmed else "job.delivered"
        return render(key, locale, seconds=job.seconds, take=job.take, takes=job.takes)
    if kind is EventKind.CANCELED:
        return render("job.canceled", locale)
    key = event.error_key or job.error_key or "job.backend_failed"
    params = event.error_params or job.error_params
    return render(key, locale, **params)


def queued_line(position: int | None, eta: float | None, locale: str | None) -> str:
    """Return the queue position and ETA line."""
    return render(
        "job.queued",
        locale,
        position=position if position is not None else "?",
        eta=format_seconds(eta, locale) if eta is not None else "?",
    )


def status_text(lines: dict[int, str], takes: int, locale: str | None) -> str:
    """Join the takes' lines into the status message text."""
    if takes <= 1:
        text = lines.get(1) or next(iter(lines.values()), "…")
    else:
        text = "\n".join(
            render("tg.take_line", locale, take=take, takes=takes, text=lines.get(take, "…"))
            for take in range(1, takes + 1)
        )
    return clip(text, TEXT_LIMIT)


def clip(text: str, limit: int) -> str:
    """Shorten text to a platform limit, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def caption(job: Job, locale: str | None) -> str:
    """Return the caption of a result video: the line, its length and which take it is."""
    tail = render(
        "tg.caption", locale, line="", seconds=job.seconds, take=job.take, takes=job.takes
    )
    room = CAPTION_LIMIT - len(tail)
    return render(
        "tg.caption",
        locale,
        line=clip(job.line, room),
        seconds=job.seconds,
        take=job.take,
        takes=job.takes,
    )


def album_captions(jobs: list[Job], locale: str | None) -> list[str | None]:
    """Return the captions of an album of takes: the first item speaks for all of them."""
    first = jobs[0]
    tail = render("tg.album_caption", locale, line="", seconds=first.seconds, count=len(jobs))
    text = render(
        "tg.album_caption",
        locale,
        line=clip(first.line, CAPTION_LIMIT - len(tail)),
        seconds=first.seconds,
        count=len(jobs),
    )
    return [text, *([None] * (len(jobs) - 1))]


def album_buttons_text(count: int, locale: str | None) -> str:
    """Return the short message that carries the buttons an album cannot have."""
    return render("tg.album_buttons", locale, count=count)


def result_buttons(job: Job, locale: str | None) -> list[ButtonSpec]:
    """Return the buttons under a result: another take, a new line, the other length."""
    other = 10 if job.seconds == 5 else 5
    return [
        ButtonSpec("retake", render("tg.button.retake", locale)),
        ButtonSpec("newline", render("tg.button.new_line", locale)),
        ButtonSpec("switch", render("tg.button.switch", locale, seconds=other)),
    ]


def cancel_button(locale: str | None) -> ButtonSpec:
    """Return the cancel button shown while takes are waiting."""
    return ButtonSpec("cancel", render("tg.button.cancel", locale))


def access_request_text(name: str, username: str | None, user_id: str, locale: str | None) -> str:
    """Return the admins' message about an access request: who asks, to tell them apart."""
    handle = f" @{username}" if username else ""
    return render("tg.access_request", locale, name=name or "?", username=handle, user_id=user_id)


def access_buttons(locale: str | None) -> list[ButtonSpec]:
    """Return the two buttons under an access request."""
    return [
        ButtonSpec("approve", render("tg.button.approve", locale)),
        ButtonSpec("deny", render("tg.button.deny", locale)),
    ]


def access_decided_text(request: str, approved: bool, admin: str, locale: str | None) -> str:
    """Return an access request's message once decided: the request, the outcome and by whom."""
    key = "tg.access_approved_by" if approved else "tg.access_denied_by"
    return clip(render(key, locale, request=request, admin=admin), TEXT_LIMIT)


def stats_summary(counts: dict[str, int]) -> str:
    """Return ``queued 3 · done 10`` from counts by state."""
    return " · ".join(f"{state} {count}" for state, count in sorted(counts.items())) or "0"
