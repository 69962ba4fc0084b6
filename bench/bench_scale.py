"""Admissions/s and claims/s across processes: SQLite, and PostgreSQL with 1, 2 and 4 workers.

Every row starts from a new database. Admissions come from ``--clients`` client processes
at once, each admitting its share of ``--admissions`` one-take requests with quotas on
(credits, caps, the chat's day). Then ``--workers`` worker processes (1 for SQLite) drain
that pre-filled queue together through the real store calls a worker makes: ``claim``
(fair order, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and ``transition`` to DONE under
the claim's lease. Figures are per second of wall time, first start to last finish.

PostgreSQL is the cluster named by ``--url`` (or ``$ACTORBOT_TEST_PG_DSN``), else a
throwaway one started with scripts/postgres.sh. On a 2-core machine the absolute figures
are modest; the ratio PostgreSQL-4-workers / PostgreSQL-1-worker says whether more worker
processes add throughput or only contention.

Usage: python bench/bench_scale.py [--admissions 2000] [--users 200] [--clients 4]
[--batch 4] [--url postgresql://...]. Prints a table; never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres_cluster, prepared_jpeg
from config.settings import QuotaSettings
from core.models import DeliveryAddress, JobState, UserRef
from core.quotas import Quotas
from core.storage import Storage
from core.storage.postgres import open_postgres
from core.storage.sqlite import open_sqlite
from core.storage.types import NewTake

TAKE = NewTake("line", "line", "en", 5, 1, None)
PLATFORM = "bench"


async def open_store(target: str) -> Storage:
    """Open a SQLite file (a path) or a PostgreSQL database (a URL)."""
    if target.startswith("postgresql://"):
        return await open_postgres(target, max_size=4)
    return await open_sqlite(Path(target))


async def admit_share(target: str, indexes: range, users: int, total: int) -> None:
    """Admit the requests numbered ``indexes``, one after another, as one client would."""
    storage = await open_store(target)
    quotas = Quotas(
        QuotaSettings(
            credits=total,
            max_queued_per_user=total,
            max_queue=total * 2,
            max_takes_per_chat_per_day=total,
        )
    )
    image = prepared_jpeg()
    try:
        for index in indexes:
            user = UserRef(PLATFORM, f"user{index % users}")
            await storage.jobs.admit(
                user=user, source_key=f"{PLATFORM}:{index}", line="line", image_jpeg=image,
                image_size=(1280, 720), address=DeliveryAddress(PLATFORM, f"chat{index % 20}"),
                takes=[TAKE], policy=quotas.policy(user, time.time()),
            )  # fmt: skip
    finally:
        await storage.close()


async def drain(target: str, owner: str, batch: int) -> int:
    """Claim and finish waiting jobs until none is left; return how many this one did."""
    storage = await open_store(target)
    done = 0
    try:
        while True:
            claimed = await storage.jobs.claim(
                owner, limit=batch, platforms=[PLATFORM], lease_seconds=60, deadline_seconds=600
            )
            if not claimed:
                waiting = await storage.jobs.count_by_state()
                if not waiting.get(JobState.QUEUED):
                    return done
                await asyncio.sleep(0.001)  # the rest is held by another worker right now
                continue
            for one in claimed:
                await storage.jobs.transition(one.job.id, JobState.DONE, lease=one.job.lease)
            done += len(claimed)
    finally:
        await storage.close()


def _admit_child(target: str, indexes: range, users: int, total: int, start: Any, out: Any) -> None:
    """One client process: wait for the start signal, admit, report (start, end, count)."""
    start.wait()
    began = time.time()
    asyncio.run(admit_share(target, indexes, users, total))
    out.put((began, time.time(), len(indexes)))


def _claim_child(target: str, owner: str, batch: int, start: Any, out: Any) -> None:
    """One worker process: wait for the start signal, drain, report (start, end, count)."""
    start.wait()
    began = time.time()
    count = asyncio.run(drain(target, owner, batch))
    out.put((began, time.time(), count))


def run_processes(child: Callable[..., None], argsets: Sequence[tuple[Any, ...]]) -> float:
    """Run one process per argument set, started together; return items per second."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    out = context.Queue()
    processes = [context.Process(target=child, args=(*a, start, out)) for a in argsets]
    for process in processes:
        process.start()
    time.sleep(2.0)  # let every process import and reach the start line
    start.set()
    results: list[tuple[float, float, int]] = [out.get() for _ in processes]
    for process in processes:
        process.join()
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    return sum(r[2] for r in results) / (ended - began)


def measure(target: str, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """Fill a new database from the client processes, then drain it with the workers."""
    total = args.admissions
    asyncio.run(_create(target))
    shares = [range(n, total, args.clients) for n in range(args.clients)]
    admits = run_processes(_admit_child, [(target, s, args.users, total) for s in shares])
    owners = [(target, f"bench:{n}:{uuid.uuid4().hex[:8]}", args.batch) for n in range(workers)]
    claims = run_processes(_claim_child, owners)
    return admits, claims


async def _create(target: str) -> None:
    """Create the schema once, before the processes race to it."""
    storage = await open_store(target)
    await storage.close()


async def new_database(cluster: str) -> str:
    """Create an empty database on the cluster and return its URL."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(cluster)._replace(path=f"/{name}"))


async def drop_database(cluster: str, url: str) -> None:
    """Drop a database made by new_database."""
    admin = await asyncpg.connect(cluster)
    try:
        await admin.execute(f'DROP DATABASE "{urlsplit(url).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()


def main(args: argparse.Namespace, cluster: str) -> None:
    """Print the table and the ratio."""
    print(
        f"admissions={args.admissions} users={args.users} client processes={args.clients}"
        f" claim batch={args.batch} cores={os.cpu_count()}"
    )
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("sqlite, 1 worker", *measure(str(Path(tmp) / "bench.sqlite3"), 1, args)))
    for workers in (1, 2, 4):
        url = asyncio.run(new_database(cluster))
        try:
            rows.append((f"postgresql, {workers} workers", *measure(url, workers, args)))
        finally:
            asyncio.run(drop_database(cluster, url))
    print(f"{'engine':26s} {'admissions/s':>13s} {'claims/s':>10s}")
    for name, admits, claims in rows:
        print(f"{name:26s} {admits:13.0f} {claims:10.0f}")
    print(f"claims/s ratio postgresql 4 workers / 1 worker: {rows[3][2] / rows[1][2]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--admissions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--url", default=os.environ.get("ACTORBOT_TEST_PG_DSN", ""))
    args = parser.parse_args()
    with postgres_cluster(args.url) as url:  # a throwaway cluster without --url
        main(args, url)
