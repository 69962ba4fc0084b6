"""The small protocol a chat platform implements for the shared conversation.

The conversation (``bots.chat``) decides what to say and when; a platform adapter only
turns each call into its API's request and maps that library's exceptions, once, into the
tree below (or into the core's ``DeliveryError`` for uploads):

    PlatformError           a call failed; the text is safe to log
    ├── Blocked             the chat refuses the bot (the user blocked it, it left the group)
    ├── MessageGone         the message to edit, delete or reply to no longer exists
    ├── NotModified         an edit that would change nothing
    └── Refused             refused for good (a bad request); sending again will not help
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class PlatformError(Exception):
    """A platform call failed; transient unless it is one of the subclasses."""


class Blocked(PlatformError):
    """The chat refuses the bot: stop writing to it for a while."""


class MessageGone(PlatformError):
    """The message the call was about was deleted."""


class NotModified(PlatformError):
    """The edit would not change the message."""


class Refused(PlatformError):
    """The platform refused the call for good (wrong chat, topic or permission)."""


@dataclass(frozen=True)
class Place:
    """Where messages go: a chat (and a thread or forum topic in it)."""

    chat_id: str
    thread_id: str | None = None
    group: bool = False  # shared with other people: slower pace, quoted replies
    # The platform's own short-lived way back to the requester, opaque here (Discord: the
    # interaction's webhook token and when it expires); kept in the delivery address.
    route: str | None = None
    upload_limit: int | None = None  # bytes one upload may have here, when the chat says


@dataclass(frozen=True)
class Origin:
    """The platform message a user wrote to the bot."""

    place: Place
    message_id: str


@dataclass(frozen=True)
class Action:
    """A button: its label and the opaque id stored in ``ChatStore`` buttons."""

    label: str
    id: str


Keyboard = Sequence[Sequence[Action]]  # rows of buttons


@dataclass(frozen=True)
class AskReply:
    """Ask the user to answer this message (Telegram's ForceReply; a modal elsewhere)."""

    placeholder: str | None = None


@dataclass(frozen=True)
class PhotoRef:
    """An image on the platform's servers: a photo, or an image sent as a file."""

    file_id: str
    file_size: int | None
    message_id: int  # the message that carries it
    as_document: bool = False


@dataclass(frozen=True)
class Video:
    """One video to send: a local file to upload, or a platform file id to send again."""

    source: Path | str
    caption: str | None
    filename: str | None = None


@dataclass(frozen=True)
class Sent:
    """A message the platform accepted; ``file_ref`` sends its video again without upload."""

    message_id: str
    file_ref: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a platform allows; the conversation shapes its messages to fit."""

    upload_limit: int  # bytes of one video upload
    text_limit: int  # characters of a message
    caption_limit: int  # characters of a media caption
    albums: int = 0  # videos in one album message (0: no albums)
    modals: bool = False  # can ask for text in a form instead of a reply


class Platform(Protocol):
    """A chat platform as the conversation uses it."""

    name: str  # "telegram", "discord": the platform of addresses, buttons and the inbox
    capabilities: Capabilities

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
        """Send a message (answering ``reply_to`` if it still exists); return its id.

        ``private``: only the person it answers needs to see it (Discord's ephemeral
        messages); platforms without such messages send it as usual.
        """
        ...

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
        ...

    async def edit(
        self, place: Place, message_id: str, text: str, *, buttons: Keyboard | None = None
    ) -> str | None:
        """Replace a message's text and buttons (no buttons: remove them).

        Return the id of a new message when the platform could no longer edit this one and
        posted the text anew instead (Discord, after the interaction token expired).
        """
        ...

    async def delete(self, place: Place, message_id: str) -> None:
        """Delete one of the bot's messages."""
        ...

    async def private_place(self, user_id: str) -> Place:
        """Return where to write to a user privately (their DM, opened if need be)."""
        ...

    async def answer(
        self,
        token: str,
        text: str | None = None,
        *,
        alert: bool = False,
        ask: AskReply | None = None,
    ) -> None:
        """Answer a button press (it must be answered even when nothing is shown).

        ``ask``: answer with a form asking for text (only where ``capabilities.modals``).
        """
        ...

    async def download(self, photo: PhotoRef) -> bytes:
        """Return an image's bytes; raise ImageRejected when the platform cannot fetch it."""
        ...

    def uploading(self, place: Place) -> contextlib.AbstractAsyncContextManager[None]:
        """Show that a video is on its way for as long as the context lasts."""
        ...

    async def send_video(
        self,
        place: Place,
        video: Video,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
    ) -> Sent:
        """Send one video; raise DeliveryError (DeliveryUnknown, or Blocked) if it failed."""
        ...

    async def send_album(
        self, place: Place, videos: Sequence[Video], *, reply_to: str | None = None
    ) -> list[Sent]:
        """Send videos as one album (at most ``capabilities.albums``); raise as ``send_video``."""
        ...


@runtime_checkable
class PhotoAlbums(Protocol):
    """A platform that can send several images as one album (optional)."""

    async def send_photos(
        self, place: Place, photos: Sequence[bytes], *, reply_to: str | None = None
    ) -> None:
        """Send the images as one album, numbered from 1; raise PlatformError if it failed."""
        ...
