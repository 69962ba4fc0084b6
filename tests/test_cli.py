"""The ``actorbot`` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.media import probe_video
from tests.test_images import _huge_bilevel_png

REPO = Path(__file__).resolve().parents[1]
LINE = "The girl smiles and says: 'You didn't really think I'd give up?'"


def actorbot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ACTORBOT_")}
    clean.update({"ACTORBOT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()[:4000]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.jpg", b"this is a text file, renamed", "not an image"),
        ("broken.jpg", _truncated_jpeg(), "could not be read"),
        ("huge.png", _huge_bilevel_png(20_000), "20000×20000"),
        ("empty.jpg", b"", "empty"),
    ],
)
def test_bad_image_gets_one_line_error(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    photo = tmp_path / name
    photo.write_bytes(content)
    result = actorbot(tmp_path, "generate", str(photo), LINE)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_over_long_line_shows_estimate_and_limit(tmp_path: Path, portrait: bytes) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    line = "女孩笑着说：'" + "我" * 60 + "'"
    result = actorbot(tmp_path, "generate", str(photo), line)
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "13.3 s" in error and "8.5 s" in error


def test_chinese_locale_renders_errors_in_chinese(tmp_path: Path) -> None:
    photo = tmp_path / "notes.jpg"
    photo.write_text("hello")
    result = actorbot(tmp_path, "generate", str(photo), LINE, ACTORBOT_LOCALE="zh")
    assert result.returncode == 1 and "这个文件不是图片" in result.stderr


def test_missing_photo(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "generate", str(tmp_path / "nope.jpg"), LINE)
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_invalid_setting_names_the_key(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "doctor", ACTORBOT_WORKER__LEASE_SECONDS="soon")
    assert result.returncode == 2
    assert "worker.lease_seconds" in result.stderr and "Traceback" not in result.stderr


def test_run_without_adapter_says_what_to_set(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "run")
    assert result.returncode == 2 and "ACTORBOT_TELEGRAM__TOKEN" in result.stderr


def test_doctor_passes_on_this_machine(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "doctor")
    assert result.returncode == 0, result.stderr
    for check in ("config", "fonts", "speech", "codecs", "store"):
        assert f"✓ {check}" in result.stderr


def test_generate_with_preview_renderer(tmp_path: Path, portrait: bytes) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    result = actorbot(tmp_path, "generate", str(photo), LINE + " --5s", "-o", "clip.mp4")
    assert result.returncode == 0, result.stderr
    assert "not an AI model" in result.stderr
    info = probe_video(tmp_path / "clip.mp4")
    assert (info.width, info.height, info.video_codec, info.has_audio) == (1280, 720, "h264", True)
    assert 4.8 <= info.duration <= 5.3


def test_square_brackets_in_the_line_are_text_not_markup(tmp_path: Path, portrait: bytes) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    line = 'She says: "Hello [/] there [bold red]x[/bold red]" --5s'
    result = actorbot(tmp_path, "generate", str(photo), line, "-o", "[clip].mp4")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Shown as the user wrote it: neither a markup error nor styling.
    assert "Hello [/] there [bold red]x[/bold red]" in result.stderr
    assert "[clip].mp4" in result.stderr
    assert probe_video(tmp_path / "[clip].mp4").duration > 4.8


def test_square_brackets_in_an_error_are_text(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "generate", str(tmp_path / "[/]nope[red].jpg"), LINE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot read" in result.stderr and "[/]nope[red].jpg" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seed", "-1"], "from 0 to 4294967295"),
        (["--seed", "1099511627776"], "from 0 to 4294967295"),
        (["--duration", "10"], "needs about 13.3 s"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(
    tmp_path: Path, portrait: bytes, options: list[str], message: str
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    line = "女孩笑着说：'" + "我" * 60 + "'" if "--duration" in options else LINE
    result = actorbot(tmp_path, "generate", str(photo), line, *options)
    assert result.returncode == 1, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.strip()]
    assert error.startswith("error:") and message in error
    assert not (tmp_path / "out.mp4").exists()
