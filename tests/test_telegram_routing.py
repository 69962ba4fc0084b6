"""Pure translation, tested with plain Bot API JSON: message -> intent, event -> text."""

from __future__ import annotations

import time
from typing import Any

import pytest
from telegram import Message

from bots.chat.texts import (
    TAKE_OFFSET,
    TakeHint,
    caption,
    format_eta,
    hint_of,
    status_text,
    take_line,
)
from bots.telegram.platform import CAPTION_LIMIT, TEXT_LIMIT
from bots.telegram.routing import (
    Command,
    Generate,
    Me,
    PhotoRef,
    address_for,
    parse_command,
    route,
    strip_mention,
)
from core.models import DeliveryAddress, EventKind, Job, JobEvent, JobState

ME = Me(4242, "actor_test_bot")
ANN = {"id": 101, "is_bot": False, "first_name": "Ann", "language_code": "en"}
BOT = {"id": 4242, "is_bot": True, "first_name": "Actor", "username": "actor_test_bot"}
PRIVATE = {"id": 101, "type": "private", "first_name": "Ann"}
GROUP = {"id": -100, "type": "supergroup", "title": "g"}
PHOTO = [
    {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
    {"file_id": "big", "file_unique_id": "b", "width": 800, "height": 1000, "file_size": 5000},
]


def message(chat: dict[str, Any] = PRIVATE, **fields: Any) -> Message:
    data = {"message_id": 7, "date": 1_700_000_000, "chat": chat, "from": ANN, **fields}
    return Message.de_json(data, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/gen hello", ("gen", "hello")),
        ("/GEN@Actor_Test_Bot  hello there", ("gen", "hello there")),
        ("/gen@other_bot hello", None),
        ("/help", ("help", "")),
        ("/gen\nline on the next line", ("gen", "line on the next line")),
        ("hello /gen", None),
        ("/", None),
    ],
)
def test_parse_command(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_command(text, ME.username) == expected


def test_mentions_need_a_word_boundary() -> None:
    assert strip_mention("@actor_test_bot she says hi", ME.username) == (True, "she says hi")
    assert strip_mention("@actor_test_bot_fan hi", ME.username) == (False, "@actor_test_bot_fan hi")


def test_private_chat_routes() -> None:
    photo = PhotoRef("big", 5000, 7)
    assert route(message(photo=PHOTO, caption="line"), ME) == Generate("line", photo)
    assert route(message(photo=PHOTO), ME) == Generate(None, photo)
    assert route(message(text="a line"), ME) == Generate("a line", None)
    assert route(message(text="/start"), ME) == Command("start")
    assert route(message(photo=PHOTO, media_group_id="a"), ME) is None  # album, no caption
    assert route(message(photo=PHOTO, caption="x", media_group_id="a"), ME) == Generate(
        "x", photo, True
    )
    document = {"file_id": "doc", "file_unique_id": "d", "mime_type": "image/png", "file_size": 9}
    assert route(message(document=document, caption="x"), ME) == Generate(
        "x", PhotoRef("doc", 9, 7, True)
    )
    assert (
        route(
            message(
                sticker={
                    "file_id": "s",
                    "file_unique_id": "s",
                    "width": 1,
                    "height": 1,
                    "is_animated": False,
                    "is_video": False,
                    "type": "regular",
                }
            ),
            ME,
        )
        is None
    )
    assert route(message(text="hi", **{"from": BOT}), ME) is None


def test_group_routes_with_privacy_mode() -> None:
    photo = PhotoRef("big", 5000, 7)
    assert route(message(GROUP, photo=PHOTO, caption="nice pic"), ME) is None
    assert route(message(GROUP, photo=PHOTO, caption="/gen line"), ME) == Generate("line", photo)
    assert route(message(GROUP, photo=PHOTO, caption="@actor_test_bot line"), ME) == Generate(
        "line", photo
    )
    assert route(message(GROUP, text="@actor_test_bot"), ME) == Command("help")
    someone = {"message_id": 3, "date": 1, "chat": GROUP, "from": {**ANN, "id": 5}, "photo": PHOTO}
    assert route(message(GROUP, text="/gen line", reply_to_message=someone), ME) == Generate(
        "line", PhotoRef("big", 5000, 3)
    )
    to_bot = {"message_id": 4, "date": 1, "chat": GROUP, "from": BOT, "text": "Send the line"}
    assert route(message(GROUP, text="a line", reply_to_message=to_bot), ME) == Generate(
        "a line", None
    )
    # With privacy mode off the bot sees everything; plain text is still not a request.
    assert route(message(GROUP, text="chatter"), ME, group_trigger="all") is None
    assert route(message(GROUP, photo=PHOTO, caption="line"), ME, group_trigger="all") == Generate(
        "line", photo
    )


def test_address_keeps_forum_topics_only() -> None:
    forum = {**GROUP, "is_forum": True}
    topic = message(forum, text="x", message_thread_id=77, is_topic_message=True)
    assert address_for(topic, user_id="101", locale="en").thread_id == "77"
    # In an ordinary group a reply chain also has a thread id; sending to it would fail.
    chain = message(GROUP, text="x", message_thread_id=3)
    address = address_for(chain, user_id="101", locale="zh", status_message_id=9)
    assert address.thread_id is None
    assert (address.chat_id, address.reply_to, address.status_message_id) == ("-100", "7", "9")
    assert address.extra == {"locale": "zh", "user": "101", "group": True}


def job(**changes: Any) -> Job:
    now = time.time()
    base: dict[str, Any] = dict(
        id="j1", request_id="r1", user_id=1, take=1, takes=1, state=JobState.RUNNING,
        line="The girl says: \"Hi\"", speech="Hi", language="en", seconds=5, seed=1,
        voice=None, address=DeliveryAddress("telegram", "101"), attempts=1, handle="h",
        created_at=now, updated_at=now, started_at=now - 12, finished_at=None,
        error_key=None, error_params={}, error_detail=None, result_path=None,
        resubmitted=False, not_before=0.0, deadline_at=None,
    )  # fmt: skip
    base.update(changes)
    return Job(**base)


def test_take_lines_follow_the_stored_state_and_the_queue_places_passed_in() -> None:
    waiting = job(state=JobState.QUEUED)
    assert take_line(waiting, "en", TakeHint(3, 200)) == "Queued: ready in about 5 min."
    assert take_line(waiting, "zh", TakeHint(3, 200)) == "排队中：预计还需约 5 分钟。"
    first = TakeHint(1, 40)
    assert take_line(waiting, "en", first) == "Queued: you are next, ready in under a minute."
    # No clock in the text: it would stand still between events ("Generating… (0 s)").
    assert take_line(job(), "en") == "Generating…"
    # A place in our queue means nothing once the take runs (a late hint), and back.
    assert take_line(job(), "en", first) == "Generating…"
    assert take_line(waiting, "en", TakeHint(3, provider=True)).startswith("Queued")
    provider = JobEvent(EventKind.PROGRESS, job(), position=37)
    assert take_line(job(), "en", hint_of(provider)) == "Generating… in the provider's queue: 20+"
    # The provider's own queue, as such, in both languages.
    third = hint_of(JobEvent(EventKind.PROGRESS, job(), position=3))
    assert take_line(job(), "en", third) == "Generating… in the provider's queue: 3rd"
    assert take_line(job(), "zh", third) == "生成中…在服务商的队列中：第 3 位"
    next_up = hint_of(JobEvent(EventKind.STARTED, job(), position=1))
    assert take_line(job(), "en", next_up) == "Generating… in the provider's queue: 1st"
    failed = job(state=JobState.FAILED, error_key="job.deadline", error_params={"minutes": 15})
    assert "15 min" in take_line(failed, "en")
    assert (
        status_text({1: "a", 2: "b"}, 3, "en", TEXT_LIMIT)
        == "Take 1/3: a\nTake 2/3: b\nTake 3/3: …"
    )
    assert format_eta(20, "en") == "under a minute" and format_eta(590, "zh") == "约 10 分钟"
    assert format_eta(5000, "en") == "about 2 h"


def test_waiting_texts_change_in_steps_not_with_every_queue_move() -> None:
    waiting = job(state=JobState.QUEUED)
    seen = {take_line(waiting, "en", TakeHint(p, p * 60.0)) for p in range(1, 201)}
    # 200 places in the queue, a handful of different texts: an edit each, at most.
    assert len(seen) <= 15, sorted(seen)


def test_a_retake_is_numbered_after_the_takes_of_its_line() -> None:
    address = DeliveryAddress("telegram", "101", extra={TAKE_OFFSET: 1})
    again = job(state=JobState.DONE, address=address)
    assert caption(again, "en", CAPTION_LIMIT).endswith("5 s · take 2/2")
    assert take_line(again, "en") == "Done: 5 s, take 2/2."


def test_caption_fits_telegrams_limit() -> None:
    long = job(line="x" * 5000, take=2, takes=3)
    text = caption(long, "en", CAPTION_LIMIT)
    assert len(text) <= 1024 and text.endswith("5 s · take 2/3")
