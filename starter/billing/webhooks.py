"""Stripe webhooks: verify the signature, store the event, apply it, all in one transaction.

``receive`` is the one entry point, for Stripe's deliveries and for test mode alike. Every event
is stored by id (the dedupe key and the audit trail) in the same transaction as its effects, so a
delivery is applied exactly once: a repeat, or a concurrent twin, finds the id taken and does
nothing. A failure rolls the effects back, records the error and answers 500, so Stripe retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import StripeEvent, utcnow
from . import fulfilment, recharge, reversals, subscriptions
from .errors import Ignored, InvalidEvent, UnsupportedApiVersion
from .subscriptions import Notes

log = logging.getLogger(__name__)
Json = dict[str, Any]
TOLERANCE_SECONDS = 300
DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)

# Each handler gets the event's object, the event, and the notes to record disagreements in.
HANDLERS: dict[str, Callable[[Json, Json, Notes], object]] = {
    "checkout.session.completed": lambda obj, event, notes: fulfilment.fulfil_checkout(obj, notes),
    "checkout.session.async_payment_succeeded": lambda obj, event, notes: fulfilment.fulfil_checkout(obj, notes),
    "checkout.session.async_payment_failed": lambda obj, event, notes: fulfilment.payment_failed(obj),
    "invoice.paid": lambda obj, event, notes: subscriptions.invoice_paid(obj, notes),
    "invoice.payment_failed": lambda obj, event, notes: subscriptions.invoice_changed(obj, notes),
    "customer.subscription.created": lambda obj, event, notes: subscriptions.sync(obj, notes),
    "customer.subscription.updated": lambda obj, event, notes: subscriptions.sync(obj, notes),
    "customer.subscription.deleted": lambda obj, event, notes: subscriptions.sync(obj, notes),
    "charge.refunded": lambda obj, event, notes: reversals.charge_refunded(obj),
    **{name: lambda obj, event, notes: reversals.dispute_changed(obj, event["type"]) for name in DISPUTE_EVENTS},
    # Auto-recharge: its off-session PaymentIntents, and the card on file.
    "payment_intent.succeeded": lambda obj, event, notes: recharge.payment_succeeded(obj),
    "payment_intent.payment_failed": lambda obj, event, notes: recharge.payment_failed(obj),
    "payment_intent.requires_action": lambda obj, event, notes: recharge.payment_requires_action(obj),
    "payment_method.attached": lambda obj, event, notes: recharge.card_attached(obj),
    "payment_method.detached": lambda obj, event, notes: recharge.card_detached(obj),
}


def check_api_version(event: Json) -> None:
    """Events come in the endpoint's API version; one older than the SDK's has shapes we do not read."""
    version = str(event.get("api_version") or "")
    if version[:10] < str(stripe.api_version)[:10]:
        raise UnsupportedApiVersion(
            f"This event is rendered at API version {version or 'unknown'}, older than {stripe.api_version} "
            "that this app reads: set the webhook endpoint's API version to it (stripe listen --latest)."
        )


def parse(payload: bytes, signature: str | None) -> Json:
    """The verified event as plain dicts; ``InvalidEvent`` for a bad signature, a stale one or a bad body."""
    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(text, signature or "", secret, TOLERANCE_SECONDS)
        event = json.loads(text)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidEvent("The body is not a JSON Stripe event.") from error
    except stripe.SignatureVerificationError as error:
        raise InvalidEvent("The signature does not match, or is older than five minutes.") from error
    valid = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"].startswith("evt_")
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
    if not valid:
        raise InvalidEvent("The body is not a Stripe event.")
    return event


def receive(payload: bytes, signature: str | None) -> tuple[int, Json]:
    """Verify, store and apply one delivery; returns (HTTP status, JSON body). Commits or rolls back."""
    try:
        event = parse(payload, signature)
    except InvalidEvent as error:
        return 400, {"error": {"code": "invalid_event", "message": str(error)}}
    try:
        check_api_version(event)
    except UnsupportedApiVersion as error:
        # Not a silent 200: kept with the reason for the admin page, and answered 400 so Stripe shows it failing.
        _record_failure(event, error)
        return 400, {"error": {"code": "unsupported_api_version", "message": str(error)}}
    try:
        outcome = _apply(event)
    except Exception as error:
        db.session.rollback()
        log.exception("Stripe event %s (%s) failed", event["id"], event["type"])
        _record_failure(event, error)
        return 500, {"error": {"code": "processing_failed", "message": "The event could not be processed."}}
    return 200, {"received": True, **outcome}


def _apply(event: Json) -> Json:
    stored = db.session.scalar(select(StripeEvent).where(StripeEvent.id == event["id"]).with_for_update())
    if stored is not None and stored.processed_at is not None:
        db.session.commit()
        return {"duplicate": True}
    if stored is None:
        stored = StripeEvent(id=event["id"], type=event["type"], stripe_created=event["created"], payload=event)
        db.session.add(stored)
        try:
            db.session.flush()  # claims the id now: a concurrent twin waits here, then fails the insert
        except IntegrityError:
            db.session.rollback()  # the twin committed first: it applied the event, this one is the duplicate
            return {"duplicate": True}
    stored.error = None  # a redelivery that succeeds clears the failure an earlier attempt recorded
    handler = HANDLERS.get(event["type"])
    outcome: Json = {"handled": handler is not None}
    if handler is not None:
        notes = Notes()
        savepoint = db.session.begin_nested()
        try:
            handler(event["data"]["object"], event, notes)
            savepoint.commit()
            stored.warning = notes.text()
            if stored.warning:
                outcome["warning"] = stored.warning
        except Ignored as reason:
            # Nothing to do for this event (not ours, mismatched, stale): stored with the reason, answered 200.
            savepoint.rollback()
            log.warning("Stripe event %s (%s) ignored: %s", event["id"], event["type"], reason)
            stored.error = f"ignored: {reason}"
            outcome["ignored"] = str(reason)
    stored.processed_at = utcnow()
    db.session.commit()
    return outcome


def _record_failure(event: Json, error: Exception) -> None:
    """Keep the failed event and why (processed_at stays empty, so a redelivery processes it again)."""
    try:
        stored = db.session.get(StripeEvent, event["id"]) or StripeEvent(
            id=event["id"], type=event["type"], stripe_created=event["created"], payload=event
        )
        stored.error = f"{type(error).__name__}: {error}"[:2000]
        db.session.add(stored)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("Could not record the failure of Stripe event %s", event["id"])


def replay(event_id: str) -> tuple[int, Json]:
    """Apply a stored event again through the same handler (admin tool); a processed one is a duplicate."""
    stored = db.session.get(StripeEvent, event_id)
    if stored is None:
        return 404, {"error": {"code": "not_found", "message": "No such event."}}
    event = stored.payload
    try:
        check_api_version(event)
    except UnsupportedApiVersion as error:
        return 400, {"error": {"code": "unsupported_api_version", "message": str(error)}}
    try:
        outcome = _apply(event)
    except Exception as error:
        db.session.rollback()
        _record_failure(event, error)
        return 500, {"error": {"code": "processing_failed", "message": str(error)}}
    return 200, outcome
