"""Named queries on characters, their images and their shares."""

from __future__ import annotations

from core.storage.sqlite.queries import ACTIVE

_COLUMNS = """
c.id, c.account_id, c.name, c.image_sha256, i.width, i.height, c.voice, c.seed,
c.description, c.created_at, c.voice_sample
"""

_FROM = "FROM characters c JOIN character_images i ON i.sha256 = c.image_sha256"

COUNT = "SELECT count(*) FROM characters WHERE account_id = ?"

SAVE_IMAGE = """
INSERT INTO character_images (sha256, jpeg, width, height) VALUES (?, ?, ?, ?)
ON CONFLICT (sha256) DO NOTHING
"""

FIND = "SELECT id, image_sha256 FROM characters WHERE account_id = ? AND name_key = ?"

INSERT = """
INSERT INTO characters (account_id, name, name_key, image_sha256, voice, seed, description,
                        created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

REPLACE = """
UPDATE characters SET name = ?, image_sha256 = ?, voice = coalesce(?, voice),
    seed = coalesce(?, seed), description = CASE WHEN ? = '' THEN description ELSE ? END
WHERE id = ?
"""

# An image no character uses any more goes with its last character.
DROP_UNUSED_IMAGE = """
DELETE FROM character_images
WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM characters WHERE image_sha256 = ?)
"""

OF_ACCOUNT = f"SELECT {_COLUMNS} {_FROM} WHERE c.account_id = ? ORDER BY c.name_key"

BY_NAME = f"SELECT {_COLUMNS} {_FROM} WHERE c.account_id = ? AND c.name_key = ?"

SHARED = f"""
SELECT {_COLUMNS} {_FROM} JOIN character_shares s ON s.character_id = c.id
WHERE s.platform = ? AND s.chat_id = ? AND c.name_key = ?
ORDER BY s.created_at, c.id LIMIT 1
"""

SHARED_IN = f"""
SELECT {_COLUMNS} {_FROM} JOIN character_shares s ON s.character_id = c.id
WHERE s.platform = ? AND s.chat_id = ?
ORDER BY c.name_key, c.id
"""

SHARES = """
SELECT platform, chat_id FROM character_shares WHERE character_id = ?
ORDER BY created_at, platform, chat_id
"""

IMAGE = "SELECT jpeg, width, height FROM character_images WHERE sha256 = ?"

SET_VOICE = "UPDATE characters SET voice = ? WHERE account_id = ? AND name_key = ?"

SHARE = """
INSERT INTO character_shares (character_id, platform, chat_id, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

DROP_SHARES = "DELETE FROM character_shares WHERE character_id = ?"

DELETE = "DELETE FROM characters WHERE id = ?"

# Linking accounts (core/storage/sqlite/accounts.py): the joining account's characters move.
NAMES = "SELECT id, name FROM characters WHERE account_id = ?"

RENAME = "UPDATE characters SET name = ?, name_key = ? WHERE id = ?"

MOVE = "UPDATE characters SET account_id = ? WHERE account_id = ?"

SAVE_VOICE = """
INSERT INTO voice_samples (sha256, wav, seconds) VALUES (?, ?, ?)
ON CONFLICT (sha256) DO NOTHING
"""

FIND_VOICE = "SELECT id, voice_sample FROM characters WHERE account_id = ? AND name_key = ?"

VOICE_OF = "SELECT voice_sample FROM characters WHERE id = ?"

SET_VOICE_SAMPLE = "UPDATE characters SET voice_sample = ? WHERE id = ?"

# A sample no character uses any more goes with its last character, with the voice ids
# providers made from it.
DROP_UNUSED_VOICE_IDS = """
DELETE FROM provider_voices
WHERE sample_sha256 = ? AND NOT EXISTS (SELECT 1 FROM characters WHERE voice_sample = ?)
"""

DROP_UNUSED_VOICE = """
DELETE FROM voice_samples
WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM characters WHERE voice_sample = ?)
"""

VOICE = "SELECT wav, seconds FROM voice_samples WHERE sha256 = ?"

VOICE_EXISTS = "SELECT 1 FROM voice_samples WHERE sha256 = ?"

_PROVIDER_VOICE_COLUMNS = (
    "sample_sha256, provider, model, state, owner, handle, voice_id, updated_at"
)

PROVIDER_VOICE = f"""
SELECT {_PROVIDER_VOICE_COLUMNS} FROM provider_voices
WHERE sample_sha256 = ? AND provider = ? AND model = ?
"""

CLAIM_PROVIDER_VOICE = """
INSERT INTO provider_voices (sample_sha256, provider, model, state, owner, updated_at)
VALUES (?, ?, ?, 'creating', ?, ?)
ON CONFLICT (sample_sha256, provider, model) DO UPDATE
SET state = 'creating', owner = excluded.owner, handle = NULL, voice_id = NULL,
    updated_at = excluded.updated_at
WHERE provider_voices.state = 'failed'
"""

# A claim whose take no longer holds it is taken over: the take is gone or ended, or its
# lease ran out (its worker died, or it waits for a retry); or a request was sent and the
# row has not moved for a while. The handle stays (it is polled, never sent again); so
# does ``updated_at`` without one, the time a lost request is looked up from.
ADOPT_PROVIDER_VOICE = f"""
UPDATE provider_voices
SET owner = ?1, updated_at = CASE WHEN handle IS NULL THEN updated_at ELSE ?2 END
WHERE sample_sha256 = ?3 AND provider = ?4 AND model = ?5 AND state = 'creating'
  AND owner <> ?1
  AND (NOT EXISTS (SELECT 1 FROM jobs WHERE id = provider_voices.owner
                   AND state IN {ACTIVE} AND lease_expires >= ?2)
       OR (handle IS NOT NULL AND updated_at < ?6))
"""

UPDATE_PROVIDER_VOICE = """
UPDATE provider_voices SET state = ?, handle = coalesce(?, handle), voice_id = ?,
    updated_at = max(updated_at, ?)
WHERE sample_sha256 = ? AND provider = ? AND model = ? AND owner = ? AND state = 'creating'
"""
