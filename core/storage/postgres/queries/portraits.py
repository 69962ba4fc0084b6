"""SQL of the portraits store on PostgreSQL (core/storage/postgres/portraits.py)."""

COLUMNS = """
id, account_id, name, description, prompt, preset, address, state, handle, charged,
error_key, picked, shown, submitted_at, created_at, updated_at
"""

INSERT = """
INSERT INTO portraits (id, account_id, name, description, prompt, preset, address, state,
    charged, charge_period, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $10)
"""

DEBIT = """
INSERT INTO ledger (account_id, period, delta, reason, note, created_at)
VALUES ($1, $2, $3, 'portrait', $4, $5)
"""

BY_ID = f"SELECT {COLUMNS} FROM portraits WHERE id = $1"

# Work left: the model's part (open states), or showing the outcome (ready, failed).
CLAIM = f"""
UPDATE portraits SET lease_owner = $1, lease_expires = $2
WHERE id IN (
    SELECT id FROM portraits
    WHERE NOT shown AND lease_expires < $3
      AND state IN ('queued', 'submitting', 'running', 'ready', 'failed')
    ORDER BY created_at LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING {COLUMNS}
"""

ADVANCE = """
UPDATE portraits SET state = $1, handle = coalesce($2, handle),
    submitted_at = CASE WHEN $1 = 'submitting' THEN $3 ELSE submitted_at END,
    lease_expires = $4, updated_at = $3
WHERE id = $5 AND lease_owner = $6 AND state IN ('queued', 'submitting', 'running')
"""

READY = """
UPDATE portraits SET state = 'ready', updated_at = $1
WHERE id = $2 AND lease_owner = $3 AND state IN ('queued', 'submitting', 'running')
"""

ADD_CANDIDATE = "INSERT INTO portrait_candidates (portrait_id, number, jpeg) VALUES ($1, $2, $3)"

CHARGE = "SELECT account_id, charge_period, charged FROM portraits WHERE id = $1 FOR UPDATE"

# The charge is zeroed in the statement that fails the request: it is refunded once.
FAIL = """
UPDATE portraits SET state = 'failed', error_key = $1, updated_at = $2, charged = 0
WHERE id = $3 AND lease_owner = $4 AND state IN ('queued', 'submitting', 'running')
"""

REFUND_BALANCE = "UPDATE balances SET credits = credits + $1 WHERE account_id = $2 AND period = $3"

REFUND = """
INSERT INTO ledger (account_id, period, delta, reason, note, created_at)
VALUES ($1, $2, $3, 'refund', $4, $5)
"""

SHOWN = """
UPDATE portraits SET shown = true, lease_owner = NULL, lease_expires = 0
WHERE id = $1 AND lease_owner = $2
"""

CANDIDATES = "SELECT jpeg FROM portrait_candidates WHERE portrait_id = $1 ORDER BY number"

CANDIDATE = "SELECT jpeg FROM portrait_candidates WHERE portrait_id = $1 AND number = $2"

PICK = """
UPDATE portraits SET state = 'picked', picked = $1, updated_at = $2
WHERE id = $3 AND account_id = $4 AND state = 'ready'
"""

UNPICK = """
UPDATE portraits SET state = 'ready', picked = NULL, updated_at = $1
WHERE id = $2 AND state = 'picked'
"""

DROP_CANDIDATES = "DELETE FROM portrait_candidates WHERE portrait_id = $1"

CANCEL = """
UPDATE portraits SET state = 'canceled', updated_at = $1
WHERE id = $2 AND account_id = $3 AND state = 'ready'
"""

EXPIRE = """
UPDATE portraits SET state = 'expired', updated_at = $1
WHERE state = 'ready' AND updated_at < $2
RETURNING id
"""
