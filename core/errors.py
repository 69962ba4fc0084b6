"""One error tree for the whole core.

    ActorbotError
    ├── UserError               refused request; carries a message key + params for adapters
    │   ├── ImageRejected       not an image, too big, corrupt, too small
    │   ├── PromptRejected      empty, too long to speak in 10 s, bad flag
    │   └── RequestRejected     duplicate, unknown job, not yours, busy, quota, access
    ├── BackendError            a video backend failed; ``transient`` says whether to retry
    │   └── ContentFiltered     the provider's content policy refused the request (never retried)
    ├── DeliveryError           a platform could not take the result; ``permanent`` stops retries
    │   └── DeliveryUnknown     the request was sent but not answered: maybe delivered, never resent
    └── LeaseLost               another worker took the job over: this one changes nothing more

Third-party exceptions are translated into this tree once, at the edge that calls the
library (``raise BackendError(...) from exc``); nothing above that edge sees them.
"""

from __future__ import annotations

from typing import Any


class ActorbotError(Exception):
    """Base of every error the core raises on purpose."""


class UserError(ActorbotError):
    """A request refused for a reason the user can act on; adapters render ``key``."""

    def __init__(self, key: str, *, silent: bool = False, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params
        # True when the user was already told (e.g. the flood warning): adapters show nothing.
        self.silent = silent

    def __str__(self) -> str:
        if not self.params:
            return self.key
        details = ", ".join(f"{name}={value!r}" for name, value in self.params.items())
        return f"{self.key} ({details})"


class ImageRejected(UserError):
    """The uploaded file is not an image we can use."""


class PromptRejected(UserError):
    """The line cannot be performed as asked."""


class RequestRejected(UserError):
    """The request as a whole is refused (unknown job, not the owner, queue full, ...)."""


class BackendError(ActorbotError):
    """A video backend failed; ``transient`` errors are retried with backoff."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        key: str = "job.backend_failed",
        provider_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.key = key
        # The provider turned the call away for a reason of its own (an expired or revoked
        # key) before accepting anything: another provider may still take the job.
        self.provider_refused = provider_refused


class ContentFiltered(BackendError):
    """The provider refused the photo or line under its content policy."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False, key="job.filtered")


class DeliveryError(ActorbotError):
    """The platform did not accept the result; ``permanent`` ones are not retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        key: str = "job.undeliverable",
        **params: Any,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.key = key
        self.params = params


class DeliveryUnknown(DeliveryError):
    """The platform may have taken the result: the request left, no answer came back.

    Sending again could show the user the same video twice (or five times), so the job
    ends delivered-unconfirmed instead: never resent, never refunded.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class LeaseLost(ActorbotError):
    """The worker no longer holds the job's lease (it expired and another took it over).

    Nothing was changed; the worker drops the job and the new holder carries it on.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id}: lease lost to another worker")
        self.job_id = job_id
