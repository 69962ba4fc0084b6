"""An account's saved characters on SQLite (the ``CharacterStore`` protocol)."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from core.storage.characters import name_key, renames_for_move
from core.storage.sqlite.database import Database
from core.storage.sqlite.queries import characters as sql
from core.storage.types import Character, CharacterImage


def _character(db: sqlite3.Connection, row: Any) -> Character:
    shares = tuple((str(p), str(c)) for p, c in db.execute(sql.SHARES, (row[0],)).fetchall())
    cid, account_id, name, sha, width, height, voice, seed, description, created_at = row
    return Character(
        cid, account_id, name, sha, width, height, voice, seed, description, shares, created_at
    )


def _one(db: sqlite3.Connection, query: str, params: tuple[object, ...]) -> Character | None:
    row = db.execute(query, params).fetchone()
    return None if row is None else _character(db, row)


def move_characters(db: sqlite3.Connection, joining: int, target: int) -> list[tuple[str, str]]:
    """Move an account's characters into another (linking); return the (old, new) renames.

    The rows move as they are: images (keyed by content) and shares stay where they were.
    """
    staying = [str(row[1]) for row in db.execute(sql.NAMES, (target,))]
    moving = [(int(row[0]), str(row[1])) for row in db.execute(sql.NAMES, (joining,))]
    renames = renames_for_move(staying, moving)
    for character_id, _, new in renames:
        db.execute(sql.RENAME, (new, name_key(new), character_id))
    db.execute(sql.MOVE, (target, joining))
    return [(old, new) for _, old, new in renames]


class SqliteCharacters:
    """``CharacterStore`` on a SQLite ``Database`` (tables created by its migrations)."""

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

        def work(db: sqlite3.Connection) -> Character | None:
            found = db.execute(sql.FIND, (account_id, key)).fetchone()
            if found is None and db.execute(sql.COUNT, (account_id,)).fetchone()[0] >= limit:
                return None
            db.execute(sql.SAVE_IMAGE, (sha, image.jpeg, image.width, image.height))
            if found is None:
                db.execute(sql.INSERT, (account_id, name, key, sha, voice, seed, description, now))
            else:
                db.execute(
                    sql.REPLACE, (name, sha, voice, seed, description, description, found[0])
                )
                db.execute(sql.DROP_UNUSED_IMAGE, (found[1], found[1]))
            return _one(db, sql.BY_NAME, (account_id, key))

        return await self._db.write(work)

    async def characters(self, account_id: int) -> list[Character]:
        """Return an account's characters, by name."""

        def work(db: sqlite3.Connection) -> list[Character]:
            rows = db.execute(sql.OF_ACCOUNT, (account_id,)).fetchall()
            return [_character(db, row) for row in rows]

        return await self._db.read(work)

    async def character(self, account_id: int, name: str) -> Character | None:
        """Return an account's character by name (any case), or None."""
        params = (account_id, name_key(name))
        return await self._db.read(lambda db: _one(db, sql.BY_NAME, params))

    async def shared_character(self, platform: str, chat_id: str, name: str) -> Character | None:
        """Return the character of that name shared in a chat (the earliest shared), or None."""
        params = (platform, chat_id, name_key(name))
        return await self._db.read(lambda db: _one(db, sql.SHARED, params))

    async def shared_characters(self, platform: str, chat_id: str) -> list[Character]:
        """Return the characters shared in a chat, by name."""

        def work(db: sqlite3.Connection) -> list[Character]:
            rows = db.execute(sql.SHARED_IN, (platform, chat_id)).fetchall()
            return [_character(db, row) for row in rows]

        return await self._db.read(work)

    async def character_image(self, image_sha256: str) -> CharacterImage | None:
        """Return a stored character image by its sha256."""
        rows = await self._db.query(sql.IMAGE, (image_sha256,))
        return None if not rows else CharacterImage(bytes(rows[0][0]), rows[0][1], rows[0][2])

    async def set_character_voice(self, account_id: int, name: str, voice: str | None) -> bool:
        """Set a character's voice; False when the account has no such character."""
        params = (voice, account_id, name_key(name))
        return bool(await self._db.write(lambda db: db.execute(sql.SET_VOICE, params).rowcount))

    async def share_character(
        self, account_id: int, name: str, platform: str, chat_id: str, now: float
    ) -> bool:
        """Let the members of a chat cast a character; False when there is no such character."""
        key = name_key(name)

        def work(db: sqlite3.Connection) -> bool:
            found = db.execute(sql.FIND, (account_id, key)).fetchone()
            if found is None:
                return False
            db.execute(sql.SHARE, (found[0], platform, chat_id, now))
            return True

        return await self._db.write(work)

    async def delete_character(self, account_id: int, name: str) -> bool:
        """Delete a character, its shares and its image when no other character uses it."""
        key = name_key(name)

        def work(db: sqlite3.Connection) -> bool:
            found = db.execute(sql.FIND, (account_id, key)).fetchone()
            if found is None:
                return False
            db.execute(sql.DROP_SHARES, (found[0],))
            db.execute(sql.DELETE, (found[0],))
            db.execute(sql.DROP_UNUSED_IMAGE, (found[1], found[1]))
            return True

        return await self._db.write(work)
