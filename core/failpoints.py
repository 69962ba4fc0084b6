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
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Failpoints:
    """A set of armed crash points; ``name#n`` kills at the n-th hit of ``name`` only."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._armed: dict[str, int] = {}
        for each in names:
            name, _, nth = each.partition("#")
            self._armed[name] = int(nth) if nth else 1
        self._hits: Counter[str] = Counter()

    def hit(self, name: str) -> None:
        """Kill this process with SIGKILL if ``name`` is armed (and this is its hit)."""
        nth = self._armed.get(name)
        if nth is None:
            return
        self._hits[name] += 1
        if self._hits[name] == nth:
            log.warning("failpoint %s: killing the process", name)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
