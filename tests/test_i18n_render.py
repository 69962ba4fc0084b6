"""A message that cannot be formatted is still shown, and the bug is logged once."""

from __future__ import annotations

import logging

import pytest

from core.i18n import CATALOG, render


@pytest.mark.parametrize("locale", ["en", "zh"])
def test_missing_parameter_renders_the_template_and_logs_the_key_once(
    caplog: pytest.LogCaptureFixture, locale: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="core.i18n"):
        text = render("quota.flood", locale)
    assert text == CATALOG[locale]["quota.flood"]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "quota.flood" in record.getMessage() and "seconds" in record.getMessage()


def test_mistyped_parameter_is_logged_without_its_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="core.i18n"):
        render("image.too_many_bytes", "en", size_mb="private words", limit_mb=20)
    [record] = caplog.records
    assert "image.too_many_bytes" in record.getMessage()
    assert "private words" not in record.getMessage()


def test_a_well_formed_message_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="core.i18n"):
        assert render("quota.flood", "en", seconds=5).endswith("Wait 5 s, then try again.")
    assert caplog.records == []
