"""The adapter state kept in the store: inbox, photos, buttons, language, history."""

from __future__ import annotations

from pathlib import Path

from core.storage.sqlite import open_sqlite


async def test_inbox_keeps_events_until_done_and_recognises_redelivery(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    try:
        state = storage.chats
        added = await state.inbox_add("telegram", [("telegram:1:7", "{}"), ("telegram:1:8", "{}")])
        assert added == {"telegram:1:7", "telegram:1:8"}
        # A redelivered event is not new, whether or not it was handled.
        assert await state.inbox_add("telegram", [("telegram:1:7", "{}")]) == set()
        await state.inbox_first_reply("telegram", "telegram:1:7", "55")
        await state.inbox_done("telegram", "telegram:1:8")
        [open_entry] = await state.inbox_open("telegram")
        assert (open_entry.key, open_entry.first_reply) == ("telegram:1:7", "55")
        assert await state.inbox_add("telegram", [("telegram:1:8", "{}")]) == set()
        assert await state.inbox_prune("telegram", older_than_seconds=-1) == 1
    finally:
        await storage.close()


async def test_state_survives_reopening(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    state = storage.chats
    await state.remember_photo("telegram", "1", "9", file_ref="f1", message_id="3")
    [button_id] = await state.add_buttons("telegram", [("retake", "r1", "j1", "9")])
    await state.set_locale("telegram", "9", "zh")
    await state.add_history("telegram", "9", "j1", "1", "vid-1", "caption")
    await storage.close()
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    try:
        state = storage.chats
        photo = await state.last_photo("telegram", "1", "9", max_age_seconds=60)
        assert photo is not None and photo.file_ref == "f1"
        assert await state.last_photo("telegram", "1", "9", max_age_seconds=-1) is None
        button = await state.button("telegram", button_id)
        assert button is not None and (button.action, button.owner) == ("retake", "9")
        assert len(button_id) <= 64 and await state.button("telegram", "nope") is None
        assert await state.locale("telegram", "9") == "zh"
        [item] = await state.history("telegram", "9", 5)
        assert item.file_ref == "vid-1"
    finally:
        await storage.close()
