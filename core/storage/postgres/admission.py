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
from core.models import Account, DeliveryAddress, JobState, UserRef
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


@dataclass(frozen=True)
class Outcome:
    """What the admission transaction answers besides the jobs."""

    user_id: int
    position: int
    run_seconds: float | None
    credits_left: int | None


async def recent_run_seconds(conn: Conn, limit: int = 20) -> float | None:
    """Return the mean start-to-finish time of recently finished jobs."""
    value = await conn.fetchval(sql.RECENT_RUN_SECONDS, limit)
    return None if value is None else float(value)


async def precheck(conn: Conn, user: UserRef, source_key: str, period: str) -> Precheck:
    """Read the account, a stored request for this event, the balance and the queue."""
    account = await accounts.account_of(conn, user)
    existing = await conn.fetchval(sql.FIND_REQUEST, source_key)
    credits = None if account is None else await accounts.peek_balance(conn, account.id, period)
    queued = int(await conn.fetchval(sql.TOTAL_QUEUED))
    return Precheck(account, None if existing is None else str(existing), credits, queued)


async def _snapshot(
    conn: Conn, rules: AdmissionPolicy, account: Account, request: NewRequest
) -> AdmissionSnapshot:
    """Read what the quota decision needs, under the account's (and chat's) lock."""
    queued = 0
    if rules.enforce and rules.max_queue < UNLIMITED:
        queued = int(await conn.fetchval(sql.TOTAL_QUEUED))
    chat_takes = 0
    if rules.counts_chats:
        chat = (request.address.platform, request.address.chat_id, rules.chat_day.key)
        chat_takes = int(await conn.fetchval(account_sql.LOCK_CHAT_DAY, *chat))
    credits = await accounts.peek_balance(conn, account.id, rules.period.key)
    return AdmissionSnapshot(
        account=account, total_queued=queued, chat_takes=chat_takes, credits=credits
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
        await conn.execute(
            sql.INSERT_REQUEST, request.id, request.source_key, user_id, request.line,
            request.image_jpeg, *request.image_size, address_to_json(request.address), now,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise RequestRejected("request.duplicate") from None
    account = await accounts.load_account(conn, account_id, lock=True)
    snapshot = await _snapshot(conn, rules, account, request)
    decision = rules.decide(snapshot, [take.seconds for take in request.takes])
    limits, period, n = decision.limits, rules.period.key, len(request.takes)
    if decision.count_chat:
        key = (request.address.platform, request.address.chat_id, rules.chat_day.key)
        await conn.execute(account_sql.ADD_CHAT_TAKES, *key, n)
    credits = None
    if decision.cost:
        credits = await _debit(conn, rules, account_id, decision.cost, decision.open_with)
    # An account with nothing waiting rejoins the round-robin at the back.
    if account.queued == 0:
        ticket, used = int(await conn.fetchval(sql.NEXT_TICKET)), 0
    else:
        ticket, used = account.ticket, account.turn_used
    await conn.execute(
        sql.ENQUEUE_ACCOUNT, ticket, used, limits.weight, limits.max_in_flight, n, account_id
    )
    platform = request.address.platform
    await conn.executemany(
        sql.INSERT_JOB,
        [
            (
                job_id, request.id, user_id, account_id, platform, index + 1, n, take.line,
                take.speech, take.language, take.seconds, take.seed, take.voice, now, now,
                charge, period,
            )
            for index, (job_id, take, charge) in enumerate(
                zip(request.job_ids, request.takes, decision.costs, strict=True)
            )
        ],
    )  # fmt: skip
    if credits is not None:
        await conn.executemany(
            account_sql.DEBITS,
            [
                (account_id, period, -cost, job_id, now)
                for job_id, cost in zip(request.job_ids, decision.costs, strict=True)
                if cost
            ],
        )
    await conn.executemany(
        sql.INSERT_EVENT,
        [
            (ChangeKind.ADMITTED.value, job_id, request.id, JobState.QUEUED.value, None, now,
             EVENTS_LOCK)
            for job_id in request.job_ids
        ],
    )  # fmt: skip
    rank = account.queued + 1
    position = await queue_position(conn, account_id, rank, ticket, used, limits.weight)
    return Outcome(user_id, position, await recent_run_seconds(conn), credits)


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
