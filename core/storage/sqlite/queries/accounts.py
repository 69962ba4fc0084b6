"""Named queries on users, accounts, balances, the ledger, chat days and link codes."""

from __future__ import annotations

from core.storage.sqlite.queries import FINISHED

ACCOUNT_COLUMNS = (
    "a.id, a.role, a.access, a.banned_until, a.ban_reason, a.queued, a.in_flight,"
    " a.ticket, a.turn_used, a.weight"
)

USER = """
SELECT id, account_id, display_name, locale FROM users WHERE platform = ? AND platform_user_id = ?
"""

# The ticket is taken when the account first queues something (admission).
INSERT_ACCOUNT = "INSERT INTO accounts (created_at) VALUES (?) RETURNING id"

INSERT_USER = """
INSERT INTO users (platform, platform_user_id, display_name, locale, created_at, account_id)
VALUES (?, ?, ?, ?, ?, ?) RETURNING id
"""

RENAME_USER = "UPDATE users SET display_name = ?, locale = coalesce(?, locale) WHERE id = ?"

ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = ?"

ACCOUNT_OF = f"""
SELECT {ACCOUNT_COLUMNS} FROM users u JOIN accounts a ON a.id = u.account_id
WHERE u.platform = ? AND u.platform_user_id = ?
"""

# Everything an admission decides on, in one statement: the account, the whole queue,
# the chat's day and the period's balance (NULL: not started).
ADMISSION_SNAPSHOT = f"""
SELECT {ACCOUNT_COLUMNS},
       (SELECT queued FROM scheduler WHERE id = 1),
       (SELECT takes FROM chat_days WHERE platform = ? AND chat_id = ? AND day = ?),
       (SELECT credits FROM balances WHERE account_id = a.id AND period = ?)
FROM accounts a WHERE a.id = ?
"""

ADD_CHAT_TAKES = """
INSERT INTO chat_days (platform, chat_id, day, takes) VALUES (?, ?, ?, ?)
ON CONFLICT (platform, chat_id, day) DO UPDATE SET takes = takes + excluded.takes
"""

BALANCE = "SELECT credits FROM balances WHERE account_id = ? AND period = ?"

OPEN_BALANCE = "INSERT INTO balances (account_id, period, credits) VALUES (?, ?, ?)"

ALLOWANCE = """
INSERT INTO ledger (account_id, period, delta, reason, created_at)
VALUES (?, ?, ?, 'allowance', ?)
"""

# Conditional: never below zero, even if a check was skipped.
DEBIT = """
UPDATE balances SET credits = credits - ? WHERE account_id = ? AND period = ? AND credits >= ?
RETURNING credits
"""

DEBITS = """
INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
VALUES (?, ?, ?, 'debit', ?, ?)
"""

ADJUST = "UPDATE balances SET credits = credits + ? WHERE account_id = ? AND period = ?"

ADJUSTED = """
INSERT INTO ledger (account_id, period, delta, reason, actor, note, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

ENTRIES = """
SELECT period, delta, reason, job_id, actor, note, created_at FROM ledger
WHERE account_id = ? ORDER BY id DESC LIMIT ?
"""

SET_ROLE = "UPDATE accounts SET role = ? WHERE id = ?"

SET_ACCESS = "UPDATE accounts SET access = ? WHERE id = ?"

# Conditional on 'pending': of two admins deciding at once, only the first one counts.
DECIDE_ACCESS = "UPDATE accounts SET access = ? WHERE id = ? AND access = 'pending'"

SET_BAN = "UPDATE accounts SET banned_until = ?, ban_reason = ? WHERE id = ?"

PENDING = """
SELECT a.id, u.platform, u.platform_user_id, u.display_name
FROM accounts a JOIN users u ON u.account_id = a.id
WHERE a.access = 'pending' ORDER BY a.id, u.id
"""

DROP_LINK_CODES = "DELETE FROM link_codes WHERE account_id = ? OR expires_at < ?"

SAVE_LINK_CODE = """
INSERT INTO link_codes (code, account_id, platform, expires_at) VALUES (?, ?, ?, ?)
"""

# Used up by the first try, right or wrong: guessing costs one code per try.
USE_LINK_CODE = "DELETE FROM link_codes WHERE code = ? RETURNING account_id, platform, expires_at"

PLATFORMS = "SELECT platform FROM users WHERE account_id = ?"

UNFINISHED = f"SELECT 1 FROM jobs WHERE account_id = ? AND state NOT IN {FINISHED} LIMIT 1"

MOVE_USERS = "UPDATE users SET account_id = ? WHERE account_id = ?"
