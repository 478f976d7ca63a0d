"""POST /webhooks/stripe: raw body in, the billing webhook service does the rest."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ...billing import webhooks
from ...extensions import csrf, limiter

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/stripe")
@csrf.exempt  # Stripe signs the body instead
@limiter.exempt
def stripe_webhook():  # type: ignore[no-untyped-def]
    status, body = webhooks.receive(request.get_data(cache=False), request.headers.get("Stripe-Signature"))
    return jsonify(body), status
