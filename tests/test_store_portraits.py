"""The portraits store contract on both engines (``engine``): paid once, refunded once."""

from __future__ import annotations

import time

import pytest

from config.settings import QuotaSettings
from core.errors import RequestRejected
from core.models import DeliveryAddress, UserRef
from core.quotas import Quotas
from core.storage import Storage
from core.storage.types import NewPortrait, Portrait, PortraitState
from tests.conftest import Engine

USER = UserRef("telegram", "7", "Ann")
QUOTAS = Quotas(QuotaSettings(credits=5))


async def _create(storage: Storage, pid: str, cost: int = 2) -> Portrait:
    new = NewPortrait(
        pid, "Ranxia", "short hair", "prompt", "seedream-4", DeliveryAddress("telegram", "7")
    )
    now = time.time()
    return await storage.portraits.create_portrait(
        new, USER, policy=QUOTAS.policy(USER, now), cost=cost, now=now
    )


async def _ledger(engine: Engine) -> list[tuple[str, int]]:
    return await engine.rows(
        "SELECT reason, delta FROM ledger WHERE reason != 'allowance' ORDER BY id"
    )


async def test_create_debits_and_a_failure_refunds_exactly_once(engine: Engine) -> None:
    async with await engine.open() as storage:
        store = storage.portraits
        made = await _create(storage, "p1")
        assert (made.state, made.charged, made.shown) == (PortraitState.QUEUED, 2, False)
        await _create(storage, "p2")
        with pytest.raises(RequestRejected) as refused:
            await _create(storage, "p3")  # 1 credit left, 2 asked: nothing recorded
        assert refused.value.key == "quota.no_credits"
        assert await store.portrait("p3") is None

        now = time.time()
        claimed = await store.claim_portraits("w1", lease_seconds=30, now=now, limit=10)
        assert [p.id for p in claimed] == ["p1", "p2"]
        # Leased: nobody else claims them until the lease runs out.
        assert await store.claim_portraits("w2", lease_seconds=30, now=now, limit=10) == []
        assert not await store.advance_portrait(
            "p1", "w2", PortraitState.SUBMITTING, lease_seconds=30, now=now
        )
        assert await store.advance_portrait(
            "p1", "w1", PortraitState.SUBMITTING, lease_seconds=30, now=now
        )
        assert not await store.fail_portrait("p1", "w2", "portrait.failed", now)
        assert await store.fail_portrait("p1", "w1", "portrait.failed", now)
        assert not await store.fail_portrait("p1", "w1", "portrait.failed", now)
        assert await _ledger(engine) == [("portrait", -2), ("portrait", -2), ("refund", 2)]
        failed = await store.portrait("p1")
        assert failed is not None
        assert (failed.state, failed.charged, failed.error_key) == (
            PortraitState.FAILED,
            0,
            "portrait.failed",
        )
        assert await storage.accounts.peek_balance(failed.account_id, QUOTAS.period(now).key) == 3


async def test_candidates_are_picked_once_and_expire_unpicked(engine: Engine) -> None:
    async with await engine.open() as storage:
        store = storage.portraits
        first, second = await _create(storage, "p1"), await _create(storage, "p2")
        now = time.time()
        await store.claim_portraits("w1", lease_seconds=30, now=now, limit=10)
        for pid in ("p1", "p2"):
            assert await store.advance_portrait(
                pid, "w1", PortraitState.RUNNING, handle=f"h-{pid}", lease_seconds=30, now=now
            )
            assert await store.store_candidates(pid, "w1", [b"one", b"two"], now)
        ready = await store.portrait("p1")
        assert ready is not None and (ready.state, ready.handle) == (PortraitState.READY, "h-p1")
        # Not shown yet: the outcome still has to reach the user, once the lease is back.
        assert await store.claim_portraits("w2", lease_seconds=30, now=now, limit=10) == []
        await store.mark_shown("p1", "w1")
        later = now + 60
        assert [p.id for p in await store.claim_portraits(
            "w2", lease_seconds=30, now=later, limit=10
        )] == ["p2"]  # fmt: skip
        assert await store.candidates("p1") == [b"one", b"two"]

        assert await store.pick_portrait("p1", first.account_id + 1, 2, now) is None  # not theirs
        assert await store.pick_portrait("p1", first.account_id, 2, now) == b"two"
        assert await store.pick_portrait("p1", first.account_id, 1, now) is None  # once
        await store.unpick_portrait("p1", now)  # saving failed: pick again
        assert await store.pick_portrait("p1", first.account_id, 1, now) == b"one"
        await store.drop_candidates("p1")
        assert await store.candidates("p1") == []
        assert not await store.cancel_portrait("p1", first.account_id, now)

        assert await store.expire_portraits(before=now - 1, now=now) == 0
        assert await store.expire_portraits(before=later, now=later) == 1
        expired = await store.portrait(second.id)
        assert expired is not None and expired.state is PortraitState.EXPIRED
        assert await store.candidates(second.id) == []
        assert await _ledger(engine) == [("portrait", -2), ("portrait", -2)]
