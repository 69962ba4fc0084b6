"""Logging set-up with a formatter that blanks every secret the process knows."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

# Secrets no list can name in advance: Discord interaction tokens, each valid 15 minutes.
# discord.py logs webhook URLs (/webhooks/{app}/{token}, /interactions/{id}/{token}/callback)
# and whole gateway events (a dict with 'token': ...) at DEBUG.
_TOKEN_SHAPES = re.compile(
    r"(?P<path>/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+"
    r"|(?P<key>['\"]token['\"]\s*:\s*['\"])[^'\"]+"
)


def _blank_token(match: re.Match[str]) -> str:
    return f"{match.group('path') or match.group('key')}[REDACTED]"


class RedactingFormatter(logging.Formatter):
    """Replace secrets in the fully formatted record, exceptions and arguments included.

    A formatter on the root handler sees records from every library (PTB logs the Bot API
    URL with the token at DEBUG, httpx logs URLs at INFO); a filter on one logger would
    miss records that propagate from child loggers.
    """

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._pattern: re.Pattern[str] | None = None
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Set the strings to hide (empty and very short ones are ignored)."""
        # URLs carry secrets percent-encoded too: httpx logs Telegram's file URL with the
        # token's colon as %3A.
        variants = {form for s in secrets for form in (s, quote(s, safe=""), quote(s))}
        usable = sorted({s for s in variants if len(s) >= 6}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, usable))) if usable else None

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then blank the secrets."""
        text = _TOKEN_SHAPES.sub(_blank_token, super().format(record))
        return self._pattern.sub("[REDACTED]", text) if self._pattern else text


def configure_logging(level: str, secrets: Iterable[str] = ()) -> RedactingFormatter:
    """Send logs to stderr through the redacting formatter and return it."""
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; keep it for DEBUG runs only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return formatter
