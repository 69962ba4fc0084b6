"""Durability: duplicates, a restart mid-job, and SIGKILL around the intake of an update.

The kill tests run the real ``actorbot run`` as a subprocess against the emulator in this
test process, with a failpoint that kills it at an exact step (see core/failpoints.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from core.models import JobState
from tests.botapi_server import BotApiServer
from tests.conftest import db_rows, photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, LINE, running_bot

REPO = Path(__file__).resolve().parents[1]


async def test_redelivered_update_is_not_a_second_job(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = BotApiServer(duplicate_deliveries=1)
    await server.start()
    try:
        async with running_bot(tmp_path, video=tiny_mp4, server=server) as h:
            message = server.send(ANN, photo=photo_jpeg(), caption=LINE)
            await h.finished(1)
            # The same message once more, in an update of its own (a client resend).
            server.push({"message": message})
            await server.wait_for(lambda: not server._again and not server.pending_updates)
            await asyncio.sleep(0.3)
            assert len(await h.jobs()) == 1
            assert len(server.sent("sendMessage", ANN.id)) == 1  # one acknowledgement
            assert len(server.sent("sendVideo", ANN.id)) == 1
    finally:
        await server.stop()


async def test_restart_mid_job_keeps_editing_the_same_status(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = BotApiServer()
    await server.start()
    hold = asyncio.Event()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05, hold=hold)
    await model.start()
    try:
        async with running_bot(tmp_path, server=server, model=model) as h:
            request = server.send(ANN, photo=photo_jpeg(), caption=LINE)
            running = await h.job_in(JobState.RUNNING)
            status_id = running.address.status_message_id
            assert status_id is not None
        # A new process: same store, same chat; the job is picked up where it was.
        async with running_bot(tmp_path, server=server, model=model) as h:
            hold.set()
            [job] = await h.finished()
            assert job.state is JobState.DONE and len(model.submits) == 1
            [video] = server.sent("sendVideo")
            assert (video.chat_id, video.reply_to) == (str(ANN.id), request["message_id"])
            status = server.messages[(str(ANN.id), int(status_id))]
            await server.wait_for(lambda: status["text"].startswith("Done"), what="summary")
            assert len(server.sent("sendMessage", ANN.id)) == 1  # no second status message
    finally:
        await model.stop()
        await server.stop()


def bot_env(
    data_dir: Path, server: BotApiServer, model: JobApiServer, failpoints: list[str]
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACTORBOT_")}
    env.update(
        {
            "ACTORBOT_DATA_DIR": str(data_dir),
            "ACTORBOT_BACKEND": "jobapi",
            "ACTORBOT_JOBAPI__URL": model.url,
            "ACTORBOT_JOBAPI__POLL_INTERVAL_SECONDS": "0.05",
            "ACTORBOT_TELEGRAM__TOKEN": server.token,
            "ACTORBOT_TELEGRAM__BASE_URL": server.base_url,
            "ACTORBOT_TELEGRAM__BASE_FILE_URL": server.base_file_url,
            "ACTORBOT_TELEGRAM__POLL_TIMEOUT_SECONDS": "5",
            "ACTORBOT_TELEGRAM__PRIVATE_EDIT_INTERVAL_SECONDS": "0.05",
            "ACTORBOT_WORKER__LEASE_SECONDS": "1",
            "ACTORBOT_WORKER__HEARTBEAT_SECONDS": "0.2",
            "ACTORBOT_WORKER__STATUS_INTERVAL_SECONDS": "0.1",
            "ACTORBOT_DEBUG__FAILPOINTS": json.dumps(failpoints),
            "ACTORBOT_CONFIG": "",
        }
    )
    return env


async def start_bot(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "run", *args,
        cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, *, terminate: bool) -> tuple[int, str]:
    if terminate:
        process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def jobs_in(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        return db.execute("SELECT id, state FROM jobs ORDER BY seq").fetchall()


@pytest.mark.parametrize(
    ("failpoint", "confirmed"),
    [
        ("telegram.after_fetch", False),  # fetched, not stored: Telegram still has it
        ("telegram.after_store", False),  # stored and redelivered: handled once
        ("telegram.after_store", True),  # stored, confirmed, never handled: replayed
    ],
)
async def test_killed_around_intake_the_request_is_not_lost(
    tmp_path: Path, tiny_mp4: bytes, failpoint: str, confirmed: bool
) -> None:
    server = BotApiServer()
    await server.start()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05)
    await model.start()
    data_dir = tmp_path / "data"
    try:
        request = server.send(ANN, photo=photo_jpeg(), caption=LINE)
        process = await start_bot(bot_env(data_dir, server, model, [failpoint]))
        code, output = await finish(process, terminate=False)
        assert code == -signal.SIGKILL, output
        assert server.confirmed <= 1000  # the update was not confirmed before the kill
        assert server.sent("sendMessage") == []
        if confirmed:
            # Telegram may have the offset already (a kill after the next poll began):
            # then only the inbox has the request.
            server.forget_until(10**6)
        process = await start_bot(bot_env(data_dir, server, model, []))
        try:
            await server.wait_for(
                lambda: server.sent("sendVideo") and jobs_in(data_dir)[0][1] == "done",
                timeout=30,
                what="video delivered",
            )
        finally:
            code, output = await finish(process, terminate=True)
        assert code == 0, output
        assert [state for _, state in jobs_in(data_dir)] == [JobState.DONE.value]
        [video] = server.sent("sendVideo")
        assert video.reply_to == request["message_id"]
        assert len(server.sent("sendMessage", ANN.id)) == 1
        assert server.pending_updates == 0  # confirmed once stored
    finally:
        await model.stop()
        await server.stop()


async def test_a_wrong_token_stops_start_up_with_a_clear_message(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = BotApiServer()
    await server.start()
    model = JobApiServer(video=tiny_mp4)
    await model.start()
    try:
        env = bot_env(tmp_path / "data", server, model, [])
        env["ACTORBOT_TELEGRAM__TOKEN"] = "4242:a-wrong-token-value"
        env["ACTORBOT_LOG_LEVEL"] = "DEBUG"
        code, output = await finish(await start_bot(env), terminate=False)
        assert code == 1
        assert "Telegram refused the bot token" in output
        assert "a-wrong-token-value" not in output
    finally:
        await model.stop()
        await server.stop()


async def test_a_failed_write_leaves_the_update_to_be_handled_again(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        path = h.runtime.settings.store_path
        # The store refuses the request (as a full disk or an I/O error would), at the
        # SQLite level, until the trigger is dropped.
        with sqlite3.connect(tmp_path / "data" / "actorbot.sqlite3") as db:
            db.execute(
                "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs"
                " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
            )
        s.send(ANN, photo=photo_jpeg(), caption=LINE)

        async def settled() -> tuple[int, float | None]:
            while True:
                rows = db_rows(path, "SELECT attempts, done_at FROM chat_inbox")
                if rows and (rows[0][0] or rows[0][1] is not None):
                    return int(rows[0][0]), rows[0][1]
                await asyncio.sleep(0.02)

        attempts, done = await asyncio.wait_for(settled(), 10)
        assert (attempts, done) == (1, None)  # failed once, still open
        with sqlite3.connect(tmp_path / "data" / "actorbot.sqlite3") as db:
            db.execute("DROP TRIGGER refuse_jobs")
        [job] = await h.finished(timeout=15)
        assert job.state is JobState.DONE
        [(done,)] = db_rows(path, "SELECT done_at FROM chat_inbox")
        assert done is not None
        # One acknowledgement, kept across the retry; no "Something went wrong".
        [ack] = s.sent("sendMessage", ANN.id)
        assert ack.params["text"].startswith("Got it")
