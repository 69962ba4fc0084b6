"""Promises nothing else would notice breaking: each test here fails on one small bug.

Real SQLite files and the real Service; no mocks of our own code.
"""

from __future__ import annotations

import asyncio
import string
from collections import Counter
from pathlib import Path

import pytest

from core.errors import RequestRejected, UserError
from core.i18n import CATALOG, DEFAULT_LOCALE, LOCALES
from core.models import DeliveryAddress, JobState, UserRef, VideoRequest
from core.prompts import MAX_SEED
from tests.conftest import Engine
from tests.test_quotas import (
    QuotaService,
    admit,
    assert_ledger_explains_balances,
    db_rows,
    request,
    service,
)

PLATFORMS = ["test"]


# --- messages ------------------------------------------------------------------------------


def _placeholders(template: str) -> Counter[str]:
    return Counter(name for _, name, _, _ in string.Formatter().parse(template) if name)


def test_every_message_key_exists_in_every_language_with_the_same_placeholders() -> None:
    """The promise of core/i18n.py, for every key (whoever adds one next)."""
    reference = CATALOG[DEFAULT_LOCALE]
    assert set(CATALOG) == set(LOCALES)
    for locale in LOCALES:
        catalog = CATALOG[locale]
        assert set(catalog) == set(reference), f"{locale}: keys differ"
        for key, template in catalog.items():
            assert template.strip(), f"{locale} {key}: empty"
            assert _placeholders(template) == _placeholders(reference[key]), (
                f"{locale} {key}: placeholders differ from {DEFAULT_LOCALE}"
            )


# --- seeds ---------------------------------------------------------------------------------


async def test_takes_of_the_largest_seed_stay_in_range(tmp_path: Path, portrait: bytes) -> None:
    async with service(tmp_path, credits=100) as svc:
        submitted = VideoRequest(
            UserRef("test", "u1"), portrait, "She says: 'Hi.'", DeliveryAddress("test", "c"),
            "seed:1", takes=3, seed=MAX_SEED,
        )  # fmt: skip
        admission = await svc.submit(submitted)
        assert [job.seed for job in admission.jobs] == [MAX_SEED, 0, 1]
        stored = await db_rows(svc, "SELECT seed FROM jobs ORDER BY take")
        assert [seed for (seed,) in stored] == [MAX_SEED, 0, 1]
        with pytest.raises(UserError) as refused:
            await svc.submit(
                VideoRequest(
                    UserRef("test", "u1"),
                    portrait,
                    "hi",
                    DeliveryAddress("test", "c"),
                    "seed:2",
                    seed=-1,
                )
            )
        assert refused.value.key == "prompt.bad_seed"
        assert await db_rows(svc, "SELECT count(*) FROM requests") == [(1,)]


# --- grouped writes --------------------------------------------------------------------------


async def test_refused_admissions_in_one_group_commit_leave_nothing_behind(
    engine: Engine,
) -> None:
    """Admissions refused after they wrote (request row, chat counter) roll back alone."""
    async with service(engine, credits=1, max_takes_per_chat_per_day=30) as svc:
        # 20 users with one credit each ask 10 times at once, in two chats: the writes
        # share group commits, and most of them fail after inserting their request and
        # counting their chat's takes (out of credits, or the chat's day is full).
        requests = [
            request(f"u{i % 20}", f"m{i}", chat=f"c{i % 2}") for i in range(200)
        ]  # fmt: skip
        results = await asyncio.gather(*(admit(svc, r) for r in requests), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert {type(r) for r in refused} == {RequestRejected}
        admitted = 200 - len(refused)
        assert admitted == 20
        assert await db_rows(svc, "SELECT count(*) FROM requests") == [(admitted,)]
        assert await db_rows(svc, "SELECT count(*) FROM jobs") == [(admitted,)]
        chats = await db_rows(svc, "SELECT sum(takes) FROM chat_days")
        assert chats == [(admitted,)]
        queued = await db_rows(svc, "SELECT count(*) FROM jobs WHERE state = 'queued'")
        assert queued == [(admitted,)]
        assert await db_rows(svc, "SELECT sum(queued) FROM accounts") == [(admitted,)]
        await assert_ledger_explains_balances(svc)

    # The same database with other limits: 50 users at once into one chat capped at 5.
    async with service(engine, credits=100, max_takes_per_chat_per_day=5) as svc:
        requests = [request(f"v{i}", f"f{i}", chat="full") for i in range(50)]
        results = await asyncio.gather(*(admit(svc, r) for r in requests), return_exceptions=True)
        refused = [r for r in results if isinstance(r, RequestRejected)]
        assert {r.key for r in refused} == {"quota.chat_full"} and len(refused) == 45
        assert await db_rows(svc, "SELECT takes FROM chat_days WHERE chat_id = 'full'") == [(5,)]
        assert await db_rows(svc, "SELECT count(*) FROM requests") == [(admitted + 5,)]
        await assert_ledger_explains_balances(svc)


# --- refunds -------------------------------------------------------------------------------


async def test_a_take_that_fails_twice_is_refunded_once(engine: Engine) -> None:
    async with service(engine) as svc:
        store = svc._store
        user = UserRef("test", "u1")
        admission = await admit(svc, request("u1", "a"))
        job_id = admission.jobs[0].id
        assert (await svc.accounts.balance(user)).credits == 19
        await store.claim_next("w", platforms=PLATFORMS, lease_seconds=5, deadline_seconds=9)
        assert await store.transition(job_id, JobState.FAILED)
        assert (await svc.accounts.balance(user)).credits == 20
        # Failed, then somehow back in the queue (a racing retry, a resume) and failed again.
        assert await store.transition(job_id, JobState.QUEUED)
        await store.claim_next("w", platforms=PLATFORMS, lease_seconds=5, deadline_seconds=9)
        assert await store.transition(job_id, JobState.FAILED)
        assert await store.transition(job_id, JobState.FAILED)
        assert await store.transition(job_id, JobState.QUEUED)
        assert await store.transition(job_id, JobState.CANCELED)
        assert (await svc.accounts.balance(user)).credits == 20
        refunds = await db_rows(
            svc, "SELECT count(*) FROM ledger WHERE job_id = ? AND reason = 'refund'", (job_id,)
        )
        assert refunds == [(1,)]
        await assert_ledger_explains_balances(svc)


# --- leases --------------------------------------------------------------------------------


async def _lease(svc: QuotaService, job_id: str) -> tuple[str, float]:
    [(owner, expires)] = await db_rows(
        svc, "SELECT lease_owner, lease_expires FROM jobs WHERE id = ?", (job_id,)
    )
    return str(owner), float(expires)


async def test_heartbeat_renews_only_its_own_leases_and_expired_ones_are_adopted(
    engine: Engine,
) -> None:
    async with service(engine) as svc:
        store = svc._store
        for user in ("alice", "bob", "carol"):
            await admit(svc, request(user, user))
        alive = await store.claim_next(
            "A", platforms=PLATFORMS, lease_seconds=100, deadline_seconds=900
        )
        other = await store.claim_next(
            "B", platforms=PLATFORMS, lease_seconds=100, deadline_seconds=900
        )
        # C's lease ran out a second ago: its worker died.
        dead = await store.claim_next(
            "C", platforms=PLATFORMS, lease_seconds=-1, deadline_seconds=900
        )
        assert alive and other and dead
        _, other_before = await _lease(svc, other.id)

        await store.heartbeat("A", lease_seconds=10_000)
        owner, expires = await _lease(svc, alive.id)
        assert owner == "A" and expires > other_before + 5_000
        assert await _lease(svc, other.id) == ("B", other_before)
        assert (await _lease(svc, dead.id))[1] < other_before - 50

        adopted = await store.adopt_stale("D", platforms=PLATFORMS, lease_seconds=100)
        assert [job.id for job in adopted] == [dead.id]
        assert (await _lease(svc, dead.id))[0] == "D"
        assert (await _lease(svc, alive.id))[0] == "A"
        assert await _lease(svc, other.id) == ("B", other_before)
        # The dead worker's heartbeat (it was only slow) renews nothing it lost.
        adopted_lease = await _lease(svc, dead.id)
        await store.heartbeat("C", lease_seconds=10_000)
        assert await _lease(svc, dead.id) == adopted_lease
        assert await store.adopt_stale("E", platforms=PLATFORMS, lease_seconds=100) == []
