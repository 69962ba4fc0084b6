"""The chat platform protocol on python-telegram-bot: each call one Bot API request.

PTB's exceptions are mapped here, once: into ``bots.chat.platform``'s tree for messages,
and into the core's ``DeliveryError`` for uploads (whose outcome may be unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    InputMediaVideo,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bots.chat.platform import (
    AskReply,
    Blocked,
    Capabilities,
    Keyboard,
    MessageGone,
    NotModified,
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

log = logging.getLogger(__name__)

PLATFORM = "telegram"
PUBLIC_UPLOAD_LIMIT = 50 * 1000 * 1000  # Bot API upload limit, decimal MB to stay clear of it
LOCAL_UPLOAD_LIMIT = 2000 * 1000 * 1000  # self-hosted Bot API server in --local mode
CAPTION_LIMIT = 1024  # characters in a media caption
TEXT_LIMIT = 4096  # characters in a message
ALBUM_LIMIT = 10  # items in a media group
_PLACEHOLDER_LIMIT = 64  # characters of ForceReply's input field placeholder
_CHAT_ACTION_EVERY = 4.5  # an action shows for 5 s at most: repeat it while uploading
# Telegram answers an upload only after processing the video: wait for that answer at
# least this long, and longer for bigger files (PTB's default read timeout is 5 s).
MEDIA_READ_TIMEOUT = 60.0
_UPLOAD_BYTES_PER_SECOND = 500_000  # assume at least 0.5 MB/s for sending...
_PROCESS_BYTES_PER_SECOND = 250_000  # ...and for Telegram to process what it received
# httpx failures that leave the request unsent (PTB raises them ``from`` the httpx
# exception): no connection, no free pooled connection, or a body that never got through.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)


def is_too_large(exc: TelegramError) -> bool:
    """Return whether Telegram refused an upload for its size (HTTP 413).

    PTB maps 413 to a plain ``NetworkError``; only the description tells it apart.
    """
    return "too large" in exc.message.lower() or "(413)" in exc.message


def outcome_unknown(exc: TelegramError) -> bool:
    """Return whether Telegram may have acted on a request that failed with ``exc``.

    An answer from Telegram (any HTTP status) says what happened. Without one, PTB's
    ``TimedOut``/``NetworkError`` wraps the httpx exception as ``__cause__``: a failure to
    connect or to send the whole body left the request unsent, but a read timeout or a
    connection closed while waiting for the answer came after Telegram may have taken it.
    (httpcore swallows a write error and reads on, so a dropped upload shows as a read error.)
    """
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, _NOT_SENT)


def media_timeouts(size: int, least_read: float = MEDIA_READ_TIMEOUT) -> tuple[float, float]:
    """Return the write and read timeouts for uploading ``size`` bytes of media."""
    write = max(20.0, size / _UPLOAD_BYTES_PER_SECOND)
    read = max(least_read, size / _PROCESS_BYTES_PER_SECOND)
    return write, read


def counted(exc: TelegramError) -> TelegramError:
    """Count a Bot API error by its PTB class (Forbidden, BadRequest, RetryAfter, TimedOut…)."""
    PLATFORM_ERRORS.labels(platform=PLATFORM, code=type(exc).__name__).inc()
    return exc


def platform_error(exc: TelegramError) -> PlatformError:
    """Translate a PTB exception into the chat layer's error tree (and count it)."""
    counted(exc)
    if isinstance(exc, Forbidden):
        return Blocked(exc.message)
    if isinstance(exc, BadRequest):
        description = exc.message.lower()
        if "not modified" in description:
            return NotModified(exc.message)
        if "not found" in description:
            return MessageGone(exc.message)
        return Refused(exc.message)
    return PlatformError(str(exc))


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except TelegramError as exc:
        raise platform_error(exc) from exc


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _reply_to(message_id: str | None) -> ReplyParameters | None:
    """Return reply parameters that still send if the message was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(int(message_id), allow_sending_without_reply=True)


def _keyboard(buttons: Keyboard | None) -> InlineKeyboardMarkup | None:
    if buttons is None:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.id) for b in row] for row in buttons]
    )


def _markup(
    buttons: Keyboard | None, ask: AskReply | None
) -> InlineKeyboardMarkup | ForceReply | None:
    if ask is not None:
        placeholder = None if ask.placeholder is None else ask.placeholder[:_PLACEHOLDER_LIMIT]
        # Selective: in a group only the user the message replies to is asked.
        return ForceReply(selective=True, input_field_placeholder=placeholder)
    return _keyboard(buttons)


class TelegramPlatform:
    """``bots.chat.platform.Platform`` on a PTB ``Bot``."""

    name = PLATFORM

    def __init__(
        self,
        bot: Bot,
        *,
        max_upload_bytes: int,
        max_download_bytes: int = 20_000_000,
        local_mode: bool = False,
        media_read_timeout: float = MEDIA_READ_TIMEOUT,
    ) -> None:
        self._bot = bot
        self.capabilities = Capabilities(
            upload_limit=max_upload_bytes,
            text_limit=TEXT_LIMIT,
            caption_limit=CAPTION_LIMIT,
            albums=ALBUM_LIMIT,
        )
        self._max_download_bytes = max_download_bytes
        self._local_mode = local_mode
        self.media_read_timeout = media_read_timeout  # the least wait for an upload's answer

    async def send(
        self,
        place: Place,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
        ask: AskReply | None = None,
        private: bool = False,  # Telegram has no private replies in a chat
    ) -> str:
        """Send a message (answering ``reply_to`` if it still exists); return its id."""
        with _mapped():
            message = await self._bot.send_message(
                int(place.chat_id),
                text,
                reply_parameters=_reply_to(reply_to),
                message_thread_id=_int(place.thread_id),
                reply_markup=_markup(buttons, ask),
            )
        return str(message.message_id)

    async def reply(
        self,
        origin: Origin,
        text: str,
        *,
        quote: bool | None = None,
        ask: AskReply | None = None,
        private: bool = False,
    ) -> str:
        """Answer the user's message (quoted in groups, or when asked); return the id."""
        place = origin.place
        # As PTB's Message.reply_text: quote in groups by default, and the reply fails
        # when the message is gone (the answer would make no sense without it).
        quoted = place.group if quote is None else quote
        with _mapped():
            message = await self._bot.send_message(
                int(place.chat_id),
                text,
                reply_parameters=ReplyParameters(int(origin.message_id)) if quoted else None,
                message_thread_id=_int(place.thread_id),
                reply_markup=_markup(None, ask),
            )
        return str(message.message_id)

    async def edit(
        self, place: Place, message_id: str, text: str, *, buttons: Keyboard | None = None
    ) -> None:
        """Replace a message's text and buttons (no buttons: remove them)."""
        with _mapped():
            await self._bot.edit_message_text(
                text,
                chat_id=int(place.chat_id),
                message_id=int(message_id),
                reply_markup=_keyboard(buttons),
            )

    async def delete(self, place: Place, message_id: str) -> None:
        """Delete one of the bot's messages."""
        with _mapped():
            await self._bot.delete_message(int(place.chat_id), int(message_id))

    async def private_place(self, user_id: str) -> Place:
        """Return a user's private chat: on Telegram it has the user's id."""
        return Place(user_id)

    async def answer(
        self,
        token: str,
        text: str | None = None,
        *,
        alert: bool = False,
        ask: AskReply | None = None,  # no modals on Telegram (capabilities.modals is off)
    ) -> None:
        """Answer a button press; it must be answered even when nothing is shown."""
        try:
            with _mapped():
                await self._bot.answer_callback_query(token, text, show_alert=alert)
        except (Refused, MessageGone, NotModified) as exc:
            # After a restart the query may be too old to answer; the action still happened.
            log.info("could not answer a button press: %s", exc)

    async def download(self, photo: PhotoRef) -> bytes:
        """Return an image's bytes through getFile."""
        limit = self._max_download_bytes
        size = photo.file_size
        if size is not None and size > limit and not self._local_mode:
            # The public Bot API refuses getFile above 20 MB: say so instead of failing.
            raise ImageRejected("image.too_many_bytes", size_mb=size / 1e6, limit_mb=limit / 1e6)
        with _mapped():
            telegram_file = await self._bot.get_file(photo.file_id)
            return bytes(await telegram_file.download_as_bytearray())

    @contextlib.asynccontextmanager
    async def uploading(self, place: Place) -> AsyncIterator[None]:
        """Show "sending video…" in the chat while the context lasts."""
        action = asyncio.create_task(self._upload_action(int(place.chat_id), _int(place.thread_id)))
        try:
            yield
        finally:
            action.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await action

    async def _upload_action(self, chat_id: int, thread: int | None) -> None:
        while True:
            try:
                await self._bot.send_chat_action(
                    chat_id, ChatAction.UPLOAD_VIDEO, message_thread_id=thread
                )
            except TelegramError as exc:
                log.debug("chat action failed: %s", exc)
                return
            await asyncio.sleep(_CHAT_ACTION_EVERY)

    async def _payload(self, source: Path | str) -> Path | bytes | str:
        if isinstance(source, str):
            return source  # a Telegram file id: sent again without uploading
        # Local mode: the server reads the file itself (PTB sends a file:// URI).
        return source if self._local_mode else await asyncio.to_thread(source.read_bytes)

    async def send_video(
        self,
        place: Place,
        video: Video,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
    ) -> Sent:
        """Send one video (uploaded, or again by its file id)."""
        chat_id = int(place.chat_id)
        thread = _int(place.thread_id)
        if isinstance(video.source, str):
            with _mapped():
                message = await self._bot.send_video(
                    chat_id, video.source, caption=video.caption, message_thread_id=thread
                )
            return _sent(message)
        size = video.source.stat().st_size
        payload = await self._payload(video.source)
        write_timeout, read_timeout = media_timeouts(size, self.media_read_timeout)
        try:
            message = await self._bot.send_video(
                chat_id,
                payload,
                caption=video.caption,
                supports_streaming=True,
                reply_parameters=_reply_to(reply_to),
                message_thread_id=thread,
                reply_markup=_keyboard(buttons),
                filename=video.filename,
                write_timeout=write_timeout,
                read_timeout=read_timeout,
            )
        except TelegramError as exc:
            raise self._delivery_error(exc, size) from exc
        return _sent(message)

    async def send_album(
        self, place: Place, videos: Sequence[Video], *, reply_to: str | None = None
    ) -> list[Sent]:
        """Send videos as one media group (uploaded, or again by their file ids)."""
        chat_id = int(place.chat_id)
        thread = _int(place.thread_id)
        if all(isinstance(video.source, str) for video in videos):
            media = [InputMediaVideo(video.source, caption=video.caption) for video in videos]
            with _mapped():
                messages = await self._bot.send_media_group(
                    chat_id, media, message_thread_id=thread
                )
            return [_sent(message) for message in messages]
        payloads = [await self._payload(video.source) for video in videos]
        size = sum(
            video.source.stat().st_size for video in videos if isinstance(video.source, Path)
        )
        media = [
            InputMediaVideo(
                payload, caption=video.caption, supports_streaming=True, filename=video.filename
            )
            for video, payload in zip(videos, payloads, strict=True)
        ]
        write_timeout, read_timeout = media_timeouts(size, self.media_read_timeout)
        try:
            messages = await self._bot.send_media_group(
                chat_id,
                media,
                reply_parameters=_reply_to(reply_to),
                message_thread_id=thread,
                write_timeout=write_timeout,
                read_timeout=read_timeout,
            )
        except TelegramError as exc:
            raise self._delivery_error(exc, size) from exc
        return [_sent(message) for message in messages]

    async def send_photos(
        self, place: Place, photos: Sequence[bytes], *, reply_to: str | None = None
    ) -> None:
        """Send images as one media group (numbered in their captions)."""
        media = [
            InputMediaPhoto(photo, caption=str(number), filename=f"{number}.jpg")
            for number, photo in enumerate(photos, start=1)
        ]
        with _mapped():
            await self._bot.send_media_group(
                int(place.chat_id),
                media,
                reply_parameters=_reply_to(reply_to),
                message_thread_id=_int(place.thread_id),
            )

    def _delivery_error(self, exc: TelegramError, size: int) -> DeliveryError | Blocked:
        """Translate a failed upload into the core's error (or Blocked, for the board)."""
        counted(exc)
        if outcome_unknown(exc):
            # Maybe delivered: sending again could show the same video twice, or five times.
            return DeliveryUnknown(f"no answer to the upload of {size} bytes: {exc.message}")
        if isinstance(exc, Forbidden):
            return Blocked(exc.message)
        if isinstance(exc, BadRequest):
            # The chat, topic or permission is gone; sending again will not change that.
            return DeliveryError(f"refused: {exc.message}", permanent=True)
        if isinstance(exc, RetryAfter):
            return DeliveryError("flood control after retries", permanent=False)
        if isinstance(exc, NetworkError):
            if is_too_large(exc):
                return DeliveryError(
                    f"413 for {size} bytes",
                    permanent=True,
                    key="job.too_large_to_deliver",
                    size_mb=size / 1e6,
                    limit_mb=self.capabilities.upload_limit / 1e6,
                )
            return DeliveryError(f"network: {exc.message}", permanent=False)
        return DeliveryError(f"telegram: {exc.message}", permanent=False)


def _sent(message: Message) -> Sent:
    file_ref = None if message.video is None else message.video.file_id
    return Sent(str(message.message_id), file_ref)
