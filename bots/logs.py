"""Logging set-up with a formatter that blanks every secret the process knows."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from pythonjsonlogger.json import JsonFormatter

from core.logcontext import log_fields

# Secrets no list can name in advance: Discord interaction tokens, each valid 15 minutes.
# discord.py logs webhook URLs (/webhooks/{app}/{token}, /interactions/{id}/{token}/callback)
# and whole gateway events (a dict with 'token': ...) at DEBUG.
_TOKEN_SHAPES = re.compile(
    r"(?P<path>/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+"
    r"|(?P<key>['\"]token['\"]\s*:\s*['\"])[^'\"]+"
)


def _blank_token(match: re.Match[str]) -> str:
    return f"{match.group('path') or match.group('key')}[REDACTED]"


class Redactor:
    """Blanks the secrets this process knows, and Discord's interaction tokens by shape."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pattern: re.Pattern[str] | None = None
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Set the strings to hide (empty and very short ones are ignored)."""
        # URLs carry secrets percent-encoded too: httpx logs Telegram's file URL with the
        # token's colon as %3A.
        variants = {form for s in secrets for form in (s, quote(s, safe=""), quote(s))}
        usable = sorted({s for s in variants if len(s) >= 6}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, usable))) if usable else None

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret blanked."""
        text = _TOKEN_SHAPES.sub(_blank_token, text)
        return self._pattern.sub("[REDACTED]", text) if self._pattern else text


class RedactingFormatter(Redactor, logging.Formatter):
    """Replace secrets in the fully formatted record, exceptions and arguments included.

    A formatter on the root handler sees records from every library (PTB logs the Bot API
    URL with the token at DEBUG, httpx logs URLs at INFO); a filter on one logger would
    miss records that propagate from child loggers.
    """

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        logging.Formatter.__init__(self, fmt)
        Redactor.__init__(self, secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then blank the secrets."""
        return self.redact(super().format(record))


class RedactingJsonFormatter(Redactor, JsonFormatter):
    """One JSON object per record: time, level, logger, message and the job's fields.

    The job's fields (job id, platform, backend, preset, attempt) come from
    ``core.logcontext``, set by the worker for each job's task. Secrets are blanked in
    every value before it is serialized, so JSON escaping cannot hide one from the match.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        JsonFormatter.__init__(
            self,
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC
        )
        Redactor.__init__(self, secrets)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """Add the record's fields, then those of the job being handled (if any)."""
        super().add_fields(log_data, record, message_dict)
        for name, value in log_fields().items():
            log_data.setdefault(name, value)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Blank the secrets in every value (message, exception text, extra fields)."""
        return {key: self._redacted(value) for key, value in log_data.items()}

    def _redacted(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self._redacted(item) for item in value]
        if isinstance(value, dict):
            return {key: self._redacted(item) for key, item in value.items()}
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))  # whatever the encoder would have made of it


def configure_logging(
    level: str, secrets: Iterable[str] = (), log_format: str = "text"
) -> Redactor:
    """Send logs to stderr through a redacting formatter (text or JSON) and return it."""
    formatter: logging.Formatter
    if log_format == "json":
        formatter = RedactingJsonFormatter(secrets)
    else:
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
    assert isinstance(formatter, Redactor)
    return formatter
