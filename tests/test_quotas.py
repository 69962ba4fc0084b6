"""Quotas, fair order and abuse protection: real SQLite files, the real Service and Worker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from config.settings import PromptSettings, QuotaSettings, load_settings
from core.errors import DeliveryError, RequestRejected, UserError
from core.i18n import CATALOG, render
from core.models import Account, DeliveryAddress, JobState, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.prompts import parse_line
from core.quotas import AdmissionPolicy, AdmissionSnapshot, Quotas
from core.service import Service
from core.storage import Storage
from core.storage.sqlite import open_sqlite, sqlite_storage
from core.storage.sqlite.database import Database
from core.storage.sqlite.migrations import MIGRATIONS
from core.storage.types import NewTake
from tests import conftest
from tests.conftest import Engine
from tests.test_worker import Harness, harness

T0 = 1_750_000_000.0  # a fixed "now" for services with a controlled clock
LINE = 'She whispers: "Go now."'  # a 5 s take: one credit


def small_jpeg() -> bytes:
    """Return a small JPEG standing in for an already prepared image."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


class Clock:
    """A settable wall clock for the service (periods, bans, link codes)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class QuotaService(Service):
    """The real Service, with its database at hand for tests at the database level."""

    engine: Engine
    database: Database  # SQLite only: its connections, for tests of the writer itself


@contextlib.asynccontextmanager
async def service(
    place: Path | Engine, clock: Clock | None = None, **quotas: Any
) -> AsyncIterator[QuotaService]:
    """Yield a Service on a fresh database, with quota settings overridden.

    ``place`` is an engine of the contract suite, or a directory for a SQLite file.
    """
    data_dir = place.path.parent if isinstance(place, Engine) else place / "data"
    settings = load_settings(data_dir=data_dir, quotas=quotas)
    engine = place if isinstance(place, Engine) else Engine("sqlite", settings.store_path, "")
    database = None
    if engine.name == "sqlite":
        database = await Database.open(engine.path)
        storage = sqlite_storage(database)
    else:
        storage = await engine.open()
    try:
        svc = QuotaService(
            storage=storage,
            notifier=NotifierRouter({}),
            images=settings.images,
            prompts=settings.prompts,
            slots=2,
            quotas=settings.quotas,
            clock=clock or Clock(),
        )
        svc.engine = engine
        if database is not None:
            svc.database = database
        yield svc
    finally:
        await storage.close()


def request(user: str, key: str, *, platform: str = "test", chat: str = "chat1") -> VideoRequest:
    return VideoRequest(
        user=UserRef(platform, user),
        image=b"",
        line=LINE,
        address=DeliveryAddress(platform, chat),
        source_key=key,
    )


async def admit(svc: Service, req: VideoRequest, line: str = LINE) -> Any:
    parsed = parse_line(line, PromptSettings())
    return await svc.admit_prepared(req, parsed, small_jpeg(), (64, 36))


async def db_rows(
    svc: QuotaService, sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    return await svc.engine.rows(sql, params)


async def assert_ledger_explains_balances(svc: QuotaService) -> None:
    """Every balance equals the sum of its ledger rows; none is negative."""
    balances = await db_rows(svc, "SELECT account_id, period, credits FROM balances")
    sums = await db_rows(svc, "SELECT account_id, period, sum(delta) FROM ledger GROUP BY 1, 2")
    assert sorted(balances) == sorted(sums)
    assert all(credits >= 0 for _, _, credits in balances)


# --- credits -------------------------------------------------------------------------


async def test_concurrent_admissions_never_overdraw(engine: Engine) -> None:
    async with service(engine, credits=1, max_takes_per_chat_per_day=0) as svc:
        # Half the users are known already (their period not started), half are new.
        for i in range(0, 100, 2):
            await svc.accounts.account_id(UserRef("test", f"user{i}"), create=True)
        requests = [request(f"user{i % 100}", f"m{i}", chat=f"c{i % 100}") for i in range(1000)]
        results = await asyncio.gather(*(admit(svc, r) for r in requests), return_exceptions=True)
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(accepted) == 100
        assert {r.key for r in refused if isinstance(r, UserError)} == {"quota.no_credits"}
        assert len(refused) == 900
        owners = await db_rows(svc, "SELECT user_id, count(*) FROM jobs GROUP BY user_id")
        assert len(owners) == 100 and {n for _, n in owners} == {1}
        assert {c for (c,) in await db_rows(svc, "SELECT credits FROM balances")} == {0}
        await assert_ledger_explains_balances(svc)


async def test_redelivered_request_is_charged_once(engine: Engine, portrait: bytes) -> None:
    async with service(engine) as svc:
        first = VideoRequest(
            UserRef("test", "u1"), portrait, LINE, DeliveryAddress("test", "c"), "chat:1"
        )
        admitted = await svc.submit(first)
        assert admitted.credits_left == 19
        with pytest.raises(RequestRejected) as again:
            await svc.submit(first)
        assert again.value.key == "request.duplicate"
        # Both copies past the cheap check at once: the admission transaction decides.
        twins = await asyncio.gather(
            admit(svc, request("u1", "chat:2")),
            admit(svc, request("u1", "chat:2")),
            return_exceptions=True,
        )
        assert sorted(type(t).__name__ for t in twins) == ["Admission", "RequestRejected"]
        assert (await svc.accounts.balance(UserRef("test", "u1"))).credits == 18
        await assert_ledger_explains_balances(svc)


async def test_ten_second_takes_cost_more_and_the_refusal_says_when_it_resets(
    engine: Engine,
) -> None:
    clock = Clock(T0)
    async with service(engine, clock, credits=3, timezone="Asia/Shanghai") as svc:
        await admit(svc, request("u1", "a"), LINE + " --10s")
        with pytest.raises(RequestRejected) as refused:
            await admit(svc, request("u1", "b"), LINE + " --10s")
        error = refused.value
        assert (error.key, error.params["cost"], error.params["credits"]) == (
            "quota.no_credits",
            2,
            1,
        )
        resets = svc.quotas.period(clock.now).resets_at
        assert error.params["hours"] * 3600 + error.params["minutes"] * 60 >= resets - clock.now
        assert "额度不足" in render(error.key, "zh", **error.params)
        clock.now = resets + 1  # the next day in Shanghai: a fresh allowance
        assert (await admit(svc, request("u1", "c"), LINE + " --10s")).credits_left == 1


async def test_admission_canceled_while_waiting_for_the_writer_never_runs(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        async with svc.database.transaction():  # another writer holds the lock
            task = asyncio.create_task(admit(svc, request("u1", "a")))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await admit(svc, request("u1", "b"))
        assert await db_rows(svc, "SELECT source_key FROM requests") == [("b",)]
        assert (await svc.accounts.balance(UserRef("test", "u1"))).credits == 19


async def test_admin_grant_and_revoke_are_ledger_rows(engine: Engine) -> None:
    async with service(engine, credits=2) as svc:
        user = UserRef("test", "u1")
        account = await svc.accounts.account_id(user, create=True)
        assert account is not None
        assert await svc.accounts.grant(account, 5, actor="test:admin", note="contest") == 7
        assert await svc.accounts.revoke(account, 100, actor="test:admin") == 0
        with pytest.raises(RequestRejected) as refused:
            await admit(svc, request("u1", "a"))
        assert refused.value.key == "quota.no_credits"
        reasons = [(e.reason, e.delta) for e in await svc.accounts.history(account)]
        assert reasons == [("revoke", -7), ("grant", 5), ("allowance", 2)]
        await assert_ledger_explains_balances(svc)


# --- refunds on every failure path -----------------------------------------------------


async def balance(h: Harness, user: str = "u1") -> int:
    return (await h.service.accounts.balance(UserRef("test", user))).credits


async def wait_state(h: Harness, job_id: str, state: JobState) -> None:
    for _ in range(500):
        job = await h.store.job(job_id)
        if job is not None and job.state is state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {state}")


@pytest.mark.parametrize(
    ("knobs", "error_key"),
    [
        ({"fail_jobs": 10}, "job.backend_failed"),
        ({"filter_all": True}, "job.filtered"),
        ({"hold": "event", "deadline": 0.3}, "job.deadline"),
        ({"refuse": True}, "job.undeliverable"),
    ],
)
async def test_failed_take_is_refunded_once(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, knobs: dict[str, Any], error_key: str
) -> None:
    server_knobs = {k: v for k, v in knobs.items() if k in ("fail_jobs", "filter_all")}
    if knobs.get("hold"):
        server_knobs["hold"] = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, **server_knobs) as h:
        if "deadline" in knobs:
            update = {"job_deadline_seconds": knobs["deadline"]}
            h.worker._settings = h.settings.worker.model_copy(update=update)
        if knobs.get("refuse"):
            h.adapter.refuse = DeliveryError("bot was blocked", permanent=True)
        admission = await h.service.submit(h.request(LINE, portrait))
        assert admission.credits_left == 19
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key) == (JobState.FAILED, error_key)
        assert await balance(h) == 20
        account = await h.service.accounts.account_id(UserRef("test", "u1"))
        assert account is not None
        reasons = [e.reason for e in await h.service.accounts.history(account)]
        assert reasons == ["refund", "debit", "allowance"]


async def test_retried_then_done_take_stays_charged(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, fail_jobs=2) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE and job.attempts == 3
        assert await balance(h) == 19


async def test_canceled_in_queue_is_refunded(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold) as h:
        running = await h.service.submit(h.request(LINE, portrait, key="a", user="alice"))
        await wait_state(h, running.jobs[0].id, JobState.RUNNING)
        waiting = await h.service.submit(h.request(LINE, portrait, key="b"))
        assert await balance(h) == 19
        await h.service.cancel(waiting.jobs[0].id, UserRef("test", "u1"))
        assert await balance(h) == 20
        hold.set()
        await h.finish([running.jobs[0].id])
        assert await balance(h, "alice") == 19


async def test_refund_trigger_pays_once_whatever_the_path(engine: Engine) -> None:
    async with service(engine) as svc:
        store = svc._store
        admission = await admit(svc, request("u1", "a"))
        job_id = admission.jobs[0].id
        user = UserRef("test", "u1")
        # A transient failure puts the take back in the queue: no refund yet.
        claimed = await store.claim_next(
            "w", platforms=["test"], lease_seconds=5, deadline_seconds=9
        )
        assert claimed is not None and claimed.id == job_id
        await store.transition(job_id, JobState.QUEUED)
        assert (await svc.accounts.balance(user)).credits == 19
        await store.transition(job_id, JobState.FAILED)
        await store.transition(job_id, JobState.FAILED)  # a second failure record
        await store.transition(job_id, JobState.CANCELED)
        assert (await svc.accounts.balance(user)).credits == 20
        # Canceled after it started (not a path the service offers): the provider was paid.
        other = await admit(svc, request("u1", "b"))
        await store.claim_next("w", platforms=["test"], lease_seconds=5, deadline_seconds=9)
        await store.transition(other.jobs[0].id, JobState.CANCELED)
        assert (await svc.accounts.balance(user)).credits == 19
        await assert_ledger_explains_balances(svc)


# --- caps --------------------------------------------------------------------------------


async def test_caps_per_user_chat_and_queue(engine: Engine) -> None:
    async with service(
        engine, max_queued_per_user=3, max_takes_per_chat_per_day=4, max_queue=6
    ) as svc:
        await admit(svc, request("u1", "a"), LINE + " --takes 3")
        with pytest.raises(RequestRejected) as full:
            await admit(svc, request("u1", "b"))
        assert full.value.key == "quota.user_queue_full" and full.value.params["limit"] == 3
        await admit(svc, request("u2", "c"))
        with pytest.raises(RequestRejected) as chat:
            await admit(svc, request("u3", "d"), LINE + " --takes 2")
        assert chat.value.key == "quota.chat_full"
        await admit(svc, request("u3", "e", chat="c2"), LINE + " --takes 2")
        with pytest.raises(RequestRejected) as busy:
            await admit(svc, request("u4", "f", chat="c3"))
        assert busy.value.key == "quota.busy"
        # Refusals changed nothing.
        assert await db_rows(svc, "SELECT count(*) FROM jobs") == [(6,)]
        assert await db_rows(svc, "SELECT sum(queued) FROM accounts") == [(6,)]


async def test_claim_skips_a_user_at_the_in_flight_cap(engine: Engine) -> None:
    async with service(engine, max_in_flight_per_user=2) as svc:
        store = svc._store
        many = await admit(svc, request("u1", "a"), LINE + " --takes 3")
        one = await admit(svc, request("u2", "b"))

        async def claim() -> str | None:
            job = await store.claim_next(
                "w", platforms=["test"], lease_seconds=5, deadline_seconds=9
            )
            return None if job is None else job.id

        ids = [j.id for j in many.jobs]
        assert [await claim() for _ in range(4)] == [ids[0], one.jobs[0].id, ids[1], None]
        await store.transition(ids[0], JobState.DOWNLOADING)  # off the backend: a slot frees
        assert await claim() == ids[2]


# --- access ------------------------------------------------------------------------------


async def test_approval_mode(engine: Engine, portrait: bytes) -> None:
    async with service(engine, access="approval") as svc:
        user = UserRef("test", "u1")
        with pytest.raises(RequestRejected) as first:
            await admit(svc, request("u1", "a"))
        assert first.value.key == "access.approval_required"
        asked = await svc.accounts.request_access(user)
        assert (asked.status, asked.new) == ("pending", True)
        assert (await svc.accounts.request_access(user)).new is False
        assert [p[2] for p in await svc.accounts.pending()] == ["u1"]
        # Refused before the image is even decoded.
        bad_image = VideoRequest(user, b"not an image", LINE, DeliveryAddress("test", "c"), "b")
        with pytest.raises(RequestRejected) as pending:
            await svc.submit(bad_image)
        assert pending.value.key == "access.pending"
        await svc.accounts.approve(asked.account_id, actor="test:admin")
        await admit(svc, request("u1", "c"))
        await svc.accounts.deny(asked.account_id, actor="test:admin")
        with pytest.raises(RequestRejected) as denied:
            await admit(svc, request("u1", "d"))
        assert denied.value.key == "access.denied"
        # The local CLI is the operator: never asked for approval.
        await admit(svc, request("me", "e", platform="cli"))


async def test_only_a_pending_request_can_be_decided_once(tmp_path: Path) -> None:
    """Two admins (on two platforms, or two processes) pressing at once: one decision wins."""
    async with service(tmp_path, access="approval") as svc:
        asked = await svc.accounts.request_access(UserRef("test", "u1"))
        decisions = await asyncio.gather(
            svc.accounts.decide_access(asked.account_id, approve=True, actor="test:a"),
            svc.accounts.decide_access(asked.account_id, approve=False, actor="discord:b"),
        )
        assert sorted(decisions) == [False, True]
        assert await svc.accounts.pending() == []
        status = (await svc.accounts.request_access(UserRef("test", "u1"))).status
        assert status == ("allowed" if decisions[0] else "denied")
        # Decided already: a late press changes nothing.
        assert not await svc.accounts.decide_access(asked.account_id, approve=False, actor="x")
        assert (await svc.accounts.request_access(UserRef("test", "u1"))).status == status
        # An account that never asked cannot be approved through the desk.
        other = await svc.accounts.account_id(UserRef("test", "u2"), create=True)
        assert other is not None
        assert not await svc.accounts.decide_access(other, approve=True, actor="test:a")


async def test_allowlist_and_bans(engine: Engine) -> None:
    clock = Clock()
    async with service(engine, clock, access="allowlist") as svc:
        user = UserRef("test", "u1")
        with pytest.raises(RequestRejected) as outsider:
            await admit(svc, request("u1", "a"))
        assert outsider.value.key == "access.allowlist"
        account = await svc.accounts.account_id(user, create=True)
        assert account is not None
        await svc.accounts.approve(account, actor="test:admin")
        waiting = await admit(svc, request("u1", "b"), LINE + " --takes 2")
        assert (await svc.accounts.balance(user)).credits == 18
        canceled = await svc.accounts.ban(account, actor="test:admin", seconds=3600)
        assert sorted(canceled) == sorted(j.id for j in waiting.jobs)
        assert (await svc.accounts.balance(user)).credits == 20  # refunded
        with pytest.raises(RequestRejected) as banned:
            await admit(svc, request("u1", "c"))
        assert banned.value.key == "access.banned_until" and banned.value.params["hours"] == 1
        clock.now += 3601
        await admit(svc, request("u1", "d"))
        await svc.accounts.ban(account, actor="test:admin")
        with pytest.raises(RequestRejected) as forever:
            await admit(svc, request("u1", "e"))
        assert forever.value.key == "access.banned"
        await svc.accounts.unban(account, actor="test:admin")
        await admit(svc, request("u1", "f"))


# --- flood -------------------------------------------------------------------------------


async def test_flood_gets_the_burst_and_one_warning(tmp_path: Path, portrait: bytes) -> None:
    async with service(tmp_path, flood_burst=3, flood_refill_seconds=3600) as svc:
        user = UserRef("test", "spammer")
        requests = [
            VideoRequest(user, portrait, LINE, DeliveryAddress("test", "c"), f"m{i}")
            for i in range(100)
        ]
        results = await asyncio.gather(*(svc.submit(r) for r in requests), return_exceptions=True)
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refusals = [r for r in results if isinstance(r, RequestRejected)]
        assert len(accepted) == 3 and len(refusals) == 97
        assert {r.key for r in refusals} == {"quota.flood"}
        warnings = [r for r in refusals if not r.silent]
        assert len(warnings) == 1 and warnings[0].params["seconds"] > 0
        assert await db_rows(svc, "SELECT count(*) FROM requests") == [(3,)]
        # Someone else is not slowed down.
        await svc.submit(
            VideoRequest(UserRef("test", "calm"), portrait, LINE, requests[0].address, "x")
        )


def test_flood_warns_again_after_the_user_calmed_down() -> None:
    now = [0.0]
    quotas = Quotas(QuotaSettings(flood_burst=1, flood_refill_seconds=10), monotonic=lambda: now[0])
    user = UserRef("test", "u1")
    quotas.check_flood(user)
    silent = []
    for _ in range(3):
        with pytest.raises(RequestRejected) as refused:
            quotas.check_flood(user)
        silent.append(refused.value.silent)
    now[0] += 10
    quotas.check_flood(user)
    with pytest.raises(RequestRejected) as again:
        quotas.check_flood(user)
    assert silent == [False, True, True] and again.value.silent is False


# --- one identity across platforms ---------------------------------------------------------


async def test_link_joins_two_platforms_into_one_balance(engine: Engine) -> None:
    clock = Clock()
    async with service(engine, clock, credits=3) as svc:
        telegram, discord = UserRef("telegram", "111"), UserRef("discord", "222")
        own = await admit(svc, request("222", "d1", platform="discord"))  # its own balance
        await svc._store.transition(own.jobs[0].id, JobState.DONE)
        code = await svc.accounts.link_code(telegram)
        assert code.minutes == 10 and len(code.code) == 8
        joint = await svc.accounts.link(discord, code.code.lower())
        assert joint.account_id == await svc.accounts.account_id(telegram)
        # One balance: two takes from Telegram, then Discord has one credit left.
        await admit(svc, request("111", "t1", platform="telegram"), LINE + " --takes 2")
        await admit(svc, request("222", "d2", platform="discord"))
        with pytest.raises(RequestRejected) as empty:
            await admit(svc, request("222", "d3", platform="discord"))
        assert empty.value.key == "quota.no_credits"
        with pytest.raises(RequestRejected) as used:
            await svc.accounts.link(discord, code.code)
        assert used.value.key == "access.link_bad_code"


async def test_link_refusals(engine: Engine) -> None:
    clock = Clock()
    async with service(engine, clock) as svc:
        telegram = UserRef("telegram", "111")
        same = await svc.accounts.link_code(telegram)
        with pytest.raises(RequestRejected) as own:
            await svc.accounts.link(telegram, same.code)
        assert own.value.key == "access.link_already"
        other_telegram = UserRef("telegram", "333")
        code = await svc.accounts.link_code(telegram)
        with pytest.raises(RequestRejected) as platform:
            await svc.accounts.link(other_telegram, code.code)
        assert platform.value.key == "access.link_same_platform"
        late = await svc.accounts.link_code(telegram)
        clock.now += 11 * 60
        with pytest.raises(RequestRejected) as expired:
            await svc.accounts.link(UserRef("discord", "222"), late.code)
        assert expired.value.key == "access.link_bad_code"
        busy = await svc.accounts.link_code(telegram)
        await admit(svc, request("222", "d1", platform="discord"))
        with pytest.raises(RequestRejected) as waiting:
            await svc.accounts.link(UserRef("discord", "222"), busy.code)
        assert waiting.value.key == "access.link_busy"


# --- fair order ------------------------------------------------------------------------------

TAKE = NewTake("line", "line", "en", 5, 1, None)
admit_op = st.tuples(st.just("admit"), st.integers(0, 3), st.integers(1, 4))
claim_op = st.just(("claim", 0, 0))


async def run_schedule(
    storage: Storage, ops: list[tuple[str, int, int]], keys: str = "k"
) -> list[int]:
    """Apply admissions and claims, then drain; check every waiting snapshot's promise.

    Returns the users in the order their takes started. ``keys`` prefixes the event keys,
    so that several schedules can run one after another on one database.
    """
    store = storage.jobs
    owner: dict[str, int] = {}
    seq: dict[str, int] = {}
    started: list[str] = []
    snapshots: list[tuple[int, list[str]]] = []

    async def claim() -> bool:
        job = await store.claim_next("w", platforms=["t"], lease_seconds=60, deadline_seconds=60)
        if job is None:
            return False
        started.append(job.id)
        await store.transition(job.id, JobState.DONE)  # finished at once: no cap in play
        return True

    for index, (kind, user, takes) in enumerate(ops):
        if kind == "admit":
            admitted = await store.admit(
                user=UserRef("t", f"user{user}"),
                source_key=f"{keys}{index}",
                line="line",
                image_jpeg=b"jpeg",
                image_size=(16, 9),
                address=DeliveryAddress("t", "c"),
                takes=[TAKE] * takes,
            )
            for job in admitted.jobs:
                owner[job.id], seq[job.id] = user, len(seq)
        else:
            await claim()
        waiting = [job.id for job in await store.waiting_jobs()]
        # The position a user is told is the place in the order the scheduler uses.
        positions = [await store.queue_position(job_id) for job_id in waiting]
        assert positions == list(range(1, len(waiting) + 1))
        snapshots.append((len(started), waiting))
    while await claim():
        pass
    start_at = {job_id: index for index, job_id in enumerate(started)}
    assert sorted(started) == sorted(owner)
    for begin, waiting in snapshots:
        for user in {owner[j] for j in waiting}:
            mine = sorted((j for j in waiting if owner[j] == user), key=seq.__getitem__)
            for k, job_id in enumerate(mine, start=1):
                before = started[begin : start_at[job_id]]
                for other in set(owner.values()) - {user}:
                    ahead = sum(1 for j in before if owner[j] == other)
                    assert ahead <= k, (user, k, other, ahead)
    return [owner[job_id] for job_id in started]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(admit_op, admit_op, claim_op), max_size=30))
def test_fair_order_property(ops: list[tuple[str, int, int]]) -> None:
    """A user's k-th waiting job starts after at most k jobs of any other single user.

    Checked for every moment of a run, counting the other user's later arrivals too.
    """
    with tempfile.TemporaryDirectory() as tmp:

        async def run() -> None:
            storage = await open_sqlite(Path(tmp) / "fair.sqlite3")
            try:
                await run_schedule(storage, ops)
            finally:
                await storage.close()

        asyncio.run(run())


async def test_role_weight_gives_more_takes_per_turn(engine: Engine) -> None:
    async with service(engine, roles={"vip": {"weight": 2}}) as svc:
        vip = await svc.accounts.account_id(UserRef("test", "vip"), create=True)
        assert vip is not None
        await svc.accounts.set_role(vip, "vip", actor="test:admin")
        plain = await admit(svc, request("plain", "a"), LINE + " --takes 3")
        more = await admit(svc, request("vip", "b"), LINE + " --takes 4")
        assert more.position == 2
        order = [j.id for j in await svc._store.waiting_jobs()]
        p, v = [j.id for j in plain.jobs], [j.id for j in more.jobs]
        assert order == [p[0], v[0], v[1], p[1], v[2], v[3], p[2]]


# --- odds and ends -----------------------------------------------------------------------------


async def test_migration_from_version_2_keeps_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(f"{MIGRATIONS[0]}\n{MIGRATIONS[1]}\nPRAGMA user_version = 2;")
        db.execute("INSERT INTO users VALUES (1, 't', 'old', '', NULL, 0)")
        db.execute("INSERT INTO requests VALUES ('r', 'k', 1, 'l', x'00', 16, 9, ?, 0)", (
            '{"platform": "t", "chat_id": "c"}',
        ))  # fmt: skip
        for n, state in enumerate(["queued", "running", "queued"], start=1):
            db.execute(
                "INSERT INTO jobs (id, seq, request_id, user_id, platform, take, takes, state,"
                " fair_round, line, speech, language, seconds, seed, created_at, updated_at)"
                " VALUES (?, ?, 'r', 1, 't', ?, 3, ?, 0, 'l', 'l', 'en', 5, 1, 0, 0)",
                (f"j{n}", n, n, state),
            )
    storage = await open_sqlite(path)
    store = storage.jobs
    try:
        rows = conftest.db_rows(path, "SELECT queued, in_flight FROM accounts WHERE id = 1")
        assert rows == [(2, 1)]
        assert [j.id for j in await store.waiting_jobs()] == ["j1", "j3"]
        claimed = await store.claim_next("w", platforms=["t"], lease_seconds=5, deadline_seconds=9)
        assert claimed is not None and claimed.id == "j1"
        new = await store.admit(
            user=UserRef("t", "new"), source_key="k2", line="l", image_jpeg=b"", image_size=(1, 1),
            address=DeliveryAddress("t", "c"), takes=[TAKE],
        )  # fmt: skip
        assert new.position == 2  # behind the old user's waiting take, not ahead of it
    finally:
        await storage.close()


async def test_migration_4_keeps_pending_refunds(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(";\n".join(MIGRATIONS[:3]) + ";\nPRAGMA user_version = 3;")
        db.execute("INSERT INTO accounts (id, created_at) VALUES (1, 0)")
        db.execute("INSERT INTO users VALUES (1, 't', 'u', '', NULL, 0, 1)")
        db.execute("INSERT INTO requests VALUES ('r', 'k', 1, 'l', x'00', 16, 9, ?, 0)", (
            '{"platform": "t", "chat_id": "c"}',
        ))  # fmt: skip
        for job in ("paid", "refunded"):
            db.execute(
                "INSERT INTO jobs (id, seq, request_id, user_id, account_id, platform, take,"
                " takes, state, fair_round, line, speech, language, seconds, seed, created_at,"
                " updated_at) VALUES (?, ?, 'r', 1, 1, 't', 1, 1, 'running', 0, 'l', 'l', 'en',"
                " 5, 1, 0, 0)",
                (job, 1 if job == "paid" else 2),
            )
        db.execute("INSERT INTO balances VALUES (1, 'p', 2)")
        rows = [(3, "allowance", None), (-1, "debit", "paid")]
        rows += [(-1, "debit", "refunded"), (1, "refund", "refunded")]  # refunded under v3
        for delta, reason, job in rows:
            db.execute(
                "INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)"
                " VALUES (1, 'p', ?, ?, ?, 0)",
                (delta, reason, job),
            )
    storage = await open_sqlite(path)
    try:
        await storage.jobs.transition("paid", JobState.FAILED)
        await storage.jobs.transition("refunded", JobState.FAILED)
        assert conftest.db_rows(path, "SELECT credits FROM balances") == [(3,)]
    finally:
        await storage.close()


async def test_migration_6_turns_triggers_into_code_and_refunds_once(tmp_path: Path) -> None:
    path = tmp_path / "v5.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(";\n".join(MIGRATIONS[:5]) + ";\nPRAGMA user_version = 5;")
        db.execute("INSERT INTO accounts (id, created_at) VALUES (1, 0)")
        db.execute("INSERT INTO users VALUES (1, 't', 'u', '', NULL, 0, 1)")
        db.execute("INSERT INTO requests VALUES ('r', 'k', 1, 'l', x'00', 16, 9, ?, 0, NULL)", (
            '{"platform": "t", "chat_id": "c"}',
        ))  # fmt: skip
        # Inserted under version 5: its triggers count them (1 waiting, 1 at the backend).
        for take, (job, state) in enumerate(
            [("waiting", "queued"), ("running", "running"), ("done", "done")], start=1
        ):
            db.execute(
                "INSERT INTO jobs (id, seq, request_id, user_id, account_id, platform, take,"
                " takes, state, fair_round, line, speech, language, seconds, seed, created_at,"
                " updated_at, charged, charge_period) VALUES (?, ?, 'r', 1, 1, 't', ?, 3, ?, 0,"
                " 'l', 'l', 'en', 5, 1, 0, 0, 1, 'p')",
                (job, take, take, state),
            )
            db.execute(
                "INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)"
                " VALUES (1, 'p', -1, 'debit', ?, 0)",
                (job,),
            )
        db.execute("INSERT INTO balances VALUES (1, 'p', 7)")
        db.execute(
            "INSERT INTO ledger (account_id, period, delta, reason, created_at)"
            " VALUES (1, 'p', 10, 'allowance', 0)"
        )
    storage = await open_sqlite(path)
    jobs = storage.jobs
    try:
        rows = conftest.db_rows
        assert rows(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
        assert rows(path, "SELECT queued, in_flight FROM accounts") == [(1, 1)]
        last = await jobs.last_events("r")
        assert [(e.kind.value, e.job_id, e.state) for e in last] == [
            ("imported", "waiting", JobState.QUEUED),
            ("imported", "running", JobState.RUNNING),
            ("imported", "done", JobState.DONE),
        ]
        assert await jobs.transition("running", JobState.FAILED)
        assert await jobs.transition("running", JobState.FAILED)  # a second failure record
        assert await jobs.transition("waiting", JobState.CANCELED)
        assert await jobs.transition("done", JobState.FAILED)  # after delivery: no refund
        assert rows(path, "SELECT credits FROM balances") == [(9,)]
        refunds = "SELECT job_id FROM ledger WHERE reason = 'refund' ORDER BY job_id"
        assert rows(path, refunds) == [("running",), ("waiting",)]
        assert rows(path, "SELECT sum(delta) FROM ledger") == [(9,)]
        assert rows(path, "SELECT queued, in_flight FROM accounts") == [(0, 0)]
        assert rows(path, "SELECT queued FROM scheduler") == [(0,)]
    finally:
        await storage.close()


def test_every_quota_and_access_key_is_in_both_languages() -> None:
    keys = {k for k in CATALOG["en"] if k.startswith(("quota.", "access."))}
    assert len(keys) > 15 and keys <= set(CATALOG["zh"])
    params = {"cost": 2, "credits": 1, "hours": 3, "minutes": 5, "queued": 5, "limit": 5}
    params |= {"seconds": 6, "code": "ABCD2345"}
    for key in keys:
        for locale in ("en", "zh"):
            text = render(key, locale, **params)
            assert "{" not in text, (key, locale)


def test_periods_follow_the_time_zone() -> None:
    quotas = Quotas(QuotaSettings(timezone="Asia/Shanghai"))
    # 2025-06-30 23:30 in Shanghai is 15:30 UTC.
    late = 1_751_297_400.0
    day = quotas.period(late)
    assert day.key == "2025-06-30" and day.resets_at - late == 30 * 60
    week = Quotas(QuotaSettings(period="week", timezone="UTC")).period(late)
    month = Quotas(QuotaSettings(period="month", timezone="UTC")).period(late)
    assert week.key == "2025-W27" and month.key == "2025-06"
    assert month.resets_at == 1_751_328_000.0  # 2025-07-01 00:00 UTC
    policy = AdmissionPolicy(now=late, enforce=True, costs={5: 1, 10: 2})
    assert [policy.cost(s) for s in (5, 7, 10, 15)] == [1, 2, 2, 2]


def test_admission_decision_is_pure_over_its_snapshot() -> None:
    quotas = Quotas(QuotaSettings(credits=3, max_takes_per_chat_per_day=4))
    policy = quotas.policy(UserRef("test", "u1"), T0)
    account = Account(1, "user", "none", None, None, 0, 0, 0, 0, 1)
    fresh = AdmissionSnapshot(account, total_queued=0, chat_takes=0, credits=None)
    decision = policy.decide(fresh, [5, 5])
    # The period's first request starts it with the allowance, then pays from it.
    assert (decision.open_with, decision.cost, decision.count_chat) == (3, 2, True)
    started = replace(fresh, credits=1)
    with pytest.raises(RequestRejected) as refused:
        policy.decide(started, [5, 5])
    assert refused.value.key == "quota.no_credits"
    assert policy.decide(started, [5]).open_with is None
    with pytest.raises(RequestRejected) as full:
        policy.decide(replace(fresh, chat_takes=3), [5, 5])
    assert full.value.key == "quota.chat_full"
    banned = replace(fresh, account=replace(account, banned_until=T0 + 60))
    with pytest.raises(RequestRejected) as ban:
        policy.decide(banned, [5])
    assert ban.value.key == "access.banned_until"
