"""Provider webhook signatures, as pure functions (the receiver is wired elsewhere).

A webhook only wakes a job: its state is always confirmed from the provider's API, so a
forged or replayed callback that got past these checks still changes nothing by itself.

- Replicate (Standard Webhooks, as in replicate-python ``Webhooks.validate``): HMAC-SHA256
  over ``{webhook-id}.{webhook-timestamp}.{body}`` keyed with the base64 part of the
  ``whsec_`` secret; ``webhook-signature`` holds space-separated ``v1,<base64>`` entries;
  ``webhook-id`` stays the same across retries, so it de-duplicates them.
- fal: Ed25519 over request id, user id, timestamp and sha256hex(body), newline-joined, from the
  ``X-Fal-Webhook-*`` headers, hex signature, keys from fal's JWKS, ±300 s of clock skew.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 300


class WebhookRejected(Exception):
    """A callback that is not provably from the provider, or too old; ignore it."""


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _fresh(timestamp: str, now: float, tolerance: float) -> None:
    try:
        sent = int(timestamp)
    except ValueError as exc:
        raise WebhookRejected("timestamp is not a number") from exc
    if abs(now - sent) > tolerance:
        raise WebhookRejected("timestamp outside the allowed clock skew")


def verify_replicate(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> str:
    """Check a Replicate webhook; return its ``webhook-id`` (the de-duplication key)."""
    found = _headers(headers)
    webhook_id = found.get("webhook-id", "")
    timestamp = found.get("webhook-timestamp", "")
    signatures = found.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature")
    _fresh(timestamp, now, tolerance)
    prefix, _, encoded = secret.partition("_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise WebhookRejected("the signing secret is not whsec_<base64>") from exc
    if prefix != "whsec" or not key:
        raise WebhookRejected("the signing secret is not whsec_<base64>")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(given, expected):
            return webhook_id
    raise WebhookRejected("no signature matches")


def fal_keys_from_jwks(jwks: Mapping[str, Any]) -> list[bytes]:
    """Return the raw Ed25519 public keys of a JWKS document (fal publishes one)."""
    keys = []
    for key in jwks.get("keys", []):
        if isinstance(key, dict) and key.get("kty") == "OKP" and key.get("crv") == "Ed25519":
            x = str(key.get("x", ""))
            keys.append(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    return keys


def verify_fal(
    headers: Mapping[str, str],
    body: bytes,
    public_keys: Sequence[bytes],
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> str:
    """Check a fal webhook against the configured keys; return its request id."""
    found = _headers(headers)
    request_id = found.get("x-fal-webhook-request-id", "")
    user_id = found.get("x-fal-webhook-user-id", "")
    timestamp = found.get("x-fal-webhook-timestamp", "")
    signature_hex = found.get("x-fal-webhook-signature", "")
    if not (request_id and user_id and timestamp and signature_hex):
        raise WebhookRejected("missing X-Fal-Webhook-* headers")
    _fresh(timestamp, now, tolerance)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError as exc:
        raise WebhookRejected("signature is not hex") from exc
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    for raw in public_keys:
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            continue
        return request_id
    raise WebhookRejected("no configured key verifies the signature")


class SeenWebhooks:
    """Remember recent delivery ids so that a retried or replayed callback counts once."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def first_time(self, delivery_id: str) -> bool:
        """Return True the first time an id is seen, False for every repeat."""
        if delivery_id in self._seen:
            self._seen.move_to_end(delivery_id)
            return False
        self._seen[delivery_id] = None
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True
