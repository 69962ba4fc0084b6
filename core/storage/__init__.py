"""Storage behind small protocols by domain; each engine implements them in a subpackage.

``open_storage(settings)`` opens the configured engine and returns a ``Storage`` bundle:
``storage.jobs`` (``JobStore``), ``storage.accounts`` (``AccountStore``),
``storage.chats`` (``ChatStore``), ``storage.characters`` (``CharacterStore``) and
``storage.portraits`` (``PortraitStore``), with
``storage.wakeups`` (``Wakeups``) to tell idle workers that work may be claimable. Plain
data goes in and out (``core.storage.types``); no connection, cursor or SQL crosses a protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from core.storage.accounts import AccountStore
from core.storage.characters import CharacterStore
from core.storage.chats import ChatStore
from core.storage.jobs import JobStore
from core.storage.portraits import PortraitStore
from core.storage.wakeups import LocalWakeups, Wakeups

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "AccountStore", "CharacterStore", "ChatStore", "JobStore", "LocalWakeups", "PortraitStore",
    "Storage", "Wakeups", "open_storage",
]  # fmt: skip


class Storage:
    """The stores of one engine, opened together and closed together."""

    def __init__(
        self,
        *,
        jobs: JobStore,
        accounts: AccountStore,
        chats: ChatStore,
        characters: CharacterStore,
        portraits: PortraitStore,
        close: Callable[[], Awaitable[None]],
        wakeups: Wakeups | None = None,
    ) -> None:
        self.jobs = jobs
        self.accounts = accounts
        self.chats = chats
        # In-process unless the engine carries wake-ups between processes.
        self.wakeups: Wakeups = wakeups if wakeups is not None else LocalWakeups()
        self.characters = characters
        self.portraits = portraits
        self._close = close
        self._closed = False

    async def close(self) -> None:
        """Close the engine's connections; closing again does nothing."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def open_storage(settings: Settings) -> Storage:
    """Open the store the settings name: PostgreSQL if ``store.url`` is set, else SQLite.

    SQLite is the embedded default (a file under the data directory, no server);
    PostgreSQL applies its pending migrations at open, under an advisory lock, so that
    several processes may start at once.
    """
    # Imported here: each engine imports this package for ``Storage``.
    if settings.store.engine == "postgresql":
        from core.storage.postgres import open_postgres

        return await open_postgres(settings.store.url.get_secret_value())
    from core.storage.sqlite import open_sqlite

    return await open_sqlite(settings.store_path)
