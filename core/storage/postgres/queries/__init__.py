"""The PostgreSQL engine's SQL, as named queries in one module per domain.

The same queries as the SQLite engine's (``core.storage.sqlite.queries``) in PostgreSQL's
forms: ``$n`` parameters, ``= ANY($n)`` for lists, ``ON CONFLICT`` for upserts, jsonb
operators, ``LEAST``/``GREATEST``, sequences instead of ``max(seq) + 1`` and the
``scheduler`` row, and row locks (``FOR NO KEY UPDATE``, ``SKIP LOCKED``) where several
processes may touch the same rows at once.
"""

from __future__ import annotations

from core.models import ACTIVE_STATES, IN_FLIGHT_STATES, TERMINAL_STATES, JobState
from core.storage.postgres.schema import sql_states

# Built from JobState, never spelled out: a new state cannot be forgotten in one query.
QUEUED = f"'{JobState.QUEUED.value}'"
DELIVERING = f"'{JobState.DELIVERING.value}'"
DONE = f"'{JobState.DONE.value}'"
FAILED = f"'{JobState.FAILED.value}'"
FINISHED = sql_states(TERMINAL_STATES)
# The WHERE of the partial index jobs_active: leases live on these states only.
ACTIVE = sql_states(ACTIVE_STATES)
IN_FLIGHT = sql_states(IN_FLIGHT_STATES)
