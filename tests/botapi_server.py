"""A loopback server speaking enough of the Telegram Bot API for the real PTB Application.

Requests arrive as form data (values JSON-encoded as strings), multipart when files are
attached, and as an empty body for calls without parameters. Every call is recorded so tests
can assert what users would have seen. Knobs model what Telegram does under pressure: 429
with ``retry_after``, 403 for a user who blocked the bot, 413 for an upload over the limit,
updates delivered twice, and slow answers to calls already carried out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

BOT_ID = 4242
BOT_USERNAME = "actor_test_bot"


@dataclass
class Call:
    """One Bot API call as the server received it."""

    method: str
    params: dict[str, str]
    files: dict[str, bytes]
    at: float

    def json(self, name: str) -> Any:
        """Return a JSON-encoded parameter decoded (``None`` when absent)."""
        raw = self.params.get(name)
        return None if raw is None else json.loads(raw)

    @property
    def chat_id(self) -> str | None:
        """Return the chat this call addressed."""
        return self.params.get("chat_id")

    @property
    def reply_to(self) -> int | None:
        """Return the message this call replies to."""
        parameters = self.json("reply_parameters")
        return None if not parameters else int(parameters["message_id"])


@dataclass
class Failure:
    """A canned error answer for the next matching call."""

    status: int
    description: str
    retry_after: int | None = None


@dataclass
class Chat:
    """A chat the emulator knows: private, group or supergroup (forum or not)."""

    id: int
    type: str = "private"
    title: str = ""
    is_forum: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the Chat object."""
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = f"user{self.id}"
        else:
            data["title"] = self.title or f"group{self.id}"
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass
class User:
    """A Telegram user."""

    id: int
    first_name: str = "Ann"
    language_code: str | None = "en"

    def to_json(self) -> dict[str, Any]:
        """Return the User object."""
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.language_code:
            data["language_code"] = self.language_code
        return data


BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Actor", "username": BOT_USERNAME}


@dataclass
class BotApiServer:
    """Serve the Bot API for one token on 127.0.0.1."""

    token: str = "4242:test-token-SECRET-do-not-log"
    poll_hold: float = 0.5  # longest an empty getUpdates is held (never answer at once)
    fail: dict[str, list[Failure]] = field(default_factory=dict)  # method -> next answers
    blocked_chats: set[str] = field(default_factory=set)  # 403 on any send to these chats
    max_upload_bytes: int = 50 * 1024 * 1024  # bigger multipart bodies get a 413
    duplicate_deliveries: int = 0  # deliver the next N updates twice (as after a lost ack)
    # method -> seconds to wait before answering a call it already carried out (a slow
    # answer to an upload: the message is in the chat, the bot does not know it yet)
    delay: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # methods the emulator does not know
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> content
    uploads: dict[str, bytes] = field(default_factory=dict)  # file_id of sent media -> bytes
    messages: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    chats: dict[int, Chat] = field(default_factory=dict)
    confirmed: int = 0  # every update below this id was confirmed by an offset
    url: str = ""
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _again: list[dict[str, Any]] = field(default_factory=list)  # redelivered once confirmed
    _update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _file_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> str:
        """Start listening; return the base URL PTB should use (``.../bot``)."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)  # the bot's logs are under test
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    @property
    def base_url(self) -> str:
        """Return the Bot API base URL (the token is appended by PTB)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Return the file download base URL."""
        return f"{self.url}/file/bot"

    async def stop(self) -> None:
        """Stop the server."""
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what users do -----------------------------------------------------------------

    def chat(self, chat_id: int, kind: str = "", *, forum: bool = False) -> Chat:
        """Return (registering if needed) a chat; negative ids default to supergroups."""
        if chat_id not in self.chats:
            kind = kind or ("private" if chat_id > 0 else "supergroup")
            self.chats[chat_id] = Chat(chat_id, kind, is_forum=forum)
        return self.chats[chat_id]

    def add_file(self, content: bytes) -> str:
        """Store a file users can send; return its file_id."""
        file_id = f"file-{next(self._file_ids)}"
        self.files[file_id] = content
        return file_id

    def message(
        self,
        user: User,
        chat_id: int | None = None,
        *,
        text: str | None = None,
        photo: bytes | None = None,
        document: bytes | None = None,
        mime_type: str = "image/jpeg",
        voice: bytes | None = None,
        audio: bytes | None = None,
        caption: str | None = None,
        reply_to: dict[str, Any] | None = None,
        thread_id: int | None = None,
        media_group_id: str | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Build a message from a user (not yet delivered); return its JSON."""
        chat = self.chat(chat_id if chat_id is not None else user.id)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat.to_json(),
            "from": user.to_json(),
        }
        if text is not None:
            message["text"] = text
            message.update(_command_entities("entities", text, entities))
        if caption is not None:
            message["caption"] = caption
            message.update(_command_entities("caption_entities", caption, entities))
        if photo is not None:
            file_id = self.add_file(photo)
            message["photo"] = [
                {"file_id": f"{file_id}-thumb", "file_unique_id": "t", "width": 90, "height": 90},
                {
                    "file_id": file_id,
                    "file_unique_id": file_id,
                    "width": 800,
                    "height": 1000,
                    "file_size": len(photo),
                },
            ]
            self.files[f"{file_id}-thumb"] = photo
        if document is not None:
            file_id = self.add_file(document)
            message["document"] = {
                "file_id": file_id,
                "file_unique_id": file_id,
                "file_name": "portrait.png",
                "mime_type": mime_type,
                "file_size": len(document),
            }
        if voice is not None:  # a voice note: OGG/Opus
            file_id = self.add_file(voice)
            message["voice"] = {
                "file_id": file_id, "file_unique_id": file_id, "duration": 0,
                "mime_type": "audio/ogg", "file_size": len(voice),
            }  # fmt: skip
        if audio is not None:  # a music or audio file
            file_id = self.add_file(audio)
            message["audio"] = {
                "file_id": file_id, "file_unique_id": file_id, "duration": 0,
                "mime_type": mime_type, "file_size": len(audio),
            }  # fmt: skip
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        self.messages[(str(chat.id), message["message_id"])] = message
        return message

    def send(self, user: User, chat_id: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Deliver a new message from a user to the bot; return the message JSON."""
        message = self.message(user, chat_id, **kwargs)
        self.push({"message": message})
        return message

    def press(self, user: User, message: dict[str, Any], data: str) -> str:
        """Press an inline button of a bot message; return the callback query id."""
        query_id = f"cq-{next(self._update_ids)}"
        self.push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user.to_json(),
                    "chat_instance": "ci",
                    "message": message,
                    "data": data,
                }
            }
        )
        return query_id

    def push(self, body: dict[str, Any]) -> int:
        """Queue an update; return its update_id."""
        update = {"update_id": next(self._update_ids), **body}
        self._updates.append(update)
        if self.duplicate_deliveries > 0:
            self.duplicate_deliveries -= 1
            self._again.append(dict(update))
        self._arrived.set()
        return int(update["update_id"])

    def forget_until(self, offset: int) -> None:
        """Drop updates below ``offset``, as if the bot had confirmed them."""
        self.confirmed = max(self.confirmed, offset)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]

    @property
    def pending_updates(self) -> int:
        """Return how many updates were not confirmed yet."""
        return len(self._updates)

    # --- looking at what the bot did ---------------------------------------------------

    def sent(self, method: str, chat_id: int | str | None = None) -> list[Call]:
        """Return the successful-or-not calls of one method, optionally to one chat."""
        return [
            call
            for call in self.calls
            if call.method == method and (chat_id is None or call.chat_id == str(chat_id))
        ]

    def bot_messages(self, chat_id: int | str) -> list[dict[str, Any]]:
        """Return the bot's messages in a chat, as they stand now (after edits)."""
        return [
            message
            for (chat, _), message in sorted(self.messages.items(), key=lambda kv: kv[0][1])
            if chat == str(chat_id) and message.get("from", {}).get("id") == BOT_ID
        ]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every call); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                methods = [c.method for c in self.calls[-15:]]
                raise AssertionError(f"timed out waiting for {what}; last calls: {methods}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    # --- HTTP side ---------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, str], dict[str, bytes]]:
        params: dict[str, str] = dict(request.query)
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                content = bytes(await part.read())
                if part.filename is not None:
                    files[part.name or ""] = content
                else:
                    params[part.name or ""] = content.decode()
        elif request.content_type == "application/x-www-form-urlencoded":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        elif request.content_type == "application/json":
            body = await request.json()
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
        else:
            await request.read()  # empty octet-stream body for calls without parameters
        return params, files

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params, files = await self._params(request)
        self.calls.append(Call(method, params, files, time.monotonic()))
        self._changed.set()
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            self.unknown.append(method)
            return _error(404, "Not Found")
        failures = self.fail.get(method)
        if failures:
            failure = failures.pop(0)
            extra = {"retry_after": failure.retry_after} if failure.retry_after else None
            return _error(failure.status, failure.description, extra)
        chat_id = params.get("chat_id")
        if chat_id is not None and chat_id in self.blocked_chats:
            return _error(403, "Forbidden: bot was blocked by the user")
        if files and sum(map(len, files.values())) > self.max_upload_bytes:
            return _error(413, "Request Entity Too Large")
        try:
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except _ApiError as exc:
            return _error(exc.status, exc.description)
        self._changed.set()
        if method in self.delay:
            await asyncio.sleep(self.delay[method])
        return _ok(result)

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        content = self.files.get(file_id)
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    # --- methods -----------------------------------------------------------------------

    def _m_getMe(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False}

    def _m_deleteWebhook(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    def _m_setMyCommands(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    def _m_setWebhook(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    def _m_sendChatAction(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    def _m_answerCallbackQuery(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            # Telegram forgets every update below the offset: that is the confirmation.
            self.confirmed = max(self.confirmed, offset)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        # A duplicated update comes back once after it was confirmed (an acknowledgement
        # lost on the way, as seen after network trouble), then is forgotten.
        again = [u for u in self._again if u["update_id"] < self.confirmed]
        self._again = [u for u in self._again if u["update_id"] >= self.confirmed]
        if again:
            return again
        if not self._updates and timeout:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(timeout, self.poll_hold))
        return self._updates[:limit]

    def _m_getFile(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        file_id = params["file_id"]
        if file_id not in self.files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        # A path that does not exist locally: PTB reads existing paths as local files.
        path = f"loopback-files/{file_id}"
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files[file_id]),
            "file_path": path,
        }

    def _bot_message(self, params: dict[str, str], **content: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        chat = self.chat(chat_id)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat.to_json(),
            "from": BOT_USER,
            **content,
        }
        if "reply_parameters" in params:
            target = json.loads(params["reply_parameters"])["message_id"]
            original = self.messages.get((str(chat_id), int(target)))
            if original is not None:
                message["reply_to_message"] = original
            elif not json.loads(params["reply_parameters"]).get("allow_sending_without_reply"):
                raise _ApiError(400, "Bad Request: message to be replied not found")
        if "message_thread_id" in params:
            message["message_thread_id"] = int(params["message_thread_id"])
            message["is_topic_message"] = True
        markup = json.loads(params.get("reply_markup", "{}"))
        if "inline_keyboard" in markup:  # messages carry inline keyboards only, never ForceReply
            message["reply_markup"] = markup
        elif markup:
            message["_sent_markup"] = markup  # for tests; not part of the Message object
        self.messages[(str(chat_id), message["message_id"])] = message
        return message

    def _m_sendMessage(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return self._bot_message(params, text=params["text"])

    def _m_editMessageText(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        key = (params["chat_id"], int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        markup = json.loads(params["reply_markup"]) if "reply_markup" in params else None
        if message.get("text") == params["text"] and message.get("reply_markup") == markup:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        message["text"] = params["text"]
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return message

    def _m_editMessageReplyMarkup(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        key = (params["chat_id"], int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if "reply_markup" in params:
            message["reply_markup"] = json.loads(params["reply_markup"])
        else:
            message.pop("reply_markup", None)
        return message

    def _m_deleteMessage(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        key = (params["chat_id"], int(params["message_id"]))
        if self.messages.pop(key, None) is None:
            raise _ApiError(400, "Bad Request: message to delete not found")
        return True

    def _video(self, value: str, files: dict[str, bytes]) -> dict[str, Any]:
        if value.startswith("attach://"):
            content = files[value.removeprefix("attach://")]
            file_id = f"video-{next(self._file_ids)}"
            self.uploads[file_id] = content
        elif value in self.uploads:
            file_id, content = value, self.uploads[value]
        else:
            raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "width": 1280,
            "height": 720,
            "duration": 5,
            "mime_type": "video/mp4",
            "file_size": len(content),
        }

    def _m_sendVideo(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        value = params.get("video") or ("attach://video" if "video" in files else "")
        if not value and files:
            value = f"attach://{next(iter(files))}"
        video = self._video(value, files)
        content: dict[str, Any] = {"video": video}
        if "caption" in params:
            content["caption"] = params["caption"]
        return self._bot_message(params, **content)

    def _m_sendMediaGroup(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        sent = []
        for item in json.loads(params["media"]):
            content: dict[str, Any]
            if item.get("type") == "photo":
                # The uploaded bytes are kept under the photo's file id, like a video's.
                video = self._video(item["media"], files)
                photo = {key: video[key] for key in ("file_id", "file_unique_id", "file_size")}
                content = {"photo": [{**photo, "width": 1280, "height": 720}]}
            else:
                content = {"video": self._video(item["media"], files)}
            if "caption" in item:
                content["caption"] = item["caption"]
            message = self._bot_message(params, **content)
            message["media_group_id"] = "mg1"
            sent.append(message)
        return sent


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _command_entities(key: str, text: str, entities: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Mark a leading /command and @mentions the way Telegram clients do."""
    found = list(entities or [])
    if text.startswith("/"):
        length = len(text.split(maxsplit=1)[0])
        found.append({"type": "bot_command", "offset": 0, "length": length})
    start = 0
    while (at := text.find("@", start)) != -1:
        end = at + 1
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        if end - at > 1 and not (at > 0 and text[at - 1] not in " \n"):
            found.append({"type": "mention", "offset": at, "length": end - at})
        start = end
    return {key: found} if found else {}


def _ok(result: Any) -> web.Response:
    return web.Response(
        text=json.dumps({"ok": True, "result": result}), content_type="application/json"
    )


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
