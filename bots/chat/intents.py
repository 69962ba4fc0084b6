"""What a user asks of the bot, in platform-neutral terms, built by each adapter."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import DeliveryAddress, UserRef

from .platform import Origin, PhotoRef, Place


@dataclass(frozen=True)
class Person:
    """A platform user as the conversation sees them."""

    platform: str
    user_id: str
    name: str
    username: str | None
    locale: str
    admin: bool = False  # the platform says so (a Discord role), besides the admin ids

    def ref(self, locale: str | None = None) -> UserRef:
        """Return the core's view of this user (answered in ``locale`` if given)."""
        return UserRef(
            self.platform, self.user_id, display_name=self.name, locale=locale or self.locale
        )


@dataclass(frozen=True)
class Generate:
    """Make a video. No line: ask for one. No photo: use the user's remembered photo."""

    line: str | None
    photo: PhotoRef | None
    album: bool = False  # the photo came from an album: say which item was used


@dataclass(frozen=True)
class Command:
    """A bot command other than /gen (lower-cased name, the rest of the text)."""

    name: str
    args: str = ""
    photo: PhotoRef | None = None  # /character save: the photo it carries or replies to
    audio: PhotoRef | None = None  # /character voice: the recording it carries or replies to


@dataclass(frozen=True)
class CharacterAction:
    """Save, create, list, voice, share or delete a character: /character on any platform."""

    action: str  # "save", "create", "list", "voice", "share" or "delete"
    name: str = ""
    photo: PhotoRef | None = None  # save: the picture
    voice: str | None = None  # save (optional) and voice
    audio: PhotoRef | None = None  # voice: a recording to take the voice from, not a name
    seed: int | None = None  # save (optional)
    description: str = ""  # save (optional); create: what to draw


@dataclass(frozen=True)
class Said:
    """A message to the bot: who wrote it, where, and under which inbox key."""

    origin: Origin
    person: Person
    key: str  # makes one platform message at most one request
    target: str | None = None  # the user id of the message it replies to (admin commands)


@dataclass(frozen=True)
class Press:
    """A press of one of the bot's buttons."""

    token: str  # what answers the press (Telegram: the callback query id)
    button_id: str
    person: Person
    message: Origin | None  # the message that carries the button, if still known
    message_text: str = ""


ROUTE = "route"  # DeliveryAddress.extra: Place.route, kept across restarts
UPLOAD_LIMIT = "upload_limit"  # DeliveryAddress.extra: Place.upload_limit


def place_of(address: DeliveryAddress) -> Place:
    """Return where a stored request's answers go."""
    return Place(
        address.chat_id,
        address.thread_id,
        bool(address.extra.get("group")),
        address.extra.get(ROUTE),
        address.extra.get(UPLOAD_LIMIT),
    )


def address_for(
    platform: str,
    origin: Origin,
    *,
    user_id: str,
    locale: str,
    status_message_id: str | None = None,
) -> DeliveryAddress:
    """Return where the answers to a message go, durable across restarts."""
    place = origin.place
    return DeliveryAddress(
        platform=platform,
        chat_id=place.chat_id,
        reply_to=origin.message_id,
        thread_id=place.thread_id,
        status_message_id=status_message_id,
        extra={
            "locale": locale,
            "user": user_id,
            "group": place.group,
            **({ROUTE: place.route} if place.route is not None else {}),
            **({UPLOAD_LIMIT: place.upload_limit} if place.upload_limit else {}),
        },
    )
