"""Admission and the queue's order on PostgreSQL: the work of ``PostgresJobs.admit``.

One transaction, as on SQLite: insert the request (a repeated event key is refused before
any check), lock the account's row and read the snapshot the quota decision needs, call
the pure decision (``AdmissionPolicy.decide``), and write what it decided: the chat's
count, the conditional debit with its ledger rows, the account's place in line, the takes
and their events.

The locks make the snapshot exact where it matters: admissions of one account (its
balance, its waiting takes) and into one chat (its daily cap) run one after another.
The whole queue's length (``max_queue``) is a count read without a lock, so admissions
running at the same instant may pass that soft cap together by a few takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from core.errors import RequestRejected
from core.models import Account, DeliveryAddress, UserRef
from core.quotas import UNLIMITED, AdmissionPolicy, AdmissionSnapshot
from core.storage.postgres import accounts
from core.storage.postgres.changes import EVENTS_LOCK
from core.storage.postgres.connection import Conn
from core.storage.postgres.queries import accounts as account_sql
from core.storage.postgres.queries import jobs as sql
from core.storage.postgres.rows import address_to_json
from core.storage.types import ChangeKind, NewTake, Precheck


@dataclass(frozen=True)
class NewRequest:
    """A request to admit, with the ids chosen for it and its takes."""

    id: str
    user: UserRef
    source_key: str
    line: str
    image_jpeg: bytes
    image_size: tuple[int, int]
    address: DeliveryAddress
    takes: Sequence[NewTake]
    job_ids: Sequence[str]
    run_backend: str | None = None  # whose recent run times answer the ETA


@dataclass(frozen=True)
class Outcome:
    """What the admission transaction answers besides the jobs."""

    user_id: int
    position: int
    run_seconds: float | None
    credits_left: int | None


def precheck(row: asyncpg.Record) -> Precheck:
    """Return what ``queries.jobs.PRECHECK`` read: account, stored request, balance, queue."""
    *columns, existing, credits, queued = row
    account = None if columns[0] is None else Account(*columns)
    return Precheck(account, existing, credits, int(queued))


async def _snapshot(
    conn: Conn, rules: AdmissionPolicy, account: Account, request: NewRequest
) -> AdmissionSnapshot:
    """Read what the quota decision needs, under the account's (and chat's) lock."""
    chat = (request.address.platform, request.address.chat_id, rules.chat_day.key)
    capped = rules.enforce and rules.max_queue < UNLIMITED
    row = await conn.fetchrow(
        sql.SNAPSHOT, *chat, rules.counts_chats, account.id, rules.period.key, capped
    )
    assert row is not None, "the statement always returns one row"
    chat_takes, credits, queued = row
    return AdmissionSnapshot(
        account=account, total_queued=queued or 0, chat_takes=chat_takes or 0, credits=credits
    )


async def _debit(
    conn: Conn, rules: AdmissionPolicy, account_id: int, cost: int, open_with: int | None
) -> int:
    """Take ``cost`` credits (opening the period first if the decision says so)."""
    period = rules.period.key
    if open_with is not None:
        await accounts.open_balance(conn, account_id, period, open_with, rules.now)
    left = await conn.fetchval(account_sql.DEBIT, cost, account_id, period)
    if left is None:
        # Only if a balance changed without the account's lock: refuse as the check would.
        rules.check_credits(await accounts.peek_balance(conn, account_id, period) or 0, cost)
        raise AssertionError("the debit failed on a balance that covers it")
    return int(left)


async def admit(conn: Conn, request: NewRequest, rules: AdmissionPolicy, now: float) -> Outcome:
    """Admit a request with its takes in the open transaction, or raise and write nothing."""
    user_id, account_id = await accounts.ensure_user(conn, request.user, now)
    try:
        row = await conn.fetchrow(
            sql.INSERT_REQUEST, request.id, request.source_key, user_id, request.line,
            request.image_jpeg, *request.image_size, address_to_json(request.address), now,
            account_id,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise RequestRejected("request.duplicate") from None
    assert row is not None, "ensure_user returned this account"
    account = Account(*row)
    snapshot = await _snapshot(conn, rules, account, request)
    decision = rules.decide(snapshot, [take.seconds for take in request.takes])
    limits, period, n = decision.limits, rules.period.key, len(request.takes)
    credits = None
    if decision.cost:
        credits = await _debit(conn, rules, account_id, decision.cost, decision.open_with)
    chat = (request.address.platform, request.address.chat_id, rules.chat_day.key)
    line = await conn.fetchrow(
        sql.ENQUEUE, limits.weight, limits.max_in_flight, n, account_id, decision.count_chat,
        *chat,
    )  # fmt: skip
    assert line is not None, "the account is locked by this admission"
    ticket, used = line
    takes = request.takes
    await conn.execute(
        sql.INSERT_TAKES,
        list(request.job_ids), [t.line for t in takes], [t.speech for t in takes],
        [t.language for t in takes], [t.seconds for t in takes], [t.seed for t in takes],
        [t.voice for t in takes], list(decision.costs), request.id, user_id, account_id,
        request.address.platform, n, now, period, ChangeKind.ADMITTED.value, EVENTS_LOCK,
        [t.voice_sample for t in takes],
    )  # fmt: skip
    # The rank of the first take: the account's takes that waited before, plus one.
    rank = account.queued + 1
    turn = (used + rank - 1) // limits.weight
    after = await conn.fetchrow(
        sql.AHEAD_AND_RECENT, turn, ticket, account_id, 20, request.run_backend
    )
    assert after is not None, "the statement always returns one row"
    ahead, run_seconds = after
    recent = None if run_seconds is None else float(run_seconds)
    return Outcome(user_id, rank + int(ahead), recent, credits)


async def queue_position(
    conn: Conn, account_id: int, rank: int, ticket: int, turn_used: int, weight: int
) -> int:
    """Return the 1-based start position of an account's ``rank``-th waiting take.

    The claim order unrolled, as on SQLite (``core.storage.sqlite.admission``): the take
    starts in turn ``T = (turn_used + rank - 1) // weight`` of its account, after every
    other account's takes of turns before ``T`` (and of turn ``T`` for those ahead in line).
    """
    turn = (turn_used + rank - 1) // weight
    ahead = await conn.fetchval(sql.TAKES_AHEAD, turn, ticket, account_id)
    return rank + int(ahead)


async def waiting_position(conn: Conn, job_id: str) -> int | None:
    """Return the 1-based place of a waiting job in start order, or None if not waiting."""
    row = await conn.fetchrow(sql.WAITING_JOB, job_id)
    if row is None:
        return None
    account_id, seq, ticket, used, weight = row
    rank = await conn.fetchval(sql.RANK_IN_ACCOUNT, account_id, seq)
    return await queue_position(conn, account_id, int(rank), ticket, used, weight)
