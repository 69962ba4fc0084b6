"""Named queries on users, accounts, balances, the ledger, chat days and link codes.

Whatever changes an account's balance, counters or place in line locks its row first
(``LOCK_ACCOUNT``): admissions of one account run one after another and decide on what
the one before wrote, as they do on SQLite's single writer.
"""

from __future__ import annotations

from core.storage.postgres.queries import FINISHED

ACCOUNT_COLUMNS = (
    "a.id, a.role, a.access, a.banned_until, a.ban_reason, a.queued, a.in_flight,"
    " a.ticket, a.turn_used, a.weight"
)

USER = """
SELECT id, account_id, display_name, locale FROM users
WHERE platform = $1 AND platform_user_id = $2
"""

# The ticket is taken when the account first queues something (admission).
INSERT_ACCOUNT = "INSERT INTO accounts (created_at) VALUES ($1) RETURNING id"

# Two first messages of a new user at once: the second finds the first's row instead.
INSERT_USER = """
INSERT INTO users (platform, platform_user_id, display_name, locale, created_at, account_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (platform, platform_user_id) DO NOTHING
RETURNING id
"""

DROP_ACCOUNT = "DELETE FROM accounts WHERE id = $1"

RENAME_USER = """
UPDATE users SET display_name = $1, locale = coalesce($2, locale) WHERE id = $3
"""

ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1"

LOCK_ACCOUNT = f"{ACCOUNT} FOR NO KEY UPDATE"

ACCOUNT_OF = f"""
SELECT {ACCOUNT_COLUMNS} FROM users u JOIN accounts a ON a.id = u.account_id
WHERE u.platform = $1 AND u.platform_user_id = $2
"""

# Locks the chat's row for the day (creating it at 0) and reads its count: admissions
# into one chat decide one after another.
LOCK_CHAT_DAY = """
INSERT INTO chat_days (platform, chat_id, day, takes) VALUES ($1, $2, $3, 0)
ON CONFLICT (platform, chat_id, day) DO UPDATE SET takes = chat_days.takes
RETURNING takes
"""

ADD_CHAT_TAKES = """
UPDATE chat_days SET takes = takes + $4 WHERE platform = $1 AND chat_id = $2 AND day = $3
"""

BALANCE = "SELECT credits FROM balances WHERE account_id = $1 AND period = $2"

OPEN_BALANCE = "INSERT INTO balances (account_id, period, credits) VALUES ($1, $2, $3)"

ALLOWANCE = """
INSERT INTO ledger (account_id, period, delta, reason, created_at)
VALUES ($1, $2, $3, 'allowance', $4)
"""

# Conditional: never below zero, even if a check was skipped (see ledger.try_debit).
DEBIT = """
UPDATE balances SET credits = credits - $1 WHERE account_id = $2 AND period = $3 AND credits >= $1
RETURNING credits
"""

DEBITS = """
INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
VALUES ($1, $2, $3, 'debit', $4, $5)
"""

ADJUST = "UPDATE balances SET credits = credits + $1 WHERE account_id = $2 AND period = $3"

ADJUSTED = """
INSERT INTO ledger (account_id, period, delta, reason, actor, note, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

ENTRIES = """
SELECT period, delta, reason, job_id, actor, note, created_at FROM ledger
WHERE account_id = $1 ORDER BY id DESC LIMIT $2
"""

SET_ROLE = "UPDATE accounts SET role = $1 WHERE id = $2"

SET_ACCESS = "UPDATE accounts SET access = $1 WHERE id = $2"

DECIDE_ACCESS = "UPDATE accounts SET access = $1 WHERE id = $2 AND access = 'pending'"

SET_BAN = "UPDATE accounts SET banned_until = $1, ban_reason = $2 WHERE id = $3"

PENDING = """
SELECT a.id, u.platform, u.platform_user_id, u.display_name
FROM accounts a JOIN users u ON u.account_id = a.id
WHERE a.access = 'pending' ORDER BY a.id, u.id
"""

DROP_LINK_CODES = "DELETE FROM link_codes WHERE account_id = $1 OR expires_at < $2"

SAVE_LINK_CODE = """
INSERT INTO link_codes (code, account_id, platform, expires_at) VALUES ($1, $2, $3, $4)
"""

# Used up by the first try, right or wrong: guessing costs one code per try.
USE_LINK_CODE = """
DELETE FROM link_codes WHERE code = $1 RETURNING account_id, platform, expires_at
"""

PLATFORMS = "SELECT platform FROM users WHERE account_id = $1"

UNFINISHED = f"SELECT 1 FROM jobs WHERE account_id = $1 AND state NOT IN {FINISHED} LIMIT 1"

MOVE_USERS = "UPDATE users SET account_id = $1 WHERE account_id = $2"
