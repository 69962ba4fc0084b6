"""Named queries on the chat adapters' tables and a request's status message."""

from __future__ import annotations

INBOX_ADD = """
INSERT INTO chat_inbox (platform, key, payload, received_at) VALUES (?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

INBOX_ENTRY = """
SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox
WHERE platform = ? AND key = ?
"""

INBOX_OPEN = """
SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox
WHERE platform = ? AND done_at IS NULL ORDER BY received_at, rowid
"""

INBOX_FIRST_REPLY = "UPDATE chat_inbox SET first_reply = ? WHERE platform = ? AND key = ?"

INBOX_ATTEMPT = "UPDATE chat_inbox SET attempts = attempts + 1 WHERE platform = ? AND key = ?"

INBOX_DONE = "UPDATE chat_inbox SET done_at = ? WHERE platform = ? AND key = ?"

INBOX_PRUNE = """
DELETE FROM chat_inbox WHERE platform = ? AND done_at IS NOT NULL AND received_at < ?
"""

REMEMBER_PHOTO = """
INSERT OR REPLACE INTO chat_photos (platform, chat_id, user_id, file_ref, request_id,
                                    message_id, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

LAST_PHOTO = """
SELECT file_ref, request_id, message_id, updated_at FROM chat_photos
WHERE platform = ? AND chat_id = ? AND user_id = ? AND updated_at >= ?
"""

ADD_BUTTON = """
INSERT INTO chat_buttons (id, platform, action, request_id, job_id, owner, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

BUTTON = """
SELECT id, action, request_id, job_id, owner FROM chat_buttons WHERE platform = ? AND id = ?
"""

SET_LOCALE = """
INSERT INTO chat_prefs (platform, user_id, locale) VALUES (?, ?, ?)
ON CONFLICT (platform, user_id) DO UPDATE SET locale = excluded.locale
"""

LOCALE = "SELECT locale FROM chat_prefs WHERE platform = ? AND user_id = ?"

ADD_HISTORY = """
INSERT OR REPLACE INTO chat_history (platform, user_id, job_id, chat_id, file_ref, caption,
                                     created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

HISTORY = """
SELECT job_id, chat_id, file_ref, caption, created_at FROM chat_history
WHERE platform = ? AND user_id = ? ORDER BY created_at DESC LIMIT ?
"""

SET_STATUS_MESSAGE = """
UPDATE requests SET address = json_set(address, '$.status_message_id', ?) WHERE id = ?
"""

GUILD_SETTINGS = """
SELECT allowed_channels, daily_cap FROM guild_settings WHERE platform = ? AND guild_id = ?
"""

SET_GUILD_CHANNELS = """
INSERT INTO guild_settings (platform, guild_id, allowed_channels, daily_cap) VALUES (?, ?, ?, 0)
ON CONFLICT (platform, guild_id) DO UPDATE SET allowed_channels = excluded.allowed_channels
"""

SET_GUILD_CAP = """
INSERT INTO guild_settings (platform, guild_id, allowed_channels, daily_cap) VALUES (?, ?, '[]', ?)
ON CONFLICT (platform, guild_id) DO UPDATE SET daily_cap = excluded.daily_cap
"""

# One statement, so two processes cannot both take the last takes of the day. The cap is
# read in it too; 0 (or no settings) means no cap. A negative count always passes.
ADD_GUILD_TAKES = """
INSERT INTO guild_takes (platform, guild_id, day, takes)
SELECT ?1, ?2, ?3, max(?4, 0)
WHERE ?4 <= coalesce(
    (SELECT nullif(daily_cap, 0) FROM guild_settings WHERE platform = ?1 AND guild_id = ?2), ?4)
ON CONFLICT (platform, guild_id, day) DO UPDATE SET takes = max(0, guild_takes.takes + ?4)
WHERE ?4 <= 0 OR guild_takes.takes + ?4 <= coalesce(
    (SELECT nullif(daily_cap, 0) FROM guild_settings WHERE platform = ?1 AND guild_id = ?2),
    guild_takes.takes + ?4)
"""

# One statement: the row's lock makes takes counted at once get numbers of their own.
ADD_LINE_TAKE = """
INSERT INTO line_takes (platform, request_id, takes) VALUES (?1, ?2, max(?3, 0) + 1)
ON CONFLICT (platform, request_id) DO UPDATE SET takes = max(line_takes.takes, ?3) + 1
RETURNING takes
"""

# --- retention ----------------------------------------------------------------------------

# ISO dates compare as text.
DELETE_OLD_GUILD_DAYS = """
DELETE FROM guild_takes WHERE (platform, guild_id, day) IN (
    SELECT platform, guild_id, day FROM guild_takes WHERE day < ? LIMIT ?)
"""

# A line's requests: the one it was first asked in and those naming it as their line
# (bots/chat/texts.py LINE_REQUEST). Once none keeps its photo, every take of the line
# ended long ago: a photo goes only ``history_days`` after its request's last take ended.
DELETE_ENDED_LINES = """
DELETE FROM line_takes WHERE (platform, request_id) IN (
    SELECT platform, request_id FROM line_takes WHERE request_id NOT IN (
        SELECT coalesce(json_extract(address, '$.extra.line_request'), id) FROM requests
        WHERE length(image) > 0)
    LIMIT ?)
"""
