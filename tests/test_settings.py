"""Start-up checks: a configured feature without a setting it needs stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings
from tests.test_cli import actorbot

# A bot that would otherwise start: a token and a Bot API address on loopback that refuses.
BOT = {
    "ACTORBOT_TELEGRAM__TOKEN": "123:abc",
    "ACTORBOT_TELEGRAM__BASE_URL": "http://127.0.0.1:9/bot",
}


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ACTORBOT_TELEGRAM__WEBHOOK_URL": "https://bot.example/hook"}, "telegram.webhook_secret"),
        ({"ACTORBOT_BACKEND": "jobapi"}, "jobapi.url"),
    ],
)
def test_run_with_a_feature_missing_its_setting_exits_2_naming_the_key(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    result = actorbot(tmp_path, "run", **BOT, **env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert lines[0].startswith("config error:")


def test_every_missing_setting_is_named_and_no_secret_is_shown() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            backend="jobapi",
            jobapi={"token": "tok-SECRET"},
            telegram={"webhook_url": "https://bot.example/hook", "local_mode": True},
        )
    message = str(error.value)
    for key in ("jobapi.url", "telegram.webhook_secret", "telegram.base_url"):
        assert key in message
    assert "\n" not in message and "SECRET" not in message


def test_webhook_secret_outside_telegrams_alphabet_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            telegram={"webhook_url": "https://bot.example/hook", "webhook_secret": "my secret!"}
        )
    assert "telegram.webhook_secret" in str(error.value)
    assert "my secret" not in str(error.value)


def test_complete_feature_settings_load() -> None:
    settings = load_settings(
        backend="jobapi",
        jobapi={"url": "http://127.0.0.1:8000"},
        telegram={"webhook_url": "https://bot.example/hook", "webhook_secret": "s3cr-et_"},
    )
    assert settings.jobapi.url == "http://127.0.0.1:8000"
