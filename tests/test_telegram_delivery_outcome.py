"""An upload Telegram took but answered late: delivered once, never resent, never refunded."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from telegram import Bot
from telegram.error import NetworkError, TelegramError, TimedOut

from bots.chat.delivery import ChatNotifier
from bots.telegram.platform import TelegramPlatform, outcome_unknown
from core.errors import DeliveryError, DeliveryUnknown
from core.models import JobState, UserRef
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, LINE, Harness, running_bot


async def charges(h: Harness) -> list[str]:
    """Return the reasons of Ann's ledger entries, newest first."""
    accounts = h.runtime.service.accounts
    account = await accounts.account_id(UserRef("telegram", str(ANN.id)))
    assert account is not None
    return [entry.reason for entry in await accounts.history(account)]


async def test_upload_answered_after_7_s_is_sent_once_and_done(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.delay["sendVideo"] = 7.0  # longer than PTB's default read timeout (5 s)
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished(timeout=40)
        assert len(h.server.sent("sendVideo", ANN.id)) == 1
        assert job.state is JobState.DONE, job.error_detail
        assert not job.delivery_unconfirmed  # the answer came, late
        assert await charges(h) == ["debit", "allowance"]  # charged, no refund


async def test_no_answer_to_the_upload_ends_done_unconfirmed_not_resent(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.bot.platform.media_read_timeout = 0.3
        h.server.delay["sendVideo"] = 1.5
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished()
        assert (job.state, job.delivery_unconfirmed) == (JobState.DONE, True), job.error_detail
        assert job.error_key is None
        assert len(h.server.sent("sendVideo", ANN.id)) == 1
        assert len([m for m in h.server.bot_messages(ANN.id) if "video" in m]) == 1
        assert await charges(h) == ["debit", "allowance"]
        # The status message ends saying so, not as a failure.
        [status] = [m for m in h.server.bot_messages(ANN.id) if "text" in m]
        await h.server.wait_for(
            lambda: status["text"].endswith("(sent; delivery not confirmed)."), what="summary"
        )


async def test_no_answer_to_an_album_ends_done_unconfirmed_not_resent(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.bot.platform.media_read_timeout = 0.3
        h.server.delay["sendMediaGroup"] = 1.5
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE + " --takes 2")
        jobs = await h.finished(count=2)
        assert [(j.state, j.delivery_unconfirmed) for j in jobs] == [(JobState.DONE, True)] * 2
        assert len(h.server.sent("sendMediaGroup", ANN.id)) == 1
        assert h.server.sent("sendVideo") == []
        assert len(h.server.uploads) == 2  # the two takes, once
        assert await charges(h) == ["debit", "debit", "allowance"]


async def test_a_connection_refused_is_a_send_to_retry(tmp_path: Path, tiny_mp4: bytes) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the connect itself fails
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/bot"
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished()
        video = tmp_path / "take.mp4"
        video.write_bytes(tiny_mp4)
        bot = Bot(h.server.token, base_url=dead)
        platform = TelegramPlatform(bot, max_upload_bytes=h.bot.notifier.max_upload_bytes)
        notifier = ChatNotifier(platform, h.bot.board, h.runtime.storage.chats, work_dir=tmp_path)
        try:  # not initialized: getMe would fail the same way
            with pytest.raises(DeliveryError) as refused:
                await notifier.deliver(job, video)
        finally:
            await bot.request.shutdown()
        assert not isinstance(refused.value, DeliveryUnknown) and not refused.value.permanent
        assert isinstance(refused.value.__cause__, NetworkError)
        assert isinstance(refused.value.__cause__.__cause__, httpx.ConnectError)


def raised_by_ptb(cause: httpx.HTTPError) -> TelegramError:
    """Return the error PTB's HTTPXRequest raises for an httpx failure (``from`` it)."""
    try:
        if isinstance(cause, httpx.TimeoutException):
            raise TimedOut from cause
        raise NetworkError(f"httpx.{cause.__class__.__name__}: {cause}") from cause
    except TelegramError as exc:
        return exc


@pytest.mark.parametrize(
    ("cause", "unknown"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("connect"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.WriteTimeout("body not sent"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.ReadError("reset after the body"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
    ],
)
def test_only_failures_before_the_request_left_are_safe_to_send_again(
    cause: httpx.HTTPError, unknown: bool
) -> None:
    assert outcome_unknown(raised_by_ptb(cause)) is unknown


def test_an_answer_from_telegram_is_never_an_unknown_outcome() -> None:
    assert not outcome_unknown(NetworkError("Bad Gateway"))
    assert not outcome_unknown(TimedOut())
