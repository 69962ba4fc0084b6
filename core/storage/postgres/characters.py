"""An account's saved characters on PostgreSQL (the ``CharacterStore`` protocol)."""

from __future__ import annotations

import hashlib
from typing import Any

from core.storage.characters import name_key, renames_for_move
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import Database
from core.storage.postgres.queries import characters as sql
from core.storage.types import Character, CharacterImage


async def _character(conn: Conn, row: Any) -> Character:
    shares = tuple((str(p), str(c)) for p, c in await conn.fetch(sql.SHARES, row[0]))
    cid, account_id, name, sha, width, height, voice, seed, description, created_at = row
    return Character(
        cid, account_id, name, sha, width, height, voice, seed, description, shares, created_at
    )


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
            await conn.execute(sql.DROP_SHARES, found[0])
            await conn.execute(sql.DELETE, found[0])
            await conn.execute(sql.DROP_UNUSED_IMAGE, found[1])
            return True

        return await self._db.run(work)
