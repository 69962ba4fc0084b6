"""Named queries on characters, their images and their shares."""

from __future__ import annotations

from core.storage.postgres.queries import ACTIVE

_COLUMNS = """
c.id, c.account_id, c.name, c.image_sha256, i.width, i.height, c.voice, c.seed,
c.description, c.created_at, c.voice_sample
"""

_FROM = "FROM characters c JOIN character_images i ON i.sha256 = c.image_sha256"

# The account's row lock serialises saves of one account: the limit holds across processes.
LOCK_ACCOUNT = "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE"

COUNT = "SELECT count(*) FROM characters WHERE account_id = $1"

# DO UPDATE (not NOTHING) locks the row: a concurrent delete of an unused image waits.
SAVE_IMAGE = """
INSERT INTO character_images (sha256, jpeg, width, height) VALUES ($1, $2, $3, $4)
ON CONFLICT (sha256) DO UPDATE SET width = excluded.width
"""

FIND = "SELECT id, image_sha256 FROM characters WHERE account_id = $1 AND name_key = $2"

INSERT = """
INSERT INTO characters (account_id, name, name_key, image_sha256, voice, seed, description,
                        created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

REPLACE = """
UPDATE characters SET name = $1, image_sha256 = $2, voice = coalesce($3, voice),
    seed = coalesce($4, seed),
    description = CASE WHEN $5::text = '' THEN description ELSE $5::text END
WHERE id = $6
"""

# An image no character uses any more goes with its last character.
DROP_UNUSED_IMAGE = """
DELETE FROM character_images
WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM characters WHERE image_sha256 = $1)
"""

OF_ACCOUNT = f"SELECT {_COLUMNS} {_FROM} WHERE c.account_id = $1 ORDER BY c.name_key"

BY_NAME = f"SELECT {_COLUMNS} {_FROM} WHERE c.account_id = $1 AND c.name_key = $2"

SHARED = f"""
SELECT {_COLUMNS} {_FROM} JOIN character_shares s ON s.character_id = c.id
WHERE s.platform = $1 AND s.chat_id = $2 AND c.name_key = $3
ORDER BY s.created_at, c.id LIMIT 1
"""

SHARED_IN = f"""
SELECT {_COLUMNS} {_FROM} JOIN character_shares s ON s.character_id = c.id
WHERE s.platform = $1 AND s.chat_id = $2
ORDER BY c.name_key, c.id
"""

SHARES = """
SELECT platform, chat_id FROM character_shares WHERE character_id = $1
ORDER BY created_at, platform, chat_id
"""

IMAGE = "SELECT jpeg, width, height FROM character_images WHERE sha256 = $1"

SET_VOICE = "UPDATE characters SET voice = $1 WHERE account_id = $2 AND name_key = $3"

SHARE = """
INSERT INTO character_shares (character_id, platform, chat_id, created_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""

DROP_SHARES = "DELETE FROM character_shares WHERE character_id = $1"

DELETE = "DELETE FROM characters WHERE id = $1"

# Linking accounts (core/storage/postgres/accounts.py): the joining account's characters move.
NAMES = "SELECT id, name FROM characters WHERE account_id = $1"

RENAME = "UPDATE characters SET name = $1, name_key = $2 WHERE id = $3"

MOVE = "UPDATE characters SET account_id = $1 WHERE account_id = $2"

# DO UPDATE (not NOTHING) locks the row: a concurrent delete of an unused sample waits.
SAVE_VOICE = """
INSERT INTO voice_samples (sha256, wav, seconds) VALUES ($1, $2, $3)
ON CONFLICT (sha256) DO UPDATE SET seconds = excluded.seconds
"""

FIND_VOICE = "SELECT id, voice_sample FROM characters WHERE account_id = $1 AND name_key = $2"

VOICE_OF = "SELECT voice_sample FROM characters WHERE id = $1"

SET_VOICE_SAMPLE = "UPDATE characters SET voice_sample = $1 WHERE id = $2"

# A sample no character uses any more goes with its last character, with the voice ids
# providers made from it.
DROP_UNUSED_VOICE_IDS = """
DELETE FROM provider_voices
WHERE sample_sha256 = $1 AND NOT EXISTS (SELECT 1 FROM characters WHERE voice_sample = $1)
"""

DROP_UNUSED_VOICE = """
DELETE FROM voice_samples
WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM characters WHERE voice_sample = $1)
"""

VOICE = "SELECT wav, seconds FROM voice_samples WHERE sha256 = $1"

# FOR SHARE: the sample cannot go while a voice id for it is being claimed.
VOICE_EXISTS = "SELECT 1 FROM voice_samples WHERE sha256 = $1 FOR SHARE"

_PROVIDER_VOICE_COLUMNS = (
    "sample_sha256, provider, model, state, owner, handle, voice_id, updated_at"
)

PROVIDER_VOICE = f"""
SELECT {_PROVIDER_VOICE_COLUMNS} FROM provider_voices
WHERE sample_sha256 = $1 AND provider = $2 AND model = $3
"""

CLAIM_PROVIDER_VOICE = """
INSERT INTO provider_voices (sample_sha256, provider, model, state, owner, updated_at)
VALUES ($1, $2, $3, 'creating', $4, $5)
ON CONFLICT (sample_sha256, provider, model) DO UPDATE
SET state = 'creating', owner = excluded.owner, handle = NULL, voice_id = NULL,
    updated_at = excluded.updated_at
WHERE provider_voices.state = 'failed'
RETURNING 1
"""

# A claim whose take no longer holds it is taken over: the take is gone or ended, or its
# lease ran out (its worker died, or it waits for a retry); or a request was sent and the
# row has not moved for a while. The handle stays (it is polled, never sent again); so
# does ``updated_at`` without one, the time a lost request is looked up from.
ADOPT_PROVIDER_VOICE = f"""
UPDATE provider_voices
SET owner = $1, updated_at = CASE WHEN handle IS NULL THEN updated_at ELSE $2 END
WHERE sample_sha256 = $3 AND provider = $4 AND model = $5 AND state = 'creating'
  AND owner <> $1
  AND (NOT EXISTS (SELECT 1 FROM jobs WHERE id = provider_voices.owner
                   AND state IN {ACTIVE} AND lease_expires >= $2)
       OR (handle IS NOT NULL AND updated_at < $6))
RETURNING 1
"""

UPDATE_PROVIDER_VOICE = """
UPDATE provider_voices SET state = $1, handle = coalesce($2, handle), voice_id = $3,
    updated_at = greatest(updated_at, $4)
WHERE sample_sha256 = $5 AND provider = $6 AND model = $7 AND owner = $8
  AND state = 'creating'
"""
