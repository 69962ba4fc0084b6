"""The SQLite engine, the embedded default: one file under the data directory, no server.

``database`` owns the connections (a writer and a reader thread, WAL, group commit,
migrations), ``queries`` holds every statement by domain, and ``jobs``, ``accounts`` and
``chats`` implement the storage protocols on top (``admission`` and ``changes`` hold
the work of the hot paths).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.storage import LocalWakeups, Storage
from core.storage.sqlite.accounts import SqliteAccounts
from core.storage.sqlite.characters import SqliteCharacters
from core.storage.sqlite.chats import SqliteChats
from core.storage.sqlite.database import Database
from core.storage.sqlite.jobs import SqliteJobs
from core.storage.sqlite.portraits import SqlitePortraits


async def open_sqlite(path: Path, *, clock: Callable[[], float] = time.time) -> Storage:
    """Open (creating and migrating if needed) the SQLite store at ``path``."""
    return sqlite_storage(await Database.open(path), clock=clock)


def sqlite_storage(db: Database, *, clock: Callable[[], float] = time.time) -> Storage:
    """Return the stores on an open ``Database``; closing them closes it."""
    return Storage(
        jobs=SqliteJobs(db, clock=clock),
        accounts=SqliteAccounts(db),
        chats=SqliteChats(db, clock=clock),
        characters=SqliteCharacters(db),
        portraits=SqlitePortraits(db),
        close=db.close,
        wakeups=LocalWakeups(),  # other processes on the file find work at their heartbeat
    )
