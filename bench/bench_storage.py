"""Admissions/s and claims/s of each storage engine, through the storage protocols.

One process: SQLite (a file in a temp dir) and PostgreSQL (a new database on the cluster
named by ``--url``, or ``$ACTORBOT_TEST_PG_DSN``, or a throwaway cluster started with
scripts/postgres.sh). Admissions run with quotas on (credits, caps, the chat's day, fair
order) from ``--concurrency`` clients; claims take ``--batch`` jobs per claim from
``--claimers`` concurrent claimers, each claimed job then finished (DONE), as a worker
would. Several worker processes on PostgreSQL come with the roles.

Usage: python bench/bench_storage.py [--admissions 2000] [--users 200] [--concurrency 32]
[--claimers 4] [--batch 4] [--url postgresql://...]. Prints figures; never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres_cluster, prepared_jpeg
from config.settings import QuotaSettings
from core.models import DeliveryAddress, JobState, UserRef
from core.quotas import Quotas
from core.storage import Storage
from core.storage.postgres import open_postgres
from core.storage.postgres.connection import display_url
from core.storage.sqlite import open_sqlite
from core.storage.types import NewTake

TAKE = NewTake("line", "line", "en", 5, 1, None)


async def admit_all(storage: Storage, admissions: int, users: int, concurrency: int) -> float:
    """Admit ``admissions`` one-take requests; return admissions per second."""
    quotas = Quotas(
        QuotaSettings(
            credits=admissions,
            max_queued_per_user=admissions,
            max_queue=admissions * 2,
            max_takes_per_chat_per_day=admissions,
        )
    )
    image = prepared_jpeg()
    pending = iter(range(admissions))

    async def client() -> None:
        for index in pending:
            user = UserRef("bench", f"user{index % users}")
            await storage.jobs.admit(
                user=user, source_key=f"bench:{index}", line="line", image_jpeg=image,
                image_size=(1280, 720), address=DeliveryAddress("bench", f"chat{index % 20}"),
                takes=[TAKE], policy=quotas.policy(user, time.time()),
            )  # fmt: skip

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return admissions / (time.perf_counter() - started)


async def claim_all(storage: Storage, total: int, claimers: int, batch: int) -> float:
    """Claim (and finish) every waiting job; return claims per second."""
    claimed = 0

    async def claimer(name: str) -> None:
        nonlocal claimed
        while claimed < total:
            got = await storage.jobs.claim(
                name, limit=batch, platforms=["bench"], lease_seconds=60, deadline_seconds=600
            )
            if not got:  # the rest is held by other claimers right now
                await asyncio.sleep(0)
                continue
            claimed += len(got)
            for one in got:
                await storage.jobs.transition(one.job.id, JobState.DONE)

    started = time.perf_counter()
    await asyncio.gather(*(claimer(f"w{n}") for n in range(claimers)))
    return total / (time.perf_counter() - started)


async def measure(
    name: str, opener: Callable[[], Awaitable[Storage]], args: argparse.Namespace
) -> None:
    """Print one engine's figures."""
    storage = await opener()
    try:
        admits = await admit_all(storage, args.admissions, args.users, args.concurrency)
        claims = await claim_all(storage, args.admissions, args.claimers, args.batch)
    finally:
        await storage.close()
    print(f"{name:10s} {admits:8.0f} admissions/s {claims:8.0f} claims/s")


async def main(args: argparse.Namespace, cluster: str) -> None:
    """Measure SQLite, then PostgreSQL on a new database of ``cluster``."""
    print(
        f"admissions={args.admissions} users={args.users} concurrency={args.concurrency}"
        f" claimers={args.claimers} batch={args.batch} (one process)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        await measure("sqlite", lambda: open_sqlite(Path(tmp) / "bench.sqlite3"), args)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(cluster)._replace(path=f"/{name}"))
        try:
            await measure("postgresql", lambda: open_postgres(url, max_size=args.pool), args)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    print(f"postgresql at {display_url(cluster)}, pool of {args.pool} connections")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--admissions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--url", default=os.environ.get("ACTORBOT_TEST_PG_DSN", ""))
    args = parser.parse_args()
    with postgres_cluster(args.url) as url:  # a throwaway cluster without --url
        asyncio.run(main(args, url))
