"""SQL of the portraits store on SQLite (core/storage/sqlite/portraits.py)."""

COLUMNS = """
id, account_id, name, description, prompt, preset, address, state, handle, charged,
error_key, picked, shown, submitted_at, created_at, updated_at
"""

INSERT = """
INSERT INTO portraits (id, account_id, name, description, prompt, preset, address, state,
    charged, charge_period, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)
"""

DEBIT = """
INSERT INTO ledger (account_id, period, delta, reason, note, created_at)
VALUES (?, ?, ?, 'portrait', ?, ?)
"""

BY_ID = f"SELECT {COLUMNS} FROM portraits WHERE id = ?"

# Work left: the model's part (open states), or showing the outcome (ready, failed).
CLAIMABLE = """
SELECT id FROM portraits
WHERE shown = 0 AND lease_expires < ?
  AND state IN ('queued', 'submitting', 'running', 'ready', 'failed')
ORDER BY created_at LIMIT ?
"""

LEASE = "UPDATE portraits SET lease_owner = ?, lease_expires = ? WHERE id = ?"

ADVANCE = """
UPDATE portraits SET state = ?, handle = coalesce(?, handle),
    submitted_at = CASE WHEN ? = 'submitting' THEN ? ELSE submitted_at END,
    lease_expires = ?, updated_at = ?
WHERE id = ? AND lease_owner = ? AND state IN ('queued', 'submitting', 'running')
"""

READY = """
UPDATE portraits SET state = 'ready', updated_at = ?
WHERE id = ? AND lease_owner = ? AND state IN ('queued', 'submitting', 'running')
"""

ADD_CANDIDATE = "INSERT INTO portrait_candidates (portrait_id, number, jpeg) VALUES (?, ?, ?)"

CHARGE = "SELECT account_id, charge_period, charged FROM portraits WHERE id = ?"

# The charge is zeroed in the statement that fails the request: it is refunded once.
FAIL = """
UPDATE portraits SET state = 'failed', error_key = ?, updated_at = ?, charged = 0
WHERE id = ? AND lease_owner = ? AND state IN ('queued', 'submitting', 'running')
"""

REFUND_BALANCE = "UPDATE balances SET credits = credits + ? WHERE account_id = ? AND period = ?"

REFUND = """
INSERT INTO ledger (account_id, period, delta, reason, note, created_at)
VALUES (?, ?, ?, 'refund', ?, ?)
"""

SHOWN = """
UPDATE portraits SET shown = 1, lease_owner = NULL, lease_expires = 0
WHERE id = ? AND lease_owner = ?
"""

CANDIDATES = "SELECT jpeg FROM portrait_candidates WHERE portrait_id = ? ORDER BY number"

CANDIDATE = "SELECT jpeg FROM portrait_candidates WHERE portrait_id = ? AND number = ?"

PICK = """
UPDATE portraits SET state = 'picked', picked = ?, updated_at = ?
WHERE id = ? AND account_id = ? AND state = 'ready'
"""

UNPICK = """
UPDATE portraits SET state = 'ready', picked = NULL, updated_at = ?
WHERE id = ? AND state = 'picked'
"""

DROP_CANDIDATES = "DELETE FROM portrait_candidates WHERE portrait_id = ?"

CANCEL = """
UPDATE portraits SET state = 'canceled', updated_at = ?
WHERE id = ? AND account_id = ? AND state = 'ready'
"""

EXPIRE = """
UPDATE portraits SET state = 'expired', updated_at = ?
WHERE state = 'ready' AND updated_at < ?
RETURNING id
"""
