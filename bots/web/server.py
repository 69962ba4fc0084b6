"""The operator's page on aiohttp: login, live queue (Server-Sent Events), usage, accounts.

Handlers are thin: they read the request, call the store or the core's operations
(``Service``, ``Accounts``) and hand plain data to a template (bots/web/templates) or to
the page's script (bots/web/static). What is shown is computed in ``bots.web.views``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from yarl import URL

from bots.listening import listen
from bots.ops import ops_routes
from bots.runtime import Runtime
from core.errors import UserError
from core.i18n import render
from core.models import DeliveryAddress, JobState, UserRef, VideoRequest
from core.storage.types import JobChange

from . import views
from .charts import stacked_bars
from .notifier import PLATFORM, WebNotifier
from .sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    Sessions,
    WrongLogins,
    csrf_matches,
    token_matches,
)

log = logging.getLogger(__name__)

OPERATOR = "operator"  # the playground's one user: whoever holds the token
_FOLLOW_SECONDS = 0.5  # how often a stream looks for new job events
_KEEPALIVE_SECONDS = 15.0  # a comment line now and then keeps proxies from closing a stream
_QUEUE_ROWS = 200
_FAILURES = 20
_LEDGER_ROWS = 30
_RECENT_VIDEOS = 8
_MAX_CREDITS = 100_000  # per grant: a typo must not hand out millions
_PUBLIC = ("/login", "/static/", "/healthz", "/readyz")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebPage:
    """Serve the page beside the bots and the workers, in the same event loop."""

    def __init__(
        self, runtime: Runtime, notifier: WebNotifier, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._runtime = runtime
        self._settings = runtime.settings.web
        self._notifier = notifier
        self._clock = clock
        self._sessions = Sessions(self._settings.session_minutes * 60, clock)
        self._wrong_logins = WrongLogins(clock=clock)
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("bots.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = self._settings.port
        self.locale = runtime.settings.locale
        self.user = UserRef(PLATFORM, OPERATOR, display_name=OPERATOR, locale=self.locale)

    # --- life cycle --------------------------------------------------------------------

    def app(self) -> web.Application:
        """Return the aiohttp application (routes and the session check)."""
        # A photo may be as large as the image limit; the limit's own refusal says so.
        app = web.Application(
            client_max_size=self._runtime.settings.images.max_bytes * 2,
            middlewares=[self._guard],
        )
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/queue", self._queue)
        app.router.add_get("/events", self._events)
        app.router.add_post("/api/playground", self._playground)
        app.router.add_get("/video/{job_id}", self._video)
        app.router.add_post("/account/grant", self._grant)
        app.router.add_post("/account/ban", self._ban)
        app.router.add_post("/account/unban", self._unban)
        app.router.add_static("/static/", Path(__file__).with_name("static"))
        # The operator's endpoints on this port too: health for a load balancer (public,
        # nothing in them is private), /metrics for a logged-in operator.
        app.router.add_routes(ops_routes(self._runtime))
        # Streams end when the server stops, instead of holding its shutdown.
        app.on_shutdown.append(self._close_streams)
        return app

    async def start(self) -> None:
        """Listen on the configured address and port."""
        self._runner, self.port = await listen(
            self.app(), self._settings.listen, self._settings.port, shutdown_timeout=2.0
        )
        log.info("web page on http://%s:%d/", self._settings.listen, self.port)

    @property
    def serving(self) -> bool:
        """Return whether the page is listening."""
        return self._runner is not None

    async def stop(self) -> None:
        """Stop listening and end the open streams."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _close_streams(self, _app: web.Application) -> None:
        self._closing.set()

    # --- the session check -------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let only a live session in; a state-changing request also needs its CSRF token."""
        if request.path.startswith(_PUBLIC):
            return await handler(request)
        session = self._sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and request.path == "/":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="log in first")
        if request.method != "GET":
            given = request.headers.get(CSRF_HEADER)
            if given is None:
                form = await request.post()
                field = form.get(CSRF_FIELD)
                given = field if isinstance(field, str) else None
            if given is None or not csrf_matches(session, given):
                log.warning(
                    "web: %s %s without its CSRF token refused", request.method, request.path
                )
                raise web.HTTPForbidden(text="missing or wrong CSRF token")
        return await handler(request)

    # --- login -------------------------------------------------------------------------

    async def _login_form(self, request: web.Request) -> web.Response:
        return self._html("login.html", wrong=False, wait=0)

    async def _login(self, request: web.Request) -> web.Response:
        address = request.remote or "?"
        wait = self._wrong_logins.wait_seconds(address)
        if wait > 0:
            seconds = math.ceil(wait)
            response = self._html("login.html", status=429, wrong=True, wait=seconds)
            response.headers["Retry-After"] = str(seconds)
            return response
        form = await request.post()
        given = form.get("token")
        expected = self._settings.token.get_secret_value()
        if not isinstance(given, str) or not token_matches(given, expected):
            log.warning("web: a login with a wrong token from %s", address)
            self._wrong_logins.failed(address)
            return self._html("login.html", status=401, wrong=True, wait=0)
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE,
            self._sessions.start(),
            max_age=int(self._sessions.lifetime_seconds),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        self._sessions.end(request.cookies.get(COOKIE, ""))
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- the page ----------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        session = self._sessions.get(request.cookies.get(COOKIE))
        assert session is not None  # the guard let it in
        jobs = self._runtime.storage.jobs
        now = self._clock()
        platform = request.query.get("platform", "").strip()
        user_id = request.query.get("user", "").strip()
        return self._html(
            "page.html",
            csrf=session.csrf,
            snapshot=await self._snapshot(now),
            failures=views.failures(await jobs.last_failures(_FAILURES), "en"),
            charts=await self._charts(now),
            account=await self._account(platform, user_id) if platform and user_id else None,
            platform=platform,
            user_id=user_id,
            characters=[c.name for c in await self._runtime.service.characters.list(self.user)],
            recent=self._notifier.recent(_RECENT_VIDEOS),
            backend=self._runtime.backend.name,
        )

    async def _snapshot(self, now: float) -> dict[str, Any]:
        jobs = self._runtime.storage.jobs
        waiting = await jobs.waiting_jobs(_QUEUE_ROWS)
        active = await jobs.active_jobs(_QUEUE_ROWS)
        capacities = {backend.name: backend.slots for backend in self._runtime.backends}
        slots = views.slot_rows(await jobs.slots_in_use(), capacities)
        return {
            "now": now,
            "queue": views.queue_rows(waiting, active, now),
            "slots": [asdict(row) for row in slots],
        }

    async def _charts(self, now: float) -> list[tuple[str, str, Any]]:
        settings = self._runtime.settings
        days = settings.web.usage_days
        offset = views.utc_offset_seconds(ZoneInfo(settings.quotas.timezone), now)
        first = views.today(now, offset) - days + 1
        rows = await self._runtime.storage.jobs.usage_by_day(first * 86_400 - offset, offset)
        labels = views.day_labels(first, days)
        charts: list[tuple[str, str, Any]] = []
        for by in ("platform", "outcome", "preset"):
            series = views.usage_series(rows, by, first, days)
            title = f"Takes per day by {by}"
            count = round(views.total(series))
            total = f"{count} take" if count == 1 else f"{count} takes"
            charts.append((title, total, stacked_bars(labels, series, title=title)))
        spend = views.spend_series(rows, settings.presets, first, days)
        title = "Estimated spend per day (USD)"
        charts.append(
            (
                title,
                f"${views.total(spend):.2f}",
                stacked_bars(labels, spend, title=title, currency="$"),
            )
        )
        return charts

    async def _account(self, platform: str, user_id: str) -> dict[str, Any]:
        accounts = self._runtime.service.accounts
        user = UserRef(platform, user_id)
        found = await self._runtime.storage.accounts.account_of(user)
        if found is None:
            return {"found": False}
        balance = await accounts.balance(user)
        return {
            "found": True,
            "id": found.id,
            "role": found.role,
            "access": found.access,
            "banned": found.banned_until is not None and found.banned_until > self._clock(),
            "ban_reason": found.ban_reason or "",
            "credits": balance.credits,
            "period": balance.period,
            "entries": await accounts.history(found.id, _LEDGER_ROWS),
        }

    # --- the live queue ----------------------------------------------------------------

    async def _queue(self, request: web.Request) -> web.Response:
        return web.json_response(await self._snapshot(self._clock()))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Stream job events and fresh queue snapshots as Server-Sent Events."""
        jobs = self._runtime.storage.jobs
        stream = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await stream.prepare(request)
        cursor = await jobs.last_event_seq()
        cookie = request.cookies.get(COOKIE)
        quiet_since = self._clock()
        try:
            await _send(stream, "snapshot", await self._snapshot(self._clock()))
            while not self._closing.is_set() and self._sessions.get(cookie) is not None:
                changes = await jobs.events_after(cursor, limit=_QUEUE_ROWS)
                if changes:
                    cursor = changes[-1].seq
                    for change in changes:
                        await _send(stream, "change", self._change(change), change.seq)
                    await _send(stream, "snapshot", await self._snapshot(self._clock()))
                    quiet_since = self._clock()
                elif self._clock() - quiet_since > _KEEPALIVE_SECONDS:
                    await stream.write(b": keep-alive\n\n")
                    quiet_since = self._clock()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), _FOLLOW_SECONDS)
        except ConnectionResetError:
            pass  # the browser went away
        return stream

    def _change(self, change: JobChange) -> dict[str, Any]:
        video = None
        if change.state is JobState.DONE and self._notifier.video_path(change.job_id):
            video = f"/video/{change.job_id}"
        message = render(change.error_key, "en") if change.error_key else ""
        return {
            "seq": change.seq,
            "job": change.job_id,
            "request": change.request_id,
            "state": change.state.value,
            "kind": change.kind.value,
            "message": message,
            "video": video,
        }

    # --- the playground ----------------------------------------------------------------

    async def _playground(self, request: web.Request) -> web.Response:
        """Submit a photo and a line through the same Service as the chat bots."""
        form = await request.post()
        photo = form.get("photo")
        image = photo.file.read() if isinstance(photo, web.FileField) else b""
        line = str(form.get("line", ""))
        character = str(form.get("character", "")).strip() or None
        seconds_text = str(form.get("seconds", ""))
        video_request = VideoRequest(
            user=self.user,
            image=image,
            line=line,
            address=DeliveryAddress(PLATFORM, OPERATOR, extra={"locale": self.locale}),
            source_key=f"{PLATFORM}:{uuid.uuid4().hex}",
            seconds=int(seconds_text) if seconds_text in ("5", "10") else None,
            character=character,
        )
        try:
            admission = await self._runtime.service.submit(video_request)
        except UserError as exc:
            # The bots' own words for the refusal (bad image, long line, no credits).
            message = "" if exc.silent else render(exc.key, self.locale, **exc.params)
            return web.json_response({"error": message, "key": exc.key}, status=422)
        return web.json_response(
            {
                "request": admission.request_id,
                "jobs": [job.id for job in admission.jobs],
                "position": admission.position,
                "eta_seconds": admission.eta_seconds,
            }
        )

    async def _video(self, request: web.Request) -> web.StreamResponse:
        path = self._notifier.video_path(request.match_info["job_id"])
        if path is None:
            raise web.HTTPNotFound(text="no such video (retention may have removed it)")
        # FileResponse answers Range requests: the <video> element seeks with them.
        return web.FileResponse(path, headers={"Content-Type": "video/mp4"})

    # --- accounts ----------------------------------------------------------------------

    async def _grant(self, request: web.Request) -> web.Response:
        form = await request.post()
        account_id, back = await self._target(form)
        try:
            credits = int(str(form.get("credits", "")))
        except ValueError:
            credits = 0
        if not 0 < credits <= _MAX_CREDITS:
            raise web.HTTPBadRequest(text=f"credits: a whole number from 1 to {_MAX_CREDITS}")
        note = str(form.get("note", ""))[:200]
        await self._runtime.service.accounts.grant(account_id, credits, actor=_ACTOR, note=note)
        raise web.HTTPSeeOther(back)

    async def _ban(self, request: web.Request) -> web.Response:
        form = await request.post()
        account_id, back = await self._target(form)
        reason = str(form.get("reason", ""))[:200]
        try:
            days = float(str(form.get("days", "") or 0))
        except ValueError:
            raise web.HTTPBadRequest(text="days: a number (0 or empty: for good)") from None
        seconds = days * 86_400 if days > 0 else None
        await self._runtime.service.accounts.ban(
            account_id, actor=_ACTOR, reason=reason, seconds=seconds
        )
        raise web.HTTPSeeOther(back)

    async def _unban(self, request: web.Request) -> web.Response:
        form = await request.post()
        account_id, back = await self._target(form)
        await self._runtime.service.accounts.unban(account_id, actor=_ACTOR)
        raise web.HTTPSeeOther(back)

    async def _target(self, form: Any) -> tuple[int, str]:
        """Return the account a form acts on and the page that shows it."""
        platform = str(form.get("platform", "")).strip()
        user_id = str(form.get("user", "")).strip()
        account = await self._runtime.storage.accounts.account_of(UserRef(platform, user_id))
        if account is None:
            raise web.HTTPNotFound(text="no such user")
        back = URL("/").with_query(platform=platform, user=user_id).with_fragment("account")
        return account.id, str(back)

    # --- helpers -----------------------------------------------------------------------

    def _html(self, name: str, *, status: int = 200, **context: Any) -> web.Response:
        text = self._templates.get_template(name).render(**context)
        return web.Response(text=text, status=status, content_type="text/html")


_ACTOR = f"{PLATFORM}:{OPERATOR}"  # who granted or banned, in the ledger and the log


async def _send(
    stream: web.StreamResponse, event: str, data: dict[str, Any], seq: int | None = None
) -> None:
    head = f"id: {seq}\n" if seq is not None else ""
    await stream.write(f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode())
