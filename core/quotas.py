"""Quota policy, shared by every adapter.

- ``Quotas``: settings turned into decisions: what a take costs, when credits reset, what
  a role may do, and the per-user flood guard (in memory, checked before any write).
- ``AdmissionPolicy``: the checks of one admission as plain data. ``decide`` is a pure
  function over an ``AdmissionSnapshot`` that the store reads inside the transaction that
  debits and inserts, and writes the decision in that same transaction, so concurrent
  requests cannot overdraw.
- ``access_request`` and ``link_refusal``: the other decisions the store takes inside a
  transaction, also pure over what it read.

``core.accounts`` holds what adapters call (balances, access, admin actions, ``/link``);
the SQL lives in ``core.storage`` behind its protocols.

Every refusal is a ``RequestRejected`` with a ``quota.*`` or ``access.*`` key whose
parameters say when the quota resets or what the user can do.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from config.settings import QuotaSettings
from core.errors import RequestRejected
from core.models import Account, UserRef

# Unambiguous characters (no 0/O, 1/I/L): codes are typed by hand on another device.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 8
# banned_until for a ban without end (far beyond any real timestamp).
BANNED_FOREVER = 1e18
# "No cap": larger than any queue a store will ever hold.
UNLIMITED = 1_000_000_000


@dataclass(frozen=True)
class Limits:
    """What one role may do: credits per period, round-robin weight and caps."""

    credits: int
    weight: int
    max_in_flight: int
    max_queued: int


NO_LIMITS = Limits(credits=0, weight=1, max_in_flight=UNLIMITED, max_queued=UNLIMITED)


@dataclass(frozen=True)
class RoleLimits:
    """The limits of every role, with the defaults for a role without overrides."""

    roles: Mapping[str, Limits]
    default: Limits

    def of(self, role: str) -> Limits:
        """Return the limits of a role."""
        return self.roles.get(role, self.default)


@dataclass(frozen=True)
class AdmissionSnapshot:
    """What admission reads inside its transaction before it decides."""

    account: Account
    total_queued: int  # takes waiting in the whole queue (read only when enforcing)
    chat_takes: int  # takes counted against the chat today (read only for the chat cap)
    credits: int | None  # balance of the period; None: not started (or not read: free)


@dataclass(frozen=True)
class AdmissionDecision:
    """What admission writes once every check passed."""

    limits: Limits  # of the account's role: weight and in-flight cap go on the account
    costs: tuple[int, ...]  # credits per take
    open_with: int | None  # start the period with this allowance before the debit
    count_chat: bool  # add the takes to the chat's day

    @property
    def cost(self) -> int:
        """Return what the whole request costs."""
        return sum(self.costs)


@dataclass(frozen=True)
class AccessRequest:
    """Where a user's access stands after asking; ``new`` when admins should be asked."""

    account_id: int
    status: str  # allowed | pending | denied
    new: bool


@dataclass(frozen=True)
class Period:
    """A quota period: its ledger key and when the next one starts (epoch seconds)."""

    key: str
    resets_at: float


def time_left(resets_at: float, now: float) -> tuple[int, int]:
    """Return (hours, minutes) until ``resets_at``, rounded up to a minute, for messages."""
    minutes = max(1, math.ceil((resets_at - now) / 60))
    return minutes // 60, minutes % 60


@dataclass(frozen=True)
class AdmissionPolicy:
    """The checks of one admission, fixed before its transaction starts.

    The default instance enforces nothing: takes are only put in fair order.
    """

    now: float = 0.0
    enforce: bool = False
    exempt: bool = False  # local operator tools: no access, credit or chat checks
    access: str = "open"
    period: Period = Period("", 0.0)
    chat_day: Period = Period("", 0.0)
    roles: Mapping[str, Limits] = field(default_factory=dict)
    default: Limits = NO_LIMITS
    max_queue: int = UNLIMITED
    max_chat_takes: int = 0  # 0: no cap
    costs: Mapping[int, int] = field(default_factory=dict)

    @property
    def counts_chats(self) -> bool:
        """Return whether admission counts takes against the chat's daily cap."""
        return self.enforce and not self.exempt and self.max_chat_takes > 0

    def limits(self, role: str) -> Limits:
        """Return the limits of a role (the defaults for a role without overrides)."""
        return self.roles.get(role, self.default)

    def cost(self, seconds: int) -> int:
        """Return the credits a take of this length costs (the next longer price if unlisted)."""
        if not self.enforce or self.exempt:
            return 0
        if seconds in self.costs:
            return self.costs[seconds]
        longer = sorted((length, cost) for length, cost in self.costs.items() if length >= seconds)
        return longer[0][1] if longer else max(self.costs.values(), default=0)

    def check_access(self, account: Account | None) -> None:
        """Refuse a banned user, or one the access mode does not let in yet."""
        if not self.enforce:
            return
        until = None if account is None else account.banned_until
        if until is not None and until > self.now:
            if until >= BANNED_FOREVER:
                raise RequestRejected("access.banned")
            hours, minutes = time_left(until, self.now)
            raise RequestRejected("access.banned_until", hours=hours, minutes=minutes)
        if self.exempt or self.access == "open":
            return
        status = account.access if account is not None else "none"
        if status == "allowed":
            return
        if self.access == "allowlist":
            raise RequestRejected("access.allowlist")
        refusals = {"pending": "access.pending", "denied": "access.denied"}
        raise RequestRejected(refusals.get(status, "access.approval_required"))

    def check_caps(self, *, queued: int, total_queued: int, takes: int, limits: Limits) -> None:
        """Refuse takes beyond the user's waiting cap or the global queue limit."""
        if not self.enforce:
            return
        if queued + takes > limits.max_queued:
            raise RequestRejected("quota.user_queue_full", queued=queued, limit=limits.max_queued)
        if total_queued + takes > self.max_queue:
            raise RequestRejected("quota.busy")

    def check_chat(self, used: int, takes: int) -> None:
        """Refuse takes beyond the chat's daily cap."""
        if self.counts_chats and used + takes > self.max_chat_takes:
            hours, minutes = time_left(self.chat_day.resets_at, self.now)
            raise RequestRejected(
                "quota.chat_full", limit=self.max_chat_takes, hours=hours, minutes=minutes
            )

    def decide(self, snapshot: AdmissionSnapshot, seconds: Sequence[int]) -> AdmissionDecision:
        """Check one admission of takes of these lengths; return what to write, or raise."""
        account = snapshot.account
        limits = self.limits(account.role)
        self.check_access(account)
        self.check_caps(
            queued=account.queued,
            total_queued=snapshot.total_queued,
            takes=len(seconds),
            limits=limits,
        )
        if self.counts_chats:
            self.check_chat(snapshot.chat_takes, len(seconds))
        costs = tuple(self.cost(length) for length in seconds)
        open_with = None
        if sum(costs):
            credits = snapshot.credits
            if credits is None:  # the period's first request: it starts with its allowance
                credits = open_with = limits.credits
            self.check_credits(credits, sum(costs))
        return AdmissionDecision(limits, costs, open_with, self.counts_chats)

    def access_request(self, account: Account, *, open_mode: bool) -> AccessRequest:
        """Answer a request for access: refuse a ban, else say where it stands (pure)."""
        self.check_access(account)  # banned?
        if open_mode or account.access in ("allowed", "denied", "pending"):
            status = "allowed" if open_mode else account.access
            return AccessRequest(account.id, status, new=False)
        return AccessRequest(account.id, "pending", new=True)

    def check_credits(self, credits: int, cost: int) -> None:
        """Refuse a request that costs more than the balance."""
        if cost > credits:
            hours, minutes = time_left(self.period.resets_at, self.now)
            raise RequestRejected(
                "quota.no_credits", cost=cost, credits=credits, hours=hours, minutes=minutes
            )


def link_refusal(
    *, joining: Account, target: Account, shared_platform: bool, unfinished: bool, now: float
) -> str | None:
    """Return why ``joining`` may not join ``target`` (a message key), or None if it may."""
    if joining.id == target.id:
        return "access.link_already"
    if shared_platform:  # one identity per platform and account
        return "access.link_same_platform"
    if any(a.banned_until is not None and a.banned_until > now for a in (joining, target)):
        return "access.link_refused"
    if unfinished:  # its refunds would go to the account it leaves
        return "access.link_busy"
    return None


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class FloodGuard:
    """Per-user token buckets in memory: one warning per burst of refusals, then silence."""

    def __init__(
        self,
        *,
        burst: int,
        refill_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
    ) -> None:
        self._burst = float(burst)
        self._refill = refill_seconds
        self._clock = clock
        self._max_users = max_users
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise ``quota.flood`` (silent after the first)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_users:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            refilled = (now - bucket.updated) / self._refill
            bucket.tokens = min(self._burst, bucket.tokens + refilled)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return
        wait = max(1, math.ceil((1.0 - bucket.tokens) * self._refill))
        silent, bucket.warned = bucket.warned, True
        raise RequestRejected("quota.flood", silent=silent, seconds=wait)

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely holds no information: drop it.
        full_after = self._burst * self._refill
        idle = [key for key, b in self._buckets.items() if now - b.updated >= full_after]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self._max_users:
            self._buckets.clear()  # under a flood of distinct ids, memory wins over accuracy


class Quotas:
    """The quota settings as decisions: costs, periods, role limits and the flood guard."""

    def __init__(
        self, settings: QuotaSettings, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._zone = ZoneInfo(settings.timezone)
        self._default = self._limits(settings, None)
        self._roles = {name: self._limits(settings, name) for name in settings.roles}
        self.role_limits = RoleLimits(self._roles, self._default)
        self._flood = FloodGuard(
            burst=settings.flood_burst,
            refill_seconds=settings.flood_refill_seconds,
            clock=monotonic,
        )
        self._periods: dict[str, tuple[float, Period]] = {}

    @staticmethod
    def _limits(settings: QuotaSettings, role: str | None) -> Limits:
        override = settings.roles.get(role) if role else None
        return Limits(
            credits=settings.credits
            if override is None or override.credits is None
            else override.credits,
            weight=1 if override is None else override.weight,
            max_in_flight=settings.max_in_flight_per_user
            if override is None or override.max_in_flight is None
            else override.max_in_flight,
            max_queued=settings.max_queued_per_user
            if override is None or override.max_queued is None
            else override.max_queued,
        )

    @property
    def enabled(self) -> bool:
        """Return whether credits, caps, access checks and the flood guard are on."""
        return self.settings.enabled

    def limits(self, role: str) -> Limits:
        """Return what a role may do."""
        return self._roles.get(role, self._default)

    def exempt(self, user: UserRef) -> bool:
        """Return whether a user comes from a local operator tool (no access/credit checks)."""
        return user.platform in self.settings.exempt_platforms

    def check_flood(self, user: UserRef) -> None:
        """Refuse a user who sends requests faster than the token bucket allows."""
        if self.enabled and not self.exempt(user):
            self._flood.check(f"{user.platform}:{user.platform_user_id}")

    def period(self, now: float) -> Period:
        """Return the credit period containing ``now`` in the configured time zone."""
        return self._cached(self.settings.period, now)

    def day(self, now: float) -> Period:
        """Return the local day containing ``now`` (for the per-chat cap)."""
        return self._cached("day", now)

    def _cached(self, kind: str, now: float) -> Period:
        # Admission asks on every request; the answer changes once a day at most.
        cached = self._periods.get(kind)
        if cached is not None and cached[0] <= now < cached[1].resets_at:
            return cached[1]
        local = datetime.fromtimestamp(now, self._zone).date()
        if kind == "day":
            start, end, key = local, local + timedelta(days=1), local.isoformat()
        elif kind == "week":
            start = local - timedelta(days=local.weekday())
            year, week, _ = start.isocalendar()
            end, key = start + timedelta(days=7), f"{year}-W{week:02d}"
        else:
            start = local.replace(day=1)
            end = (start + timedelta(days=32)).replace(day=1)
            key = f"{start:%Y-%m}"
        period = Period(key, self._midnight(end))
        self._periods[kind] = (self._midnight(start), period)
        return period

    def _midnight(self, day: date) -> float:
        return datetime.combine(day, clock_time(0), tzinfo=self._zone).timestamp()

    def policy(self, user: UserRef, now: float) -> AdmissionPolicy:
        """Return the checks an admission for ``user`` runs at ``now``."""
        if not self.enabled:
            return AdmissionPolicy(now=now, default=self._unlimited_in_flight())
        return AdmissionPolicy(
            now=now,
            enforce=True,
            exempt=self.exempt(user),
            access=self.settings.access,
            period=self.period(now),
            chat_day=self.day(now),
            roles=self._roles,
            default=self._default,
            max_queue=self.settings.max_queue,
            max_chat_takes=self.settings.max_takes_per_chat_per_day,
            costs=self.settings.take_costs,
        )

    def _unlimited_in_flight(self) -> Limits:
        return Limits(credits=0, weight=1, max_in_flight=UNLIMITED, max_queued=UNLIMITED)

    @staticmethod
    def new_link_code() -> str:
        """Return a fresh one-time code to type on the other platform."""
        return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))

    @staticmethod
    def normalize_code(text: str) -> str:
        """Return a typed code as stored: upper case, without spaces or dashes."""
        return "".join(ch for ch in text.upper() if ch.isalnum())
