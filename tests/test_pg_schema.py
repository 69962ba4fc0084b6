"""The PostgreSQL schema: migrations from empty and from the previous version, under a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import asyncpg
import pytest

from core.storage.postgres.schema import MIGRATIONS, SchemaTooNew, migrate, schema_version
from core.storage.sqlite.database import migrate as migrate_sqlite

# SQLite leftovers the PostgreSQL schema leaves out on purpose (see its module docstring).
SQLITE_ONLY = {("scheduler", "*"), ("jobs", "fair_round"), ("sqlite_sequence", "*")}
# Columns only PostgreSQL has: inbox order without rowid.
POSTGRES_ONLY = {("chat_inbox", "arrival")}


async def _columns(conn: asyncpg.Connection[asyncpg.Record]) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public'"
    )
    return {(row["table_name"], row["column_name"]) for row in rows}


async def test_a_fresh_database_gets_every_table_and_column_sqlite_has(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn) == len(MIGRATIONS)
        postgres = await _columns(conn)
    finally:
        await conn.close()
    lite = sqlite3.connect(":memory:")
    migrate_sqlite(lite)
    tables = [row[0] for row in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    sqlite = {
        (table, row[1])
        for table in tables
        for row in lite.execute(f"PRAGMA table_info({table})")
        if (table, "*") not in SQLITE_ONLY and (table, row[1]) not in SQLITE_ONLY
    }
    assert sqlite - postgres == set()
    extra = postgres - sqlite - POSTGRES_ONLY
    assert {table for table, _ in extra} == {"job_events", "schema_migrations"}


async def test_migrating_again_changes_nothing_and_a_newer_schema_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn) == len(MIGRATIONS)
        assert await migrate(conn) == len(MIGRATIONS)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
        with pytest.raises(SchemaTooNew, match="newer than this"):
            await migrate(conn, MIGRATIONS[:-1])
    finally:
        await conn.close()


async def test_an_older_database_gets_only_the_steps_it_lacks(pg_dsn: str) -> None:
    step = "CREATE TABLE later_step (id integer PRIMARY KEY); INSERT INTO later_step VALUES (1)"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn)  # the previous version: what is shipped
        await conn.execute("INSERT INTO accounts (created_at) VALUES (1.0)")
        assert await migrate(conn, (*MIGRATIONS, step)) == len(MIGRATIONS) + 1
        assert await schema_version(conn) == len(MIGRATIONS) + 1
        assert await conn.fetchval("SELECT count(*) FROM later_step") == 1
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 1  # data kept
    finally:
        await conn.close()


async def test_a_failing_step_leaves_the_previous_version_whole(pg_dsn: str) -> None:
    broken = "CREATE TABLE half_done (id integer); SELECT no_such_function()"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn)
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, (*MIGRATIONS, broken))
        assert await schema_version(conn) == len(MIGRATIONS)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()


# Connect, say "ready", wait for "go" on stdin, migrate, print the version.
_MIGRATOR = """
import asyncio, sys
import asyncpg
from core.storage.postgres.schema import migrate

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    print(await migrate(conn), flush=True)
    await conn.close()

asyncio.run(main())
"""


async def test_four_processes_migrating_one_fresh_database_at_once_make_one_schema(
    pg_dsn: str,
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATOR,
            pg_dsn,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for proc in procs:  # all connected before any starts
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    results = [await proc.communicate() for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().split() == [str(len(MIGRATIONS))]
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
        assert await conn.fetchval("SELECT to_regclass('jobs') IS NOT NULL")
    finally:
        await conn.close()
