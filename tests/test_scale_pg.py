"""At scale on PostgreSQL: 2 webhook ingress processes and 3 workers, one SIGKILLed.

Each process is the real ``actorbot run --role ...`` with its own data directory (as on
separate machines); they share only the PostgreSQL database. The test plays Telegram: it
POSTs every update, with the secret header, to the two webhooks in turn, and redelivers
whatever was not answered 200. The Bot API and the model server are loopback servers in
this test process, so every video sent and every job submitted is counted where it lands.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from core.models import ACTIVE_STATES, JobState
from tests.botapi_server import BotApiServer, User
from tests.conftest import photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import LINE
from tests.test_crash_recovery import cli_env, run_cli
from tests.test_telegram_durability import bot_env, start_bot
from tests.test_telegram_webhook import free_port

USERS = 50
PER_USER = 10  # 500 requests in all
SECRET = "hook-SECRET-scale"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


async def read_all(process: asyncio.subprocess.Process) -> str:
    """Read a process's output as it comes: a full pipe would block its logging."""
    assert process.stdout is not None
    return (await process.stdout.read()).decode(errors="replace")


def pid_of(owner: str) -> int:
    """Return the process id in a lease owner (host:pid:nonce)."""
    return int(owner.split(":")[-2])


async def deliver(client: aiohttp.ClientSession, url: str, update: dict[str, Any]) -> None:
    """POST one update until it is answered 200, as Telegram does."""
    body = json.dumps(update)
    for _ in range(50):
        try:
            async with client.post(url, data=body, headers=HEADERS) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"update {update['update_id']} was never accepted")


# Five processes on a machine's shared cores: on a busy one this takes minutes, not
# seconds. The waits inside fail on a lack of progress instead, which is what a hang is.
@pytest.mark.timeout(600)
async def test_two_webhook_ingresses_and_three_workers_one_killed_on_postgresql(
    tmp_path: Path, tiny_mp4: bytes, pg_dsn: str
) -> None:
    server = BotApiServer()
    await server.start()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05)
    await model.start()
    requests = USERS * PER_USER
    base = bot_env(tmp_path / "unused", server, model, [])
    base.update(
        {
            "ACTORBOT_STORE__URL": pg_dsn,
            "ACTORBOT_JOBAPI__SLOTS": "8",
            # Every request is admitted: credits for PER_USER takes of one credit each.
            "ACTORBOT_QUOTAS__CREDITS": str(PER_USER),
            "ACTORBOT_QUOTAS__TAKE_COSTS": '{"5": 1, "10": 1}',
            "ACTORBOT_QUOTAS__MAX_QUEUED_PER_USER": str(PER_USER),
            "ACTORBOT_QUOTAS__MAX_IN_FLIGHT_PER_USER": str(PER_USER),
            "ACTORBOT_QUOTAS__MAX_QUEUE": str(requests),
            "ACTORBOT_QUOTAS__FLOOD_BURST": str(PER_USER),
            "ACTORBOT_TELEGRAM__OVERALL_MAX_RATE": "0",
            # Leases long enough that a busy live worker (two cores shared by five
            # processes) renews them in time: only the dead worker's jobs change hands.
            "ACTORBOT_WORKER__LEASE_SECONDS": "10",
            "ACTORBOT_WORKER__HEARTBEAT_SECONDS": "1",
        }
    )

    def env(name: str, **extra: str) -> dict[str, str]:
        return {**base, "ACTORBOT_DATA_DIR": str(tmp_path / name), **extra}

    hooks = []
    for _ in range(2):
        port = free_port()
        hooks.append((f"http://127.0.0.1:{port}/telegram-hook", port))
    db = await asyncpg.connect(pg_dsn)
    processes: list[asyncio.subprocess.Process] = []
    try:
        ingresses = [
            await start_bot(
                env(
                    f"ingress{n}",
                    ACTORBOT_TELEGRAM__WEBHOOK_URL=url,
                    ACTORBOT_TELEGRAM__WEBHOOK_PORT=str(port),
                    ACTORBOT_TELEGRAM__WEBHOOK_SECRET=SECRET,
                ),
                "--role",
                "ingress",
            )
            for n, (url, port) in enumerate(hooks)
        ]
        workers = [await start_bot(env(f"worker{n}"), "--role", "worker") for n in range(3)]
        processes = [*ingresses, *workers]
        outputs = {process.pid: asyncio.create_task(read_all(process)) for process in processes}
        # Each ingress listens before it sets its webhook.
        await server.wait_for(
            lambda: len(server.sent("setWebhook")) == 2, timeout=60, what="both webhooks set"
        )

        photo = photo_jpeg()
        users = [User(1000 + n, f"User{n}", "en") for n in range(USERS)]
        messages = [
            server.message(user, photo=photo, caption=LINE)
            for _ in range(PER_USER)
            for user in users
        ]
        updates = [{"update_id": n, "message": m} for n, m in enumerate(messages, 1)]
        urls = itertools.cycle(url for url, _ in hooks)
        lanes = asyncio.Semaphore(16)  # Telegram keeps several connections per webhook

        async def post(client: aiohttp.ClientSession, url: str, update: dict[str, Any]) -> None:
            async with lanes:
                await deliver(client, url, update)

        async with aiohttp.ClientSession() as client:
            posting = asyncio.gather(*(post(client, next(urls), u) for u in updates))

            # Mid-run: a fifth of the videos are out and every worker holds jobs.
            async def owners() -> dict[str, tuple[str, int]]:
                rows = await db.fetch(
                    "SELECT id, state, lease_owner FROM jobs WHERE lease_owner IS NOT NULL"
                    " AND state = ANY($1::text[])",
                    [state.value for state in ACTIVE_STATES],
                )
                return {row["id"]: (row["state"], pid_of(row["lease_owner"])) for row in rows}

            await server.wait_for(
                lambda: len(server.sent("sendVideo")) >= requests // 5,
                timeout=120,
                what="a fifth of the videos delivered",
            )
            # The victim: the worker holding the most jobs, killed between deliveries if it
            # can be (a video sent but not yet recorded is sent again by the taker-over:
            # at least once across a crash, by design).
            for attempt in range(1000):
                held = await owners()
                load = collections.Counter(pid for _, pid in held.values())
                victim = max(workers, key=lambda worker: load[worker.pid])
                states = {state for state, pid in held.values() if pid == victim.pid}
                if states and (JobState.DELIVERING.value not in states or attempt >= 250):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no worker ever held a job")
            victim.kill()
            await victim.wait()
            # What it held when it died (it changes nothing any more).
            held = await owners()
            orphans = {job for job, (_, pid) in held.items() if pid == victim.pid}
            assert orphans
            sending = {job for job in orphans if held[job][0] == JobState.DELIVERING.value}
            await posting

        async def ended() -> int:
            """Return how many jobs ended (all of them: every request is one job)."""
            states = await db.fetch("SELECT state FROM jobs")
            return sum(JobState(row["state"]).is_terminal for row in states)

        # Wait while jobs keep ending; a minute without one ending is a hang.
        loop = asyncio.get_running_loop()
        progress, last = -1, loop.time()
        while (count := await ended()) < requests and loop.time() - last < 60:
            if count > progress:
                progress, last = count, loop.time()
            await asyncio.sleep(0.1)
        if count < requests:
            rows = await db.fetch(
                "SELECT state, lease_owner, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2"
            )
            raise AssertionError(f"not every job finished: {[tuple(row) for row in rows]}")
        for process in processes:
            if process is not victim:
                process.terminate()
                code = await asyncio.wait_for(process.wait(), 60)
                assert code == 0, await outputs[process.pid]

        jobs = await db.fetch(
            "SELECT jobs.id, state, lease_token, charged, error_key, error_detail,"
            " address->>'reply_to' AS reply_to"
            " FROM jobs JOIN requests ON requests.id = jobs.request_id"
        )
        assert len(jobs) == requests  # one take per request, each admitted once
        done = {job["id"] for job in jobs if job["state"] == JobState.DONE.value}
        failed = {job["id"] for job in jobs if job["id"] not in done}
        # Nothing here is a reason to fail (a crash is not: the take is taken over, and a
        # take the victim was submitting is submitted again), but a failed take would
        # have to be refunded, once.
        assert [tuple(job) for job in jobs if job["id"] in failed] == []
        assert all(job["charged"] == 0 for job in jobs if job["id"] in failed)
        refunds = await db.fetch("SELECT job_id FROM ledger WHERE reason = 'refund'")
        assert sorted(row["job_id"] for row in refunds) == sorted(failed)
        # One video per delivered request, counted at the Bot API: exactly one, except a
        # take the victim was sending when killed, which may have gone out before its
        # DONE was recorded and is then sent again (never zero times, at most twice).
        videos = collections.Counter(call.reply_to for call in server.sent("sendVideo"))
        for job in jobs:
            sent = videos.pop(int(job["reply_to"]), 0)
            if job["id"] not in done:
                assert sent == 0, job
            elif job["id"] in sending:
                assert sent in (1, 2), job
            else:
                assert sent == 1, job
        assert not videos  # no video answered anything else
        # Every balance is what its ledger says.
        balances = await db.fetch("SELECT account_id, period, credits FROM balances")
        sums = await db.fetch(
            "SELECT account_id, period, sum(delta)::int AS credits FROM ledger GROUP BY 1, 2"
        )
        assert sorted(map(tuple, balances)) == sorted(map(tuple, sums))
        assert len(balances) == USERS
        # No job was held by two live workers: only the dead worker's jobs were taken
        # over, once each (one claim, one takeover: fencing tokens 1 and 2).
        adopted = await db.fetch("SELECT job_id FROM job_events WHERE kind = 'adopted'")
        assert sorted(row["job_id"] for row in adopted) == sorted(orphans)
        tokens = {job["id"]: job["lease_token"] for job in jobs}
        assert all(tokens[job] == (2 if job in orphans else 1) for job in tokens)
        # Each job reached the model once (the model creates one job per idempotency key,
        # the job id and attempt); only a take the victim was submitting may have been
        # submitted again by its taker-over, under the same key.
        at_model = collections.Counter(key.rsplit("-", 1)[0] for key in model.submits)
        assert set(at_model.values()) == {1}
        assert done <= set(at_model)
        again = {key for key, n in collections.Counter(model.submit_requests).items() if n > 1}
        assert {key.rsplit("-", 1)[0] for key in again} <= orphans
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await db.close()
        await model.stop()
        await server.stop()


async def test_a_take_killed_between_claim_and_submit_is_submitted_again_on_postgresql(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, pg_dsn: str
) -> None:
    model = JobApiServer(video=tiny_mp4, run_seconds=0.1)
    url = await model.start()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    output = tmp_path / "out.mp4"
    env = cli_env(tmp_path / "data", url, ["worker.after_claim"])
    env["ACTORBOT_STORE__URL"] = pg_dsn
    try:
        code = await run_cli(env, "generate", str(photo), LINE, "-o", str(output))
        assert code == -signal.SIGKILL and model.submits == []
        env["ACTORBOT_DEBUG__FAILPOINTS"] = "[]"
        assert await run_cli(env, "resume") == 0
        db = await asyncpg.connect(pg_dsn)
        try:
            rows = await db.fetch("SELECT id, state, resubmitted FROM jobs")
        finally:
            await db.close()
        # The submit outcome was unknown: recorded as such, then submitted once.
        assert [(row["state"], row["resubmitted"]) for row in rows] == [("done", True)]
        assert len(model.submits) == 1 and output.exists()
    finally:
        await model.stop()
