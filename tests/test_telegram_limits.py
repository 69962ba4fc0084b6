"""Platform limits: 429 with retry_after, 403 from a blocked user, sizes over the limit."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from core.models import JobState
from tests.botapi_server import BotApiServer, Failure
from tests.conftest import db_rows, photo_jpeg
from tests.telegram_harness import ANN, LINE, running_bot


async def test_429_is_retried_after_retry_after(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = BotApiServer(
        fail={"sendMessage": [Failure(429, "Too Many Requests: retry after 1", 1)]}
    )
    await server.start()
    try:
        async with running_bot(tmp_path, video=tiny_mp4, server=server) as h:
            server.send(ANN, photo=photo_jpeg(), caption=LINE)
            [job] = await h.finished()
            assert job.state is JobState.DONE
            first, second = server.sent("sendMessage", ANN.id)
            assert second.at - first.at >= 1.0  # waited retry_after (+0.1 s) before retrying
            assert second.params["text"] == first.params["text"]
            assert len(server.sent("sendVideo")) == 1
    finally:
        await server.stop()


async def test_403_makes_the_job_undeliverable_without_a_retry_storm(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        await h.job_in(JobState.RUNNING)
        s.blocked_chats.add(str(ANN.id))  # the user blocks the bot while it works
        blocked_at = len(s.calls)
        [job] = await h.finished()
        assert (job.state, job.error_key) == (JobState.FAILED, "job.undeliverable")
        await asyncio.sleep(0.5)
        after = [c.method for c in s.calls[blocked_at:] if c.chat_id == str(ANN.id)]
        # One call ran into the 403; then silence: no upload retries, no status edits.
        assert len(after) <= 2, after
        assert len(s.sent("sendVideo")) <= 1


async def test_result_over_the_configured_limit_is_refused_before_upload(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4, telegram={"max_upload_bytes": 1000}) as h:
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished()
        assert (job.state, job.error_key) == (JobState.FAILED, "job.too_large_to_deliver")
        assert h.server.sent("sendVideo") == []
        [status] = [m for m in h.server.bot_messages(ANN.id) if "text" in m]
        await h.server.wait_for(lambda: "too large to send here" in status["text"])
        assert job.error_params["limit_mb"] == 0.001  # the user is told the sizes


async def test_a_413_is_permanent_and_never_retried(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = BotApiServer(max_upload_bytes=len(tiny_mp4) // 2)
    await server.start()
    try:
        async with running_bot(tmp_path, video=tiny_mp4, server=server) as h:
            server.send(ANN, photo=photo_jpeg(), caption=LINE)
            [job] = await h.finished()
            assert (job.state, job.error_key) == (JobState.FAILED, "job.too_large_to_deliver")
            await asyncio.sleep(0.3)
            assert len(server.sent("sendVideo")) == 1
    finally:
        await server.stop()


async def test_image_file_over_the_download_limit_is_refused_without_fetching(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4, telegram={"max_download_bytes": 10_000}) as h:
        h.server.send(ANN, document=photo_jpeg(), caption=LINE)  # ~30 KB as a file
        await h.server.wait_for(
            lambda: any("too large" in m.get("text", "") for m in h.server.bot_messages(ANN.id)),
            what="refusal",
        )
        assert h.server.sent("getFile") == [] and await h.jobs() == []


async def test_a_chat_that_blocked_the_bot_is_not_an_internal_error(
    tmp_path: Path, tiny_mp4: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.blocked_chats.add(str(ANN.id))  # the acknowledgement will meet a 403
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        await s.wait_for(lambda: s.sent("sendMessage", ANN.id), what="the acknowledgement")
        await s.wait_for(
            lambda: h.bot.board.is_blocked(str(ANN.id)), what="the chat remembered as blocked"
        )
        await asyncio.sleep(0.5)  # an error message or a job would show up by now
        # One call met the 403; then silence: no "Something went wrong", nothing admitted.
        assert [c.method for c in s.calls if c.chat_id == str(ANN.id)] == ["sendMessage"]
        assert await h.jobs() == []
        [(done,)] = db_rows(h.runtime.settings.store_path, "SELECT done_at FROM chat_inbox")
        assert done is not None  # answered for good: not replayed at the next start
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
