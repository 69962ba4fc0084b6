"""An account's saved characters on PostgreSQL (the ``CharacterStore`` protocol)."""

from __future__ import annotations

import hashlib
from typing import Any

from core.storage.characters import name_key, renames_for_move
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import Database
from core.storage.postgres.queries import characters as sql
from core.storage.types import (
    Character,
    CharacterImage,
    CharacterVoice,
    ProviderVoice,
    VoiceState,
)


async def _character(conn: Conn, row: Any) -> Character:
    shares = tuple((str(p), str(c)) for p, c in await conn.fetch(sql.SHARES, row[0]))
    cid, account_id, name, sha, width, height, voice, seed, description, created_at, sample = row
    return Character(
        cid, account_id, name, sha, width, height, voice, seed, description, shares, created_at,
        sample,
    )  # fmt: skip


def _provider_voice(row: Any) -> ProviderVoice:
    sha, provider, model, state, owner, handle, voice_id, updated_at = row
    return ProviderVoice(
        sha, provider, model, VoiceState(state), owner, handle, voice_id, float(updated_at)
    )


async def _drop_unused_voice(conn: Conn, sha: str | None) -> None:
    """Delete a voice sample (and the voice ids made from it) no character uses any more."""
    if sha is not None:
        await conn.execute(sql.DROP_UNUSED_VOICE_IDS, sha)
        await conn.execute(sql.DROP_UNUSED_VOICE, sha)


async def _one(conn: Conn, query: str, *args: Any) -> Character | None:
    row = await conn.fetchrow(query, *args)
    return None if row is None else await _character(conn, row)


async def move_characters(conn: Conn, joining: int, target: int) -> list[tuple[str, str]]:
    """Move an account's characters into another (linking); return the (old, new) renames.

    The rows move as they are: images (keyed by content) and shares stay where they were.
    Both accounts' rows are locked by the caller, so no save adds a name meanwhile.
    """
    staying = [str(row[1]) for row in await conn.fetch(sql.NAMES, target)]
    moving = [(int(row[0]), str(row[1])) for row in await conn.fetch(sql.NAMES, joining)]
    renames = renames_for_move(staying, moving)
    for character_id, _, new in renames:
        await conn.execute(sql.RENAME, new, name_key(new), character_id)
    await conn.execute(sql.MOVE, target, joining)
    return [(old, new) for _, old, new in renames]


class PostgresCharacters:
    """``CharacterStore`` on a PostgreSQL ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db

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
        """Save (or replace the image of) a character; None when the account has ``limit``."""
        sha = hashlib.sha256(image.jpeg).hexdigest()
        key = name_key(name)

        async def work(conn: Conn) -> Character | None:
            await conn.execute(sql.LOCK_ACCOUNT, account_id)
            found = await conn.fetchrow(sql.FIND, account_id, key)
            if found is None and await conn.fetchval(sql.COUNT, account_id) >= limit:
                return None
            await conn.execute(sql.SAVE_IMAGE, sha, image.jpeg, image.width, image.height)
            if found is None:
                await conn.execute(
                    sql.INSERT, account_id, name, key, sha, voice, seed, description, now
                )
            else:
                await conn.execute(sql.REPLACE, name, sha, voice, seed, description, found[0])
                await conn.execute(sql.DROP_UNUSED_IMAGE, found[1])
            return await _one(conn, sql.BY_NAME, account_id, key)

        return await self._db.run(work)

    async def characters(self, account_id: int) -> list[Character]:
        """Return an account's characters, by name."""

        async def work(conn: Conn) -> list[Character]:
            rows = await conn.fetch(sql.OF_ACCOUNT, account_id)
            return [await _character(conn, row) for row in rows]

        return await self._db.run(work)

    async def character(self, account_id: int, name: str) -> Character | None:
        """Return an account's character by name (any case), or None."""
        key = name_key(name)
        return await self._db.run(lambda conn: _one(conn, sql.BY_NAME, account_id, key))

    async def shared_character(self, platform: str, chat_id: str, name: str) -> Character | None:
        """Return the character of that name shared in a chat (the earliest shared), or None."""
        key = name_key(name)
        return await self._db.run(lambda conn: _one(conn, sql.SHARED, platform, chat_id, key))

    async def shared_characters(self, platform: str, chat_id: str) -> list[Character]:
        """Return the characters shared in a chat, by name."""

        async def work(conn: Conn) -> list[Character]:
            rows = await conn.fetch(sql.SHARED_IN, platform, chat_id)
            return [await _character(conn, row) for row in rows]

        return await self._db.run(work)

    async def character_image(self, image_sha256: str) -> CharacterImage | None:
        """Return a stored character image by its sha256."""
        row = await self._db.fetchrow(sql.IMAGE, image_sha256)
        return None if row is None else CharacterImage(bytes(row[0]), row[1], row[2])

    async def set_character_voice(self, account_id: int, name: str, voice: str | None) -> bool:
        """Set a character's voice; False when the account has no such character."""
        return await self._db.execute(sql.SET_VOICE, voice, account_id, name_key(name)) > 0

    async def share_character(
        self, account_id: int, name: str, platform: str, chat_id: str, now: float
    ) -> bool:
        """Let the members of a chat cast a character; False when there is no such character."""
        key = name_key(name)

        async def work(conn: Conn) -> bool:
            found = await conn.fetchrow(sql.FIND, account_id, key)
            if found is None:
                return False
            await conn.execute(sql.SHARE, found[0], platform, chat_id, now)
            return True

        return await self._db.run(work)

    async def delete_character(self, account_id: int, name: str) -> bool:
        """Delete a character, its shares and its image when no other character uses it."""
        key = name_key(name)

        async def work(conn: Conn) -> bool:
            found = await conn.fetchrow(sql.FIND, account_id, key)
            if found is None:
                return False
            sample = await conn.fetchval(sql.VOICE_OF, found[0])
            await conn.execute(sql.DROP_SHARES, found[0])
            await conn.execute(sql.DELETE, found[0])
            await conn.execute(sql.DROP_UNUSED_IMAGE, found[1])
            await _drop_unused_voice(conn, sample)
            return True

        return await self._db.run(work)

    async def set_character_voice_sample(
        self, account_id: int, name: str, sample: CharacterVoice
    ) -> Character | None:
        """Give a character a voice sample (replacing its old one); None: no such character."""
        sha = hashlib.sha256(sample.wav).hexdigest()
        key = name_key(name)

        async def work(conn: Conn) -> Character | None:
            found = await conn.fetchrow(sql.FIND_VOICE, account_id, key)
            if found is None:
                return None
            await conn.execute(sql.SAVE_VOICE, sha, sample.wav, sample.seconds)
            await conn.execute(sql.SET_VOICE_SAMPLE, sha, found[0])
            if found[1] != sha:
                await _drop_unused_voice(conn, found[1])
            return await _one(conn, sql.BY_NAME, account_id, key)

        return await self._db.run(work)

    async def voice_sample(self, sample_sha256: str) -> CharacterVoice | None:
        """Return a stored voice sample by its sha256."""
        row = await self._db.fetchrow(sql.VOICE, sample_sha256)
        return None if row is None else CharacterVoice(bytes(row[0]), float(row[1]))

    async def provider_voice(
        self, sample_sha256: str, provider: str, model: str
    ) -> ProviderVoice | None:
        """Return the voice id made (or being made) from a sample at a provider model."""
        row = await self._db.fetchrow(sql.PROVIDER_VOICE, sample_sha256, provider, model)
        return None if row is None else _provider_voice(row)

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
        """Start making a voice id for ``owner``, or take over a claim nobody holds."""
        quiet_since = None if quiet_for is None else now - quiet_for

        async def work(conn: Conn) -> tuple[ProviderVoice, bool] | None:
            if await conn.fetchrow(sql.VOICE_EXISTS, sample_sha256) is None:
                return None
            claimed = await conn.fetchrow(
                sql.CLAIM_PROVIDER_VOICE, sample_sha256, provider, model, owner, now
            )
            if claimed is None:
                await conn.fetchrow(
                    sql.ADOPT_PROVIDER_VOICE,
                    owner, now, sample_sha256, provider, model, quiet_since,
                )  # fmt: skip
            row = await conn.fetchrow(sql.PROVIDER_VOICE, sample_sha256, provider, model)
            return _provider_voice(row), claimed is not None

        return await self._db.run(work)

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
        changed = await self._db.execute(
            sql.UPDATE_PROVIDER_VOICE,
            state, handle, voice_id, now, sample_sha256, provider, model, owner,
        )  # fmt: skip
        return changed > 0
