"""The operator's view: /metrics, /healthz and /readyz, and structured JSON logs.

Metrics are read the way Prometheus reads them: scraped over HTTP from a running process
and parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bots.ops import OpsServer, ops_routes
from bots.runtime import Runtime, open_runtime
from config.settings import Settings
from core.errors import RequestRejected
from core.models import DeliveryAddress, JobState, UserRef, VideoRequest
from tests.botapi_server import BotApiServer, Failure
from tests.conftest import db_rows, make_settings, photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.providers_server import ProviderServer
from tests.telegram_harness import ANN, LINE, running_bot
from tests.test_providers_worker import Recorder
from tests.test_telegram_durability import bot_env, finish, start_bot
from tests.test_telegram_webhook import free_port

PRESET = "kling-2.6-pro"  # fal; price_per_second = 0.14, makes the length asked for


@dataclass
class Scrape:
    """One scrape of /metrics, parsed."""

    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """Return the sample's value (0 if the series does not exist yet)."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        return 0.0

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}

    def label_names(self) -> set[str]:
        return {name for sample in self.samples for name in sample.labels}


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.text()


async def scrape(base: str) -> Scrape:
    status, text = await get(f"{base}/metrics")
    assert status == 200, text
    families = text_string_to_metric_families(text)
    return Scrape([sample for family in families for sample in family.samples])


async def ready(base: str) -> tuple[int, dict[str, Any]]:
    status, text = await get(f"{base}/readyz")
    return status, json.loads(text)


# --- a real `actorbot run` -----------------------------------------------------------


async def test_actorbot_run_counts_a_real_job_in_metrics_and_logs_it_as_json(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = BotApiServer()
    await server.start()
    provider = ProviderServer(video=tiny_mp4)
    await provider.start()
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = bot_env(data_dir, server, JobApiServer(video=tiny_mp4), [])
    env.update(
        {
            "ACTORBOT_BACKEND": PRESET,
            "ACTORBOT_PROVIDERS": json.dumps(provider.provider_settings()),
            "ACTORBOT_TAKECHECK__ENABLED": "false",  # the test clip is not a performance
            "ACTORBOT_METRICS__ENABLED": "true",
            "ACTORBOT_METRICS__PORT": str(port),
            "ACTORBOT_LOG_FORMAT": "json",
        }
    )
    process = await start_bot(env)
    try:
        await _until_answers(f"{base}/healthz")
        server.send(ANN, photo=photo_jpeg(), caption=LINE)
        await server.wait_for(lambda: server.sent("sendVideo"), timeout=30)
        path = data_dir / "actorbot.sqlite3"
        await _until(lambda: db_rows(path, "SELECT state FROM jobs") == [("done",)])
        [(job_id, seconds)] = db_rows(path, "SELECT id, seconds FROM jobs")
        [(debited,)] = db_rows(path, "SELECT -sum(delta) FROM ledger WHERE reason = 'debit'")

        metrics = await scrape(base)
        assert metrics.value("actorbot_credits_debited_total", platform="telegram") == debited
        assert debited == {5: 1, 10: 2}[seconds]  # quotas.take_costs
        assert metrics.value("actorbot_credits_refunded_total") == 0
        done = {"outcome": "done", "reason": "delivered"}
        assert metrics.value("actorbot_jobs_finished_total", **done) == 1
        assert metrics.value("actorbot_jobs", state="done") == 1
        assert metrics.value("actorbot_jobs", state="queued") == 0
        assert metrics.value("actorbot_job_wait_seconds_count", backend=PRESET) == 1
        assert metrics.value("actorbot_job_run_seconds_count", backend=PRESET) == 1
        submits = {"provider": "fal", "method": "POST"}
        assert metrics.value("actorbot_provider_request_duration_seconds_count", **submits) >= 1
        polls = {"provider": "fal", "method": "GET"}
        assert metrics.value("actorbot_provider_request_duration_seconds_count", **polls) >= 1
        assert metrics.value("actorbot_video_seconds_total", preset=PRESET) == seconds
        spend = metrics.value("actorbot_estimated_spend_usd_total", preset=PRESET)
        assert abs(spend - 0.14 * seconds) < 1e-9
        # No series is about one user: neither a label named so nor Ann's id as a value.
        assert not any("user" in name for name in metrics.label_names())
        assert str(ANN.id) not in metrics.label_values()

        status, body = await ready(base)
        assert status == 200, body
        assert body["checks"] == {
            f"backend:{PRESET}": "ok",
            "adapter:telegram": "ok",
            "store": "ok",
        }
    finally:
        code, output = await finish(process, terminate=True)
        await provider.stop()
        await server.stop()
    assert code == 0, output
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    worker_lines = [
        r for r in records if r.get("job_id") == job_id and r["logger"] == "core.finishing"
    ]
    assert worker_lines, output
    [line] = worker_lines
    assert line["platform"] == "telegram" and line["backend"] == "fal"
    assert line["preset"] == PRESET and line["attempt"] == 1
    assert server.token not in output


async def _until_answers(url: str) -> None:
    for _ in range(300):
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await get(url)
            if status == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def _until(condition: Any, timeout: float = 30) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), timeout)


# --- the runtime pieces ------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings, notifier: Recorder) -> AsyncIterator[tuple[Runtime, str]]:
    """Open the runtime and serve its operator routes on a free port."""
    async with open_runtime(settings, {"tester": notifier}) as runtime:
        ops = OpsServer(settings.metrics, ops_routes(runtime))
        await ops.start()
        try:
            yield runtime, f"http://127.0.0.1:{ops.port}"
        finally:
            await ops.stop()


def request(key: str, user: str = "u-1") -> VideoRequest:
    return VideoRequest(
        user=UserRef("tester", user), image=photo_jpeg(), line=LINE,
        address=DeliveryAddress("tester", "chat-1"), source_key=key,
    )  # fmt: skip


async def test_readyz_names_the_store_when_it_cannot_take_writes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, metrics={"enabled": True, "port": 0})
    async with serving(settings, Recorder()) as (runtime, base):
        assert await get(f"{base}/healthz") == (200, '{"status": "ok"}')
        status, body = await ready(base)
        assert status == 200, body
        assert body == {
            "status": "ready",
            "failing": [],
            "checks": {"backend:preview": "ok", "store": "ok"},
        }
        # The file refuses writes (as a full disk or a read-only mount would).
        with contextlib.closing(sqlite3.connect(settings.store_path)) as db, db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON scheduler"
                " BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END"
            )
        status, body = await ready(base)
        assert status == 503 and body["status"] == "not ready"
        assert body["failing"] == ["store"] and body["checks"]["backend:preview"] == "ok"
        with contextlib.closing(sqlite3.connect(settings.store_path)) as db, db:
            db.execute("DROP TRIGGER refuse")
        assert (await ready(base))[0] == 200
        await runtime.storage.close()
        status, body = await ready(base)
        assert status == 503 and body["failing"] == ["store"]
        assert str(settings.store_path) not in json.dumps(body)
        # The loop still answers: alive, not ready.
        assert (await get(f"{base}/healthz"))[0] == 200


async def test_a_failed_charged_take_is_counted_with_its_refund(tmp_path: Path) -> None:
    # A backend that cannot be reached fails the take for good: a refund, one outcome.
    settings = make_settings(
        tmp_path,
        backend="jobapi",
        jobapi={"url": f"http://127.0.0.1:{free_port()}", "request_timeout_seconds": 0.5},
        worker={"max_attempts": 1, "job_deadline_seconds": 1},
        metrics={"enabled": True, "port": 0},
    )
    async with serving(settings, Recorder()) as (runtime, base):
        before = await scrape(base)
        status, body = await ready(base)
        assert status == 503 and body["failing"] == ["backend:jobapi"]
        admission = await runtime.service.submit(request("k-1"))
        await runtime.worker.run_until_idle()
        [job] = await runtime.storage.jobs.jobs_by_ids([j.id for j in admission.jobs])
        assert job.state is JobState.FAILED and job.error_key
        after = await scrape(base)
    refunded = after.value("actorbot_credits_refunded_total") - before.value(
        "actorbot_credits_refunded_total"
    )
    path = settings.store_path
    [(paid_back,)] = db_rows(path, "SELECT sum(delta) FROM ledger WHERE reason = 'refund'")
    [(charged,)] = db_rows(path, "SELECT -sum(delta) FROM ledger WHERE reason = 'debit'")
    assert refunded == paid_back == charged > 0
    failed = {"outcome": "failed", "reason": job.error_key}
    assert (
        after.value("actorbot_jobs_finished_total", **failed)
        - before.value("actorbot_jobs_finished_total", **failed)
        == 1
    )
    assert after.value("actorbot_jobs", state="failed") == 1


async def test_every_process_on_postgresql_reports_the_same_queue(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Two runtimes on one database stand for two processes; no worker runs, so the
    # takes stay queued.
    first = make_settings(tmp_path / "a", store={"url": pg_dsn}, metrics={"port": 0})
    second = make_settings(tmp_path / "b", store={"url": pg_dsn}, metrics={"port": 0})
    async with (
        serving(first, Recorder()) as (runtime, base_a),
        serving(second, Recorder()) as (_, base_b),
    ):
        for n in range(3):
            await runtime.service.submit(request(f"k-{n}", user=f"u-{n}"))
        counts = await runtime.storage.jobs.count_by_state()
        assert counts[JobState.QUEUED] == 3
        for base in (base_a, base_b):
            metrics = await scrape(base)
            for state in JobState:
                assert metrics.value("actorbot_jobs", state=state.value) == counts.get(state, 0)
            assert (await ready(base))[0] == 200  # the write probe works on PostgreSQL too


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_platform_api_errors_are_counted_by_platform_and_code(tmp_path: Path) -> None:
    blocked = Failure(403, "Forbidden: bot was blocked by the user")
    server = BotApiServer(fail={"sendMessage": [blocked]})
    await server.start()
    labels = {"platform": "telegram", "code": "Forbidden"}
    before = counted("actorbot_platform_api_errors_total", **labels)
    try:
        async with running_bot(tmp_path, server=server, worker=False):
            server.send(ANN, text="/start")
            await _until(lambda: counted("actorbot_platform_api_errors_total", **labels) > before)
    finally:
        await server.stop()
    assert counted("actorbot_platform_api_errors_total", **labels) == before + 1


async def test_flood_refusals_are_counted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, quotas={"flood_burst": 2})
    async with serving(settings, Recorder()) as (runtime, base):
        before = await scrape(base)
        user = UserRef("tester", "u-9")
        for n in range(2):
            await runtime.service.check(user, LINE, f"k-{n}")
        with pytest.raises(RequestRejected) as refused:
            await runtime.service.check(user, LINE, "k-3")
        assert refused.value.key == "quota.flood"
        after = await scrape(base)
    name = "actorbot_flood_refusals_total"
    assert after.value(name, platform="tester") - before.value(name, platform="tester") == 1
