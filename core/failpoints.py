"""Named crash points for recovery tests: the process kills itself where a test asks.

Databases test recovery this way (FoundationDB's buggify, TiKV's fail-rs): a crash at an
exact point is repeatable where a signal sent from outside is a race. The set of names
comes from settings (``debug.failpoints``); it is empty in production, making each check
a set lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Failpoints:
    """A set of armed crash points."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._armed = frozenset(names)

    def hit(self, name: str) -> None:
        """Kill this process with SIGKILL if ``name`` is armed."""
        if name in self._armed:
            log.warning("failpoint %s: killing the process", name)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
