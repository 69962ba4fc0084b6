"""Named queries on requests, jobs, job events and the scheduler row."""

from __future__ import annotations

from core.models import TERMINAL_STATES, JobState
from core.storage.sqlite.queries import (
    ACTIVE,
    DELIVERING,
    DONE,
    FAILED,
    FINISHED,
    IN_FLIGHT,
    NOT_LEASED,
    QUEUED,
    states,
)

_GROUPED = states({JobState.DELIVERING, *TERMINAL_STATES})  # no take still on its way

# Job fields in the order JOB_COLUMNS selects them; the address comes from the request.
JOB_ROW = (
    "id", "request_id", "user_id", "take", "takes", "state", "line", "speech", "language",
    "seconds", "seed", "voice", "attempts", "handle", "created_at", "updated_at",
    "started_at", "finished_at", "error_key", "error_params", "error_detail", "result_path",
    "resubmitted", "not_before", "deadline_at", "delivery_unconfirmed", "backend",
    "retake_reason", "stage", "speech_handle", "speech_result", "lease_owner", "lease_token",
    "voice_sample",
)  # fmt: skip
JOB_COLUMNS = ", ".join(f"j.{name}" for name in JOB_ROW) + ", r.address"
_JOB_FROM = "FROM jobs j JOIN requests r ON r.id = j.request_id"

# --- admission ----------------------------------------------------------------------------

FIND_REQUEST = "SELECT id FROM requests WHERE source_key = ?"

INSERT_REQUEST = """
INSERT INTO requests (id, source_key, user_id, line, image, image_width, image_height,
                      address, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

TOTAL_QUEUED = "SELECT queued FROM scheduler WHERE id = 1"

# The back of the round-robin line.
NEXT_TICKET = """
UPDATE scheduler SET next_ticket = next_ticket + 1 WHERE id = 1 RETURNING next_ticket - 1
"""

# The same, for an account that rejoins the line with takes: they join the queue's count.
REJOIN = """
UPDATE scheduler SET next_ticket = next_ticket + 1, queued = queued + ? WHERE id = 1
RETURNING next_ticket - 1
"""

# The account's place in line and its role's knobs, with its newly waiting takes counted.
ENQUEUE_ACCOUNT = """
UPDATE accounts SET ticket = ?, turn_used = ?, weight = ?, max_in_flight = ?,
                    queued = queued + ?
WHERE id = ?
"""

COUNT_QUEUE = "UPDATE scheduler SET queued = queued + ? WHERE id = 1"

LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM jobs"

INSERT_JOB = f"""
INSERT INTO jobs (id, seq, request_id, user_id, account_id, platform, take, takes, state,
                  fair_round, line, speech, language, seconds, seed, voice, created_at,
                  updated_at, charged, charge_period, voice_sample)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, {QUEUED}, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

RECENT_RUN_SECONDS = f"""
SELECT avg(finished_at - started_at) FROM (
    SELECT finished_at, started_at FROM jobs
    WHERE state = {DONE} AND started_at IS NOT NULL AND (? IS NULL OR backend = ?)
    ORDER BY finished_at DESC LIMIT ?)
"""

USER_ID = "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?"

HANDLES_SINCE = """
SELECT handle FROM jobs WHERE handle IS NOT NULL AND updated_at >= ?1
UNION ALL
SELECT speech_handle FROM jobs WHERE speech_handle IS NOT NULL AND updated_at >= ?1
"""

# --- reading ------------------------------------------------------------------------------

JOB = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.id = ?"

JOBS_BY_IDS = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.id IN ({{marks}}) ORDER BY j.seq"

JOBS_FOR_REQUEST = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.request_id = ? ORDER BY j.take"

REQUEST_IMAGE = "SELECT image, image_width, image_height FROM requests WHERE id = ?"

# A waiting job's account and place in line, then its rank among the account's takes.
WAITING_JOB = f"""
SELECT j.account_id, j.seq, a.ticket, a.turn_used, a.weight
FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = ? AND j.state = {QUEUED}
"""

RANK_IN_ACCOUNT = f"""
SELECT count(*) FROM jobs WHERE account_id = ? AND state = {QUEUED} AND seq <= ?
"""

# Takes of other accounts that start before turn ? of an account with ticket ? (see
# core.storage.sqlite.admission.queue_position).
TAKES_AHEAD = """
SELECT coalesce(sum(min(queued, max(0, (? + (ticket < ?)) * weight - turn_used))), 0)
FROM accounts WHERE queued > 0 AND id != ?
"""

# The claim order unrolled: each account's takes by turn, accounts by ticket.
WAITING_JOBS = f"""
WITH w AS (
    SELECT j.id, j.seq, a.ticket,
           (a.turn_used - 1 + row_number() OVER (PARTITION BY j.account_id ORDER BY j.seq))
           / a.weight AS turn
    FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.state = {QUEUED})
SELECT {JOB_COLUMNS} FROM w JOIN jobs j ON j.id = w.id JOIN requests r ON r.id = j.request_id
ORDER BY w.turn, w.ticket, w.seq LIMIT ?
"""

WAITING_JOBS_OF = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} JOIN users u ON u.id = j.user_id
WHERE j.state = {QUEUED} AND u.platform = ? AND u.platform_user_id = ?
  AND json_extract(r.address, '$.chat_id') = ?
ORDER BY j.seq
"""

COUNT_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"

# Readiness: a real write (a row rewritten with its own value, committed) that changes
# nothing; current_round has been unused since migration 5.
WRITE_PROBE = "UPDATE scheduler SET current_round = current_round WHERE id = 1"

COUNT_UNFINISHED = f"""
SELECT count(*) FROM jobs WHERE state NOT IN {FINISHED} AND platform IN ({{marks}})
"""

NEXT_WAKEUP = f"""
SELECT min(not_before) FROM jobs WHERE state = {QUEUED} AND platform IN ({{marks}})
"""

# --- claims -------------------------------------------------------------------------------

# Walk the accounts in ticket order and stop at the first with a claimable take: no sort
# of the whole queue per claim.
CLAIM_PICK = f"""
SELECT (SELECT j.id FROM jobs j
        WHERE j.account_id = a.id AND j.state = {QUEUED} AND j.not_before <= ?
          AND j.platform IN ({{marks}})
        ORDER BY j.seq LIMIT 1) AS job,
       a.id
FROM accounts a
WHERE a.queued > 0 AND a.in_flight < a.max_in_flight AND job IS NOT NULL
ORDER BY a.ticket, a.id LIMIT 1
"""

CLAIM_JOB = """
UPDATE jobs SET state = ?, lease_owner = ?, lease_expires = ?, lease_token = lease_token + 1,
                attempts = attempts + 1,
                started_at = coalesce(started_at, ?), deadline_at = coalesce(deadline_at, ?),
                updated_at = ?
WHERE id = ?
RETURNING id, account_id, request_id
"""

USE_TURN = """
UPDATE accounts SET turn_used = turn_used + 1 WHERE id = ? RETURNING turn_used, weight
"""

NEW_TURN = "UPDATE accounts SET ticket = ?, turn_used = 0 WHERE id = ?"

ADOPT_STALE = f"""
UPDATE jobs SET lease_owner = ?, lease_expires = ?, lease_token = lease_token + 1, updated_at = ?
WHERE state IN {ACTIVE} AND lease_expires < ? AND platform IN ({{marks}})
RETURNING id, request_id, state
"""

GROUP_WIN = f"""
UPDATE requests SET group_owner = ?
WHERE id = ? AND (group_owner IS NULL OR NOT EXISTS (
    SELECT 1 FROM jobs WHERE request_id = requests.id AND state = {DELIVERING}
      AND lease_owner = requests.group_owner AND lease_expires >= ?))
"""

# A take taken over from another owner gets a new fencing token; the claimer's own keep
# theirs (its other tasks still hold them).
GROUP_LEASES = f"""
UPDATE jobs SET lease_token = lease_token + (lease_owner IS NOT ?1), lease_owner = ?1,
                lease_expires = ?2
WHERE request_id = ?3 AND state = {DELIVERING}
"""

RELEASE_GROUP = "UPDATE requests SET group_owner = NULL WHERE id = ?"

WAITING_GROUPS = f"""
SELECT DISTINCT request_id FROM jobs j
WHERE state = {DELIVERING} AND takes > 1 AND lease_owner = ? AND platform IN ({{marks}})
  AND NOT EXISTS (SELECT 1 FROM jobs s WHERE s.request_id = j.request_id
                  AND s.state NOT IN {_GROUPED})
"""

HEARTBEAT = f"""
UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state NOT IN {NOT_LEASED}
"""

# Fenced by the token: only the holder of this very claim or takeover renews it.
RENEW_LEASE = f"""
UPDATE jobs SET lease_expires = ?
WHERE id = ? AND lease_owner = ? AND lease_token = ? AND state NOT IN {NOT_LEASED}
"""

EXPIRE_LEASE = f"UPDATE jobs SET lease_expires = 0 WHERE id = ? AND state NOT IN {NOT_LEASED}"

RELEASE_LEASES = f"""
UPDATE jobs SET lease_expires = 0 WHERE lease_owner = ? AND state NOT IN {NOT_LEASED}
"""

# --- state changes ------------------------------------------------------------------------

# What a state change needs to know of the job before it: the counters and the refund.
BEFORE_CHANGE = """
SELECT id, state, account_id, request_id, charged, charge_period, lease_owner, lease_token
FROM jobs WHERE id = ?
"""

ACCOUNT_WAITING = f"""
SELECT id, state, account_id, request_id, charged, charge_period, lease_owner, lease_token
FROM jobs
WHERE account_id = ? AND state = {QUEUED} ORDER BY seq
"""

# The assignments are column names from a fixed list (core.storage.sqlite.changes). A
# worker's change names the lease it holds: compare-and-set, no change without it.
CHANGE_STATE = "UPDATE jobs SET state = ?, updated_at = ?{assignments} WHERE id = ?"
CHANGE_LEASED = CHANGE_STATE + " AND lease_owner = ? AND lease_token = ?"

COUNT_ACCOUNT = "UPDATE accounts SET queued = queued + ?, in_flight = in_flight + ? WHERE id = ?"

REFUND_BALANCE = "UPDATE balances SET credits = credits + ? WHERE account_id = ? AND period = ?"

REFUND_LEDGER = """
INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
VALUES (?, ?, ?, 'refund', ?, ?)
"""

# Paid back: a second failure record finds nothing left to refund.
REFUNDED = "UPDATE jobs SET charged = 0 WHERE id = ?"

# --- events -------------------------------------------------------------------------------

INSERT_EVENT = """
INSERT INTO job_events (kind, job_id, request_id, state, error_key, at) VALUES (?, ?, ?, ?, ?, ?)
"""

EVENTS_AFTER = """
SELECT seq, kind, job_id, request_id, state, error_key, at FROM job_events
WHERE seq > ? ORDER BY seq LIMIT ?
"""

LAST_EVENTS = """
SELECT seq, kind, job_id, request_id, state, error_key, at FROM (
    SELECT e.*, row_number() OVER (PARTITION BY e.job_id ORDER BY e.seq DESC) AS newest
    FROM job_events e WHERE e.request_id = ?)
WHERE newest = 1 ORDER BY (SELECT take FROM jobs WHERE id = job_id), seq
"""

# --- retention ----------------------------------------------------------------------------

FINISHED_BEFORE = f"""
SELECT id FROM jobs
WHERE id IN ({{marks}}) AND state IN {FINISHED} AND coalesce(finished_at, updated_at) < ?
"""

# Every take ended, the last one before the cutoff; the column stays NOT NULL.
EMPTY_OLD_IMAGES = f"""
UPDATE requests SET image = X'' WHERE id IN (
    SELECT r.id FROM requests r
    WHERE length(r.image) > 0 AND NOT EXISTS (
        SELECT 1 FROM jobs j WHERE j.request_id = r.id
          AND (j.state NOT IN {FINISHED} OR coalesce(j.finished_at, j.updated_at) >= ?))
    LIMIT ?)
"""

# ISO dates compare as text.
DELETE_OLD_CHAT_DAYS = """
DELETE FROM chat_days WHERE (platform, chat_id, day) IN (
    SELECT platform, chat_id, day FROM chat_days WHERE day < ? LIMIT ?)
"""

# --- operator view ------------------------------------------------------------------------

LAST_EVENT_SEQ = "SELECT coalesce(max(seq), 0) FROM job_events"

# "NOT IN" the unleased states: the partial index jobs_active covers exactly these rows.
ACTIVE_JOBS = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.state NOT IN {NOT_LEASED} ORDER BY j.seq LIMIT ?
"""

SLOTS_IN_USE = f"""
SELECT coalesce(backend, ''), count(*) FROM jobs
WHERE state NOT IN {NOT_LEASED} AND state IN {IN_FLIGHT} GROUP BY 1
"""

LAST_FAILURES = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.state = {FAILED}
ORDER BY j.finished_at DESC, j.seq DESC LIMIT ?
"""

# Days since the epoch in the operator's zone: created_at is positive, so CAST floors.
USAGE_BY_DAY = """
SELECT CAST((created_at + ?) / 86400 AS INTEGER) AS day, platform, state, backend, seconds,
       count(*)
FROM jobs WHERE created_at >= ? GROUP BY day, platform, state, backend, seconds
ORDER BY day, platform, state, backend, seconds
"""
