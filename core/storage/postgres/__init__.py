"""The PostgreSQL engine, chosen by ``store.url``: several processes on several machines.

``schema`` holds the migrations (applied at open under an advisory lock), ``connection``
the pool and LISTEN/NOTIFY, ``database`` the transactions and error mapping, ``queries``
every statement by domain, and ``jobs``, ``accounts`` and ``chats`` implement the storage
protocols with the SQLite engine's semantics (``admission`` and ``changes`` hold the work
of the hot paths).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.storage import Storage
from core.storage.postgres.accounts import PostgresAccounts
from core.storage.postgres.characters import PostgresCharacters
from core.storage.postgres.chats import PostgresChats
from core.storage.postgres.database import Database
from core.storage.postgres.jobs import PostgresJobs
from core.storage.postgres.portraits import PostgresPortraits
from core.storage.postgres.wakeups import PostgresWakeups


async def open_postgres(
    url: str, *, clock: Callable[[], float] = time.time, max_size: int = 10
) -> Storage:
    """Open (migrating if needed) the PostgreSQL store at ``url``."""
    db = await Database.open(url, max_size=max_size)
    wakeups = PostgresWakeups(db, url)
    try:
        await wakeups.start()
    except BaseException:
        await db.close()
        raise

    async def close() -> None:
        await wakeups.aclose()
        await db.close()

    return Storage(
        jobs=PostgresJobs(db, clock=clock),
        accounts=PostgresAccounts(db),
        chats=PostgresChats(db, clock=clock),
        characters=PostgresCharacters(db),
        portraits=PostgresPortraits(db),
        close=close,
        wakeups=wakeups,
    )
