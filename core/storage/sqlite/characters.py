"""An account's saved characters on SQLite (the ``CharacterStore`` protocol)."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from core.storage.characters import name_key, renames_for_move
from core.storage.sqlite.database import Database
from core.storage.sqlite.queries import characters as sql
from core.storage.types import (
    Character,
    CharacterImage,
    CharacterVoice,
    ProviderVoice,
    VoiceState,
)


def _character(db: sqlite3.Connection, row: Any) -> Character:
    shares = tuple((str(p), str(c)) for p, c in db.execute(sql.SHARES, (row[0],)).fetchall())
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


def _drop_unused_voice(db: sqlite3.Connection, sha: str | None) -> None:
    """Delete a voice sample (and the voice ids made from it) no character uses any more."""
    if sha is not None:
        db.execute(sql.DROP_UNUSED_VOICE_IDS, (sha, sha))
        db.execute(sql.DROP_UNUSED_VOICE, (sha, sha))


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
            sample = db.execute(sql.VOICE_OF, (found[0],)).fetchone()[0]
            db.execute(sql.DROP_SHARES, (found[0],))
            db.execute(sql.DELETE, (found[0],))
            db.execute(sql.DROP_UNUSED_IMAGE, (found[1], found[1]))
            _drop_unused_voice(db, sample)
            return True

        return await self._db.write(work)

    async def set_character_voice_sample(
        self, account_id: int, name: str, sample: CharacterVoice
    ) -> Character | None:
        """Give a character a voice sample (replacing its old one); None: no such character."""
        sha = hashlib.sha256(sample.wav).hexdigest()
        key = name_key(name)

        def work(db: sqlite3.Connection) -> Character | None:
            found = db.execute(sql.FIND_VOICE, (account_id, key)).fetchone()
            if found is None:
                return None
            db.execute(sql.SAVE_VOICE, (sha, sample.wav, sample.seconds))
            db.execute(sql.SET_VOICE_SAMPLE, (sha, found[0]))
            if found[1] != sha:
                _drop_unused_voice(db, found[1])
            return _one(db, sql.BY_NAME, (account_id, key))

        return await self._db.write(work)

    async def voice_sample(self, sample_sha256: str) -> CharacterVoice | None:
        """Return a stored voice sample by its sha256."""
        rows = await self._db.query(sql.VOICE, (sample_sha256,))
        return None if not rows else CharacterVoice(bytes(rows[0][0]), float(rows[0][1]))

    async def provider_voice(
        self, sample_sha256: str, provider: str, model: str
    ) -> ProviderVoice | None:
        """Return the voice id made (or being made) from a sample at a provider model."""
        rows = await self._db.query(sql.PROVIDER_VOICE, (sample_sha256, provider, model))
        return None if not rows else _provider_voice(rows[0])

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
        key = (sample_sha256, provider, model)
        quiet_since = None if quiet_for is None else now - quiet_for

        def work(db: sqlite3.Connection) -> tuple[ProviderVoice, bool] | None:
            if db.execute(sql.VOICE_EXISTS, (sample_sha256,)).fetchone() is None:
                return None
            claimed = db.execute(sql.CLAIM_PROVIDER_VOICE, (*key, owner, now)).rowcount > 0
            if not claimed:
                db.execute(sql.ADOPT_PROVIDER_VOICE, (owner, now, *key, quiet_since))
            return _provider_voice(db.execute(sql.PROVIDER_VOICE, key).fetchone()), claimed

        return await self._db.write(work)

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
        params = (state, handle, voice_id, now, sample_sha256, provider, model, owner)
        return bool(
            await self._db.write(lambda db: db.execute(sql.UPDATE_PROVIDER_VOICE, params).rowcount)
        )
