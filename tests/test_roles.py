"""Roles: ingress and worker processes sharing one store.

The processes are the real ``actorbot run --role ...`` against the loopback Bot API and
model servers in this test process.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sqlite3
from pathlib import Path

import aiohttp

from core.models import JobState
from tests.botapi_server import BotApiServer, Failure, User
from tests.conftest import db_rows, photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, LINE, running_bot
from tests.test_telegram_durability import bot_env, finish, start_bot
from tests.test_telegram_webhook import free_port

CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot"


async def test_a_second_polling_ingress_exits_with_one_clear_line(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = BotApiServer(fail={"getUpdates": [Failure(409, CONFLICT + " instance is running")]})
    await server.start()
    model = JobApiServer(video=tiny_mp4)
    await model.start()
    try:
        env = bot_env(tmp_path / "data", server, model, [])
        code, output = await finish(await start_bot(env, "--role", "ingress"), terminate=False)
        assert code == 1, output
        said = [line for line in output.splitlines() if "already polling" in line]
        assert len(said) == 1, output
        assert said[0].startswith("Another process is already polling this Telegram bot token")
        assert "Traceback" not in output and "Conflict" not in said[0].split("(")[0]
        assert server.sent("sendMessage") == []
    finally:
        await model.stop()
        await server.stop()


async def test_a_webhook_answers_200_only_once_the_update_is_committed(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-hook"
    secret = "hook-SECRET-456"
    webhook = {"webhook_url": url, "webhook_port": port, "webhook_secret": secret}
    async with running_bot(tmp_path, video=tiny_mp4, telegram=webhook, worker=False) as h:
        await h.server.wait_for(lambda: h.server.sent("setWebhook"))
        path = h.runtime.settings.store_path
        body = json.dumps({"update_id": 7, "message": h.server.message(ANN, text="/start")})
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        # The store refuses the write (a full disk, an I/O error), at the SQLite level.
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TRIGGER refuse_inbox BEFORE INSERT ON chat_inbox"
                " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
            )
        async with aiohttp.ClientSession() as client:
            async with client.post(url, data=body, headers=headers) as response:
                assert response.status == 500  # Telegram delivers it again
            assert db_rows(path, "SELECT key FROM chat_inbox") == []
            with sqlite3.connect(path) as db:
                db.execute("DROP TRIGGER refuse_inbox")
            async with client.post(url, data=body, headers=headers) as response:
                assert response.status == 200
                # Committed before the answer: another connection sees it now.
                assert len(db_rows(path, "SELECT key FROM chat_inbox")) == 1


async def test_one_ingress_and_two_workers_one_killed_deliver_every_request_once(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = BotApiServer()
    await server.start()
    hold = asyncio.Event()  # the model keeps every job running until the kill
    model = JobApiServer(video=tiny_mp4, run_seconds=0.1, hold=hold)
    await model.start()
    data_dir = tmp_path / "data"
    env = bot_env(data_dir, server, model, [])
    env["ACTORBOT_JOBAPI__SLOTS"] = "3"
    store = data_dir / "actorbot.sqlite3"
    processes: list[asyncio.subprocess.Process] = []
    try:
        ingress = await start_bot(env, "--role", "ingress")
        workers = [await start_bot(env, "--role", "worker") for _ in range(2)]
        processes = [ingress, *workers]
        users = [User(200 + n, f"User{n}", "en") for n in range(10)]
        requests = [server.send(user, photo=photo_jpeg(), caption=LINE) for user in users * 2]

        def owners() -> dict[str, str]:
            if not store.exists():
                return {}  # (connecting would create it)
            try:
                rows = db_rows(store, "SELECT id, lease_owner FROM jobs WHERE state = 'running'")
            except sqlite3.OperationalError:
                return {}  # the processes are still creating the schema
            return {job_id: owner for job_id, owner in rows}

        def pid_of(owner: str) -> int:
            return int(owner.split(":")[-2])  # host:pid:nonce

        # Both workers are driving jobs (each up to its 3 slots), the rest wait.
        await server.wait_for(
            lambda: {pid_of(owner) for owner in owners().values()} == {w.pid for w in workers},
            timeout=30,
            what="both workers running jobs",
        )
        victim, survivor = workers
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        # Every take the victim held, whatever its step (a claimed take may still be
        # submitting): those, and only those, are taken over.
        held = db_rows(
            store,
            "SELECT id, lease_owner FROM jobs WHERE lease_owner IS NOT NULL"
            " AND state NOT IN ('queued', 'done', 'failed', 'canceled')",
        )
        orphans = {job for job, owner in held if pid_of(owner) == victim.pid}
        assert orphans
        hold.set()

        def finished() -> bool:
            states = db_rows(store, "SELECT state FROM jobs")
            return len(states) == len(requests) and all(
                JobState(state).is_terminal for (state,) in states
            )

        await server.wait_for(finished, timeout=40, what="every job finished")
        for process in (ingress, survivor):
            code, output = await finish(process, terminate=True)
            assert code == 0, output

        jobs = db_rows(store, "SELECT id, state, lease_token, charged FROM jobs")
        done = {job_id for job_id, state, _, _ in jobs if state == JobState.DONE.value}
        failed = [(job_id, charged) for job_id, state, _, charged in jobs if job_id not in done]
        # A failed take (none expected) must have been paid back.
        assert all(charged == 0 for _, charged in failed)
        # Exactly one video per delivered request, counted at the Bot API.
        videos = collections.Counter(call.reply_to for call in server.sent("sendVideo"))
        assert sum(videos.values()) == len(done)
        assert set(videos.values()) <= {1}
        assert len(videos) == len(done) and len(done) + len(failed) == len(requests)
        # No job was held by two live workers: only the dead worker's jobs were taken over,
        # once each (one claim + one takeover), and none was submitted to the model twice.
        adopted = [
            row[0] for row in db_rows(store, "SELECT job_id FROM job_events WHERE kind = 'adopted'")
        ]
        assert sorted(adopted) == sorted(orphans)
        tokens = {job_id: token for job_id, _, token, _ in jobs}
        assert all(tokens[job] == (2 if job in orphans else 1) for job in tokens)
        assert len(model.submits) == len(set(model.submits)) == len(requests)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await model.stop()
        await server.stop()
