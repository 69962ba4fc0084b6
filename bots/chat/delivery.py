"""The core's Notifier for a chat platform: status changes and result delivery."""

from __future__ import annotations

import logging
from pathlib import Path

from core.delivery import fit_video_async
from core.errors import DeliveryError
from core.i18n import render
from core.models import Job, JobEvent
from core.storage import ChatStore
from core.storage.types import Portrait

from .intents import place_of
from .platform import Action, Blocked, Keyboard, PhotoAlbums, Platform, Video
from .status import StatusBoard
from .texts import album_buttons_text, album_captions, caption, hint_of, result_buttons

log = logging.getLogger(__name__)


class ChatNotifier:
    """Show status changes in the requester's chat and send results there."""

    def __init__(
        self, platform: Platform, board: StatusBoard, chatstate: ChatStore, *, work_dir: Path
    ) -> None:
        self._platform = platform
        self._board = board
        self._chatstate = chatstate
        self._work_dir = work_dir  # re-encodes that fit the upload limit

    @property
    def max_upload_bytes(self) -> int:
        """Return the largest video the platform takes."""
        return self._platform.capabilities.upload_limit

    def upload_limit(self, job: Job) -> int:
        """Return the largest video this request's chat takes (read when it arrived)."""
        return place_of(job.address).upload_limit or self.max_upload_bytes

    async def notify(self, event: JobEvent) -> None:
        """Update the request's status message from the store (throttled; never raises)."""
        self._board.update(event.job, hint_of(event))

    def _check_blocked(self, chat_id: str) -> None:
        if self._board.is_blocked(chat_id):
            # Known refusal: asking again would only add to the invalid-request count.
            raise DeliveryError("the user blocked the bot", permanent=True)

    async def deliver(self, job: Job, video: Path) -> None:
        """Send the video as a reply to the request, with the result buttons."""
        address = job.address
        place = place_of(address)
        self._check_blocked(place.chat_id)
        # Never upload what the platform would refuse as too large: fit it first (or refuse).
        fitted = await fit_video_async(video, self.upload_limit(job), self._work_dir)
        locale = address.extra.get("locale")
        owner = str(address.extra.get("user", ""))
        text = caption(job, locale, self._platform.capabilities.caption_limit)
        buttons = await self._result_buttons(job, locale, owner)
        try:
            async with self._platform.uploading(place):
                sent = await self._platform.send_video(
                    place,
                    Video(fitted, text, f"{job.id}.mp4"),
                    reply_to=address.reply_to,
                    buttons=buttons,
                )
        except Blocked as exc:
            self._board.block(place.chat_id)
            raise DeliveryError(f"forbidden: {exc}", permanent=True) from exc
        finally:
            if fitted != video:
                fitted.unlink(missing_ok=True)
        if sent.file_ref is not None and owner:
            # The video arrived: a bookkeeping error must not turn it into a failed take.
            try:
                await self._chatstate.add_history(
                    self._platform.name, owner, job.id, address.chat_id, sent.file_ref, text
                )
            except Exception:
                log.exception("recording history for job %s failed", job.id)

    async def deliver_group(self, jobs: list[Job], videos: list[Path]) -> None:
        """Send several takes as one album replying to the request, then their buttons.

        An album cannot carry buttons, so one short message after it does. An album holds
        at most ``capabilities.albums`` items (Telegram: 10, also the settings' cap on takes).
        """
        first = jobs[0]
        address = first.address
        place = place_of(address)
        self._check_blocked(place.chat_id)
        locale = address.extra.get("locale")
        owner = str(address.extra.get("user", ""))
        limit = self._platform.capabilities.caption_limit
        fitted: list[Path] = []
        try:
            async with self._platform.uploading(place):
                for video in videos:
                    fitted.append(
                        await fit_video_async(video, self.upload_limit(first), self._work_dir)
                    )
                album = [
                    Video(path, text, f"{job.id}.mp4")
                    for job, path, text in zip(
                        jobs, fitted, album_captions(jobs, locale, limit), strict=True
                    )
                ]
                sent = await self._platform.send_album(place, album, reply_to=address.reply_to)
        except Blocked as exc:
            self._board.block(place.chat_id)
            raise DeliveryError(f"forbidden: {exc}", permanent=True) from exc
        finally:
            for path, video in zip(fitted, videos, strict=False):
                if path != video:
                    path.unlink(missing_ok=True)
        try:
            for job, message in zip(jobs, sent, strict=False):
                if owner and message.file_ref is not None:
                    await self._chatstate.add_history(
                        self._platform.name, owner, job.id, address.chat_id, message.file_ref,
                        caption(job, locale, limit),
                    )  # fmt: skip
        except Exception:
            # The album arrived: a bookkeeping error must not make the worker send it again.
            log.exception("recording history for request %s failed", first.request_id)
        try:
            await self._platform.send(
                place,
                album_buttons_text(len(jobs), locale),
                reply_to=sent[0].message_id if sent else None,
                buttons=await self._result_buttons(first, locale, owner),
            )
        except Exception as exc:
            # The videos arrived: sending the album again for its buttons would be worse.
            log.warning("buttons after the album in chat %s failed: %r", place.chat_id, exc)

    async def _result_buttons(self, job: Job, locale: str | None, owner: str) -> Keyboard:
        specs = result_buttons(job, locale)
        ids = await self._chatstate.add_buttons(
            self._platform.name,
            [(spec.action, job.request_id, job.id, owner) for spec in specs],
        )
        return [[Action(spec.label, button_id)] for spec, button_id in zip(specs, ids, strict=True)]

    async def show_portraits(self, portrait: Portrait, candidates: list[bytes]) -> None:
        """Send the drawn candidates as an album, then a message with 1..N and cancel."""
        address = portrait.address
        place = place_of(address)
        self._check_blocked(place.chat_id)
        locale = address.extra.get("locale")
        if not isinstance(self._platform, PhotoAlbums):
            await self._platform.send(place, render("portrait.not_shown", locale))
            return
        await self._platform.send_photos(place, candidates, reply_to=address.reply_to)
        owner = str(address.extra.get("user", ""))
        # The button's job id carries the candidate's number; 0 picks none.
        numbers = [*range(1, len(candidates) + 1), 0]
        ids = await self._chatstate.add_buttons(
            self._platform.name, [("portrait", portrait.id, str(n), owner) for n in numbers]
        )
        picks = [Action(str(n), button_id) for n, button_id in zip(numbers, ids, strict=True)]
        keyboard = [picks[:-1], [Action(render("portrait.cancel_label", locale), ids[-1])]]
        text = render("portrait.pick", locale, name=portrait.name)
        await self._platform.send(place, text, buttons=keyboard)

    async def portrait_failed(self, portrait: Portrait) -> None:
        """Say that drawing failed, and that its credits came back."""
        place = place_of(portrait.address)
        locale = portrait.address.extra.get("locale")
        key = portrait.error_key or "portrait.failed"
        await self._platform.send(place, render(key, locale, name=portrait.name))
