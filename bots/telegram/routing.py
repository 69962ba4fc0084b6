"""Pure translation of Telegram messages into the conversation's intents.

Everything here works on PTB objects built from plain JSON (``Message.de_json``) and never
calls the network, so each rule is testable with a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from telegram import CallbackQuery, Message, Update, User

from bots.chat import intents
from bots.chat.intents import Command, Generate, Person, Press, Said
from bots.chat.platform import Origin, PhotoRef, Place
from core.i18n import normalize_locale
from core.models import DeliveryAddress

from .platform import PLATFORM

__all__ = ["PLATFORM", "Command", "Generate", "Me", "PhotoRef"]

_GROUP_TYPES = frozenset({"group", "supergroup"})


@dataclass(frozen=True)
class Me:
    """The bot's own identity, from getMe."""

    id: int
    username: str


def is_group(message: Message) -> bool:
    """Return whether a message was sent in a group or supergroup."""
    return message.chat.type in _GROUP_TYPES


def parse_command(text: str, username: str) -> tuple[str, str] | None:
    """Split ``/name[@bot] args``; None if it is not a command or is meant for another bot."""
    if not text.startswith("/"):
        return None
    head, _, rest = text.partition(" ")
    head, newline, after = head.partition("\n")
    if newline:
        rest = f"{after} {rest}".strip() if rest else after
    name, _, target = head[1:].partition("@")
    if not name or (target and target.lower() != username.lower()):
        return None
    return name.lower(), rest.strip()


def photo_of(message: Message | None) -> PhotoRef | None:
    """Return the image a message carries: its largest photo size or an image file."""
    if message is None:
        return None
    if message.photo:
        largest = message.photo[-1]  # sizes come smallest first
        return PhotoRef(largest.file_id, largest.file_size, message.message_id)
    document = message.document
    # A file keeps full resolution. Any file type is passed on: the core sniffs the bytes
    # and refuses what is not an image, with a message the user understands.
    if document is not None:
        return PhotoRef(document.file_id, document.file_size, message.message_id, True)
    return None


def audio_of(message: Message | None) -> PhotoRef | None:
    """Return the recording a message carries: a voice note, an audio file, or an audio document."""
    if message is None:
        return None
    document = message.document
    mime = document.mime_type or "" if document is not None else ""
    for found in (message.voice, message.audio, document if mime.startswith("audio/") else None):
        if found is not None:
            return PhotoRef(found.file_id, found.file_size, message.message_id, True)
    return None


def strip_mention(text: str, username: str) -> tuple[bool, str]:
    """Remove ``@username`` (any case) from text; return whether it was there."""
    needle = f"@{username}".lower()
    lowered = text.lower()
    index = lowered.find(needle)
    if index == -1:
        return False, text
    end = index + len(needle)
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        return False, text  # a longer username that merely starts like ours
    return True, (text[:index] + text[end:]).strip()


def route(
    message: Message, me: Me, *, group_trigger: Literal["addressed", "all"] = "addressed"
) -> Generate | Command | None:
    """Decide what a message asks of the bot, or None when it is not for us.

    Groups run with privacy mode on: the bot sees commands, replies to its messages and
    (for captions) nothing else unless it is addressed. ``CommandHandler`` reads only
    ``message.text``, so a ``/gen`` caption on a photo is parsed here.
    """
    if message.from_user is None or message.from_user.is_bot:
        return None
    text = (message.text or message.caption or "").strip()
    photo = photo_of(message)
    album = message.media_group_id is not None
    command = parse_command(text, me.username)
    if command is not None:
        name, args = command
        if name == "character":
            # /character save NAME as a caption, or as a reply to a photo; /character voice
            # NAME as the caption of a recording, or as a reply to one.
            replied = message.reply_to_message
            return Command(
                name, args, photo or photo_of(replied), audio_of(message) or audio_of(replied)
            )
        if name != "gen":
            return Command(name, args)
        # /gen LINE as a reply to someone's photo uses that photo.
        return Generate(args or None, photo or photo_of(message.reply_to_message), album)
    if text.startswith("/"):
        return None  # a command for another bot
    if not is_group(message):
        if photo is not None:
            if album and not text:
                # Only one item of an album carries the caption; the others are not requests.
                return None
            return Generate(text or None, photo, album)
        return Generate(text, None) if message.text else None
    mentioned, rest = strip_mention(text, me.username)
    replied = message.reply_to_message
    to_bot = replied is not None and replied.from_user is not None and replied.from_user.id == me.id
    if not (mentioned or to_bot or group_trigger == "all"):
        return None
    if group_trigger == "all" and not (mentioned or to_bot) and photo is None:
        return None  # with privacy mode off, plain chatter is not a request
    if photo is None and not to_bot:
        photo = photo_of(replied)
    if photo is None and not rest:
        return Command("help") if mentioned else None
    return Generate(rest or None, photo, album)


def source_key(chat_id: int | str, message_id: int | str) -> str:
    """Return the key that makes one Telegram message at most one request."""
    return f"{PLATFORM}:{chat_id}:{message_id}"


def event_key(
    update: Update, me: Me, *, group_trigger: Literal["addressed", "all"] = "addressed"
) -> str | None:
    """Return the inbox key of an update that asks something of the bot, else None."""
    if update.callback_query is not None:
        return f"{PLATFORM}:cb:{update.callback_query.id}"
    message = update.message
    if message is None or route(message, me, group_trigger=group_trigger) is None:
        return None
    return source_key(message.chat_id, message.message_id)


def user_locale(chosen: str | None, user: User | None) -> str:
    """Return the language to answer a user in: their choice, else their client's."""
    if chosen:
        return chosen
    return normalize_locale(user.language_code if user is not None else None)


def person_of(user: User) -> Person:
    """Return the conversation's view of a Telegram user (in their client's language)."""
    return Person(PLATFORM, str(user.id), user.full_name, user.username, user_locale(None, user))


def thread_of(message: Message) -> int | None:
    """Return the forum topic of a message, if it was posted in one.

    ``message_thread_id`` is also set on replies in ordinary groups (it is then the id of
    the first message of the reply chain); only forum topics accept it back when sending.
    """
    return message.message_thread_id if message.is_topic_message else None


def origin_of(message: Message) -> Origin:
    """Return where a message was written, for answers to it."""
    thread = thread_of(message)
    place = Place(str(message.chat_id), None if thread is None else str(thread), is_group(message))
    return Origin(place, str(message.message_id))


def said_of(message: Message) -> Said:
    """Return who wrote a message to the bot, where, and its inbox key."""
    assert message.from_user is not None
    replied = message.reply_to_message
    target = None
    if replied is not None and replied.from_user is not None and not replied.from_user.is_bot:
        target = str(replied.from_user.id)  # admin commands act on the user replied to
    return Said(
        origin_of(message),
        person_of(message.from_user),
        source_key(message.chat_id, message.message_id),
        target,
    )


def press_of(query: CallbackQuery) -> Press:
    """Return a button press in the conversation's terms."""
    message = query.message
    origin = (
        Origin(Place(str(message.chat_id)), str(message.message_id))
        if isinstance(message, Message)
        else None
    )
    text = (message.text or "") if isinstance(message, Message) else ""
    return Press(query.id, query.data or "", person_of(query.from_user), origin, text)


def address_for(
    message: Message, *, user_id: str, locale: str, status_message_id: int | str | None = None
) -> DeliveryAddress:
    """Return where the answers to a message go, durable across restarts."""
    status = None if status_message_id is None else str(status_message_id)
    return intents.address_for(
        PLATFORM, origin_of(message), user_id=user_id, locale=locale, status_message_id=status
    )
