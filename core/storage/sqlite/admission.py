"""Admission and the queue's order on SQLite: the work of ``SqliteJobs.admit`` and friends.

Admission runs as one synchronous function on the writer thread (one hop, BEGIN IMMEDIATE
to COMMIT): it inserts the request (a repeated event key is refused before any check),
reads the snapshot the quota decision needs, calls the pure decision
(``AdmissionPolicy.decide``), and writes what it decided: the chat's count, the debit, the
account's place in line, the takes and their events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import RequestRejected
from core.models import Account, DeliveryAddress, JobState, UserRef
from core.quotas import AdmissionPolicy, AdmissionSnapshot
from core.storage.sqlite import accounts
from core.storage.sqlite.queries import accounts as account_sql
from core.storage.sqlite.queries import jobs as sql
from core.storage.sqlite.rows import address_to_json
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


def next_ticket(db: sqlite3.Connection) -> int:
    """Take the next round-robin ticket (the back of the line)."""
    return int(db.execute(sql.NEXT_TICKET).fetchone()[0])


def recent_run_seconds(
    db: sqlite3.Connection, limit: int = 20, backend: str | None = None
) -> float | None:
    """Return the mean start-to-finish time of recently finished jobs (of one backend)."""
    # Per backend when given: a hosted model takes minutes where the preview takes seconds.
    row = db.execute(sql.RECENT_RUN_SECONDS, (backend, backend, limit)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def total_queued(db: sqlite3.Connection) -> int:
    """Return how many takes wait in the whole queue."""
    return int(db.execute(sql.TOTAL_QUEUED).fetchone()[0])


def precheck(db: sqlite3.Connection, user: UserRef, source_key: str, period: str) -> Precheck:
    """Read the account, a stored request for this event, the balance and the queue."""
    account = accounts.account_of(db, user)
    existing = db.execute(sql.FIND_REQUEST, (source_key,)).fetchone()
    credits = None if account is None else accounts.peek_balance(db, account.id, period)
    return Precheck(
        account, None if existing is None else str(existing[0]), credits, total_queued(db)
    )


def _snapshot(
    db: sqlite3.Connection, rules: AdmissionPolicy, account_id: int, request: NewRequest
) -> AdmissionSnapshot:
    """Read what the quota decision needs, in one statement."""
    chat = (request.address.platform, request.address.chat_id, rules.chat_day.key)
    row = db.execute(
        account_sql.ADMISSION_SNAPSHOT, (*chat, rules.period.key, account_id)
    ).fetchone()
    *account, queued, chat_takes, credits = row
    return AdmissionSnapshot(
        account=Account(*account),
        total_queued=int(queued),
        chat_takes=int(chat_takes or 0),
        credits=None if credits is None else int(credits),
    )


def admit(
    db: sqlite3.Connection, request: NewRequest, rules: AdmissionPolicy, now: float
) -> Outcome:
    """Admit a request with its takes in the open transaction, or raise and write nothing."""
    user_id, account_id = accounts.ensure_user(db, request.user, now)
    try:
        db.execute(
            sql.INSERT_REQUEST,
            (
                request.id, request.source_key, user_id, request.line, request.image_jpeg,
                *request.image_size, address_to_json(request.address), now,
            ),
        )  # fmt: skip
    except sqlite3.IntegrityError:
        raise RequestRejected("request.duplicate") from None
    snapshot = _snapshot(db, rules, account_id, request)
    decision = rules.decide(snapshot, [take.seconds for take in request.takes])
    account, limits, period = snapshot.account, decision.limits, rules.period.key
    n = len(request.takes)
    if decision.count_chat:
        key = (request.address.platform, request.address.chat_id, rules.chat_day.key)
        db.execute(account_sql.ADD_CHAT_TAKES, (*key, n))
    credits = None
    if decision.cost:
        if decision.open_with is not None:
            accounts.open_balance(db, account_id, period, decision.open_with, now)
        row = db.execute(
            account_sql.DEBIT, (decision.cost, account_id, period, decision.cost)
        ).fetchone()
        assert row is not None, "the decision checked the balance in this transaction"
        credits = int(row[0])
    # An account with nothing waiting rejoins the round-robin at the back.
    idle = account.queued == 0
    if idle:
        ticket, used = int(db.execute(sql.REJOIN, (n,)).fetchone()[0]), 0
    else:
        ticket, used = account.ticket, account.turn_used
        db.execute(sql.COUNT_QUEUE, (n,))
    db.execute(
        sql.ENQUEUE_ACCOUNT, (ticket, used, limits.weight, limits.max_in_flight, n, account_id)
    )
    seq = int(db.execute(sql.LAST_SEQ).fetchone()[0])
    platform = request.address.platform
    db.executemany(
        sql.INSERT_JOB,
        [
            (
                job_id, seq + index + 1, request.id, user_id, account_id, platform, index + 1,
                n, take.line, take.speech, take.language, take.seconds, take.seed, take.voice,
                now, now, charge, period, take.voice_sample,
            )
            for index, (job_id, take, charge) in enumerate(
                zip(request.job_ids, request.takes, decision.costs, strict=True)
            )
        ],
    )  # fmt: skip
    if credits is not None:
        db.executemany(
            account_sql.DEBITS,
            [
                (account_id, period, -cost, job_id, now)
                for job_id, cost in zip(request.job_ids, decision.costs, strict=True)
                if cost
            ],
        )
    db.executemany(
        sql.INSERT_EVENT,
        [
            (ChangeKind.ADMITTED.value, job_id, request.id, JobState.QUEUED.value, None, now)
            for job_id in request.job_ids
        ],
    )
    position = queue_position(db, account_id, account.queued + 1, ticket, used, limits.weight)
    run_seconds = recent_run_seconds(db, backend=request.run_backend)
    return Outcome(user_id, position, run_seconds, credits)


def queue_position(
    db: sqlite3.Connection, account_id: int, rank: int, ticket: int, turn_used: int, weight: int
) -> int:
    """Return the 1-based start position of an account's ``rank``-th waiting take.

    This is the claim order unrolled: each turn, accounts start ``weight`` takes in ticket
    order; an account that used up its turn goes to the back. So the take starts in turn
    ``T = (turn_used + rank - 1) // weight`` of its account, after every other account's
    takes of turns before ``T`` (and of turn ``T`` too for accounts ahead of it in line).
    """
    turn = (turn_used + rank - 1) // weight
    row = db.execute(sql.TAKES_AHEAD, (turn, ticket, account_id)).fetchone()
    return rank + int(row[0])


def waiting_position(db: sqlite3.Connection, job_id: str) -> int | None:
    """Return the 1-based place of a waiting job in start order, or None if not waiting."""
    row = db.execute(sql.WAITING_JOB, (job_id,)).fetchone()
    if row is None:
        return None
    account_id, seq, ticket, used, weight = row
    rank = db.execute(sql.RANK_IN_ACCOUNT, (account_id, seq)).fetchone()[0]
    return queue_position(db, account_id, int(rank), ticket, used, weight)
