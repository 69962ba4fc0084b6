"""Webhook signatures: genuine callbacks pass once; forged, stale and replayed ones do not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.backends.webhooks import (
    SeenWebhooks,
    WebhookRejected,
    fal_keys_from_jwks,
    verify_fal,
    verify_replicate,
)

NOW = 1_800_000_000
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps({"id": "p1", "status": "succeeded"}).encode()


def replicate_headers(body: bytes = BODY, ts: int = NOW, secret: str = SECRET) -> dict[str, str]:
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"msg_1.{ts}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures during a key rotation: one old, one current.
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": f"v1,{base64.b64encode(b'old-key-sig').decode()} v1,{signature}",
    }


def test_replicate_genuine_webhook_passes_once() -> None:
    seen = SeenWebhooks()
    webhook_id = verify_replicate(replicate_headers(), BODY, SECRET, now=NOW + 10)
    assert webhook_id == "msg_1"
    assert seen.first_time(webhook_id)
    # Replicate retries with the same webhook-id: the retry (or a replay) counts no more.
    again = verify_replicate(replicate_headers(), BODY, SECRET, now=NOW + 60)
    assert not seen.first_time(again)


@pytest.mark.parametrize(
    ("headers", "body", "now"),
    [
        (replicate_headers(), BODY.replace(b"succeeded", b"failed"), NOW),  # body changed
        (replicate_headers(secret="whsec_" + base64.b64encode(b"x" * 32).decode()), BODY, NOW),
        (replicate_headers(), BODY, NOW + 301),  # replayed after the tolerance
        (replicate_headers(ts=NOW + 1000), BODY, NOW),  # from the future
        ({"Webhook-Id": "msg_1"}, BODY, NOW),
    ],
)
def test_replicate_forged_or_stale_webhooks_are_rejected(
    headers: dict[str, str], body: bytes, now: int
) -> None:
    with pytest.raises(WebhookRejected):
        verify_replicate(headers, body, SECRET, now=now)


def fal_signed(key: Ed25519PrivateKey, body: bytes = BODY, ts: int = NOW) -> dict[str, str]:
    message = f"req-1\nuser-9\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": "req-1",
        "X-Fal-Webhook-User-Id": "user-9",
        "X-Fal-Webhook-Timestamp": str(ts),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


def jwks(*keys: Ed25519PrivateKey) -> dict[str, object]:
    entries = []
    for key in keys:
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        entries.append({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k"})
    return {"keys": entries}


def test_fal_genuine_webhook_passes_with_any_configured_key() -> None:
    old, current = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = fal_keys_from_jwks(jwks(old, current))
    assert verify_fal(fal_signed(current), BODY, keys, now=NOW - 200) == "req-1"


def test_fal_forged_tampered_and_stale_webhooks_are_rejected() -> None:
    genuine, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = fal_keys_from_jwks(jwks(genuine))
    with pytest.raises(WebhookRejected):
        verify_fal(fal_signed(forger), BODY, keys, now=NOW)
    with pytest.raises(WebhookRejected):
        verify_fal(fal_signed(genuine), BODY + b" ", keys, now=NOW)
    with pytest.raises(WebhookRejected):
        verify_fal(fal_signed(genuine), BODY, keys, now=NOW + 301)
    headers = fal_signed(genuine)
    headers["X-Fal-Webhook-Request-Id"] = "req-2"  # pointed at another job
    with pytest.raises(WebhookRejected):
        verify_fal(headers, BODY, keys, now=NOW)
