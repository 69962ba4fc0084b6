"""The characters protocol: an account's saved cast, cast by name in a line.

A character's image is stored once per content (keyed by its sha256): two characters
saved from the same photo share it, and deleting the last one that uses it deletes it.
Names are unique per account regardless of case (``name_key`` is the casefolded name).
A voice sample is stored the same way (keyed by the sha256 of its normalized WAV), with the
voice ids providers made from it; they go with the last character that uses the sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from core.storage.types import Character, CharacterImage, CharacterVoice, ProviderVoice

MAX_NAME_CHARS = 32


def name_key(name: str) -> str:
    """Return the form a character's name is looked up by: case-insensitive."""
    return name.casefold()


def renames_for_move(
    staying: Iterable[str], moving: Iterable[tuple[int, str]]
) -> list[tuple[int, str, str]]:
    """Return (id, name, new name) of moving characters whose name the staying account has.

    Linking keeps both characters: the moved one becomes ``Name-2`` (``-3``… when taken),
    still a valid name of at most ``MAX_NAME_CHARS``, unique among both accounts' names.
    """
    moving = sorted(moving, key=lambda item: (name_key(item[1]), item[0]))
    staying_keys = {name_key(name) for name in staying}
    taken = staying_keys | {name_key(name) for _, name in moving}
    renames = []
    for character_id, name in moving:
        if name_key(name) not in staying_keys:
            continue
        number = 2
        while True:
            suffix = f"-{number}"
            new = name[: MAX_NAME_CHARS - len(suffix)].rstrip("-") + suffix
            if name_key(new) not in taken:
                break
            number += 1
        taken.add(name_key(new))
        renames.append((character_id, name, new))
    return renames


class CharacterStore(Protocol):
    """Characters of accounts, their images, and the chats they are shared in."""

    async def save_character(
        self,
        account_id: int,
        name: str,
        image: CharacterImage,
        *,
        voice: str | None,
        seed: int | None,
        description: str,
        limit: int,
        now: float,
    ) -> Character | None:
        """Save (or replace the image of) a character; None when the account has ``limit``.

        Saving an existing name replaces its image and keeps its voice, seed and
        description unless new ones are given, and its shares.
        """
        ...

    async def characters(self, account_id: int) -> list[Character]:
        """Return an account's characters, by name."""
        ...

    async def character(self, account_id: int, name: str) -> Character | None:
        """Return an account's character by name (any case), or None."""
        ...

    async def shared_character(self, platform: str, chat_id: str, name: str) -> Character | None:
        """Return the character of that name shared in a chat (the earliest shared), or None."""
        ...

    async def shared_characters(self, platform: str, chat_id: str) -> list[Character]:
        """Return the characters shared in a chat, by name."""
        ...

    async def character_image(self, image_sha256: str) -> CharacterImage | None:
        """Return a stored character image by its sha256."""
        ...

    async def set_character_voice(self, account_id: int, name: str, voice: str | None) -> bool:
        """Set a character's voice; False when the account has no such character."""
        ...

    async def share_character(
        self, account_id: int, name: str, platform: str, chat_id: str, now: float
    ) -> bool:
        """Let the members of a chat cast a character; False when there is no such character."""
        ...

    async def delete_character(self, account_id: int, name: str) -> bool:
        """Delete a character, its shares and its image when no other character uses it."""
        ...

    async def set_character_voice_sample(
        self, account_id: int, name: str, sample: CharacterVoice
    ) -> Character | None:
        """Give a character a voice sample (replacing its old one); None: no such character."""
        ...

    async def voice_sample(self, sample_sha256: str) -> CharacterVoice | None:
        """Return a stored voice sample by its sha256."""
        ...

    async def provider_voice(
        self, sample_sha256: str, provider: str, model: str
    ) -> ProviderVoice | None:
        """Return the voice id made (or being made) from a sample at a provider model."""
        ...

    async def claim_provider_voice(
        self,
        sample_sha256: str,
        provider: str,
        model: str,
        owner: str,
        now: float,
        *,
        quiet_for: float | None = None,
    ) -> tuple[ProviderVoice, bool] | None:
        """Start making a voice id for ``owner``, unless one is made or being made.

        Returns the row and whether this call claimed it afresh (new, or after a failure);
        None when the sample is no longer stored. A claim its take no longer holds (the job
        is gone, ended or without a live lease), or one with a handle that has not moved
        for ``quiet_for`` seconds, is taken over: the row comes back with ``owner``, its
        handle and not fresh, so that the request is polled or looked up, never sent again.
        """
        ...

    async def update_provider_voice(
        self,
        sample_sha256: str,
        provider: str,
        model: str,
        owner: str,
        *,
        state: str,
        handle: str | None = None,
        voice_id: str | None = None,
        now: float,
    ) -> bool:
        """Record the handle, the voice id or a failure; False when ``owner`` lost the claim."""
        ...
