"""The shared conversation (bots/chat) with plain data and a platform edge that records calls.

The store, service and chat state are the real ones on a SQLite file; only the platform's
API is replaced, by ``Recorder``, which implements ``bots.chat.platform.Platform``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bots.chat.commands import ChatOptions
from bots.chat.conversation import Conversation
from bots.chat.delivery import ChatNotifier
from bots.chat.inbox import Inbox
from bots.chat.intents import Command, Generate, Person, Press, Said
from bots.chat.platform import (
    AskReply,
    Blocked,
    Capabilities,
    Keyboard,
    MessageGone,
    Origin,
    PhotoRef,
    Place,
    Platform,
    Sent,
    Video,
)
from bots.chat.status import StatusBoard
from bots.runtime import Runtime, open_runtime
from core.errors import DeliveryError
from core.i18n import render
from core.models import DeliveryAddress, EventKind, Job, JobEvent, JobState, UserRef
from core.storage import ChatStore
from core.storage.types import NewTake
from tests.conftest import db_rows, make_settings, photo_jpeg

LINE = "The girl smiles and says: \"You didn't really think I'd give up?\""
ANN = Person("test", "101", "Ann", "ann", "en")
BOB = Person("test", "102", "Bob", None, "en")
ROOT = Person("test", "999", "Root", None, "en")
HERE = Place("101")


@dataclass
class Call:
    """One call the conversation made on the platform."""

    method: str
    args: dict[str, Any]


@dataclass
class Recorder:
    """The platform edge: records each call, answers with fresh message ids."""

    name: str = "test"
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(
            upload_limit=50_000_000, text_limit=4096, caption_limit=1024, albums=10
        )
    )
    calls: list[Call] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)  # method -> raised once
    image: bytes = b""
    _ids: int = 1000

    def _record(self, method: str, **args: Any) -> str:
        self.calls.append(Call(method, args))
        error = self.fail.pop(method, None)
        if error is not None:
            raise error
        self._ids += 1
        return str(self._ids)

    def made(self, method: str) -> list[dict[str, Any]]:
        """Return the arguments of every call of ``method``."""
        return [call.args for call in self.calls if call.method == method]

    def texts(self) -> list[str]:
        """Return every text sent, replied or answered, in order."""
        return [
            str(call.args["text"])
            for call in self.calls
            if call.method in ("send", "reply", "answer") and call.args.get("text")
        ]

    async def send(
        self,
        place: Place,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
        ask: AskReply | None = None,
        private: bool = False,
    ) -> str:
        return self._record(
            "send", place=place, text=text, reply_to=reply_to, buttons=buttons, ask=ask
        )

    async def reply(
        self,
        origin: Origin,
        text: str,
        *,
        quote: bool | None = None,
        ask: AskReply | None = None,
        private: bool = False,
    ) -> str:
        return self._record("reply", origin=origin, text=text, quote=quote, ask=ask)

    async def edit(
        self, place: Place, message_id: str, text: str, *, buttons: Keyboard | None = None
    ) -> None:
        self._record("edit", place=place, message_id=message_id, text=text, buttons=buttons)

    async def delete(self, place: Place, message_id: str) -> None:
        self._record("delete", place=place, message_id=message_id)

    async def private_place(self, user_id: str) -> Place:
        return Place(user_id)  # a private chat has its user's id here, as on Telegram

    async def answer(
        self,
        token: str,
        text: str | None = None,
        *,
        alert: bool = False,
        ask: AskReply | None = None,
    ) -> None:
        self._record("answer", token=token, text=text, alert=alert)

    async def download(self, photo: PhotoRef) -> bytes:
        self._record("download", photo=photo)
        return self.image

    @contextlib.asynccontextmanager
    async def uploading(self, place: Place) -> AsyncIterator[None]:
        self._record("uploading", place=place)
        yield

    async def send_video(
        self,
        place: Place,
        video: Video,
        *,
        reply_to: str | None = None,
        buttons: Keyboard | None = None,
    ) -> Sent:
        sent = self._record("send_video", place=place, video=video, reply_to=reply_to)
        self.calls[-1].args["buttons"] = buttons
        return Sent(sent, f"file-{sent}")

    async def send_album(
        self, place: Place, videos: Sequence[Video], *, reply_to: str | None = None
    ) -> list[Sent]:
        first = self._record("send_album", place=place, videos=list(videos), reply_to=reply_to)
        return [Sent(f"{first}.{n}", f"file-{first}.{n}") for n in range(len(videos))]


@dataclass
class Replies:
    """First replies kept in memory (the adapters keep them in the inbox table)."""

    replies: dict[str, str] = field(default_factory=dict)

    def first_reply(self, key: str) -> str | None:
        return self.replies.get(key)

    async def record_first_reply(self, key: str, message_id: str) -> None:
        self.replies[key] = message_id


@dataclass
class Chat:
    """A conversation on a real store, talking to a recording platform."""

    runtime: Runtime
    platform: Recorder
    board: StatusBoard
    conversation: Conversation
    inbox: Replies
    chatstate: ChatStore

    async def say(self, person: Person, intent: Generate | Command, message_id: int = 1) -> Said:
        said = Said(Origin(Place(person.user_id), str(message_id)), person, f"m{message_id}")
        await self.conversation.said(said, intent)
        return said

    async def jobs(self) -> list[Job]:
        rows = db_rows(self.runtime.settings.store_path, "SELECT id FROM jobs ORDER BY take")
        return await self.runtime.storage.jobs.jobs_by_ids([row[0] for row in rows])


@contextlib.asynccontextmanager
async def chat(tmp_path: Path, **quotas: Any) -> AsyncIterator[Chat]:
    settings = make_settings(tmp_path, quotas=quotas) if quotas else make_settings(tmp_path)
    async with open_runtime(settings, {}) as runtime:
        platform = Recorder(image=photo_jpeg())
        chatstate = runtime.storage.chats
        board = StatusBoard(
            platform, chatstate, runtime.storage.jobs, private_interval=0.01, group_interval=0.01
        )
        inbox = Replies()
        options = ChatOptions(
            admins=frozenset({ROOT.user_id}),
            photo_memory_seconds=3600,
            history_size=5,
            max_takes=5,
        )
        conversation = Conversation(
            platform=platform, service=runtime.service, store=runtime.storage.jobs,
            chatstate=chatstate, board=board, inbox=inbox, options=options,
        )  # fmt: skip
        try:
            yield Chat(runtime, platform, board, conversation, inbox, chatstate)
        finally:
            await board.close()


def _typed(platform: Recorder) -> Platform:
    return platform  # mypy checks here that the recorder implements the protocol


async def test_a_photo_with_a_line_is_acknowledged_stored_and_shown_queued(
    tmp_path: Path,
) -> None:
    async with chat(tmp_path) as c:
        _typed(c.platform)
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        [job] = await c.jobs()
        assert job.state is JobState.QUEUED
        [ack] = c.platform.made("reply")
        assert ack["text"] == render("chat.ack", "en") and ack["quote"] is True
        [download] = c.platform.made("download")
        assert download["photo"].file_id == "f1"
        address = job.address
        assert (address.platform, address.chat_id, address.reply_to) == ("test", "101", "1")
        assert address.status_message_id == "1001"  # the acknowledgement becomes the status
        # The board edits the acknowledgement into the queued status, with a cancel button.
        await asyncio.wait_for(_until(lambda: c.platform.made("edit")), 5)
        [edit] = c.platform.made("edit")
        assert edit["message_id"] == "1001" and edit["text"].startswith("Queued")
        [[cancel]] = edit["buttons"]
        assert cancel.label == render("chat.button.cancel", "en")


async def test_a_photo_without_a_line_asks_for_one_and_the_line_uses_it(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Generate(None, PhotoRef("f1", 5000, 1)), message_id=1)
        [ask] = c.platform.made("reply")
        assert ask["text"] == render("chat.ask_line", "en")
        assert ask["ask"] == AskReply(render("chat.ask_line_placeholder", "en"))
        await c.say(ANN, Generate(LINE, None), message_id=2)
        [job] = await c.jobs()
        assert [d["photo"].file_id for d in c.platform.made("download")] == ["f1"]
        assert job.address.reply_to == "2"


async def test_a_line_without_any_photo_asks_for_the_photo(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Generate(LINE, None))
        assert c.platform.texts() == [render("chat.need_photo", "en")]
        assert await c.jobs() == []


async def test_a_replayed_message_does_not_answer_twice(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Command("help"))
        await c.say(ANN, Command("help"))  # the same key: a replay after a crash
        assert len(c.platform.made("reply")) == 1


async def test_a_refusal_after_the_acknowledgement_replaces_it(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        c.platform.image = b"not an image"
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        assert await c.jobs() == []
        [deleted] = c.platform.made("delete")
        assert deleted["message_id"] == "1001"  # the "Got it!"
        [refusal] = c.platform.made("send")
        assert refusal["text"] == render("image.not_an_image", "en")
        assert refusal["reply_to"] == "1"


async def test_result_buttons_act_for_their_owner_and_refuse_others(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        [job] = await c.jobs()
        [cancel] = await c.chatstate.add_buttons("test", [("cancel", job.request_id, None, "101")])
        await c.conversation.pressed(Press("q1", cancel, BOB, None))
        [refused] = c.platform.made("answer")
        assert refused == {"token": "q1", "text": render("request.not_owner", "en"), "alert": True}
        assert (await c.jobs())[0].state is JobState.QUEUED
        await c.conversation.pressed(Press("q2", cancel, ANN, None))
        assert c.platform.made("answer")[-1]["text"] == render("chat.canceled", "en", count=1)
        assert (await c.jobs())[0].state is JobState.CANCELED
        await c.conversation.pressed(Press("q3", "no-such-button", ANN, None))
        assert c.platform.made("answer")[-1]["text"] == render("chat.button_expired", "en")


async def test_another_take_keeps_the_status_message_and_numbers_itself(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        [first] = await c.jobs()
        [retake] = await c.chatstate.add_buttons(
            "test", [("retake", first.request_id, first.id, "101")]
        )
        await c.conversation.pressed(Press("q1", retake, ANN, None))
        assert c.platform.made("answer")[-1]["text"] == render("chat.retake_started", "en")
        second = next(job for job in await c.jobs() if job.id != first.id)
        assert second.address.status_message_id == first.address.status_message_id
        assert second.address.extra["take_offset"] == 1
        assert len(c.platform.made("download")) == 1  # the stored image, not a new download


async def test_presses_at_once_under_one_take_number_their_takes_apart(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        [first] = await c.jobs()
        pressed = [("retake", first.request_id, first.id, "101")] * 2
        pressed.append(("switch", first.request_id, first.id, "101"))
        ids = await c.chatstate.add_buttons("test", pressed)
        await asyncio.gather(
            *(c.conversation.pressed(Press(f"q{n}", i, ANN, None)) for n, i in enumerate(ids))
        )
        later = [job for job in await c.jobs() if job.id != first.id]
        # Takes 2, 3 and 4 of the line, whichever got there first; the other length too.
        assert sorted(job.address.extra["take_offset"] for job in later) == [1, 2, 3]
        assert sorted(job.seconds for job in later) == sorted(
            [first.seconds] * 2 + [15 - first.seconds]
        )


async def test_two_admins_deciding_one_access_request_decide_it_once(tmp_path: Path) -> None:
    async with chat(tmp_path, access="approval") as c:
        await c.say(ANN, Generate(LINE, PhotoRef("f1", 5000, 1)))
        assert c.platform.made("reply")[-1]["text"] == render("chat.access_asked", "en")
        [offer] = [s for s in c.platform.made("send") if s["buttons"]]
        assert offer["place"] == Place("999")
        approve, deny = offer["buttons"][0]
        on = Origin(Place("999"), "1002")
        text = offer["text"]
        await asyncio.gather(
            c.conversation.pressed(Press("q1", approve.id, ROOT, on, text)),
            c.conversation.pressed(Press("q2", deny.id, ROOT, on, text)),
        )
        answers = sorted(str(a["text"]) for a in c.platform.made("answer"))
        assert render("chat.access_already", "en") in answers
        assert len(c.platform.made("edit")) == 1  # the request marked decided once
        told = [s for s in c.platform.made("send") if s["place"] == Place("101")]
        assert len(told) == 1  # the user is told the outcome once
        assert await c.runtime.service.accounts.pending() == []


async def test_only_admins_decide_access(tmp_path: Path) -> None:
    async with chat(tmp_path, access="approval") as c:
        await c.say(ANN, Command("access"))
        [offer] = [s for s in c.platform.made("send") if s["buttons"]]
        approve = offer["buttons"][0][0]
        await c.conversation.pressed(Press("q1", approve.id, ANN, None))
        assert c.platform.made("answer")[-1]["text"] == render("chat.admin_only", "en")
        assert [p[2] for p in await c.runtime.service.accounts.pending()] == ["101"]


async def test_commands_answer_in_the_chosen_language(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        await c.say(ANN, Command("lang", "中文"), message_id=1)
        await c.say(ANN, Command("quota"), message_id=2)
        await c.say(ANN, Command("stats"), message_id=3)
        await c.say(ROOT, Command("grant", "101 5"), message_id=4)
        await c.say(ANN, Command("link"), message_id=5)  # no other platform: not ours
        texts = c.platform.texts()
        assert texts[0] == render("chat.lang_set", "zh")
        assert texts[1].startswith("你还剩 20 点额度")
        assert texts[2] == render("chat.admin_only", "zh")
        assert texts[3] == render("chat.admin_done", "en", action="grant", user_id="101")
        assert len(texts) == 4


def _job(**changes: Any) -> Job:
    """Return a take addressed to Ann's private chat, answering her message 7."""
    now = time.time()
    extra = {"locale": "en", "user": "101", "group": False}
    base: dict[str, Any] = dict(
        id="j1", request_id="r1", user_id=1, take=1, takes=1, state=JobState.RUNNING,
        line="The girl says: \"Hi\"", speech="Hi", language="en", seconds=5, seed=1,
        voice=None, address=DeliveryAddress("test", "101", reply_to="7", extra=extra),
        attempts=1, handle="h", created_at=now, updated_at=now, started_at=now,
        finished_at=None, error_key=None, error_params={}, error_detail=None,
        result_path=None, resubmitted=False, not_before=0.0, deadline_at=None,
    )  # fmt: skip
    base.update(changes)
    return Job(**base)


async def _stored(c: Chat, takes: int = 1) -> list[Job]:
    """Admit a request for Ann's private chat (answering her message 7), without a status."""
    take = NewTake("Hi", "Hi", "en", 5, 1, None)
    extra = {"locale": "en", "user": "101", "group": False}
    admitted = await c.runtime.storage.jobs.admit(
        user=UserRef("test", "101"), source_key=f"k{time.monotonic()}", line="Hi",
        image_jpeg=b"jpeg", image_size=(16, 9),
        address=DeliveryAddress("test", "101", reply_to="7", extra=extra), takes=[take] * takes,
    )  # fmt: skip
    return list(admitted.jobs)


async def _move(c: Chat, job: Job, *states: JobState) -> Job:
    for state in states:
        assert await c.runtime.storage.jobs.transition(job.id, state)
    moved = await c.runtime.storage.jobs.job(job.id)
    assert moved is not None
    return moved


async def test_status_changes_while_waiting_for_a_turn_are_sent_once(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        store = c.runtime.storage.jobs
        board = StatusBoard(
            c.platform, c.chatstate, store, private_interval=0.3, group_interval=0.3
        )
        await board.pace("101", group=False)  # the chat's turn is taken: the rest waits
        [take] = await _stored(c)
        for state in (JobState.SUBMITTING, JobState.RUNNING, JobState.FAILED):
            board.update(await _move(c, take, state))
        await asyncio.wait_for(_until(lambda: c.platform.made("send")), 5)
        await board.close()
        [sent] = c.platform.made("send")
        assert sent["text"] == render("job.backend_failed", "en") and sent["reply_to"] == "7"
        assert c.platform.made("edit") == []


async def test_any_process_renders_a_requests_whole_status_from_the_store(
    tmp_path: Path,
) -> None:
    async with chat(tmp_path) as c:
        store = c.runtime.storage.jobs

        def board() -> StatusBoard:  # one per process
            return StatusBoard(
                c.platform, c.chatstate, store, private_interval=0.01, group_interval=0.01
            )

        one, two = board(), board()
        first, second = await _stored(c, takes=2)
        # One process saw take 1 start and posted the status.
        one.update(await _move(c, first, JobState.SUBMITTING, JobState.RUNNING))
        await asyncio.wait_for(_until(lambda: c.platform.made("send")), 5)
        posted = (await _move(c, first)).address.status_message_id
        assert posted is not None
        # Another process finishes take 2: it edits that message, with both takes right.
        two.update(await _move(c, second, JobState.SUBMITTING, JobState.DONE))
        await asyncio.wait_for(_until(lambda: c.platform.made("edit")), 5)
        await one.close()
        await two.close()
        [edit] = c.platform.made("edit")
        assert len(c.platform.made("send")) == 1
        assert edit["message_id"] == posted
        started = render("job.started", "en")
        done = render("job.delivered", "en", seconds=5, take=2, takes=2)
        assert edit["text"] == "\n".join(
            render("chat.take_line", "en", take=take, takes=2, text=text)
            for take, text in ((1, started), (2, done))
        )
        assert edit["buttons"] is None  # nothing waits: no cancel button


async def test_a_blocked_chat_is_left_alone_and_delivery_fails_for_good(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with chat(tmp_path) as c:
        take = _job()
        c.platform.fail["send_video"] = Blocked("bot was blocked by the user")
        notifier = ChatNotifier(c.platform, c.board, c.chatstate, work_dir=tmp_path)
        video = tmp_path / "take.mp4"
        video.write_bytes(tiny_mp4)
        with pytest.raises(DeliveryError) as refused:
            await notifier.deliver(take, video)
        assert refused.value.permanent
        assert c.board.is_blocked("101")
        calls = len(c.platform.calls)
        with pytest.raises(DeliveryError):
            await notifier.deliver(take, video)  # known: not asked again
        await notifier.notify(JobEvent(EventKind.FAILED, take, error_key="job.undeliverable"))
        await asyncio.sleep(0.05)
        assert len(c.platform.calls) == calls


async def test_a_delivered_video_has_caption_buttons_and_history(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with chat(tmp_path) as c:
        take = _job(state=JobState.DELIVERING)
        notifier = ChatNotifier(c.platform, c.board, c.chatstate, work_dir=tmp_path)
        video = tmp_path / "take.mp4"
        video.write_bytes(tiny_mp4)
        await notifier.deliver(take, video)
        [sent] = c.platform.made("send_video")
        assert sent["video"].caption.endswith("5 s · take 1/1")
        assert sent["reply_to"] == "7"
        labels = [row[0].label for row in sent["buttons"]]
        assert labels == [render(f"chat.button.{k}", "en", seconds=10) for k in
                          ("retake", "new_line", "switch")]  # fmt: skip
        [item] = await c.chatstate.history("test", "101", 5)
        assert item.file_ref.startswith("file-")
        # /history sends it again by its file id: nothing is uploaded.
        await c.say(ANN, Command("history"), message_id=9)
        assert c.platform.made("send_video")[-1]["video"].source == item.file_ref


async def test_a_deleted_status_message_is_posted_again(tmp_path: Path) -> None:
    async with chat(tmp_path) as c:
        [take] = await _stored(c)
        c.board.update(take)
        await asyncio.wait_for(_until(lambda: c.platform.made("send")), 5)
        c.platform.fail["edit"] = MessageGone("message to edit not found")
        c.board.update(await _move(c, take, JobState.SUBMITTING))
        await asyncio.wait_for(_until(lambda: c.platform.made("edit")), 5)
        c.board.update(await _move(c, take, JobState.RUNNING, JobState.FAILED))
        await asyncio.wait_for(_until(lambda: len(c.platform.made("send")) == 2), 5)
        assert c.platform.made("send")[-1]["text"] == render("job.backend_failed", "en")


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_the_inbox_handles_an_event_once_and_replays_what_was_cut_off(
    tmp_path: Path,
) -> None:
    async with chat(tmp_path) as c:
        handled: list[str] = []
        release = asyncio.Event()

        async def handle(event: str) -> None:
            handled.append(event)
            if event == "slow":
                await release.wait()

        def inbox() -> Inbox[str]:
            return Inbox(
                "test", c.chatstate, keyer=lambda e: None if e == "chatter" else e,
                encode=str, decode=str, handle=handle, keep_handled_seconds=3600,
            )  # fmt: skip

        first = inbox()
        await first.accept(["a", "chatter", "slow"])
        await first.record_first_reply("slow", "77")
        await asyncio.wait_for(_until(lambda: len(handled) == 2), 5)
        await first.accept(["a"])  # redelivered by the platform
        await first.drain(0.05)  # shutting down: "slow" is cut off
        assert sorted(handled) == ["a", "slow"]
        second = inbox()  # the next start
        release.set()
        assert await second.replay() == 1
        await second.drain(5)
        assert handled[-1] == "slow" and handled.count("a") == 1
        [entry] = [e for e in [await c.chatstate.inbox_entry("test", "slow")] if e]
        assert entry.first_reply == "77"  # a replay does not send the first answer again
