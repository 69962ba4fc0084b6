"""store.url: empty selects SQLite, postgresql:// selects PostgreSQL; the URL is a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings
from tests.test_cli import actorbot

SECRET_URL = "postgresql://bot:hunter2%40SECRET@db.example:5432/actorbot"


def test_an_empty_url_keeps_sqlite_under_the_data_directory(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.store.engine == "sqlite"
    assert settings.store_path == tmp_path / "actorbot.sqlite3"
    assert settings.store.secrets == []


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_selects_postgresql_and_stays_out_of_reprs(scheme: str) -> None:
    url = SECRET_URL.replace("postgresql", scheme, 1)
    settings = load_settings(store={"url": url})
    assert settings.store.engine == "postgresql"
    assert settings.store.url.get_secret_value() == url
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings.store)
    # What the log formatter must blank: the URL and its password, encoded and decoded.
    assert {url, "hunter2%40SECRET", "hunter2@SECRET"} <= set(settings.store.secrets)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bot:hunter2SECRET@db.example/actorbot",
        "sqlite:///var/lib/actorbot.sqlite3?SECRET",
        "postgresql:hunter2SECRET",
        "hunter2SECRET",
    ],
)
def test_a_url_of_another_kind_is_refused_naming_the_key_not_the_value(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(store={"url": url})
    message = str(error.value)
    assert "store.url" in message and "postgresql://" in message
    assert "SECRET" not in message and "\n" not in message


def test_a_sqlite_path_beside_a_postgresql_url_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(store={"url": SECRET_URL, "path": "/tmp/x.sqlite3"})
    assert "store.path" in str(error.value) and "SECRET" not in str(error.value)


def test_start_up_with_a_bad_store_url_exits_2_with_one_line_naming_the_key(
    tmp_path: Path,
) -> None:
    result = actorbot(tmp_path, "doctor", ACTORBOT_STORE__URL="mysql://bot:hunter2SECRET@db/x")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("config error:") and "store.url" in lines[0]
    assert "SECRET" not in result.stderr + result.stdout
