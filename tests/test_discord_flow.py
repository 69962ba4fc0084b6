"""/generate end to end: the real discord.py client, worker and store on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.media import probe_video
from core.models import JobState
from tests.conftest import photo_jpeg
from tests.discord_harness import ANN, running_discord, until


async def test_generate_makes_a_real_preview_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {"width": 320, "height": 180}
    async with running_discord(tmp_path, monkeypatch, images=small, preview={"fps": 8}) as h:
        interaction = await h.generate(ANN, photo_jpeg())
        [job] = await h.finished(timeout=60)
        assert job.state is JobState.DONE, job.error_detail
        token = interaction["token"]
        # Acknowledged at once with "thinking", then the same message edited in place.
        [callback] = h.server.calls_to("POST", rf"/interactions/{interaction['id']}/")
        assert callback.body["type"] == 5
        [upload] = await until(lambda: [c for c in h.server.calls_to("POST", token) if c.files])
        name, content = upload.files[0]
        assert name == f"{job.id}.mp4"
        video = tmp_path / "upload.mp4"
        video.write_bytes(content)
        info = probe_video(video)
        assert info.has_audio and (info.width, info.height) == (320, 180)
        assert "You didn't really think I'd give up?" in upload.body["content"]
        edits = [c.body["content"] for c in h.server.calls_to("PATCH", token)]
        assert edits[0] == "Got it! Preparing your video…"
        assert "Generating…" in edits
