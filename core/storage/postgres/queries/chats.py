"""Named queries on the chat adapters' tables and a request's status message."""

from __future__ import annotations

# One statement for a batch; RETURNING names only the rows that were new.
INBOX_ADD = """
INSERT INTO chat_inbox (platform, key, payload, received_at)
SELECT $1, e.key, e.payload, $4 FROM unnest($2::text[], $3::text[]) AS e(key, payload)
ON CONFLICT DO NOTHING
RETURNING key
"""

INBOX_ENTRY = """
SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox
WHERE platform = $1 AND key = $2
"""

# arrival keeps the order of events received in the same instant (SQLite: rowid).
INBOX_OPEN = """
SELECT key, payload, first_reply, attempts, received_at FROM chat_inbox
WHERE platform = $1 AND done_at IS NULL ORDER BY received_at, arrival
"""

INBOX_FIRST_REPLY = "UPDATE chat_inbox SET first_reply = $1 WHERE platform = $2 AND key = $3"

INBOX_ATTEMPT = "UPDATE chat_inbox SET attempts = attempts + 1 WHERE platform = $1 AND key = $2"

INBOX_DONE = "UPDATE chat_inbox SET done_at = $1 WHERE platform = $2 AND key = $3"

INBOX_PRUNE = """
DELETE FROM chat_inbox WHERE platform = $1 AND done_at IS NOT NULL AND received_at < $2
"""

REMEMBER_PHOTO = """
INSERT INTO chat_photos (platform, chat_id, user_id, file_ref, request_id, message_id,
                         updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (platform, chat_id, user_id) DO UPDATE SET
    file_ref = excluded.file_ref, request_id = excluded.request_id,
    message_id = excluded.message_id, updated_at = excluded.updated_at
"""

LAST_PHOTO = """
SELECT file_ref, request_id, message_id, updated_at FROM chat_photos
WHERE platform = $1 AND chat_id = $2 AND user_id = $3 AND updated_at >= $4
"""

ADD_BUTTON = """
INSERT INTO chat_buttons (id, platform, action, request_id, job_id, owner, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

BUTTON = """
SELECT id, action, request_id, job_id, owner FROM chat_buttons WHERE platform = $1 AND id = $2
"""

SET_LOCALE = """
INSERT INTO chat_prefs (platform, user_id, locale) VALUES ($1, $2, $3)
ON CONFLICT (platform, user_id) DO UPDATE SET locale = excluded.locale
"""

LOCALE = "SELECT locale FROM chat_prefs WHERE platform = $1 AND user_id = $2"

ADD_HISTORY = """
INSERT INTO chat_history (platform, user_id, job_id, chat_id, file_ref, caption, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (platform, job_id) DO UPDATE SET
    user_id = excluded.user_id, chat_id = excluded.chat_id, file_ref = excluded.file_ref,
    caption = excluded.caption, created_at = excluded.created_at
"""

HISTORY = """
SELECT job_id, chat_id, file_ref, caption, created_at FROM chat_history
WHERE platform = $1 AND user_id = $2 ORDER BY created_at DESC LIMIT $3
"""

# to_jsonb(NULL) is NULL, and jsonb_set with NULL would blank the whole address.
SET_STATUS_MESSAGE = """
UPDATE requests
SET address = jsonb_set(address, '{status_message_id}', coalesce(to_jsonb($1::text), 'null'))
WHERE id = $2
"""

GUILD_SETTINGS = """
SELECT allowed_channels, daily_cap FROM guild_settings WHERE platform = $1 AND guild_id = $2
"""

SET_GUILD_CHANNELS = """
INSERT INTO guild_settings (platform, guild_id, allowed_channels, daily_cap)
VALUES ($1, $2, $3, 0)
ON CONFLICT (platform, guild_id) DO UPDATE SET allowed_channels = excluded.allowed_channels
"""

SET_GUILD_CAP = """
INSERT INTO guild_settings (platform, guild_id, allowed_channels, daily_cap)
VALUES ($1, $2, '[]', $3)
ON CONFLICT (platform, guild_id) DO UPDATE SET daily_cap = excluded.daily_cap
"""

# One statement: a concurrent writer of the same row waits for the row lock and the WHERE
# is checked again on the row it committed, so the last takes of the day go once. The cap
# is read in it too; 0 (or no settings) means no cap. A negative count always passes.
ADD_GUILD_TAKES = """
INSERT INTO guild_takes (platform, guild_id, day, takes)
SELECT $1, $2, $3, greatest($4::integer, 0)
WHERE $4::integer <= coalesce(
    (SELECT nullif(daily_cap, 0) FROM guild_settings WHERE platform = $1 AND guild_id = $2),
    $4::integer)
ON CONFLICT (platform, guild_id, day) DO UPDATE SET takes = greatest(0, guild_takes.takes + $4)
WHERE $4::integer <= 0 OR guild_takes.takes + $4 <= coalesce(
    (SELECT nullif(daily_cap, 0) FROM guild_settings WHERE platform = $1 AND guild_id = $2),
    guild_takes.takes + $4)
"""

# One statement: the row's lock makes takes counted at once get numbers of their own.
ADD_LINE_TAKE = """
INSERT INTO line_takes (platform, request_id, takes) VALUES ($1, $2, greatest($3::integer, 0) + 1)
ON CONFLICT (platform, request_id) DO UPDATE SET takes = greatest(line_takes.takes, $3) + 1
RETURNING takes
"""

# --- retention ----------------------------------------------------------------------------

# ISO dates compare as text.
DELETE_OLD_GUILD_DAYS = """
DELETE FROM guild_takes WHERE (platform, guild_id, day) IN (
    SELECT platform, guild_id, day FROM guild_takes WHERE day < $1 LIMIT $2)
"""

# A line's requests: the one it was first asked in and those naming it as their line
# (bots/chat/texts.py LINE_REQUEST). Once none keeps its photo, every take of the line
# ended long ago: a photo goes only ``history_days`` after its request's last take ended.
DELETE_ENDED_LINES = """
DELETE FROM line_takes WHERE (platform, request_id) IN (
    SELECT platform, request_id FROM line_takes WHERE request_id NOT IN (
        SELECT coalesce(address -> 'extra' ->> 'line_request', id) FROM requests
        WHERE length(image) > 0)
    LIMIT $1)
"""
