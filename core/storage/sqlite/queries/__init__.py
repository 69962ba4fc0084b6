"""The SQLite engine's SQL, as named queries in one module per domain."""

from __future__ import annotations

from collections.abc import Iterable

from core.models import ACTIVE_STATES, IN_FLIGHT_STATES, TERMINAL_STATES, JobState


def states(members: Iterable[JobState]) -> str:
    """Return an SQL list of job states in declaration order, e.g. ``('done', 'failed')``."""
    chosen = frozenset(members)
    return "(" + ", ".join(f"'{state.value}'" for state in JobState if state in chosen) + ")"


def marks(count: int) -> str:
    """Return ``count`` parameter marks for an ``IN (...)`` list."""
    return ",".join("?" * count)


# Built from JobState, never spelled out: a new state cannot be forgotten in one query.
QUEUED = f"'{JobState.QUEUED.value}'"
DELIVERING = f"'{JobState.DELIVERING.value}'"
DONE = f"'{JobState.DONE.value}'"
FAILED = f"'{JobState.FAILED.value}'"
FINISHED = states(TERMINAL_STATES)
IN_FLIGHT = states(IN_FLIGHT_STATES)
ACTIVE = states(ACTIVE_STATES)
# "NOT IN" this list is the WHERE of the partial index jobs_active, word for word, so that
# the planner can use the index (SQLite matches a partial index's condition by its terms).
NOT_LEASED = states({JobState.QUEUED, *TERMINAL_STATES})
