"""Characters: a photo saved once under a name, with a voice and a seed, cast by ``@Name``.

A character belongs to an account (so it follows a person across platforms) and can be
shared in a chat, whose members may then cast it. The image is prepared (16:9 JPEG) when
saved, so a take that casts a character needs no photo and no decoding. Everything a user
can be refused for here is a ``RequestRejected`` with a message key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from config.settings import CharacterSettings, ImageSettings
from core.errors import RequestRejected
from core.images import prepare_image_async
from core.models import UserRef
from core.prompts import MAX_SEED
from core.storage.characters import MAX_NAME_CHARS, name_key
from core.storage.types import Character, CharacterImage, CharacterVoice
from core.voices import prepare_voice_sample_async

if TYPE_CHECKING:
    from core.storage import AccountStore, CharacterStore

# A name is a word (any script) with inner hyphens, as ``@Name`` in a line spells it.
NAME = re.compile(r"\w+(?:-\w+)*")
MAX_DESCRIPTION_CHARS = 200
VOICE = re.compile(r"\w+(?:[.-]\w+)*")


def check_name(name: str) -> str:
    """Return the name without a leading ``@``, or raise ``character.bad_name``."""
    bare = name.strip().removeprefix("@")
    if not NAME.fullmatch(bare) or len(bare) > MAX_NAME_CHARS:
        raise RequestRejected("character.bad_name", name=name, limit=MAX_NAME_CHARS)
    return bare


def voice_of(character: Character) -> str:
    """Return the voice a character's takes speak with: its own, else one fixed for it."""
    return character.voice or f"character:{character.id}"


class Characters:
    """Save, list, voice, share, delete and cast an account's characters."""

    def __init__(
        self,
        store: CharacterStore,
        accounts: AccountStore,
        settings: CharacterSettings,
        images: ImageSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._settings = settings
        self._images = images
        self._clock = clock

    @property
    def limit(self) -> int:
        """Return how many characters an account may keep."""
        return self._settings.max_per_account

    @property
    def max_voice_bytes(self) -> int:
        """Return the largest voice sample accepted (adapters check it before downloading)."""
        return self._settings.max_voice_bytes

    async def save(
        self,
        user: UserRef,
        name: str,
        photo: bytes,
        *,
        voice: str | None = None,
        seed: int | None = None,
        description: str = "",
    ) -> Character:
        """Prepare the photo and save it under ``name`` (replacing that name's image)."""
        name = check_name(name)
        if voice is not None:
            voice = self._check_voice(voice)
        description = description.strip()
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise RequestRejected("character.description_too_long", limit=MAX_DESCRIPTION_CHARS)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise RequestRejected("prompt.bad_seed", max_seed=MAX_SEED)
        image = await prepare_image_async(photo, self._images)
        account_id = await self._accounts.ensure_account(user, self._clock())
        limit = self._settings.max_per_account
        saved = await self._store.save_character(
            account_id, name, CharacterImage(image.jpeg, image.width, image.height),
            voice=voice, seed=seed, description=description, limit=limit, now=self._clock(),
        )  # fmt: skip
        if saved is None:
            raise RequestRejected("character.limit", limit=limit)
        return saved

    async def castable(self, user: UserRef, chat_id: str | None) -> list[Character]:
        """Return what a user may cast in a chat: their own characters, then those shared there."""
        own = await self.list(user)
        if chat_id is None:
            return own
        found = list(own)
        taken = {name_key(character.name) for character in own}
        # A name casts the user's own character first: a shared one by that name is hidden.
        for each in await self._store.shared_characters(user.platform, chat_id):
            if name_key(each.name) not in taken:
                taken.add(name_key(each.name))
                found.append(each)
        return found

    async def list(self, user: UserRef) -> list[Character]:
        """Return the user's characters, by name."""
        account = await self._accounts.account_of(user)
        return [] if account is None else await self._store.characters(account.id)

    async def set_voice(self, user: UserRef, name: str, voice: str) -> None:
        """Give one of the user's characters a voice."""
        bare, account_id = check_name(name), await self._account_id(user)
        voice = self._check_voice(voice)
        if account_id is None or not await self._store.set_character_voice(account_id, bare, voice):
            raise RequestRejected("character.unknown", name=bare)

    async def set_voice_sample(self, user: UserRef, name: str, audio: bytes) -> Character:
        """Check a voice sample (a voice note) and store it as a character's voice.

        Refused with a message key (nothing stored) when it is too big, not audio, too
        short or too long, or silent; a sample replaced or left by its last character is
        deleted with the voice ids providers made from it.
        """
        bare, account_id = check_name(name), await self._account_id(user)
        if account_id is None or await self._store.character(account_id, bare) is None:
            raise RequestRejected("character.unknown", name=bare)
        sample = await prepare_voice_sample_async(audio, self._settings)
        saved = await self._store.set_character_voice_sample(
            account_id, bare, CharacterVoice(sample.wav, sample.seconds)
        )
        if saved is None:  # deleted meanwhile
            raise RequestRejected("character.unknown", name=bare)
        return saved

    async def share(self, user: UserRef, name: str, chat_id: str) -> None:
        """Let the members of a chat cast one of the user's characters."""
        bare, account_id = check_name(name), await self._account_id(user)
        if account_id is None or not await self._store.share_character(
            account_id, bare, user.platform, chat_id, self._clock()
        ):
            raise RequestRejected("character.unknown", name=bare)

    async def delete(self, user: UserRef, name: str) -> None:
        """Delete one of the user's characters with its image and shares."""
        bare, account_id = check_name(name), await self._account_id(user)
        if account_id is None or not await self._store.delete_character(account_id, bare):
            raise RequestRejected("character.unknown", name=bare)

    async def resolve(
        self, account_id: int | None, platform: str, chat_id: str | None, name: str
    ) -> Character:
        """Return the character a line casts: the user's own, else one shared in this chat."""
        found = None
        if account_id is not None:
            found = await self._store.character(account_id, name)
        if found is None and chat_id is not None:
            found = await self._store.shared_character(platform, chat_id, name)
        if found is None:
            raise RequestRejected("character.unknown", name=name)
        return found

    async def image(self, character: Character) -> CharacterImage:
        """Return a character's prepared image."""
        image = await self._store.character_image(character.image_sha256)
        if image is None:  # deleted between the check and the admission
            raise RequestRejected("character.unknown", name=character.name)
        return image

    async def _account_id(self, user: UserRef) -> int | None:
        account = await self._accounts.account_of(user)
        return None if account is None else account.id

    @staticmethod
    def _check_voice(voice: str) -> str:
        voice = voice.strip()
        if not VOICE.fullmatch(voice) or len(voice) > MAX_NAME_CHARS:
            raise RequestRejected("character.bad_voice", voice=voice)
        return voice
