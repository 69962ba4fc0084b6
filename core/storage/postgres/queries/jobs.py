"""Named queries on requests, jobs and job events.

Lists arrive as arrays (``= ANY($n::text[])``). Claims lock with ``SKIP LOCKED`` so that
workers in several processes never wait for each other's rows; every other change of a
job locks its row (``FOR NO KEY UPDATE``) before it reads what it decides on.
"""

from __future__ import annotations

from core.models import TERMINAL_STATES, JobState
from core.storage.postgres.queries import (
    ACTIVE,
    DELIVERING,
    DONE,
    FAILED,
    FINISHED,
    IN_FLIGHT,
    QUEUED,
)
from core.storage.postgres.queries.accounts import ACCOUNT_COLUMNS
from core.storage.postgres.schema import sql_states

_GROUPED = sql_states({JobState.DELIVERING, *TERMINAL_STATES})  # no take still on its way

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
# An admission is a handful of round trips: each statement below does one step's writes
# together (see core.storage.postgres.admission).

FIND_REQUEST = "SELECT id FROM requests WHERE source_key = $1"

# A count over the partial index jobs_queued, not a row every admission would lock.
TOTAL_QUEUED = f"SELECT count(*) FROM jobs WHERE state = {QUEUED}"

# What the checks before image decoding need, in one statement (one snapshot).
PRECHECK = f"""
SELECT {ACCOUNT_COLUMNS},
       (SELECT id FROM requests WHERE source_key = $3),
       (SELECT credits FROM balances WHERE account_id = a.id AND period = $4),
       ({TOTAL_QUEUED})
FROM (SELECT 1) AS one
LEFT JOIN (users u JOIN accounts a ON a.id = u.account_id)
       ON u.platform = $1 AND u.platform_user_id = $2
"""

# Insert the request (a repeated source_key fails here, before any check) and lock the
# account's row: admissions of one account decide one after another.
INSERT_REQUEST = f"""
WITH request AS (
    INSERT INTO requests (id, source_key, user_id, line, image, image_width, image_height,
                          address, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9))
SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $10
FOR NO KEY UPDATE OF a
"""

# The rest of the snapshot, read once the account is locked: the chat's count for the
# day (its row locked too, created at 0, when $4 says the chat cap is checked), the
# period's balance (NULL: not started) and the whole queue (when $7 says it is capped).
SNAPSHOT = f"""
WITH chat AS (
    INSERT INTO chat_days (platform, chat_id, day, takes) SELECT $1, $2, $3, 0 WHERE $4
    ON CONFLICT (platform, chat_id, day) DO UPDATE SET takes = chat_days.takes
    RETURNING takes)
SELECT (SELECT takes FROM chat),
       (SELECT credits FROM balances WHERE account_id = $5 AND period = $6),
       CASE WHEN $7 THEN ({TOTAL_QUEUED}) END
"""

# Count the takes against the chat's day (if $5) and put the account in line with its
# role's knobs: one with nothing waiting rejoins the round-robin at the back.
ENQUEUE = """
WITH chat AS (
    UPDATE chat_days SET takes = takes + $3
    WHERE $5 AND platform = $6 AND chat_id = $7 AND day = $8)
UPDATE accounts SET
    ticket = CASE WHEN queued = 0 THEN nextval('account_ticket') ELSE ticket END,
    turn_used = CASE WHEN queued = 0 THEN 0 ELSE turn_used END,
    weight = $1, max_in_flight = $2, queued = queued + $3
WHERE id = $4
RETURNING ticket, turn_used
"""

# The takes, their debits and their events. seq comes from the sequence job_seq (the
# column's default), in take order; the events lock is taken before the events' seqs.
INSERT_TAKES = f"""
WITH takes AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                         $6::bigint[], $7::text[], $8::int[], $18::text[])
        WITH ORDINALITY AS t(id, line, speech, language, seconds, seed, voice, charged,
                             voice_sample, take)),
inserted AS (
    INSERT INTO jobs (id, request_id, user_id, account_id, platform, take, takes, state,
                      line, speech, language, seconds, seed, voice, created_at, updated_at,
                      charged, charge_period, voice_sample)
    SELECT id, $9, $10, $11, $12, take, $13, {QUEUED}, line, speech, language, seconds,
           seed, voice, $14, $14, charged, $15, voice_sample
    FROM takes ORDER BY take),
debited AS (
    INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
    SELECT $11, $15, -charged, 'debit', id, $14 FROM takes WHERE charged > 0 ORDER BY take)
INSERT INTO job_events (kind, job_id, request_id, state, error_key, at)
SELECT $16, id, $9, {QUEUED}, NULL, $14
FROM takes CROSS JOIN (SELECT pg_advisory_xact_lock_shared($17)) AS writing ORDER BY take
"""

_RECENT = f"""
SELECT avg(finished_at - started_at) FROM (
    SELECT finished_at, started_at FROM jobs
    WHERE state = {DONE} AND started_at IS NOT NULL
      AND ({{backend}}::text IS NULL OR backend = {{backend}}::text)
    ORDER BY finished_at DESC LIMIT {{limit}}
) AS recent
"""

RECENT_RUN_SECONDS = _RECENT.format(limit="$1", backend="$2")

HANDLES_SINCE = """
SELECT handle FROM jobs WHERE handle IS NOT NULL AND updated_at >= $1
UNION ALL
SELECT speech_handle FROM jobs WHERE speech_handle IS NOT NULL AND updated_at >= $1
"""

USER_ID = "SELECT id FROM users WHERE platform = $1 AND platform_user_id = $2"

# --- reading ------------------------------------------------------------------------------

JOB = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.id = $1"

JOBS_BY_IDS = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.id = ANY($1::text[]) ORDER BY j.seq"

JOBS_FOR_REQUEST = f"SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.request_id = $1 ORDER BY j.take"

REQUEST_IMAGE = "SELECT image, image_width, image_height FROM requests WHERE id = $1"

# A waiting job's account and place in line, then its rank among the account's takes.
WAITING_JOB = f"""
SELECT j.account_id, j.seq, a.ticket, a.turn_used, a.weight
FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.id = $1 AND j.state = {QUEUED}
"""

RANK_IN_ACCOUNT = f"""
SELECT count(*) FROM jobs WHERE account_id = $1 AND state = {QUEUED} AND seq <= $2
"""

# Takes of other accounts that start before turn $1 of an account with ticket $2 (see
# core.storage.postgres.admission.queue_position).
TAKES_AHEAD = """
SELECT coalesce(sum(LEAST(queued, GREATEST(0, ($1 + (ticket < $2)::int) * weight - turn_used))), 0)
FROM accounts WHERE queued > 0 AND id <> $3
"""

# After an admission: the takes ahead of its first take, and recent run times (the ETA).
AHEAD_AND_RECENT = f"SELECT ({TAKES_AHEAD}), ({_RECENT.format(limit='$4', backend='$5')})"

# The claim order unrolled: each account's takes by turn, accounts by ticket.
WAITING_JOBS = f"""
WITH w AS (
    SELECT j.id, j.seq, a.ticket,
           (a.turn_used - 1 + row_number() OVER (PARTITION BY j.account_id ORDER BY j.seq))
           / a.weight AS turn
    FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.state = {QUEUED})
SELECT {JOB_COLUMNS} FROM w JOIN jobs j ON j.id = w.id JOIN requests r ON r.id = j.request_id
ORDER BY w.turn, w.ticket, w.seq LIMIT $1
"""

WAITING_JOBS_OF = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} JOIN users u ON u.id = j.user_id
WHERE j.state = {QUEUED} AND u.platform = $1 AND u.platform_user_id = $2
  AND r.address ->> 'chat_id' = $3
ORDER BY j.seq
"""

# Readiness: a real write (the newest migration's row rewritten with its own values,
# committed) that changes nothing; a read-only database or server refuses it.
WRITE_PROBE = """
UPDATE schema_migrations SET applied_at = applied_at
WHERE version = (SELECT max(version) FROM schema_migrations)
"""

COUNT_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"

COUNT_UNFINISHED = f"""
SELECT count(*) FROM jobs WHERE state NOT IN {FINISHED} AND platform = ANY($1::text[])
"""

NEXT_WAKEUP = f"""
SELECT min(not_before) FROM jobs WHERE state = {QUEUED} AND platform = ANY($1::text[])
"""

# --- claims -------------------------------------------------------------------------------

# Walk the accounts in ticket order and lock the first with a claimable take. SKIP LOCKED:
# an account another worker is claiming for (or admitting into) is passed over for now
# instead of waited for. $3: accounts found empty once the lock was held.
CLAIM_ACCOUNT = f"""
SELECT a.id FROM accounts a
WHERE a.queued > 0 AND a.in_flight < a.max_in_flight AND a.id <> ALL($3::bigint[])
  AND EXISTS (SELECT 1 FROM jobs j
              WHERE j.account_id = a.id AND j.state = {QUEUED} AND j.not_before <= $1
                AND j.platform = ANY($2::text[]))
ORDER BY a.ticket, a.id LIMIT 1
FOR NO KEY UPDATE SKIP LOCKED
"""

# The locked account's oldest claimable take (a take being canceled is skipped).
CLAIM_PICK = f"""
SELECT id FROM jobs
WHERE account_id = $1 AND state = {QUEUED} AND not_before <= $2 AND platform = ANY($3::text[])
ORDER BY seq LIMIT 1
FOR NO KEY UPDATE SKIP LOCKED
"""

# lease_token: the fencing token, raised by every claim and takeover.
CLAIM_JOB = """
UPDATE jobs SET state = $1, lease_owner = $2, lease_expires = $3, lease_token = lease_token + 1,
                attempts = attempts + 1, started_at = coalesce(started_at, $4),
                deadline_at = coalesce(deadline_at, $5), updated_at = $6
WHERE id = $7
RETURNING request_id
"""

CLAIMED = f"""
SELECT {JOB_COLUMNS}, r.image, r.image_width, r.image_height {_JOB_FROM} WHERE j.id = $1
"""

USE_TURN = """
UPDATE accounts SET turn_used = turn_used + 1 WHERE id = $1 RETURNING turn_used, weight
"""

NEW_TURN = "UPDATE accounts SET ticket = nextval('account_ticket'), turn_used = 0 WHERE id = $1"

ADOPT_STALE = f"""
WITH stale AS (
    SELECT id FROM jobs
    WHERE state IN {ACTIVE} AND lease_expires < $3 AND platform = ANY($4::text[])
    FOR NO KEY UPDATE SKIP LOCKED)
UPDATE jobs j SET lease_owner = $1, lease_expires = $2, lease_token = j.lease_token + 1,
                  updated_at = $3
FROM stale WHERE j.id = stale.id
RETURNING j.id, j.request_id, j.state
"""

# Taken first: the reads of a group claim then see every change committed before it.
LOCK_REQUEST = "SELECT 1 FROM requests WHERE id = $1 FOR NO KEY UPDATE"

GROUP_WIN = f"""
UPDATE requests SET group_owner = $1
WHERE id = $2 AND (group_owner IS NULL OR NOT EXISTS (
    SELECT 1 FROM jobs WHERE request_id = requests.id AND state = {DELIVERING}
      AND lease_owner = requests.group_owner AND lease_expires >= $3))
"""

# A take taken over from another owner gets a new fencing token; the claimer's own keep
# theirs (its other tasks still hold them).
GROUP_LEASES = f"""
UPDATE jobs SET lease_token = lease_token + (lease_owner IS DISTINCT FROM $1)::int,
                lease_owner = $1, lease_expires = $2
WHERE request_id = $3 AND state = {DELIVERING}
"""

RELEASE_GROUP = "UPDATE requests SET group_owner = NULL WHERE id = $1"

WAITING_GROUPS = f"""
SELECT DISTINCT request_id FROM jobs j
WHERE state = {DELIVERING} AND takes > 1 AND lease_owner = $1 AND platform = ANY($2::text[])
  AND NOT EXISTS (SELECT 1 FROM jobs s WHERE s.request_id = j.request_id
                  AND s.state NOT IN {_GROUPED})
"""

HEARTBEAT = f"UPDATE jobs SET lease_expires = $1 WHERE lease_owner = $2 AND state IN {ACTIVE}"

# Fenced by the token: only the holder of this very claim or takeover renews it.
RENEW_LEASE = f"""
UPDATE jobs SET lease_expires = $1
WHERE id = $2 AND lease_owner = $3 AND lease_token = $4 AND state IN {ACTIVE}
"""

EXPIRE_LEASE = f"UPDATE jobs SET lease_expires = 0 WHERE id = $1 AND state IN {ACTIVE}"

RELEASE_LEASES = f"UPDATE jobs SET lease_expires = 0 WHERE lease_owner = $1 AND state IN {ACTIVE}"

# --- state changes ------------------------------------------------------------------------

# What a state change needs to know of the job before it, under the row's lock.
BEFORE_CHANGE = """
SELECT id, state, account_id, request_id, charged, charge_period, lease_owner, lease_token
FROM jobs WHERE id = $1
FOR NO KEY UPDATE
"""

ACCOUNT_WAITING = f"""
SELECT id, state, account_id, request_id, charged, charge_period, lease_owner, lease_token
FROM jobs
WHERE account_id = $1 AND state = {QUEUED} ORDER BY seq
FOR NO KEY UPDATE
"""

# The assignments are column names from a fixed list (core.storage.postgres.changes).
CHANGE_STATE = "UPDATE jobs SET state = $1, updated_at = $2{assignments} WHERE id = $3"
# A worker's change names the lease it holds: compare-and-set, no change without it. The
# lease comes after the assignments' parameters ({owner} and {token} are their numbers).
CHANGE_LEASED = CHANGE_STATE + " AND lease_owner = ${owner} AND lease_token = ${token}"

COUNT_ACCOUNT = """
UPDATE accounts SET queued = queued + $1, in_flight = in_flight + $2 WHERE id = $3
"""

REFUND_BALANCE = """
UPDATE balances SET credits = credits + $1 WHERE account_id = $2 AND period = $3
"""

REFUND_LEDGER = """
INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
VALUES ($1, $2, $3, 'refund', $4, $5)
"""

# Paid back: a second failure record finds nothing left to refund.
REFUNDED = "UPDATE jobs SET charged = 0 WHERE id = $1"

# --- events -------------------------------------------------------------------------------

# Each writer holds the events lock shared (writers never wait for each other) from before
# it takes a seq until it commits; see EVENTS_AFTER.
INSERT_EVENT = """
INSERT INTO job_events (kind, job_id, request_id, state, error_key, at)
SELECT $1, $2, $3, $4, $5, $6 FROM (SELECT pg_advisory_xact_lock_shared($7)) AS writing
"""

# Every seq handed out so far; read before waiting for the writers that hold them.
LAST_EVENT_SEQ = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_events_seq_seq"

# Waits until every writer holding the events lock shared has committed or rolled back.
SETTLE_EVENTS = "SELECT pg_advisory_xact_lock($1)"

EVENTS_AFTER = """
SELECT seq, kind, job_id, request_id, state, error_key, at FROM job_events
WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3
"""

LAST_EVENTS = """
SELECT seq, kind, job_id, request_id, state, error_key, at FROM (
    SELECT e.*, j.take, row_number() OVER (PARTITION BY e.job_id ORDER BY e.seq DESC) AS newest
    FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE e.request_id = $1) AS latest
WHERE newest = 1 ORDER BY take, seq
"""

# --- retention ----------------------------------------------------------------------------

FINISHED_BEFORE = f"""
SELECT id FROM jobs
WHERE id = ANY($1::text[]) AND state IN {FINISHED} AND coalesce(finished_at, updated_at) < $2
"""

# Every take ended, the last one before the cutoff; the column stays NOT NULL.
EMPTY_OLD_IMAGES = f"""
UPDATE requests SET image = ''::bytea WHERE id IN (
    SELECT r.id FROM requests r
    WHERE length(r.image) > 0 AND NOT EXISTS (
        SELECT 1 FROM jobs j WHERE j.request_id = r.id
          AND (j.state NOT IN {FINISHED} OR coalesce(j.finished_at, j.updated_at) >= $1))
    LIMIT $2)
"""

# ISO dates compare as text.
DELETE_OLD_CHAT_DAYS = """
DELETE FROM chat_days WHERE (platform, chat_id, day) IN (
    SELECT platform, chat_id, day FROM chat_days WHERE day < $1 LIMIT $2)
"""

# --- operator view ------------------------------------------------------------------------

LAST_SEQ_OF_EVENTS = "SELECT coalesce(max(seq), 0) FROM job_events"

ACTIVE_JOBS = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.state IN {ACTIVE} ORDER BY j.seq LIMIT $1
"""

# IN_FLIGHT is within ACTIVE: the partial index jobs_active covers these rows.
SLOTS_IN_USE = f"""
SELECT coalesce(backend, ''), count(*) FROM jobs
WHERE state IN {ACTIVE} AND state IN {IN_FLIGHT} GROUP BY 1
"""

LAST_FAILURES = f"""
SELECT {JOB_COLUMNS} {_JOB_FROM} WHERE j.state = {FAILED}
ORDER BY j.finished_at DESC, j.seq DESC LIMIT $1
"""

# Days since the epoch in the operator's zone.
USAGE_BY_DAY = """
SELECT floor((created_at + $1) / 86400)::bigint AS day, platform, state, backend, seconds,
       count(*)
FROM jobs WHERE created_at >= $2 GROUP BY day, platform, state, backend, seconds
ORDER BY day, platform, state, backend, seconds
"""
