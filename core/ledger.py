"""Accounts, credits and identities on SQLite: the SQL behind ``core.quotas``.

Every function here is synchronous and takes the ``sqlite3`` connection: the store runs it
on its database thread inside one transaction (``Store.write``/``Store.read``), so a check
and the write it guards can never be split by another writer. The tables are created by
the store's migrations 3 and 4; their triggers keep the per-account counters and write the
refunds, so no code path can forget either.

Balances are per account per period (``period`` is a key such as ``2025-05-01``). The first
touch in a period writes an ``allowance`` row; every later change is a ledger row too, so
``balances.credits`` always equals the sum of the ledger rows of that account and period.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from core.errors import RequestRejected
from core.models import UserRef

# "No cap": larger than any queue a SQLite file will ever hold.
UNLIMITED = 1_000_000_000


@dataclass(frozen=True)
class Limits:
    """What one role may do: credits per period, round-robin weight and caps."""

    credits: int
    weight: int
    max_in_flight: int
    max_queued: int


NO_LIMITS = Limits(credits=0, weight=1, max_in_flight=UNLIMITED, max_queued=UNLIMITED)


@dataclass(frozen=True)
class Account:
    """One person (possibly with several platform identities) as the quotas see them."""

    id: int
    role: str
    access: str  # none | pending | allowed | denied
    banned_until: float | None  # None: not banned
    ban_reason: str | None
    queued: int  # takes waiting
    in_flight: int  # takes at the backend (submitting or running)
    ticket: int  # place in the round-robin: the smallest ticket starts next
    turn_used: int  # takes started in the current turn
    weight: int  # takes per turn


@dataclass(frozen=True)
class LedgerEntry:
    """One change of a balance and why it happened."""

    period: str
    delta: int
    reason: str  # allowance | debit | refund | grant | revoke
    job_id: str | None
    actor: str | None
    note: str | None
    created_at: float


_ACCOUNT = (
    "a.id, a.role, a.access, a.banned_until, a.ban_reason, a.queued, a.in_flight,"
    " a.ticket, a.turn_used, a.weight"
)


def _account(row: tuple[object, ...]) -> Account:
    return Account(*row)  # type: ignore[arg-type]


def next_ticket(db: sqlite3.Connection) -> int:
    """Take the next round-robin ticket (the back of the line)."""
    row = db.execute(
        "UPDATE scheduler SET next_ticket = next_ticket + 1 WHERE id = 1 RETURNING next_ticket - 1"
    ).fetchone()
    return int(row[0])


def ensure_user(db: sqlite3.Connection, user: UserRef, now: float) -> tuple[int, int]:
    """Return (user id, account id) of a platform identity, creating both if new."""
    row = db.execute(
        "SELECT id, account_id, display_name, locale FROM users"
        " WHERE platform = ? AND platform_user_id = ?",
        (user.platform, user.platform_user_id),
    ).fetchone()
    if row is None:
        # The ticket is taken when the account first queues something (Store.admit).
        account_id = int(
            db.execute(
                "INSERT INTO accounts (created_at) VALUES (?) RETURNING id", (now,)
            ).fetchone()[0]
        )
        user_id = db.execute(
            "INSERT INTO users (platform, platform_user_id, display_name, locale, created_at,"
            " account_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (user.platform, user.platform_user_id, user.display_name, user.locale, now, account_id),
        ).fetchone()[0]
        return int(user_id), account_id
    user_id, account_id, name, locale = row
    # Only write when something changed: admission is the hot path.
    if name != user.display_name or (user.locale is not None and user.locale != locale):
        db.execute(
            "UPDATE users SET display_name = ?, locale = coalesce(?, locale) WHERE id = ?",
            (user.display_name, user.locale, user_id),
        )
    return int(user_id), int(account_id)


def load_account(db: sqlite3.Connection, account_id: int) -> Account:
    """Return an account; refuse an unknown id."""
    row = db.execute(f"SELECT {_ACCOUNT} FROM accounts a WHERE a.id = ?", (account_id,)).fetchone()
    if row is None:
        raise RequestRejected("access.unknown_account")
    return _account(row)


def account_of(db: sqlite3.Connection, platform: str, platform_user_id: str) -> Account | None:
    """Return the account of a platform identity, or None if it never used the bot."""
    row = db.execute(
        f"SELECT {_ACCOUNT} FROM users u JOIN accounts a ON a.id = u.account_id"
        " WHERE u.platform = ? AND u.platform_user_id = ?",
        (platform, platform_user_id),
    ).fetchone()
    return None if row is None else _account(row)


def total_queued(db: sqlite3.Connection) -> int:
    """Return how many takes wait in the whole queue (kept by triggers)."""
    return int(db.execute("SELECT queued FROM scheduler WHERE id = 1").fetchone()[0])


def add_chat_takes(db: sqlite3.Connection, platform: str, chat_id: str, day: str, n: int) -> int:
    """Count takes against a chat's day; return the day's total including them."""
    row = db.execute(
        "INSERT INTO chat_days (platform, chat_id, day, takes) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (platform, chat_id, day) DO UPDATE SET takes = takes + excluded.takes"
        " RETURNING takes",
        (platform, chat_id, day, n),
    ).fetchone()
    return int(row[0])


def peek_balance(db: sqlite3.Connection, account_id: int, period: str) -> int | None:
    """Return the balance of a period, or None if the period has not been touched yet."""
    row = db.execute(
        "SELECT credits FROM balances WHERE account_id = ? AND period = ?", (account_id, period)
    ).fetchone()
    return None if row is None else int(row[0])


def open_balance(
    db: sqlite3.Connection, account_id: int, period: str, allowance: int, now: float
) -> int:
    """Return the balance of a period, starting it with its allowance on first touch."""
    credits = peek_balance(db, account_id, period)
    if credits is not None:
        return credits
    db.execute(
        "INSERT INTO balances (account_id, period, credits) VALUES (?, ?, ?)",
        (account_id, period, allowance),
    )
    db.execute(
        "INSERT INTO ledger (account_id, period, delta, reason, created_at)"
        " VALUES (?, ?, ?, 'allowance', ?)",
        (account_id, period, allowance, now),
    )
    return allowance


def take_credits(db: sqlite3.Connection, account_id: int, period: str, cost: int) -> int | None:
    """Debit ``cost`` if the started period holds enough; return what is left, else None."""
    row = db.execute(
        "UPDATE balances SET credits = credits - ? WHERE account_id = ? AND period = ?"
        " AND credits >= ? RETURNING credits",
        (cost, account_id, period, cost),
    ).fetchone()
    return None if row is None else int(row[0])


def record_debits(
    db: sqlite3.Connection,
    account_id: int,
    period: str,
    charges: list[tuple[str, int]],
    now: float,
) -> None:
    """Write the ledger rows of a debit: one per take (job id, cost), as each is refunded."""
    rows = [(account_id, period, -cost, job_id, now) for job_id, cost in charges if cost]
    db.executemany(
        "INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)"
        " VALUES (?, ?, ?, 'debit', ?, ?)",
        rows,
    )


def adjust(
    db: sqlite3.Connection,
    account_id: int,
    period: str,
    delta: int,
    *,
    allowance: int,
    reason: str,
    actor: str,
    note: str,
    now: float,
) -> int:
    """Grant (delta > 0) or revoke credits in a period, never below zero; return the balance."""
    load_account(db, account_id)
    credits = open_balance(db, account_id, period, allowance, now)
    delta = max(delta, -credits)
    if delta:
        db.execute(
            "UPDATE balances SET credits = credits + ? WHERE account_id = ? AND period = ?",
            (delta, account_id, period),
        )
        db.execute(
            "INSERT INTO ledger (account_id, period, delta, reason, actor, note, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (account_id, period, delta, reason, actor, note, now),
        )
    return credits + delta


def entries(db: sqlite3.Connection, account_id: int, limit: int) -> list[LedgerEntry]:
    """Return an account's most recent ledger rows, newest first."""
    rows = db.execute(
        "SELECT period, delta, reason, job_id, actor, note, created_at FROM ledger"
        " WHERE account_id = ? ORDER BY id DESC LIMIT ?",
        (account_id, limit),
    ).fetchall()
    return [LedgerEntry(*row) for row in rows]


def set_account(db: sqlite3.Connection, account_id: int, **columns: object) -> None:
    """Set access columns (role, access, banned_until, ban_reason) of an account."""
    allowed = {"role", "access", "banned_until", "ban_reason"}
    if not columns or set(columns) - allowed:
        raise ValueError(f"cannot set {sorted(set(columns) - allowed)}")
    load_account(db, account_id)
    assignments = ", ".join(f"{name} = ?" for name in columns)
    db.execute(f"UPDATE accounts SET {assignments} WHERE id = ?", (*columns.values(), account_id))


def decide_access(db: sqlite3.Connection, account_id: int, access: str) -> bool:
    """Set a pending account's access; return False when it was not (or no longer) pending."""
    # Conditional on 'pending': of two admins deciding at once, only the first one counts.
    cursor = db.execute(
        "UPDATE accounts SET access = ? WHERE id = ? AND access = 'pending'", (access, account_id)
    )
    return cursor.rowcount > 0


def cancel_waiting(db: sqlite3.Connection, account_id: int, key: str, now: float) -> list[str]:
    """Cancel an account's waiting takes (the refund trigger pays them back)."""
    rows = db.execute(
        "UPDATE jobs SET state = 'canceled', error_key = ?, finished_at = ?, updated_at = ?"
        " WHERE account_id = ? AND state = 'queued' RETURNING id",
        (key, now, now, account_id),
    ).fetchall()
    return [str(row[0]) for row in rows]


def pending_accounts(db: sqlite3.Connection) -> list[tuple[int, str, str, str]]:
    """Return (account id, platform, platform user id, name) of every pending access request."""
    rows = db.execute(
        "SELECT a.id, u.platform, u.platform_user_id, u.display_name FROM accounts a"
        " JOIN users u ON u.account_id = a.id WHERE a.access = 'pending' ORDER BY a.id, u.id"
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def save_link_code(
    db: sqlite3.Connection, code: str, account_id: int, platform: str, expires_at: float, now: float
) -> None:
    """Store a one-time link code, dropping the account's older and all expired codes."""
    db.execute("DELETE FROM link_codes WHERE account_id = ? OR expires_at < ?", (account_id, now))
    db.execute(
        "INSERT INTO link_codes (code, account_id, platform, expires_at) VALUES (?, ?, ?, ?)",
        (code, account_id, platform, expires_at),
    )


def redeem_link_code(
    db: sqlite3.Connection, code: str, user: UserRef, now: float
) -> tuple[int | None, str | None]:
    """Join ``user``'s account into the one that issued ``code``: (joint id, refusal key).

    A refusal is returned, not raised, so that the transaction still commits and the code
    is used up: guessing costs one code per try. The joining account's identities move over
    and its own balance stays behind, so linking never adds two allowances together.
    """
    row = db.execute(
        "DELETE FROM link_codes WHERE code = ? RETURNING account_id, platform, expires_at",
        (code,),
    ).fetchone()
    if row is None or float(row[2]) < now:
        return None, "access.link_bad_code"
    target = int(row[0])
    _, joining = ensure_user(db, user, now)
    if joining == target:
        return None, "access.link_already"
    query = "SELECT platform FROM users WHERE account_id = ?"
    moving = {str(r[0]) for r in db.execute(query, (joining,))}
    staying = {str(r[0]) for r in db.execute(query, (target,))}
    if moving & staying:
        return None, "access.link_same_platform"
    old = load_account(db, joining)
    joint = load_account(db, target)
    if any(a.banned_until is not None and a.banned_until > now for a in (old, joint)):
        return None, "access.link_refused"
    unfinished = db.execute(
        "SELECT 1 FROM jobs WHERE account_id = ? AND state NOT IN ('done', 'failed', 'canceled')"
        " LIMIT 1",
        (joining,),
    ).fetchone()
    if unfinished is not None:  # its refunds would go to the account it leaves
        return None, "access.link_busy"
    db.execute("UPDATE users SET account_id = ? WHERE account_id = ?", (target, joining))
    if old.access == "allowed" and joint.access != "allowed":
        # Access granted to either identity carries over; a role or a ban does not.
        db.execute("UPDATE accounts SET access = 'allowed' WHERE id = ?", (target,))
    return target, None


def queue_position(
    db: sqlite3.Connection, account_id: int, rank: int, ticket: int, turn_used: int, weight: int
) -> int:
    """Return the 1-based start position of an account's ``rank``-th waiting take.

    This is the claim order of ``Store.claim_next`` unrolled: each turn, accounts start
    ``weight`` takes in ticket order; an account that used up its turn goes to the back.
    So the take starts in turn ``T = (turn_used + rank - 1) // weight`` of its account,
    after every other account's takes of turns before ``T`` (and of turn ``T`` too for
    accounts ahead of it in line).
    """
    turn = (turn_used + rank - 1) // weight
    row = db.execute(
        "SELECT coalesce(sum(min(queued, max(0, (? + (ticket < ?)) * weight - turn_used))), 0)"
        " FROM accounts WHERE queued > 0 AND id != ?",
        (turn, ticket, account_id),
    ).fetchone()
    return rank + int(row[0])
