"""Build and sign Stripe webhook events the way Stripe does, for tests (no dependency on the app code).

    event = make_event("checkout.session.completed", session)
    body, headers = signed_request(event, "whsec_test")
    client.post("/stripe/webhook", data=body, headers=headers)

Signatures come from the installed SDK's own `stripe.WebhookSignature.generate_signature_header`, so whatever
`stripe.Webhook.construct_event` accepts, these headers satisfy.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from pathlib import Path
from typing import Any

import stripe

Json = dict[str, Any]

WEBHOOK_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
_EVENT_FIXTURE = Path(__file__).parent / "fixtures" / "stripe" / "event.json"


def _new_event_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "evt_" + "".join(secrets.choice(alphabet) for _ in range(24))


def make_event(
    event_type: str,
    obj: Json,
    *,
    event_id: str | None = None,
    created: int | None = None,
    previous_attributes: Json | None = None,
    api_version: str | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    pending_webhooks: int = 1,
) -> Json:
    """An `event` object (fixture shape) carrying a deep copy of `obj` as `data.object`.

    `api_version` defaults to the installed SDK's pinned version (what an endpoint created by this SDK
    receives); `previous_attributes` is set for `*.updated` events when given."""
    event = json.loads(_EVENT_FIXTURE.read_text(encoding="utf-8"))
    data: Json = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(previous_attributes)
    event.update(
        id=event_id or _new_event_id(),
        object="event",
        type=event_type,
        api_version=api_version or stripe.api_version,
        created=int(time.time()) if created is None else created,
        data=data,
        livemode=False,
        pending_webhooks=pending_webhooks,
        request={"id": request_id, "idempotency_key": idempotency_key},
    )
    return event


def encode_event(event: Json) -> bytes:
    """The JSON body Stripe would POST (UTF-8 bytes)."""
    return json.dumps(event, indent=2).encode("utf-8")


def sign(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value (`t=...,v1=...`) for `payload`, computed by the SDK itself."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    ts = int(time.time()) if timestamp is None else timestamp
    return str(stripe.WebhookSignature.generate_signature_header(text, secret, timestamp=ts))


def signed_request(event: Json, secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for POSTing `event` to a webhook endpoint, signed with `secret`."""
    body = encode_event(event)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": WEBHOOK_USER_AGENT,
        "Stripe-Signature": sign(body, secret, timestamp),
    }
    return body, headers
