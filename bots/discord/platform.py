"""The chat platform protocol on discord.py: interaction webhooks first, the channel after.

An interaction's token answers for 15 minutes (edits and followups through
``/webhooks/{app}/{token}``); real models take longer. Each request keeps its token and
expiry in its delivery address (``Place.route``), so any process can follow up with
``Webhook.partial`` before the token expires, and carry on in the channel (mentioning the
requester; a DM when the channel refuses) after it did or after Discord said so (401).

discord.py's exceptions are mapped here, once: into ``bots.chat.platform``'s tree for
messages and into the core's ``DeliveryError`` for uploads. 401 and 403 are never retried:
enough invalid requests get the bot's address banned by Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord
from PIL import Image

from bots.chat.platform import (
    AskReply,
    Blocked,
    Capabilities,
    Keyboard,
    MessageGone,
    Origin,
    PhotoRef,
    Place,
    PlatformError,
    Refused,
    Sent,
    Video,
)
from core.errors import DeliveryError, DeliveryUnknown, ImageRejected
from core.metrics import PLATFORM_ERRORS

from .ui import LineModal, keyboard_view

log = logging.getLogger(__name__)

PLATFORM = "discord"
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bots outside boosted guilds
TOKEN_SECONDS = 15 * 60  # an interaction token answers this long
# Switch to the channel this long before the token expires: an upload takes time too.
TOKEN_MARGIN_SECONDS = 60.0
TEXT_LIMIT = 1900  # of Discord's 2000 characters; the rest is for a mention
ATTACHMENTS = 10  # files in one message
_EXPIRED_TOKEN = 50027  # "Invalid Webhook Token": the interaction token expired
_TOO_LARGE = 40005  # "Request entity too large"
_UNKNOWN_MESSAGE = 10008
_NOBODY = discord.AllowedMentions.none()
# Discord answers an upload once it has the file: wait that long at least, longer for big
# files. discord.py sets no time-out of its own but aiohttp's 5 minutes for everything.
UPLOAD_READ_TIMEOUT = 120.0
_UPLOAD_BYTES_PER_SECOND = 250_000
_PART_OVERHEAD = 1024  # bytes of a multipart part's headers, and the message's JSON
_SMALLEST_SIDE = 64  # a picture is not shrunk below this to fit an upload limit


@dataclass(frozen=True)
class Followup:
    """An interaction's way back: its token, when it expires, its message and requester."""

    token: str
    expires_at: float  # epoch seconds
    original: str | None  # the interaction's own response message
    user: str  # the requester, mentioned when the channel takes over

    def encode(self) -> str:
        """Return the route string kept in the delivery address."""
        # Key "token": the log formatter blanks any value under that key.
        return json.dumps(
            {"token": self.token, "expires": self.expires_at, "original": self.original,
             "user": self.user}
        )  # fmt: skip

    @classmethod
    def decode(cls, route: str | None) -> Followup | None:
        """Return the followup a route names, or None (no route, or not ours)."""
        if not route:
            return None
        try:
            data = json.loads(route)
            return cls(str(data["token"]), float(data["expires"]), data["original"], data["user"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable interaction route ignored")
            return None


def is_expired_token(exc: discord.HTTPException) -> bool:
    """Return whether Discord refused an interaction token because it expired."""
    return exc.status == 401 or exc.code == _EXPIRED_TOKEN


def is_too_large(exc: discord.HTTPException) -> bool:
    """Return whether Discord refused an upload for its size."""
    return exc.status == 413 or exc.code == _TOO_LARGE


def counted(code: int | str) -> None:
    """Count an error of Discord's API: its HTTP status, or the transport error's name."""
    PLATFORM_ERRORS.labels(platform=PLATFORM, code=str(code)).inc()


def platform_error(exc: discord.HTTPException) -> PlatformError:
    """Translate a discord.py exception into the chat layer's error tree (and count it)."""
    counted(exc.status)
    if isinstance(exc, discord.Forbidden):
        return Blocked(f"403 ({exc.code})")
    if isinstance(exc, discord.NotFound):
        return MessageGone(f"404 ({exc.code})")
    if 400 <= exc.status < 500 and exc.status != 429:
        return Refused(f"{exc.status} ({exc.code})")
    return PlatformError(f"{exc.status} ({exc.code})")


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except discord.HTTPException as exc:
        raise platform_error(exc) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        counted(type(exc).__name__)
        raise PlatformError(type(exc).__name__) from exc


def _reference(place: Place, reply_to: str | None) -> discord.MessageReference | None:
    if reply_to is None:
        return None
    # Still sent when the message was deleted meanwhile.
    return discord.MessageReference(
        message_id=int(reply_to), channel_id=int(place.chat_id), fail_if_not_exists=False
    )


def shrink_jpeg(jpeg: bytes, max_bytes: int) -> bytes:
    """Return the picture as a JPEG of at most ``max_bytes``, scaled down when it is over.

    Stops at ``_SMALLEST_SIDE``: what is still too big then is Discord's to refuse.
    """
    if len(jpeg) <= max_bytes:
        return jpeg
    with Image.open(io.BytesIO(jpeg)) as opened:
        picture = opened.convert("RGB")
    while len(jpeg) > max_bytes and min(picture.size) > _SMALLEST_SIDE:
        # Bytes go roughly with the pixel count: scale by the ratio's square root.
        ratio = min(0.9, (max_bytes / len(jpeg)) ** 0.5)
        size = (max(1, int(picture.width * ratio)), max(1, int(picture.height * ratio)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        jpeg = buffer.getvalue()
    return jpeg


def _view(buttons: Keyboard | None) -> dict[str, Any]:
    """Return ``view=`` for a send, or nothing (a webhook refuses ``view=None``)."""
    view = keyboard_view(buttons)
    return {} if view is None else {"view": view}


Files = Callable[[], list[discord.File]]  # new File objects for each try (a send reads them)
LineHandler = Callable[[discord.Interaction, str], Awaitable[None]]


class DiscordPlatform:
    """``bots.chat.platform.Platform`` on a discord.py ``Client``."""

    name = PLATFORM

    def __init__(
        self,
        client: discord.Client,
        *,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.capabilities = Capabilities(
            upload_limit=upload_limit,
            text_limit=TEXT_LIMIT,
            caption_limit=TEXT_LIMIT,
            albums=ATTACHMENTS,
            modals=True,
        )
        self.clock = clock
        self._dead: set[str] = set()  # tokens Discord called expired (401) before their time
        self._presses: dict[str, discord.Interaction] = {}  # answered by ``answer``
        self._fresh: dict[str, bool] = {}  # deferred responses not yet used -> ephemeral
        self._downloads: dict[str, asyncio.Task[bytes] | ImageRejected] = {}
        self.on_line: LineHandler | None = None  # what a "New line" form's answer does
        self.upload_read_timeout = UPLOAD_READ_TIMEOUT  # at least, for any upload

    # --- interactions in this process ------------------------------------------------

    def followup(self, interaction: discord.Interaction, original: int | None) -> Followup:
        """Return the way back to an interaction received now."""
        return Followup(
            interaction.token,
            self.clock() + TOKEN_SECONDS,
            None if original is None else str(original),
            str(interaction.user.id),
        )

    def deferred(self, message_id: str, *, ephemeral: bool) -> None:
        """Note a deferred ("thinking") response: the first reply takes its place."""
        self._fresh[message_id] = ephemeral

    async def settle(self, place: Place, message_id: str) -> None:
        """Remove a deferred response nothing answered: never leave it "thinking"."""
        if self._fresh.pop(message_id, None) is None:
            return
        with contextlib.suppress(PlatformError):
            await self.delete(place, message_id)

    def press(self, token: str, interaction: discord.Interaction | None) -> None:
        """Hold a button press until it is handled (None: forget it)."""
        if interaction is None:
            self._presses.pop(token, None)
        else:
            self._presses[token] = interaction

    def fetch(self, key: str, attachment: discord.Attachment, max_bytes: int) -> None:
        """Start downloading an image or a recording now: attachment URLs are signed and expire."""
        if attachment.size > max_bytes:
            self._downloads[key] = ImageRejected(
                "image.too_many_bytes", size_mb=attachment.size / 1e6, limit_mb=max_bytes / 1e6
            )
            return
        task = asyncio.create_task(attachment.read(), name=f"discord-download-{key}")
        # Read by ``download``; a refused request drops it, and its error with it.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._downloads[key] = task

    # --- the protocol ----------------------------------------------------------------

    def _hook(self, route: Followup | None) -> discord.Webhook | None:
        """Return the interaction's webhook while its token still answers."""
        if route is None or route.token in self._dead:
            return None
        if self.clock() >= route.expires_at - TOKEN_MARGIN_SECONDS:
            return None
        application = self._client.application_id
        if application is None:
            return None
        # client=: a webhook without the client's state cannot send buttons.
        hook = discord.Webhook.partial(application, route.token, client=self._client)
        # An interaction's webhook (as discord.py's own Interaction.followup): only such a
        # webhook may send ephemeral messages.
        hook.type = discord.WebhookType.application
        return hook

    def _expired(self, route: Followup, exc: discord.HTTPException) -> bool:
        if not is_expired_token(exc):
            return False
        log.info("an interaction token expired early; carrying on in the channel")
        self._dead.add(route.token)
        return True

    async def send(
        self,
        place: Place,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
        ask: AskReply | None = None,
        private: bool = False,
    ) -> str:
        """Send a message (a followup while the token lives, else in the channel)."""
        route = Followup.decode(place.route)
        hook = self._hook(route)
        if hook is not None and route is not None:
            with _mapped():
                try:
                    message = await hook.send(
                        text, ephemeral=private, wait=True, allowed_mentions=_NOBODY,
                        **_view(buttons),
                    )  # fmt: skip
                    return str(message.id)
                except discord.HTTPException as exc:
                    if not self._expired(route, exc):
                        raise
        with _mapped():
            posted = await self._post(place, route, text, reply_to, buttons, None)
        return str(posted.id)

    async def _post(
        self,
        place: Place,
        route: Followup | None,
        text: str,
        reply_to: str | None,
        buttons: Keyboard | None,
        files: Files | None,
    ) -> discord.Message:
        """Post in the channel, mentioning the requester; in a DM if the channel refuses."""
        content = text if route is None else f"<@{route.user}> {text}"
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=True)
        channel = self._client.get_partial_messageable(int(place.chat_id))
        extra: dict[str, Any] = _view(buttons)
        reference = _reference(place, reply_to)
        if reference is not None:
            extra["reference"] = reference
        try:
            return await channel.send(
                content, files=files() if files else [], allowed_mentions=mentions, **extra
            )
        except (discord.Forbidden, discord.NotFound) as exc:
            if route is None:
                raise
            # The channel is gone or closed to the bot: the requester still gets it.
            log.info("channel %s refused the bot (%s); writing to the requester", place.chat_id,
                     exc.status)  # fmt: skip
        dm = await self._client.create_dm(discord.Object(int(route.user)))
        return await dm.send(
            text, files=files() if files else [], allowed_mentions=_NOBODY, **_view(buttons)
        )

    async def reply(
        self,
        origin: Origin,
        text: str,
        *,
        quote: bool | None = None,
        ask: AskReply | None = None,
        private: bool = False,
    ) -> str:
        """Answer an interaction: in its deferred response first, then as followups."""
        place = origin.place
        route = Followup.decode(place.route)
        message_id = origin.message_id
        ephemeral = self._fresh.pop(message_id, None)
        hook = self._hook(route)
        if ephemeral is None or hook is None:
            return await self.send(place, text, reply_to=message_id, private=private)
        with _mapped():
            if private and not ephemeral:
                # A deferred response keeps the visibility it was deferred with: make way
                # for a message only the user sees (refusals are nobody else's business).
                await hook.delete_message(int(message_id))
                message = await hook.send(text, ephemeral=True, wait=True, allowed_mentions=_NOBODY)
                return str(message.id)
            await hook.edit_message(int(message_id), content=text, allowed_mentions=_NOBODY)
        return message_id

    async def edit(
        self, place: Place, message_id: str, text: str, *, buttons: Keyboard | None = None
    ) -> str | None:
        """Edit a message; after the token expired, post the interaction's anew."""
        self._fresh.pop(message_id, None)
        route = Followup.decode(place.route)
        hook = self._hook(route)
        view = keyboard_view(buttons)
        if hook is not None and route is not None:
            with _mapped():
                try:
                    await hook.edit_message(int(message_id), content=text, view=view)
                    return None
                except discord.HTTPException as exc:
                    if not self._expired(route, exc):
                        raise
        if route is not None and message_id == route.original:
            # Only the interaction's token could edit its response: carry on in a channel
            # message that mentions the requester (a notification, unlike an edit).
            with _mapped():
                message = await self._post(place, route, text, message_id, buttons, None)
            return str(message.id)
        channel = self._client.get_partial_messageable(int(place.chat_id))
        with _mapped():
            await channel.get_partial_message(int(message_id)).edit(content=text, view=view)
        return None

    async def delete(self, place: Place, message_id: str) -> None:
        """Delete one of the bot's messages."""
        self._fresh.pop(message_id, None)
        hook = self._hook(Followup.decode(place.route))
        with _mapped():
            if hook is not None:
                await hook.delete_message(int(message_id))
                return
            channel = self._client.get_partial_messageable(int(place.chat_id))
            await channel.get_partial_message(int(message_id)).delete()

    async def private_place(self, user_id: str) -> Place:
        """Return a user's DM channel: a user id is no channel on Discord."""
        with _mapped():
            dm = await self._client.create_dm(discord.Object(int(user_id)))
        return Place(str(dm.id))

    async def answer(
        self,
        token: str,
        text: str | None = None,
        *,
        alert: bool = False,
        ask: AskReply | None = None,
    ) -> None:
        """Answer a button press: a message only the presser sees, a form, or nothing."""
        interaction = self._presses.get(token)
        if interaction is None:
            log.info("a button press was answered after its handler ended")
            return
        response = interaction.response
        with _mapped():
            if ask is not None and not response.is_done() and self.on_line is not None:
                await response.send_modal(
                    LineModal(text or "", ask.placeholder or "", self.on_line)
                )
            elif text and response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            elif text:
                # Discord has no toasts: an alert and a note are both a private message.
                await response.send_message(text, ephemeral=True)
            elif not response.is_done():
                await response.defer()  # nothing to say, but the press must be answered

    async def download(self, photo: PhotoRef) -> bytes:
        """Return the image whose download started when the interaction arrived."""
        pending = self._downloads.pop(photo.file_id, None)
        if pending is None:
            raise ImageRejected("image.empty")  # an attachment from an earlier run
        if isinstance(pending, ImageRejected):
            raise pending
        with _mapped():
            return await pending

    def forget_download(self, key: str) -> None:
        """Drop a download nobody will read (the request was refused first)."""
        pending = self._downloads.pop(key, None)
        if isinstance(pending, asyncio.Task):
            pending.cancel()

    @contextlib.asynccontextmanager
    async def uploading(self, place: Place) -> AsyncIterator[None]:
        """Show nothing extra: the status message already says "uploading"."""
        yield

    async def send_video(
        self,
        place: Place,
        video: Video,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
    ) -> Sent:
        """Send one video as a file replying to the request."""
        [sent] = await self._send_files(place, [video], reply_to, buttons)
        return sent

    async def send_album(
        self, place: Place, videos: Sequence[Video], *, reply_to: str | None = None
    ) -> list[Sent]:
        """Send several videos in one message."""
        return await self._send_files(place, videos, reply_to, None)

    async def _send_files(
        self, place: Place, videos: Sequence[Video], reply_to: str | None, buttons: Keyboard | None
    ) -> list[Sent]:
        captions = "\n\n".join(video.caption for video in videos if video.caption)
        paths = [video.source for video in videos if isinstance(video.source, Path)]
        if not paths:
            # /history: links to the messages that carry the videos, nothing uploaded again.
            links = "\n".join(str(video.source) for video in videos)
            message_id = await self.send(place, f"{captions}\n{links}"[:TEXT_LIMIT])
            return [Sent(message_id) for _ in videos]
        size = sum(path.stat().st_size for path in paths)
        names = [video.filename or path.name for video, path in zip(videos, paths, strict=True)]

        def files() -> list[discord.File]:
            return [discord.File(path, name) for path, name in zip(paths, names, strict=True)]

        try:
            posted = await self._upload(
                place, captions[:TEXT_LIMIT], files, size, reply_to, buttons
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            raise self._delivery_error(exc, size) from exc
        return self._sent(posted, len(videos))

    async def _upload(
        self,
        place: Place,
        text: str,
        files: Files,
        size: int,
        reply_to: str | None,
        buttons: Keyboard | None,
    ) -> discord.Message:
        """Post files in one message: a followup while the token lives, else in the channel."""
        route = Followup.decode(place.route)
        hook = self._hook(route)
        # Past this, the upload left but no answer came: maybe delivered (DeliveryUnknown).
        timeout = max(self.upload_read_timeout, size / _UPLOAD_BYTES_PER_SECOND)
        async with asyncio.timeout(timeout):
            if hook is not None and route is not None:
                try:
                    return await hook.send(
                        text, files=files(), wait=True, allowed_mentions=_NOBODY,
                        **_view(buttons),
                    )  # fmt: skip
                except discord.HTTPException as exc:
                    if not self._expired(route, exc):
                        raise
            return await self._post(place, route, text, reply_to, buttons, files)

    async def send_photos(
        self, place: Place, photos: Sequence[bytes], *, reply_to: str | None = None
    ) -> None:
        """Send images as one message of attachments, each numbered (its name and alt text).

        Together they stay within the chat's upload limit: a picture over its share is
        sent smaller (Discord refuses the whole message otherwise).
        """
        limit = place.upload_limit or self.capabilities.upload_limit
        share = limit // max(1, len(photos)) - _PART_OVERHEAD
        fitted = [await asyncio.to_thread(shrink_jpeg, photo, share) for photo in photos]
        numbers = [str(number) for number in range(1, len(fitted) + 1)]

        def files() -> list[discord.File]:
            return [
                discord.File(io.BytesIO(photo), f"{number}.jpg", description=number)
                for number, photo in zip(numbers, fitted, strict=True)
            ]

        with _mapped():
            await self._upload(place, "", files, sum(map(len, fitted)), reply_to, None)

    @staticmethod
    def _sent(message: discord.Message, count: int) -> list[Sent]:
        # The message's link stands for its videos in /history (attachment URLs expire).
        return [Sent(str(message.id), message.jump_url) for _ in range(count)]

    def _delivery_error(self, exc: Exception, size: int) -> DeliveryError | Blocked:
        """Translate a failed upload into the core's error (or Blocked, for the board)."""
        counted(exc.status if isinstance(exc, discord.HTTPException) else type(exc).__name__)
        if isinstance(exc, discord.HTTPException):
            if is_too_large(exc):
                # Never sent again: the same bytes get the same answer.
                return DeliveryError(
                    f"413 for {size} bytes", permanent=True, key="job.too_large_to_deliver",
                    size_mb=size / 1e6, limit_mb=self.capabilities.upload_limit / 1e6,
                )  # fmt: skip
            if isinstance(exc, discord.Forbidden):
                return Blocked(f"403 ({exc.code})")
            if exc.status < 500:
                # 401, 404, 400...: sending again changes nothing and counts as invalid.
                return DeliveryError(f"refused: {exc.status} ({exc.code})", permanent=True)
            return DeliveryError(f"discord: {exc.status}", permanent=False)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return DeliveryError("cannot connect to Discord", permanent=False)
        # A time-out or a dropped connection after the upload left: maybe delivered.
        return DeliveryUnknown(f"no answer to the upload of {size} bytes: {type(exc).__name__}")
