"""A loopback Discord: the REST API and the gateway, enough for the real discord.py client.

Point discord.py at it with ``DiscordServer.patch(monkeypatch)`` (``Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY``). It records every REST call, keeps the messages it
created, pushes INTERACTION_CREATE events on demand, and answers with faults when told to:
429 (with the ``Via`` header discord.py needs to retry), 403, 413 (code 40005), and 401
code 50027 for an expired interaction token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
APP_ID = 700000000000000001
BOT_ID = 700000000000000002
GUILD_ID = 700000000000000003
CHANNEL_ID = 700000000000000004
BOT_TOKEN = "MTIzNDU2Nzg5.loopback.bot-token-value"


def api_base(url: str) -> str:
    """Return discord.py's ``Route.BASE`` for a loopback server at ``url``."""
    return f"{url}/api/v10"


def gateway_url(url: str) -> yarl.URL:
    """Return discord.py's ``DiscordWebSocket.DEFAULT_GATEWAY`` for a loopback server."""
    return yarl.URL(url).with_scheme("ws") / "gw" / ""


@dataclass(frozen=True)
class User:
    """A Discord user of the loopback server."""

    id: int
    name: str
    locale: str = "en-US"

    def payload(self) -> dict[str, Any]:
        """Return the user object."""
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": False,
        }


@dataclass
class Call:
    """One REST request the server received."""

    method: str
    path: str
    body: Any  # JSON body (payload_json for multipart), or None
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (filename, content)
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """Answer matching requests with an error, ``times`` times."""

    method: str
    path: re.Pattern[str]
    status: int
    code: int
    times: int
    retry_after: float = 0.05


class DiscordServer:
    """REST under /api/v10, the gateway at /gw/, attachments under /attachments/."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.attachments: dict[str, bytes] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}  # scope -> synced commands
        self.expired: set[str] = set()  # interaction tokens that answer 401/50027
        self.channels: set[int] = {CHANNEL_ID}  # the test channel and the DMs opened
        self.roles: dict[int, str] = {555: "Producers", 556: "Listeners"}  # in the guild
        self.upload_delay = 0.0  # seconds to hold the answer to a request carrying files
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._deferred: dict[str, int] = {}  # token -> the thinking message not yet used
        self._originals: dict[str, int] = {}  # token -> the interaction's response message
        self._interactions: dict[str, dict[str, Any]] = {}  # token -> interaction payload
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(2)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.identified = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("GET", "/gw/", self._gateway)
        app.router.add_route("GET", "/attachments/{name:.+}", self._attachment)
        app.router.add_route("*", "/api/v10/{path:.+}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Close the sockets and stop listening."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point discord.py's REST and gateway at this server."""
        monkeypatch.setattr(discord.http.Route, "BASE", api_base(self.url))
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway_url(self.url)
        )

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    # --- helpers for tests -----------------------------------------------------------

    def snowflake(self) -> int:
        """Return a new id that reads as "now"."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | next(self._ids)

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        code: int = 0,
        times: int = 1,
        retry_after: float = 0.05,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        self.faults.append(Fault(method, re.compile(path), status, code, times, retry_after))

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        """Return the calls whose path matches a regular expression."""
        return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    def add_attachment(self, filename: str, content: bytes, content_type: str) -> dict[str, Any]:
        """Store a file on the "CDN"; return its attachment object."""
        attachment_id = self.snowflake()
        name = f"{attachment_id}/{filename}"
        self.attachments[name] = content
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(content),
            "url": f"{self.url}/attachments/{name}?ex=signed",
            "proxy_url": f"{self.url}/attachments/{name}",
            "content_type": content_type,
        }

    def _message(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
        *,
        webhook: bool = False,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        attachments = []
        for filename, content in files:
            attachments.append(self.add_attachment(filename, content, "video/mp4"))
        message = {
            "id": str(message_id or self.snowflake()),
            "channel_id": str(channel_id),
            "guild_id": str(GUILD_ID),
            "type": 0,
            "tts": False,
            "pinned": False,
            "author": {
                "id": str(BOT_ID),
                "username": "actorbot",
                "discriminator": "0",
                "avatar": None,
                "bot": True,
            },
            "content": body.get("content") or "",
            "timestamp": "2025-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [],
            "components": body.get("components") or [],
            "flags": body.get("flags") or 0,
        }
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
        if webhook:
            message["webhook_id"] = str(APP_ID)
        self.messages[int(message["id"])] = message
        return message

    # --- the gateway -----------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        try:
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                if data["op"] == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif data["op"] == 2:
                    ready = {
                        "v": 10,
                        "user": {
                            "id": str(BOT_ID),
                            "username": "actorbot",
                            "discriminator": "0",
                            "avatar": None,
                            "bot": True,
                        },
                        "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                        "session_id": "loopback-session",
                        "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gw/",
                        "application": {"id": str(APP_ID), "flags": 0},
                    }
                    await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
                    # With the guilds intent, each guild follows with its roles (names).
                    guild = {"op": 0, "t": "GUILD_CREATE", "s": next(self._seq),
                             "d": self.guild()}  # fmt: skip
                    await ws.send_str(json.dumps(guild))
                    self.identified.set()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    def guild(self) -> dict[str, Any]:
        """Return the test guild as GUILD_CREATE carries it."""
        roles = [{"id": str(GUILD_ID), "name": "@everyone", "permissions": "0", "position": 0}]
        roles += [
            {"id": str(role_id), "name": name, "permissions": "0", "position": 1}
            for role_id, name in self.roles.items()
        ]
        return {
            "id": str(GUILD_ID),
            "name": "loopback",
            "owner_id": "1",
            "roles": roles,
            "channels": [],
            "members": [],
            "member_count": 3,
            "features": [],
            "emojis": [],
            "stickers": [],
            "premium_tier": 0,
            "unavailable": False,
        }

    async def dispatch(self, interaction: dict[str, Any]) -> None:
        """Push an INTERACTION_CREATE to the connected client."""
        self._interactions[interaction["token"]] = interaction
        event = {"op": 0, "t": "INTERACTION_CREATE", "s": next(self._seq), "d": interaction}
        await self._sockets[-1].send_str(json.dumps(event))

    # --- interactions ----------------------------------------------------------------

    def interaction(
        self,
        user: User,
        kind: int,
        data: dict[str, Any],
        *,
        guild: bool = True,
        message: dict[str, Any] | None = None,
        size_limit: int = 10 * 1024 * 1024,
        roles: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """Return an interaction payload from ``user`` in the test channel (or a DM)."""
        interaction_id = self.snowflake()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"itoken-{interaction_id}-secretpart",
            "version": 1,
            "data": data,
            "channel_id": str(CHANNEL_ID),
            "locale": user.locale,
            "attachment_size_limit": size_limit,
            "app_permissions": "0",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0,
        }
        if guild:
            payload["guild_id"] = str(GUILD_ID)
            payload["guild_locale"] = "en-US"
            payload["channel"] = {
                "id": str(CHANNEL_ID),
                "type": 0,
                "guild_id": str(GUILD_ID),
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            }
            payload["member"] = {
                "user": user.payload(),
                "roles": [str(r) for r in roles],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "0",
            }
        else:
            payload["channel"] = {"id": str(CHANNEL_ID), "type": 1, "recipients": [user.payload()]}
            payload["user"] = user.payload()
            payload["context"] = 1
        if message is not None:
            payload["message"] = message
        return payload

    def command(
        self, name: str, options: list[dict[str, Any]], resolved: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the ``data`` of a slash command interaction."""
        data: dict[str, Any] = {
            "id": str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": options,
        }
        if resolved:
            data["resolved"] = resolved
        return data

    # --- REST ------------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.Response:
        content = self.attachments.get(request.match_info["name"])
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content)

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # Exactly application/json: with a charset, discord.py reads the body as text.
        return web.Response(
            status=status,
            body=json.dumps(data).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    async def _body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                content = await part.read()
                if part.name == "payload_json":
                    body = json.loads(content)
                else:
                    files.append((part.filename or "file", bytes(content)))
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _fault(self, method: str, path: str) -> web.Response | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path.search(path):
                fault.times -= 1
                if fault.status == 429:
                    # Via: discord.py treats a 429 without it as a Cloudflare ban and raises.
                    return self._json(
                        {
                            "message": "You are being rate limited.",
                            "retry_after": fault.retry_after,
                            "global": False,
                        },
                        429,
                        {
                            "Via": "1.1 google",
                            "Retry-After": str(fault.retry_after),
                            "X-RateLimit-Scope": "user",
                        },
                    )
                return self._json(
                    {"message": f"error {fault.code}", "code": fault.code}, fault.status
                )
        return None

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        method = request.method
        body, files = await self._body(request)
        self.calls.append(Call(method, path, body, files, dict(request.query)))
        response = self._answer(method, path, body, files)
        if files and self.upload_delay:
            # The upload is taken (the message exists); only the answer is late.
            await asyncio.sleep(self.upload_delay)
        return response

    def _answer(
        self, method: str, path: str, body: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        fault = self._fault(method, path)
        if fault is not None:
            return fault
        token_match = re.match(r"/(?:webhooks/\d+|interactions/\d+)/([^/]+)", path)
        if token_match and token_match.group(1) in self.expired:
            return self._json({"message": "Invalid Webhook Token", "code": 50027}, 401)
        body = body if body is not None else {}
        if path == "/users/@me" and method == "GET":
            return self._json(
                {
                    "id": str(BOT_ID),
                    "username": "actorbot",
                    "discriminator": "0",
                    "avatar": None,
                    "bot": True,
                }
            )
        if path == "/oauth2/applications/@me":
            return self._json(
                {
                    "id": str(APP_ID),
                    "name": "actorbot",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "verify_key": "00",
                    "flags": 0,
                    "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
                }
            )
        if (
            m := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", path)
        ) and method == "PUT":
            scope = m.group(1) or "global"
            synced = [
                {
                    "description": "",
                    **cmd,
                    "id": str(self.snowflake()),
                    "application_id": str(APP_ID),
                    "version": "1",
                    "default_member_permissions": cmd.get("default_member_permissions"),
                }
                for cmd in body
            ]
            self.commands[scope] = synced
            return self._json(synced)
        if (m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path)) and method == "POST":
            return self._callback(m.group(1), m.group(2), body)
        if (m := re.fullmatch(r"/webhooks/\d+/([^/]+)", path)) and method == "POST":
            return self._followup(m.group(1), body, files)
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)/messages/(@original|\d+)", path):
            return self._webhook_message(method, m.group(1), m.group(2), body, files)
        if (m := re.fullmatch(r"/channels/(\d+)/messages", path)) and method == "POST":
            if int(m.group(1)) not in self.channels:
                # A user id is no channel: a DM must be opened first.
                return self._json({"message": "Unknown Channel", "code": 10003}, 404)
            return self._json(self._message(int(m.group(1)), body, files))
        if m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path):
            return self._edit(method, int(m.group(2)), body)
        if path == "/users/@me/channels" and method == "POST":
            recipient = body["recipient_id"]
            self.channels.add(int(recipient) + 1)
            return self._json(
                {
                    "id": str(int(recipient) + 1),
                    "type": 1,
                    "last_message_id": None,
                    "recipients": [
                        {
                            "id": str(recipient),
                            "username": "someone",
                            "discriminator": "0",
                            "avatar": None,
                        }
                    ],
                }
            )
        if re.fullmatch(r"/channels/\d+/typing", path):
            return web.Response(status=204)
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    def _callback(self, interaction_id: str, token: str, body: dict[str, Any]) -> web.Response:
        kind = body["type"]
        data = body.get("data") or {}
        response: dict[str, Any] = {"id": interaction_id, "type": 2}
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5):  # a message, or "thinking" that becomes one
            message = self._message(
                CHANNEL_ID, {**data, "content": data.get("content", "")}, [], webhook=True
            )
            self._originals[token] = int(message["id"])
            if kind == 5:
                self._deferred[token] = int(message["id"])
            response |= {
                "response_message_id": message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & 64),
            }
            resource["message"] = message
        return self._json({"interaction": response, "resource": resource})

    def _followup(
        self, token: str, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> web.Response:
        deferred = self._deferred.pop(token, None)
        if deferred is not None and deferred in self.messages:
            # The first followup after a deferral fills the "thinking" message, keeping its flags.
            flags = self.messages[deferred]["flags"]
            message = self._message(
                CHANNEL_ID, {**body, "flags": flags}, files, webhook=True, message_id=deferred
            )
            return self._json(message)
        return self._json(self._message(CHANNEL_ID, body, files, webhook=True))

    def _webhook_message(
        self,
        method: str,
        token: str,
        which: str,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
    ) -> web.Response:
        message_id = self._originals.get(token) if which == "@original" else int(which)
        if message_id is None or message_id not in self.messages:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        if method != "GET":
            self._deferred.pop(token, None) if message_id == self._originals.get(token) else None
        return self._edit(method, message_id, body, files)

    def _edit(
        self,
        method: str,
        message_id: int,
        body: dict[str, Any],
        files: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    ) -> web.Response:
        message = self.messages.get(message_id)
        if message is None:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        if method == "DELETE":
            del self.messages[message_id]
            return web.Response(status=204)
        if method == "PATCH":
            for key in ("content", "components", "flags"):
                if key in body and body[key] is not None:
                    message[key] = body[key]
                elif key == "components" and key in body:
                    message[key] = []
            message["edited_timestamp"] = "2025-01-01T00:00:01+00:00"
        return self._json(message)
