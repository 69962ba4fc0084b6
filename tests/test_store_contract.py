"""The storage contract: every engine passes these, on a new database each (``engine``).

Together with the store-level tests of test_quotas.py and test_invariants.py that take the
same ``engine`` fixture (credits, the 1,000-request race, redelivery, caps, access, bans,
links, refunds, leases), this is the suite each implementation of the storage protocols
must pass: SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg

from core.models import DeliveryAddress, JobState, Lease, UserRef
from core.quotas import AdmissionPolicy, Period
from core.storage import Storage
from core.storage.postgres import open_postgres
from core.storage.postgres.changes import EVENTS_LOCK
from core.storage.types import ChangeKind, GuildSettings, Moved, NewTake
from tests.conftest import Engine
from tests.test_quotas import run_schedule

TAKE = NewTake("line", "line", "en", 5, 1, None)


async def _admit(storage: Storage, user: str, key: str, takes: int = 1) -> list[str]:
    admitted = await storage.jobs.admit(
        user=UserRef("test", user), source_key=key, line="line", image_jpeg=b"jpeg",
        image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[TAKE] * takes,
    )  # fmt: skip
    return [job.id for job in admitted.jobs]


# --- schema ---------------------------------------------------------------------------------


async def test_an_empty_database_is_migrated_once_by_several_openers(engine: Engine) -> None:
    first = await engine.open()
    try:
        [job_id] = await _admit(first, "u1", "m1")
    finally:
        await first.close()
    # Two processes starting at once on it: neither applies a step again, the data stays.
    again = await asyncio.gather(engine.open(), engine.open())
    try:
        for storage in again:
            job = await storage.jobs.job(job_id)
            assert job is not None and job.state is JobState.QUEUED
    finally:
        for storage in again:
            await storage.close()
    if engine.name == "sqlite":
        [(version,)] = await engine.rows("PRAGMA user_version")
        from core.storage.sqlite.migrations import MIGRATIONS
    else:
        [(version,)] = await engine.rows("SELECT count(*) FROM schema_migrations")
        from core.storage.postgres.schema import MIGRATIONS
    assert version == len(MIGRATIONS)


# --- claims ---------------------------------------------------------------------------------


async def test_claims_follow_the_same_fair_order_on_every_engine(engine: Engine) -> None:
    """Seeded schedules of admissions and claims start takes in SQLite's order."""
    rng = random.Random(8)
    schedules = [
        [
            ("admit", rng.randrange(4), rng.randrange(1, 5))
            if rng.random() < 0.6
            else ("claim", 0, 0)
            for _ in range(25)
        ]
        for _ in range(4)
    ]
    reference = Engine("sqlite", engine.path.parent / "reference.sqlite3", "")
    for name, target in (("reference", reference), ("engine", engine)):
        storage = await target.open()
        try:
            orders = [
                await run_schedule(storage, ops, keys=f"s{index}:")
                for index, ops in enumerate(schedules)
            ]
        finally:
            await storage.close()
        if name == "reference":
            expected = orders
    assert orders == expected
    assert all(orders)


async def test_concurrent_claimers_never_take_one_job_twice(engine: Engine) -> None:
    storage = await engine.open()
    try:
        admitted = [job for i in range(20) for job in await _admit(storage, f"u{i % 5}", f"m{i}")]
        claims = await asyncio.gather(
            *(
                storage.jobs.claim(
                    f"w{n}", limit=4, platforms=["test"], lease_seconds=60, deadline_seconds=60
                )
                for n in range(8)
            )
        )
        claimed = [c.job.id for batch in claims for c in batch]
        assert len(claimed) == len(set(claimed))
        # A claimer passes over accounts another one holds (SKIP LOCKED on PostgreSQL):
        # what it left is there for the next claim, never lost.
        rest = await storage.jobs.claim(
            "late", limit=20, platforms=["test"], lease_seconds=60, deadline_seconds=60
        )
        assert sorted(claimed + [c.job.id for c in rest]) == sorted(admitted)
        rows = await engine.rows("SELECT sum(queued), sum(in_flight) FROM accounts")
        assert [tuple(int(v) for v in row) for row in rows] == [(0, 20)]
        events = await storage.jobs.events_after(0, limit=1000)
        assert sum(e.kind is ChangeKind.CLAIMED for e in events) == 20
    finally:
        await storage.close()


async def test_an_expired_lease_is_adopted_by_exactly_one_worker(engine: Engine) -> None:
    storage = await engine.open()
    try:
        ids = [job for i in range(6) for job in await _admit(storage, f"u{i}", f"m{i}")]
        await storage.jobs.claim(
            "dead", limit=6, platforms=["test"], lease_seconds=-1, deadline_seconds=60
        )
        adopted = await asyncio.gather(
            *(
                storage.jobs.adopt_stale(f"w{n}", platforms=["test"], lease_seconds=60)
                for n in range(4)
            )
        )
        taken = [job.id for batch in adopted for job in batch]
        assert sorted(taken) == sorted(ids)
        owners = await engine.rows("SELECT DISTINCT lease_owner FROM jobs")
        assert {owner for (owner,) in owners} <= {f"w{n}" for n in range(4)}
    finally:
        await storage.close()


# --- groups and events --------------------------------------------------------------------


async def test_group_claim_is_won_once_and_a_dead_claim_is_taken_over(engine: Engine) -> None:
    storage = await engine.open()
    store = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        admitted = await store.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take, take],
        )  # fmt: skip
        first, second = (job.id for job in admitted.jobs)
        request = admitted.request_id
        live = time.time() + 60
        await store.transition(first, JobState.DELIVERING, lease_owner="a", lease_expires=live)
        await store.transition(second, JobState.RUNNING, lease_owner="b", lease_expires=live)
        # A sibling still runs: nobody delivers yet.
        assert await store.claim_group(request, "a", lease_seconds=60) is None
        await store.transition(second, JobState.DELIVERING)
        claims = await asyncio.gather(
            store.claim_group(request, "a", lease_seconds=60),
            store.claim_group(request, "b", lease_seconds=60),
        )
        assert sum(claim is not None for claim in claims) == 1
        winner = "a" if claims[0] is not None else "b"
        # While the winner lives, a late sweep or another worker is refused.
        assert await store.claim_group(request, "c", lease_seconds=60) is None
        # The winner dies mid-send; after its leases run out another worker adopts the takes
        # and delivers the group again ("twice is allowed, never zero").
        await store.release_leases(winner)
        adopted = await store.adopt_stale("c", platforms=["test"], lease_seconds=60)
        assert {job.id for job in adopted} == {first, second}
        again = await store.claim_group(request, "c", lease_seconds=60)
        assert again is not None and [job.id for job in again] == [first, second]
    finally:
        await storage.close()


async def test_every_state_change_writes_an_event_in_its_transaction(engine: Engine) -> None:
    storage = await engine.open()
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        admitted = await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take, take],
        )  # fmt: skip
        first, second = (job.id for job in admitted.jobs)
        [claimed] = await jobs.claim(
            "w", limit=1, platforms=["test"], lease_seconds=60, deadline_seconds=60
        )
        assert claimed.job.id == first
        assert await jobs.transition(first, JobState.RUNNING, handle="h1")
        # Not in the expected state: nothing changes, so nothing is recorded.
        assert not await jobs.transition(second, JobState.DONE, expect={JobState.RUNNING})
        assert await jobs.transition(first, JobState.FAILED, error_key="job.failed")
        assert await jobs.transition(second, JobState.CANCELED, error_key="job.canceled")
        events = await jobs.events_after(0)
        assert [(e.kind, e.job_id, e.state, e.error_key) for e in events] == [
            (ChangeKind.ADMITTED, first, JobState.QUEUED, None),
            (ChangeKind.ADMITTED, second, JobState.QUEUED, None),
            (ChangeKind.CLAIMED, first, JobState.SUBMITTING, None),
            (ChangeKind.MOVED, first, JobState.RUNNING, None),
            (ChangeKind.MOVED, first, JobState.FAILED, "job.failed"),
            (ChangeKind.MOVED, second, JobState.CANCELED, "job.canceled"),
        ]
        assert all(e.request_id == admitted.request_id for e in events)
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        # A follower reads on from its cursor, a page at a time.
        assert await jobs.events_after(seqs[1], limit=2) == events[2:4]
        assert await jobs.events_after(seqs[-1]) == []
        last = await jobs.last_events(admitted.request_id)
        assert [(e.job_id, e.state) for e in last] == [
            (first, JobState.FAILED),
            (second, JobState.CANCELED),
        ]
    finally:
        await storage.close()


# --- access ---------------------------------------------------------------------------------


async def test_access_asked_many_times_at_once_asks_the_admins_once(engine: Engine) -> None:
    storage = await engine.open()
    try:
        user = UserRef("test", "newcomer")
        now = time.time()
        await storage.accounts.ensure_account(user, now)  # known, never asked
        # Every connection of a pool open first, so that the requests really overlap.
        await asyncio.gather(*(storage.accounts.pending() for _ in range(10)))
        # As core.accounts asks: only a ban is checked, the access mode is the question.
        policy = AdmissionPolicy(now=now, enforce=True)
        answers = await asyncio.gather(
            *(
                storage.accounts.request_access(user, policy=policy, open_mode=False, now=now)
                for _ in range(10)
            )
        )
        assert sum(answer.new for answer in answers) == 1
        assert {answer.status for answer in answers} == {"pending"}
        assert [p[2] for p in await storage.accounts.pending()] == ["newcomer"]
    finally:
        await storage.close()


async def test_an_access_request_is_decided_once(engine: Engine) -> None:
    storage = await engine.open()
    try:
        user = UserRef("test", "asker")
        now = time.time()
        policy = AdmissionPolicy(now=now, enforce=True)
        asked = await storage.accounts.request_access(user, policy=policy, open_mode=False, now=now)
        decisions = await asyncio.gather(
            storage.accounts.decide_access(asked.account_id, "allowed"),
            storage.accounts.decide_access(asked.account_id, "denied"),
        )
        assert sorted(decisions) == [False, True]
        assert await storage.accounts.pending() == []
        assert not await storage.accounts.decide_access(asked.account_id, "denied")
    finally:
        await storage.close()


async def test_run_times_are_told_per_backend_and_held_handles_are_listed(engine: Engine) -> None:
    clock = [1000.0]
    storage = await engine.open(clock=lambda: clock[0])
    try:
        ids = [job for i in range(2) for job in await _admit(storage, f"r{i}", f"r{i}")]
        await storage.jobs.claim(
            "w", limit=2, platforms=["test"], lease_seconds=60, deadline_seconds=600
        )
        for job_id, backend, handle in zip(
            ids, ["fast", "slow"], ["h-fast", "h-slow"], strict=True
        ):
            await storage.jobs.transition(
                job_id, JobState.RUNNING, expect={JobState.SUBMITTING}, handle=handle,
                backend=backend,
            )  # fmt: skip
        assert await storage.jobs.handles_since(999.0) == {"h-fast", "h-slow"}
        assert await storage.jobs.handles_since(1001.0) == set()
        for job_id, seconds in zip(ids, [10.0, 300.0], strict=True):
            clock[0] = 1000.0 + seconds
            for state, before in [
                (JobState.DOWNLOADING, JobState.RUNNING),
                (JobState.DELIVERING, JobState.DOWNLOADING),
                (JobState.DONE, JobState.DELIVERING),
            ]:
                await storage.jobs.transition(job_id, state, expect={before})
        assert await storage.jobs.recent_run_seconds(backend="fast") == 10.0
        assert await storage.jobs.recent_run_seconds(backend="slow") == 300.0
        assert await storage.jobs.recent_run_seconds() == 155.0
    finally:
        await storage.close()


# --- leases --------------------------------------------------------------------------------


async def test_a_worker_that_lost_its_lease_changes_nothing(engine: Engine) -> None:
    now = [1000.0]
    storage = await engine.open(clock=lambda: now[0])
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take],
        )  # fmt: skip
        [claimed] = await jobs.claim(
            "A", limit=1, platforms=["test"], lease_seconds=10, deadline_seconds=900
        )
        a = claimed.job.lease
        assert a is not None and a.owner == "A"
        assert await jobs.transition(claimed.job.id, JobState.RUNNING, lease=a, handle="h1")
        # A stalls past its lease; B takes the job over with a new fencing token.
        now[0] += 20
        [adopted] = await jobs.adopt_stale("B", platforms=["test"], lease_seconds=10)
        b = adopted.lease
        assert b is not None and b.owner == "B" and b.token > a.token
        before = await jobs.job(adopted.id)
        seen = await jobs.events_after(0)

        # A wakes up: its changes, its renewal before a send and its heartbeat touch nothing.
        lost = await jobs.transition(adopted.id, JobState.FAILED, lease=a, error_key="job.x")
        assert lost is Moved.LOST
        assert not await jobs.renew_lease(adopted.id, a, lease_seconds=10_000)
        assert not await jobs.renew_lease(adopted.id, Lease("A", b.token), lease_seconds=10_000)
        await jobs.heartbeat("A", lease_seconds=10_000)
        assert await jobs.job(adopted.id) == before
        assert await jobs.events_after(0) == seen
        [lease] = await engine.rows(
            "SELECT lease_owner, lease_token, lease_expires FROM jobs WHERE id = ?",
            (adopted.id,),
        )
        assert lease == ("B", b.token, now[0] + 10)

        # B's renewal and change go through.
        now[0] += 5
        assert await jobs.renew_lease(adopted.id, b, lease_seconds=10)
        assert await engine.rows("SELECT lease_expires FROM jobs WHERE id = ?", (adopted.id,)) == [
            (now[0] + 10,)
        ]
        assert await jobs.transition(adopted.id, JobState.DOWNLOADING, lease=b) is Moved.MOVED
        assert (await jobs.events_after(0))[-1].state is JobState.DOWNLOADING
    finally:
        await storage.close()


async def test_the_fencing_token_tells_two_claims_of_one_owner_apart(engine: Engine) -> None:
    storage = await engine.open()
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take],
        )  # fmt: skip
        claim = {"limit": 1, "platforms": ["test"], "lease_seconds": 60, "deadline_seconds": 900}
        [first] = await jobs.claim("A", **claim)  # type: ignore[arg-type]
        old = first.job.lease
        # Retried: back to the queue, claimed again by the same worker.
        assert await jobs.transition(first.job.id, JobState.QUEUED, lease=old, lease_owner=None)
        [second] = await jobs.claim("A", **claim)  # type: ignore[arg-type]
        assert second.job.lease is not None and second.job.lease != old
        moved = await jobs.transition(first.job.id, JobState.FAILED, lease=old)
        assert moved is Moved.LOST
        assert (await jobs.job(first.job.id)).state is JobState.SUBMITTING  # type: ignore[union-attr]
    finally:
        await storage.close()


# --- chat state -----------------------------------------------------------------------------


async def test_inbox_keeps_events_until_done_and_recognises_redelivery(engine: Engine) -> None:
    storage = await engine.open()
    try:
        state = storage.chats
        added = await state.inbox_add("telegram", [("telegram:1:7", "{}"), ("telegram:1:8", "{}")])
        assert added == {"telegram:1:7", "telegram:1:8"}
        # A redelivered event is not new, whether or not it was handled.
        assert await state.inbox_add("telegram", [("telegram:1:7", "{}")]) == set()
        # The same event from two connections at once: new for exactly one of them.
        twins = await asyncio.gather(
            *(state.inbox_add("telegram", [("telegram:1:9", "{}")]) for _ in range(5))
        )
        assert sorted(map(len, twins)) == [0, 0, 0, 0, 1]
        await state.inbox_first_reply("telegram", "telegram:1:7", "55")
        await state.inbox_attempt("telegram", "telegram:1:7")
        await state.inbox_done("telegram", "telegram:1:8")
        await state.inbox_done("telegram", "telegram:1:9")
        [open_entry] = await state.inbox_open("telegram")
        assert (open_entry.key, open_entry.first_reply, open_entry.attempts) == (
            "telegram:1:7",
            "55",
            1,
        )
        assert await state.inbox_add("telegram", [("telegram:1:8", "{}")]) == set()
        assert await state.inbox_prune("telegram", older_than_seconds=-1) == 2
    finally:
        await storage.close()


async def test_chat_state_survives_reopening(engine: Engine) -> None:
    storage = await engine.open()
    state = storage.chats
    [job_id] = await _admit(storage, "9", "m1")
    job = await storage.jobs.job(job_id)
    assert job is not None
    await state.remember_photo("telegram", "1", "9", file_ref="f0")
    await state.remember_photo("telegram", "1", "9", file_ref="f1", message_id="3")
    [button_id] = await state.add_buttons("telegram", [("retake", "r1", "j1", "9")])
    await state.set_locale("telegram", "9", "en")
    await state.set_locale("telegram", "9", "zh")
    await state.add_history("telegram", "9", "j0", "1", "vid-0", "first")
    await state.add_history("telegram", "9", "j1", "1", "vid-1", "caption")
    await state.set_status_message(job.request_id, "77")
    await storage.close()
    storage = await engine.open()
    try:
        state = storage.chats
        photo = await state.last_photo("telegram", "1", "9", max_age_seconds=60)
        assert photo is not None and (photo.file_ref, photo.message_id) == ("f1", "3")
        assert await state.last_photo("telegram", "1", "9", max_age_seconds=-1) is None
        button = await state.button("telegram", button_id)
        assert button is not None and (button.action, button.owner) == ("retake", "9")
        assert len(button_id) <= 64 and await state.button("telegram", "nope") is None
        assert await state.locale("telegram", "9") == "zh"
        assert [item.file_ref for item in await state.history("telegram", "9", 5)] == [
            "vid-1",
            "vid-0",
        ]
        stored = await storage.jobs.job(job_id)
        assert stored is not None and stored.address.status_message_id == "77"
        assert stored.address.chat_id == "c1"
        await state.set_status_message(job.request_id, None)
        cleared = await storage.jobs.job(job_id)
        assert cleared is not None and cleared.address.status_message_id is None
        assert [j.id for j in await storage.jobs.waiting_jobs_of(UserRef("test", "9"), "c1")] == [
            job_id
        ]
    finally:
        await storage.close()


async def test_guild_settings_are_kept_and_cleared(engine: Engine) -> None:
    storage = await engine.open()
    try:
        state = storage.chats
        assert await state.guild_settings("discord", "g1") == GuildSettings()
        await state.set_guild_channels("discord", "g1", ["10", "11"])
        await state.set_guild_cap("discord", "g1", 7)
        await state.set_guild_cap("discord", "g2", 3)
        assert await state.guild_settings("discord", "g1") == GuildSettings(("10", "11"), 7)
        assert await state.guild_settings("discord", "g2") == GuildSettings((), 3)
        await state.set_guild_channels("discord", "g1", [])
        assert await state.guild_settings("discord", "g1") == GuildSettings((), 7)
    finally:
        await storage.close()
    reopened = await engine.open()
    try:
        assert await reopened.chats.guild_settings("discord", "g2") == GuildSettings((), 3)
    finally:
        await reopened.close()


async def test_a_guild_cap_lets_exactly_its_takes_through_under_concurrency(
    engine: Engine,
) -> None:
    storage = await engine.open()
    try:
        state = storage.chats
        # Without a cap every take is counted.
        assert await state.add_guild_takes("discord", "g1", "2026-01-01", 50)
        await state.set_guild_cap("discord", "g1", 10)
        results = await asyncio.gather(
            *(state.add_guild_takes("discord", "g1", "2026-01-02", 1) for _ in range(20))
        )
        assert results.count(True) == 10
        # A request that does not fit is refused whole; a give-back makes room again.
        assert not await state.add_guild_takes("discord", "g1", "2026-01-02", 1)
        assert await state.add_guild_takes("discord", "g1", "2026-01-02", -2)
        assert not await state.add_guild_takes("discord", "g1", "2026-01-02", 3)
        assert await state.add_guild_takes("discord", "g1", "2026-01-02", 2)
        # Another day and another guild count apart; more than the cap at once never fits.
        assert not await state.add_guild_takes("discord", "g1", "2026-01-03", 11)
        assert await state.add_guild_takes("discord", "g1", "2026-01-03", 10)
        assert await state.add_guild_takes("discord", "g2", "2026-01-02", 11)
        # Lifting the cap lets takes through again.
        await state.set_guild_cap("discord", "g1", 0)
        assert await state.add_guild_takes("discord", "g1", "2026-01-02", 5)
    finally:
        await storage.close()


async def test_takes_of_a_line_counted_at_once_get_numbers_of_their_own(
    engine: Engine,
) -> None:
    # Two processes on one database, counting further takes of one line at once.
    processes = await asyncio.gather(engine.open(), engine.open())
    try:
        one, two = (storage.chats for storage in processes)
        counted = await asyncio.gather(
            *(chats.add_line_take("test", "r1", 3) for chats in (one, two) * 10)
        )
        # The line had 3 takes: the 20 further ones are 4 to 23, each once.
        assert sorted(counted) == list(range(4, 24))
        # A press under an older take does not number back; a take known to be later does
        # not number below itself; other lines and platforms count apart.
        assert await one.add_line_take("test", "r1", 2) == 24
        assert await two.add_line_take("test", "r1", 30) == 31
        assert await one.add_line_take("test", "r2", 1) == 2
        assert await two.add_line_take("other", "r1", 1) == 2
    finally:
        for storage in processes:
            await storage.close()
    reopened = await engine.open()
    try:
        assert await reopened.chats.add_line_take("test", "r1", 1) == 32
    finally:
        await reopened.close()


async def test_old_day_counts_and_lines_without_photos_are_deleted_in_batches(
    engine: Engine,
) -> None:
    storage = await engine.open()
    jobs, chats = storage.jobs, storage.chats

    async def admit(key: str, day: str = "2026-01-03", line: str | None = None) -> tuple[str, str]:
        """Admit one take counted against chat c1's ``day``; return its job and request."""
        policy = AdmissionPolicy(enforce=True, chat_day=Period(day, 0.0), max_chat_takes=10)
        extra = {} if line is None else {"line_request": line}  # another take of that line
        admitted = await jobs.admit(
            user=UserRef("test", "u1"), source_key=key, line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1", extra=extra),
            takes=[TAKE], policy=policy,
        )  # fmt: skip
        return admitted.jobs[0].id, admitted.request_id

    try:
        for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
            await admit(f"day-{day}", day)
            assert await chats.add_guild_takes("discord", "g1", day, 1)
        # Line "ended": its first request and another take of it both lost their photos.
        # Line "alive": its first request did, another take of it still waits (photo kept).
        # Line "new" has its photo; "gone" names a request the store does not know.
        ended_job, ended = await admit("ended")
        ended_again, _ = await admit("ended-2", line=ended)
        alive_job, alive = await admit("alive")
        await admit("alive-2", line=alive)
        _, new = await admit("new")
        for job_id in (ended_job, ended_again, alive_job):
            assert await jobs.transition(job_id, JobState.DONE, finished_at=1.0)
        assert await jobs.empty_old_images(2.0, 10) == 3
        for line in (ended, alive, new, "gone"):
            assert await chats.add_line_take("test", line, 1) == 2

        # Each call deletes at most its limit; days from the bound on stay.
        assert [await jobs.delete_old_chat_days("2026-01-03", 1) for _ in range(3)] == [1, 1, 0]
        assert [await chats.delete_old_guild_days("2026-01-03", 1) for _ in range(3)] == [1, 1, 0]
        assert [await chats.delete_ended_lines(1) for _ in range(3)] == [1, 1, 0]
        assert await engine.rows("SELECT day, takes FROM chat_days") == [("2026-01-03", 6)]
        assert await engine.rows("SELECT day FROM guild_takes") == [("2026-01-03",)]
        left = await engine.rows("SELECT request_id FROM line_takes")
        assert sorted(row[0] for row in left) == sorted([alive, new])
        # Kept lines count on; a deleted one counts again from the pressed take's number.
        assert await chats.add_line_take("test", alive, 1) == 3
        assert await chats.add_line_take("test", ended, 2) == 3
    finally:
        await storage.close()


async def test_a_follower_never_steps_past_an_event_still_to_commit(pg_dsn: str) -> None:
    """PostgreSQL hands out seqs at insert, not at commit: a follower waits for the gap."""
    storage = await open_postgres(pg_dsn)
    writer = await asyncpg.connect(pg_dsn)
    try:
        [job_id] = await _admit(storage, "u1", "m1")
        # A change in flight in another process: it took seq 2 and has not committed yet.
        pending = writer.transaction()
        await pending.start()
        await writer.execute("SELECT pg_advisory_xact_lock_shared($1)", EVENTS_LOCK)
        seq = await writer.fetchval("SELECT nextval('job_events_seq_seq')")
        # A later change commits first, with seq 3.
        assert await storage.jobs.transition(job_id, JobState.CANCELED)
        follower = asyncio.create_task(storage.jobs.events_after(0))
        await asyncio.sleep(0.2)  # give a follower that does not wait the time to read
        await writer.execute(
            "INSERT INTO job_events (seq, kind, job_id, request_id, state, at)"
            " SELECT $1, 'moved', id, request_id, 'queued', 0 FROM jobs WHERE id = $2",
            seq, job_id,
        )  # fmt: skip
        await pending.commit()
        assert [event.seq for event in await follower] == [1, 2, 3]
    finally:
        await writer.close()
        await storage.close()


async def test_a_notify_in_one_process_wakes_a_worker_in_another(pg_dsn: str) -> None:
    first = await open_postgres(pg_dsn)
    second = await open_postgres(pg_dsn)
    try:
        assert not await second.wakeups.wait(0.05)  # nothing yet
        first.wakeups.notify()
        # Across connections, through LISTEN/NOTIFY (the bound only stops a broken run).
        assert await second.wakeups.wait(30)
    finally:
        await first.close()
        await second.close()


async def test_a_transition_sets_only_the_columns_it_may(engine: Engine) -> None:
    storage = await engine.open()
    try:
        [job_id] = await _admit(storage, "u1", "s1")
        try:
            await storage.jobs.transition(job_id, JobState.FAILED, charged=0)
        except ValueError as exc:
            assert "charged" in str(exc)
        else:
            raise AssertionError("a transition set a column outside SETTABLE")
        [(state, charged)] = await engine.rows("SELECT state, charged FROM jobs")
        assert state == JobState.QUEUED.value and charged == 0
    finally:
        await storage.close()


# --- the operator's view --------------------------------------------------------------------


async def test_the_operator_view_reads_slots_failures_usage_and_the_event_cursor(
    engine: Engine,
) -> None:
    now = [1_700_000_000.0]  # 2023-11-14 22:13:20 UTC
    storage = await engine.open(clock=lambda: now[0])
    try:
        jobs = storage.jobs
        assert await jobs.last_event_seq() == 0
        assert await jobs.slots_in_use() == {}
        assert await jobs.last_failures() == await jobs.active_jobs() == []
        running, queued, failed_early = await _admit(storage, "u1", "m1", takes=3)
        [failed_late] = await _admit(storage, "u2", "m2")
        now[0] += 3 * 3600  # the next day in UTC, still the same day at UTC-5
        [later] = await _admit(storage, "u3", "m3")
        [claimed] = await jobs.claim(
            "w", limit=1, platforms=["test"], lease_seconds=60, deadline_seconds=60
        )
        assert claimed.job.id == running
        assert await jobs.transition(running, JobState.RUNNING, backend="fal-kling")
        assert await jobs.transition(failed_early, JobState.FAILED, error_key="job.failed")
        now[0] += 1
        assert await jobs.transition(failed_late, JobState.FAILED, error_key="job.timeout")

        assert await jobs.slots_in_use() == {"fal-kling": 1}
        assert [job.id for job in await jobs.active_jobs()] == [running]
        failures = await jobs.last_failures(limit=5)
        assert [(job.id, job.error_key) for job in failures] == [
            (failed_late, "job.timeout"), (failed_early, "job.failed")
        ]  # fmt: skip
        assert [job.id for job in await jobs.last_failures(limit=1)] == [failed_late]
        events = await jobs.events_after(0, limit=1000)
        assert await jobs.last_event_seq() == events[-1].seq

        def counts(offset: int) -> set[tuple[int, str, JobState, str | None, int]]:
            return {
                (row.day, row.platform, row.state, row.backend, row.takes)
                for row in rows_by_offset[offset]
            }

        rows_by_offset = {
            offset: await jobs.usage_by_day(0, utc_offset_seconds=offset)
            for offset in (0, -5 * 3600)
        }
        day = 1_700_000_000 // 86_400
        assert counts(0) == {
            (day, "test", JobState.RUNNING, "fal-kling", 1),
            (day, "test", JobState.QUEUED, None, 1),
            (day, "test", JobState.FAILED, None, 2),
            (day + 1, "test", JobState.QUEUED, None, 1),
        }
        assert counts(-5 * 3600) == {
            (day, "test", JobState.RUNNING, "fal-kling", 1),
            (day, "test", JobState.QUEUED, None, 2),
            (day, "test", JobState.FAILED, None, 2),
        }
        assert all(row.seconds == 5 for row in rows_by_offset[0])
        # ``since`` leaves out what came before it.
        recent = await jobs.usage_by_day(now[0] - 10)
        assert [(row.state, row.takes) for row in recent] == [(JobState.QUEUED, 1)]
        assert later and queued
    finally:
        await storage.close()
