"""The operator's page on loopback: login, cookie, CSRF, grant/ban, the live queue, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from bots.adapters import configured
from bots.cli import _secrets
from bots.web import views
from bots.web.charts import nice_ceiling, stacked_bars
from bots.web.sessions import Sessions, WrongLogins, token_matches
from config.models import PresetSettings
from config.settings import ConfigError, load_settings
from core.i18n import render
from core.models import DeliveryAddress, Job, JobState, UserRef
from core.storage.types import NewTake, UsageRow
from tests.conftest import make_settings, photo_jpeg
from tests.web_harness import TOKEN, Page, client, log_in, running_page

USER = UserRef("telegram", "42", display_name="Ann")


async def _waiting_take(page: Page) -> tuple[int, str]:
    """Admit one telegram take for USER; return the account and the job."""
    admitted = await page.runtime.storage.jobs.admit(
        user=USER, source_key="tg:1", line="hi", image_jpeg=b"jpeg", image_size=(16, 9),
        address=DeliveryAddress("telegram", "42"),
        takes=[NewTake("hi", "hi", "en", 5, 1, None)],
    )  # fmt: skip
    account = await page.runtime.storage.accounts.account_of(USER)
    assert account is not None
    return account.id, admitted.jobs[0].id


async def _counts(page: Page, account_id: int) -> tuple[int, int]:
    storage = page.runtime.storage
    entries = await storage.accounts.entries(account_id, 1000)
    jobs = sum((await storage.jobs.count_by_state()).values())
    return len(entries), jobs


# --- login --------------------------------------------------------------------------------


async def test_a_wrong_token_sees_nothing(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        await _waiting_take(page)
        async with session.get(f"{page.url}/", allow_redirects=False) as reply:
            assert reply.status == 303 and reply.headers["Location"] == "/login"
        for path in ("/api/queue", "/events", "/video/0123456789abcdef", "/metrics"):
            async with session.get(f"{page.url}{path}") as reply:
                assert reply.status == 401, path
                assert "queued" not in await reply.text()
        async with session.post(f"{page.url}/login", data={"token": TOKEN[:-1] + "X"}) as reply:
            assert reply.status == 401
            text = await reply.text()
            assert "Wrong token" in text and "queue" not in text.lower()
            assert "Set-Cookie" not in reply.headers
        # A forged cookie is no session either.
        session.cookie_jar.update_cookies({"actorbot_session": "guess"})
        async with session.get(f"{page.url}/api/queue") as reply:
            assert reply.status == 401


async def test_health_is_public_on_the_page_and_metrics_need_a_login(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        async with session.get(f"{page.url}/healthz") as reply:
            assert reply.status == 200 and (await reply.json())["status"] == "ok"
        async with session.get(f"{page.url}/readyz") as reply:
            body = await reply.json()
            assert body["checks"]["store"] == "ok", body
        await log_in(session, page)
        async with session.get(f"{page.url}/metrics") as reply:
            assert reply.status == 200
            names = {family.name for family in text_string_to_metric_families(await reply.text())}
        assert "actorbot_jobs" in names


async def test_login_sets_a_strict_http_only_session_cookie(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        async with session.post(
            f"{page.url}/login", data={"token": TOKEN}, allow_redirects=False
        ) as reply:
            assert reply.status == 303
            cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith("actorbot_session=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Max-Age=43200" in cookie  # session_minutes = 720
        async with session.get(f"{page.url}/api/queue") as reply:
            assert reply.status == 200
            assert (await reply.json())["queue"] == []
        # Logging out ends the session on the server, not only in the browser.
        stolen = session.cookie_jar.filter_cookies(URL(page.url))["actorbot_session"].value
        csrf = await log_in(session, page)
        fresh = session.cookie_jar.filter_cookies(URL(page.url))["actorbot_session"].value
        assert fresh != stolen
        async with session.post(f"{page.url}/logout", data={"csrf": csrf}) as reply:
            assert reply.status == 200 and "Token" in await reply.text()
        session.cookie_jar.update_cookies({"actorbot_session": fresh})
        async with session.get(f"{page.url}/api/queue") as reply:
            assert reply.status == 401


async def test_wrong_tokens_from_one_address_make_it_wait(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        for _ in range(5):
            async with session.post(f"{page.url}/login", data={"token": "guess" * 4}) as reply:
                assert reply.status == 401
        # Locked out: even the right token is not looked at until the window has passed.
        async with session.post(f"{page.url}/login", data={"token": TOKEN}) as reply:
            assert reply.status == 429
            assert 0 < int(reply.headers["Retry-After"]) <= 60
            assert "Too many wrong tokens" in await reply.text()
            assert "Set-Cookie" not in reply.headers


def test_wrong_logins_are_forgotten_after_their_window() -> None:
    now = [1000.0]
    guard = WrongLogins(limit=2, window_seconds=60, clock=lambda: now[0])
    guard.failed("a")
    now[0] += 30
    guard.failed("a")
    assert guard.wait_seconds("a") == 30  # the first failure leaves the window in 30 s
    assert guard.wait_seconds("b") == 0  # other addresses are not held back
    now[0] += 30
    assert guard.wait_seconds("a") == 0


def test_sessions_expire() -> None:
    now = [1000.0]
    sessions = Sessions(60, clock=lambda: now[0])
    first = sessions.start()
    assert sessions.get(first) is not None
    now[0] += 61
    assert sessions.get(first) is None
    assert sessions.get(None) is None and sessions.get("") is None


def test_the_token_check() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("", "")  # no configured token: nobody gets in


# --- CSRF, grant and ban ------------------------------------------------------------------


async def test_a_post_without_its_csrf_token_changes_nothing(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        account_id, _ = await _waiting_take(page)
        csrf = await log_in(session, page)
        before = await _counts(page, account_id)
        target = {"platform": "telegram", "user": "42"}
        for given in ({}, {"csrf": "wrong"}, {"csrf": csrf[:-1]}):
            async with session.post(
                f"{page.url}/account/grant", data={**target, "credits": "5", **given}
            ) as reply:
                assert reply.status == 403
            async with session.post(f"{page.url}/account/ban", data={**target, **given}) as reply:
                assert reply.status == 403
        form = aiohttp.FormData({"line": "Hello there."})
        form.add_field("photo", photo_jpeg(), filename="me.jpg", content_type="image/jpeg")
        async with session.post(f"{page.url}/api/playground", data=form) as reply:
            assert reply.status == 403
        async with session.post(
            f"{page.url}/api/playground", data={"line": "Hi."}, headers={"X-CSRF-Token": "nope"}
        ) as reply:
            assert reply.status == 403
        assert await _counts(page, account_id) == before
        account = await page.runtime.storage.accounts.account_of(USER)
        assert account is not None and account.banned_until is None


async def test_grant_and_ban_from_the_page(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        account_id, job_id = await _waiting_take(page)
        csrf = await log_in(session, page)
        target = {"platform": "telegram", "user": "42", "csrf": csrf}
        async with session.post(
            f"{page.url}/account/grant", data={**target, "credits": "7", "note": "thanks"}
        ) as reply:
            assert reply.status == 200
            text = await reply.text()
        assert re.search(r'id="credits">27<', text)  # 20 a day (the take was free), 7 granted
        [grant, *_] = await page.runtime.storage.accounts.entries(account_id, 10)
        assert (grant.delta, grant.reason, grant.actor, grant.note) == (
            7, "grant", "web:operator", "thanks"
        )  # fmt: skip
        async with session.post(
            f"{page.url}/account/grant", data={**target, "credits": "-3"}
        ) as reply:
            assert reply.status == 400
        async with session.post(f"{page.url}/account/ban", data={**target, "reason": "spam"}) as r:
            assert r.status == 200 and 'id="banned"' in await r.text()
        account = await page.runtime.storage.accounts.account_of(USER)
        assert account is not None and account.banned_until is not None
        assert account.ban_reason == "spam"
        job = await page.runtime.storage.jobs.job(job_id)
        assert job is not None and job.state is JobState.CANCELED  # the ban cancels waiting takes
        async with session.post(f"{page.url}/account/unban", data=target) as reply:
            assert reply.status == 200 and 'id="banned"' not in await reply.text()
        account = await page.runtime.storage.accounts.account_of(USER)
        assert account is not None and account.banned_until is None
        async with session.get(f"{page.url}/?platform=discord&user=1") as reply:
            assert "never used the bot" in await reply.text()


# --- the live queue and the playground ----------------------------------------------------


async def _next_event(stream: aiohttp.StreamReader) -> tuple[str, dict[str, Any]]:
    event, data = "", ""
    while True:
        line = (await stream.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            return event, json.loads(data)


async def test_the_stream_shows_a_playground_take_in_the_queue(tmp_path: Path) -> None:
    async with running_page(tmp_path) as page, client() as session:
        csrf = await log_in(session, page)
        async with session.get(f"{page.url}/events") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            event, first = await asyncio.wait_for(_next_event(stream.content), 5)
            assert (event, first["queue"]) == ("snapshot", [])
            form = aiohttp.FormData({"line": "The girl smiles and says: hello there."})
            form.add_field("photo", photo_jpeg(), filename="me.jpg", content_type="image/jpeg")
            async with session.post(
                f"{page.url}/api/playground", data=form, headers={"X-CSRF-Token": csrf}
            ) as reply:
                assert reply.status == 200
                submitted = await reply.json()
            [job_id] = submitted["jobs"]
            assert submitted["position"] == 1

            async def queued_row() -> dict[str, Any]:
                while True:
                    event, data = await _next_event(stream.content)
                    if event == "snapshot" and data["queue"]:
                        return data["queue"][0]

            row = await asyncio.wait_for(queued_row(), 10)
        assert (row["id"], row["state"], row["position"], row["platform"]) == (
            job_id, "queued", 1, "web"
        )  # fmt: skip
        assert row["age"] >= 0
        job = await page.runtime.storage.jobs.job(job_id)
        assert job is not None and job.address.platform == "web"


async def test_playground_refusals_read_like_the_bots(tmp_path: Path) -> None:
    async with running_page(tmp_path, quotas={"credits": 1}) as page, client() as session:
        csrf = await log_in(session, page)
        headers = {"X-CSRF-Token": csrf}

        async def submit(line: str, photo: bytes) -> tuple[int, dict[str, Any]]:
            form = aiohttp.FormData({"line": line})
            form.add_field("photo", photo, filename="me.jpg", content_type="image/jpeg")
            async with session.post(
                f"{page.url}/api/playground", data=form, headers=headers
            ) as reply:
                return reply.status, await reply.json()

        status, body = await submit("x" * 500, photo_jpeg())
        assert (status, body["key"]) == (422, "prompt.too_many_chars")
        assert body["error"] == render("prompt.too_many_chars", "en", length=500, limit=400)
        status, body = await submit("Hello.", b"not an image at all")
        assert (status, body["error"]) == (422, render(body["key"], "en"))
        assert body["key"].startswith("image.")
        assert (await submit("Hello.", photo_jpeg()))[0] == 200
        status, body = await submit("Hello again.", photo_jpeg())
        assert (status, body["key"]) == (422, "quota.no_credits")
        assert body["error"].startswith("Not enough credits")
        assert sum((await page.runtime.storage.jobs.count_by_state()).values()) == 1


async def test_a_finished_take_is_kept_for_the_page_and_served_to_the_session_only(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    from tests.jobapi_server import JobApiServer

    model = JobApiServer(video=tiny_mp4, run_seconds=0.05)
    await model.start()
    try:
        async with running_page(
            tmp_path, worker=True, backend="jobapi",
            jobapi={"url": model.url, "poll_interval_seconds": 0.02},
        ) as page, client() as session:  # fmt: skip
            csrf = await log_in(session, page)
            form = aiohttp.FormData({"line": "Hello there."})
            form.add_field("photo", photo_jpeg(), filename="me.jpg", content_type="image/jpeg")
            async with session.post(
                f"{page.url}/api/playground", data=form, headers={"X-CSRF-Token": csrf}
            ) as reply:
                [job_id] = (await reply.json())["jobs"]
            job = await _finished(page, job_id)
            assert job.state is JobState.DONE and not job.delivery_unconfirmed
            async with session.get(f"{page.url}/video/{job_id}") as reply:
                assert reply.status == 200 and reply.content_type == "video/mp4"
                assert await reply.read() == tiny_mp4
            async with session.get(
                f"{page.url}/video/{job_id}", headers={"Range": "bytes=0-9"}
            ) as reply:
                assert reply.status == 206 and len(await reply.read()) == 10
            async with session.get(f"{page.url}/video/..%2Factorbot.sqlite3") as reply:
                assert reply.status == 404
            async with client() as stranger, stranger.get(f"{page.url}/video/{job_id}") as reply:
                assert reply.status == 401
            # Named after its job: retention removes it with the job's other files.
            assert (page.runtime.settings.data_dir / "web" / f"{job_id}.mp4").is_file()
    finally:
        await model.stop()


async def _finished(page: Page, job_id: str) -> Job:
    async def poll() -> Job:
        while True:
            job = await page.runtime.storage.jobs.job(job_id)
            assert job is not None
            if job.state.is_terminal:
                return job
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 20)


# --- settings, adapters, the command ------------------------------------------------------


def test_the_page_needs_a_token_when_enabled(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.token: required when web\.enabled") as caught:
        load_settings(data_dir=tmp_path, web={"enabled": True})
    with pytest.raises(ConfigError, match=r"web\.token: at least 16 characters"):
        load_settings(data_dir=tmp_path, web={"enabled": True, "token": "short-secret"})
    assert "short-secret" not in str(caught.value)
    # A token alone turns nothing on.
    assert configured(load_settings(data_dir=tmp_path, web={"token": TOKEN})) == []
    enabled = load_settings(data_dir=tmp_path, web={"enabled": True, "token": TOKEN})
    assert [adapter.name for adapter in configured(enabled)] == ["web"]
    assert TOKEN in _secrets(enabled)  # blanked in every log line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_with_only_the_page_serves_it_and_the_workers(tmp_path: Path) -> None:
    """``actorbot run`` with no chat token: the page answers and playground takes finish."""
    port = _free_port()
    env = {
        **os.environ,
        "ACTORBOT_DATA_DIR": str(tmp_path / "data"),
        "ACTORBOT_WEB__ENABLED": "true",
        "ACTORBOT_WEB__TOKEN": TOKEN,
        "ACTORBOT_WEB__PORT": str(port),
        "ACTORBOT_PREVIEW__FPS": "4",
        "ACTORBOT_LOG_LEVEL": "DEBUG",
    }
    env.pop("ACTORBOT_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "run"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        asyncio.run(_use_the_page(f"http://127.0.0.1:{port}", process))
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "running adapters (all): web" in output
    assert TOKEN not in output


async def _use_the_page(url: str, process: subprocess.Popen[str]) -> None:
    async with client() as session:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "actorbot run exited"
            try:
                async with session.post(f"{url}/login", data={"token": TOKEN}) as reply:
                    text = await reply.text()
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the page never answered"
                await asyncio.sleep(0.2)
        csrf = re.search(r'<meta name="csrf" content="([^"]+)">', text)
        assert csrf is not None
        form = aiohttp.FormData({"line": "Hi.", "seconds": "5"})
        form.add_field("photo", photo_jpeg(), filename="me.jpg", content_type="image/jpeg")
        async with session.post(
            f"{url}/api/playground", data=form, headers={"X-CSRF-Token": csrf[1]}
        ) as reply:
            [job_id] = (await reply.json())["jobs"]
        while True:  # the worker of the same process renders it and the page keeps it
            async with session.get(f"{url}/video/{job_id}") as reply:
                if reply.status == 200:
                    assert (await reply.read())[4:8] == b"ftyp"
                    return
            assert time.monotonic() < deadline + 60, "the take never finished"
            await asyncio.sleep(0.3)


# --- what the page computes ---------------------------------------------------------------


def _job(job_id: str, state: JobState, created_at: float, backend: str | None = None) -> Job:
    return Job(
        id=job_id, request_id="r", user_id=1, take=1, takes=1, state=state, line="l",
        speech="l", language="en", seconds=5, seed=1, voice=None,
        address=DeliveryAddress("web", "operator"), attempts=0, handle=None,
        created_at=created_at, updated_at=created_at, started_at=None, finished_at=None,
        error_key="job.timeout", error_params={}, error_detail="deadline", result_path=None,
        resubmitted=False, not_before=0, deadline_at=None, backend=backend,
    )  # fmt: skip


def test_queue_rows_number_the_waiting_takes_and_list_the_active_ones() -> None:
    rows = views.queue_rows(
        [_job("a", JobState.QUEUED, 90), _job("b", JobState.QUEUED, 95)],
        [_job("c", JobState.RUNNING, 50, "fal-kling")],
        now=100,
    )
    assert [(r["id"], r["position"], r["age"], r["backend"]) for r in rows] == [
        ("a", 1, 10, ""), ("b", 2, 5, ""), ("c", None, 50, "fal-kling")
    ]  # fmt: skip
    [failure] = views.failures([_job("d", JobState.FAILED, 1)])
    assert failure.reason == render("job.timeout", "en") and failure.detail == "deadline"


def test_slots_list_configured_backends_and_any_other_the_store_names() -> None:
    rows = views.slot_rows({"preview": 1, "old-preset": 2}, {"preview": 1, "jobapi": 4})
    assert [(r.backend, r.in_use, r.capacity) for r in rows] == [
        ("preview", 1, 1), ("jobapi", 0, 4), ("old-preset", 2, None)
    ]  # fmt: skip


def test_usage_and_spend_per_day() -> None:
    rows = [
        UsageRow(100, "telegram", JobState.DONE, "kling", 5, 3),
        UsageRow(100, "discord", JobState.FAILED, "kling", 10, 1),
        UsageRow(101, "telegram", JobState.DONE, "kling", 10, 2),
        UsageRow(101, "web", JobState.QUEUED, None, 5, 1),
        UsageRow(99, "web", JobState.DONE, "kling", 5, 9),  # before the window
    ]
    assert views.usage_series(rows, "platform", 100, 2) == {
        "discord": [1, 0], "telegram": [3, 2], "web": [0, 1]
    }  # fmt: skip
    assert views.usage_series(rows, "outcome", 100, 2) == {
        "done": [3, 2], "failed": [1, 0], "in progress": [0, 1]
    }  # fmt: skip
    assert views.usage_series(rows, "preset", 100, 2) == {
        "kling": [4, 2], "not started": [0, 1]
    }  # fmt: skip
    kling = PresetSettings(
        provider="fal", model="m", durations={5: 5, 10: 10}, price_per_second=0.1
    )
    spend = views.spend_series(rows, {"kling": kling}, 100, 2)
    assert spend.keys() == {"kling"}
    assert spend["kling"] == pytest.approx([1.5, 2.0])  # delivered takes only
    assert views.day_labels(0, 2) == ["1970-01-01", "1970-01-02"]


def test_charts_are_inline_svg_with_escaped_labels() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 12, 250)] == [1, 0.5, 1, 10, 20, 500]
    svg = str(stacked_bars(["2024-01-01"], {"<b>x</b>": [3.0]}, title="t & u"))
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "t &amp; u" in svg and 'height="' in svg
    money = str(stacked_bars(["2024-01-01"], {"kling": [0.7]}, title="spend", currency="$"))
    assert ">$1</text>" in money and "kling: $0.70<" in money


def test_the_operators_page_settings_have_defaults(tmp_path: Path) -> None:
    web = make_settings(tmp_path).web
    assert (web.enabled, web.listen, web.port) == (False, "127.0.0.1", 8080)
