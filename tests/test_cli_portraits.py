"""``actorbot character create``: a real subprocess against the loopback fal server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PIL import Image

from tests.conftest import db_rows
from tests.providers_server import ProviderServer
from tests.test_cli import actorbot


async def test_create_writes_four_candidates_and_saves_the_picked_one(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    fal = ProviderServer(video=tiny_mp4, queue_seconds=0.02, run_seconds=0.05)
    await fal.start()
    try:
        settings = fal.provider_settings()["fal"]
        env = {
            f"ACTORBOT_PROVIDERS__FAL__{key.upper()}": (
                json.dumps(value) if isinstance(value, list) else str(value)
            )
            for key, value in settings.items()
        }
        env["ACTORBOT_PORTRAITS__IMAGE_PRESET"] = "nano-banana"
        made = await asyncio.to_thread(
            actorbot, tmp_path, "character", "create", "Ranxia", "a young woman, short hair",
            "--pick", "3", "--out", "drawn", **env,
        )  # fmt: skip
    finally:
        await fal.stop()
    assert made.returncode == 0, made.stderr
    assert "Saved Ranxia with picture 3." in made.stderr
    files = sorted((tmp_path / "drawn").iterdir())
    assert [f.name for f in files] == [f"Ranxia-{n}.jpg" for n in range(1, 5)]
    for file in files:
        with Image.open(file) as image:
            assert image.size == (1280, 720)
    [job] = fal.jobs.values()
    assert job.model == "fal-ai/nano-banana"
    assert (job.input["num_images"], job.input["aspect_ratio"]) == (4, "16:9")
    store = tmp_path / "data" / "actorbot.sqlite3"
    assert db_rows(store, "SELECT name FROM characters") == [("Ranxia",)]
    assert db_rows(store, "SELECT state, picked FROM portraits") == [("picked", 3)]
    assert fal.submit_requests == 1


def test_create_without_an_image_model_says_what_it_needs(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "character", "create", "Ranxia", "a young woman")
    assert result.returncode == 1
    assert "needs an image model, and none is configured" in result.stderr
    # The command line's way, not a chat command.
    assert "actorbot character save NAME PHOTO" in result.stderr.replace("\n", "")
    assert "/character save" not in result.stderr
    assert "Traceback" not in result.stderr
