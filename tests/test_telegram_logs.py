"""No bot token in the logs, even at DEBUG, through a whole request."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pythonjsonlogger.json import JsonFormatter

from bots.logs import RedactingFormatter, RedactingJsonFormatter, configure_logging
from core.models import JobState
from tests.botapi_server import BotApiServer
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, LINE, running_bot


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)


async def test_a_whole_flow_at_debug_never_logs_the_token(
    tmp_path: Path, tiny_mp4: bytes, restore_logging: None
) -> None:
    server = BotApiServer()
    await server.start()
    try:
        configure_logging("DEBUG", secrets=[server.token])
        root = logging.getLogger()
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        redacted = io.StringIO()
        handler.setStream(redacted)
        # The same records without redaction, to show the test would catch a leak.
        raw = io.StringIO()
        unredacted = logging.StreamHandler(raw)
        unredacted.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(unredacted)
        async with running_bot(tmp_path, video=tiny_mp4, server=server) as h:
            server.send(ANN, photo=photo_jpeg(), caption=LINE)
            [job] = await h.finished()
            assert job.state is JobState.DONE
        root.removeHandler(unredacted)
        assert server.token in raw.getvalue()  # PTB and httpx do log it
        output = redacted.getvalue()
        assert "[REDACTED]" in output and "getUpdates" in output
        assert server.token not in output
        leaks = [line for line in output.splitlines() if server.token.split(":")[1] in line]
        assert not leaks, "\n".join(leaks)
    finally:
        await server.stop()


def test_formatter_redacts_encoded_forms_exceptions_and_arguments() -> None:
    formatter = RedactingFormatter("%(message)s", ["123456:ABCDEF"])
    try:
        raise RuntimeError("GET http://api/file/bot123456%3AABCDEF/photo.jpg failed")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "calling %s", ("123456:ABCDEF",), sys.exc_info()
        )
    text = formatter.format(record)
    assert "ABCDEF" not in text and text.count("[REDACTED]") >= 2


async def test_json_logs_at_debug_carry_the_job_and_never_the_token(
    tmp_path: Path, tiny_mp4: bytes, restore_logging: None
) -> None:
    server = BotApiServer()
    await server.start()
    try:
        configure_logging("DEBUG", secrets=[server.token], log_format="json")
        [handler] = logging.getLogger().handlers
        assert isinstance(handler, logging.StreamHandler)
        output = io.StringIO()
        handler.setStream(output)
        async with running_bot(tmp_path, video=tiny_mp4, server=server) as h:
            server.send(ANN, photo=photo_jpeg(), caption=LINE)
            [job] = await h.finished()
            assert job.state is JobState.DONE
        records = [json.loads(line) for line in output.getvalue().splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
        # Lines logged while the worker handled the job name it, whoever logged them.
        mine = [r for r in records if r.get("job_id") == job.id]
        assert {"core.finishing", "httpx"} <= {r["logger"] for r in mine}
        assert all(r["platform"] == "telegram" and r["backend"] == "jobapi" for r in mine)
        assert not any("job_id" in r for r in records if r["logger"] == "telegram.ext.Updater")
        assert "[REDACTED]" in output.getvalue()
        assert server.token not in output.getvalue()
        assert server.token.split(":")[1] not in output.getvalue()
    finally:
        await server.stop()


def test_json_formatter_redacts_messages_exceptions_and_extra_fields() -> None:
    secret = "123456:ABCDEF"
    try:
        raise RuntimeError(f"GET http://api/file/bot{secret.replace(':', '%3A')}/photo.jpg failed")
    except RuntimeError:
        record = logging.LogRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "calling %s with %s",
            (secret, {"token": "tok-12345678"}),
            sys.exc_info(),
        )
    record.url = f"https://api.telegram.org/bot{secret}/getMe"
    plain = JsonFormatter().format(record)
    assert "ABCDEF" in plain and "tok-12345678" in plain  # what the redaction must catch
    line = RedactingJsonFormatter([secret]).format(record)
    data = json.loads(line)
    assert "ABCDEF" not in line and "tok-12345678" not in line
    assert data["message"] == "calling [REDACTED] with {'token': '[REDACTED]'}"
    assert "[REDACTED]" in data["exc_info"] and "[REDACTED]" in data["url"]
