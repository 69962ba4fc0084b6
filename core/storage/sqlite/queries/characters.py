"""Named queries on characters, their images and their shares."""

from __future__ import annotations

_COLUMNS = """
c.id, c.account_id, c.name, c.image_sha256, i.width, i.height, c.voice, c.seed,
c.description, c.created_at
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
