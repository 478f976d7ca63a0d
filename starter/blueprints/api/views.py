"""The JSON API for the developer's own backend: ``/api/v1/*``, authenticated by a team API key.

Thin: read and check the request, call the ledger, commit, answer. Each call is one transaction; a
``CreditError`` rolls it back and becomes its JSON error. Only ``Authorization: Bearer <key>``
authenticates: a browser's session cookie never does, so the API needs no CSRF token.
"""

from __future__ import annotations

import time
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, jsonify, request
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from ... import alerts, api_keys, catalog, credits, ratelimit
from ...credits import history, usage
from ...extensions import csrf, db, limiter
from ...models import utcnow
from . import openapi, schemas
from .schemas import ApiError, invalid

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # no cookie authenticates here, so there is no session for a forged form to ride on
limiter.exempt(bp)  # the API counts its calls itself (starter/ratelimit.py): one storage call per request

SPEND_FIELDS = frozenset({"amount", "feature", "description", "idempotency_key", "metadata"})
HOLD_FIELDS = frozenset({"amount", "feature", "ttl_seconds", "description", "idempotency_key", "metadata"})
CAPTURE_FIELDS = frozenset({"amount", "idempotency_key"})
RELEASE_FIELDS = frozenset({"idempotency_key"})
PUBLIC_ENDPOINTS = {"api.openapi_document"}
FEATURE_NAMES = {code: feature.name for code, feature in catalog.FEATURES.items()}
CLIENT = "starter.api_client"
USED = "starter.api_key_used"
WINDOW = "starter.api_rate_limit"
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limited",
}


def current_client() -> api_keys.ActiveKey | None:
    """The caller's key, looked up once per request (the rate limiter asks first).

    Kept in the WSGI environ, which belongs to this request alone, rather than in ``g``, which
    lives as long as the app context and so can outlive a request (in tests and scripts). Nothing
    about a key outlives its request: revoking it refuses the next call.
    """
    environ = request.environ
    if CLIENT not in environ:
        environ[CLIENT] = _authenticate()
    return environ[CLIENT]


def _authenticate() -> api_keys.ActiveKey | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    key = api_keys.authenticate(token.strip())
    if key is not None and api_keys.record_use(key):
        # At most once a minute per key, in the call's own transaction: the spend's COMMIT (or the one in
        # ``no_store`` for a call that writes nothing) keeps it. A refused call rolls it back; the next retries.
        request.environ[USED] = True
    return key


def rate_limit_key() -> str:
    """Limits count per API key; requests without a valid key count per address."""
    client = current_client()
    return f"api-key:{client.prefix}" if client else f"ip:{get_remote_address()}"


@bp.before_request
def require_api_key() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    count_call()  # before the 401: a flood of bad keys is limited per address
    if current_client() is None:
        bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
        raise ApiError(
            401,
            "unauthorized",
            "Invalid or revoked API key." if bearer else "Send an API key: Authorization: Bearer <key>.",
            headers={"WWW-Authenticate": 'Bearer realm="api"' + (', error="invalid_token"' if bearer else "")},
        )


def count_call() -> None:
    """One budget per key across every endpoint (``API_RATE_LIMIT``), one storage call per limit."""
    api_limiter: ratelimit.ApiLimiter = current_app.extensions["api_limiter"]
    if not api_limiter.enabled:
        return
    windows = api_limiter.hit(current_app.config["API_RATE_LIMIT"], rate_limit_key())
    shown = next((window for window in windows if window.breached), windows[0] if windows else None)
    request.environ[WINDOW] = shown
    if shown is not None and shown.breached:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests for this API key; retry after the Retry-After seconds.",
            headers=rate_limit_headers(shown),
        )


def rate_limit_headers(window: ratelimit.Window) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(max(0, window.remaining)),
        "X-RateLimit-Reset": str(int(window.reset_at)),
        "Retry-After": str(max(1 if window.breached else 0, int(window.reset_at - time.time()))),
    }


def team_id() -> int:
    client = current_client()
    assert client is not None  # require_api_key ran
    return client.team_id


def actor() -> credits.Actor:
    """The key making the call, with its spend limit: what every ledger entry of the call records."""
    client = current_client()
    assert client is not None
    return api_keys.actor_for(client.id, client.spend_limit, client.limit_period)


@bp.after_request
def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    if window := request.environ.get(WINDOW):
        response.headers.update(rate_limit_headers(window))
    if request.environ.get(USED) and response.status_code < 400:
        db.session.commit()  # a call that wrote nothing else (GET): keep its last-used time
    return response


# --- endpoints ------------------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())


@bp.get("/balance")
def balance() -> Response:
    return jsonify(schemas.balance_json(credits.balance(team_id())))


@bp.post("/spend")
def spend() -> tuple[Response, int]:
    body = schemas.json_body(SPEND_FIELDS)
    key = schemas.idempotency_key(body)
    feature = schemas.text(body, "feature", schemas.MAX_FEATURE)
    receipt = credits.spend(
        team_id(),
        body.get("amount"),
        key=key,
        feature=feature,
        actor=actor(),
        description=schemas.text(body, "description", schemas.MAX_DESCRIPTION) or "",
        meta=schemas.metadata(body),
    )
    db.session.commit()
    return jsonify(schemas.spend_json(receipt)), (200 if receipt.replayed else 201)


@bp.post("/holds")
def create_hold() -> tuple[Response, int]:
    body = schemas.json_body(HOLD_FIELDS)
    key = schemas.idempotency_key(body)
    result = credits.hold(
        team_id(),
        body.get("amount"),
        key=key,
        feature=schemas.text(body, "feature", schemas.MAX_FEATURE),
        ttl_seconds=body.get("ttl_seconds", current_app.config["HOLD_TTL_SECONDS"]),
        actor=actor(),
        description=schemas.text(body, "description", schemas.MAX_DESCRIPTION) or "",
        meta=schemas.metadata(body),
    )
    db.session.commit()
    return jsonify(schemas.hold_json(result)), 200 if result.replayed else 201


@bp.post("/holds/<int:hold_id>/capture")
def capture_hold(hold_id: int) -> Response:
    body = schemas.json_body(CAPTURE_FIELDS)
    key = schemas.idempotency_key(body)
    if "amount" not in body:
        raise invalid("amount is required: the credits the work cost, 0 up to the held amount.", "amount")
    if not schemas.hold_id_in_range(hold_id):
        raise credits.HoldNotFound("No such hold.")
    result = credits.capture(team_id(), hold_id, body["amount"], key=key, actor=actor())
    db.session.commit()
    return jsonify(schemas.hold_json(result))


@bp.post("/holds/<int:hold_id>/release")
def release_hold(hold_id: int) -> Response:
    body = schemas.json_body(RELEASE_FIELDS)
    key = schemas.idempotency_key(body)
    if not schemas.hold_id_in_range(hold_id):
        raise credits.HoldNotFound("No such hold.")
    result = credits.release(team_id(), hold_id, key=key, actor=actor())
    db.session.commit()
    return jsonify(schemas.hold_json(result))


@bp.get("/ledger")
def ledger() -> Response:
    """Newest first, keyset-paginated over (created_at, id): page 1,000 costs what page 1 does."""
    query = schemas.ledger_query()
    filters = history.Filters(query["kind"], query["feature"], query["since"], query["until"])
    rows, after = history.page(team_id(), filters, after=query["cursor"], size=query["limit"])
    entries = [row.LedgerEntry for row in rows]
    next_cursor = history.encode_cursor(*after) if after else None
    return jsonify({"data": [schemas.entry_json(entry) for entry in entries], "next_cursor": next_cursor})


@bp.get("/usage")
def usage_report() -> Response:
    """Credits used per UTC day, feature, member or key over whole days: one aggregate statement."""
    query = schemas.usage_query(utcnow().date())
    window = usage.Window(query["first"], query["last"], ZoneInfo("UTC"))
    found = usage.cells(team_id(), window)
    members, keys = usage.names(team_id())
    groups = usage.group(found, query["group_by"], window, members, keys, FEATURE_NAMES)
    return jsonify(
        {
            "from": query["first"].isoformat(),
            "to": query["last"].isoformat(),
            "group_by": query["group_by"],
            "total": sum(cell.credits for cell in found),
            "data": [{"group": item.key, "label": item.label, "credits": item.credits} for item in groups],
        }
    )


# --- errors ---------------------------------------------------------------------------------------


def error_json(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[Response, int, dict[str, str]]:
    return jsonify({"error": {"code": code, "message": message, **(details or {})}}), status, headers or {}


@bp.errorhandler(ApiError)
def api_error(error: ApiError) -> tuple[Response, int, dict[str, str]]:
    db.session.rollback()
    return error_json(error.status, error.code, error.message, error.details, error.headers)


@bp.errorhandler(credits.CreditError)
def credit_error(error: credits.CreditError) -> tuple[Response, int, dict[str, str]]:
    db.session.rollback()
    if isinstance(error, credits.SpendLimitReached):
        alerts.limit_refused(team_id(), error)  # its own small transaction: the refused call changed nothing
    return error_json(error.status, error.code, str(error), error.details())


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[Response, int, dict[str, str]]:
    db.session.rollback()
    status = error.code or 500
    if status >= 500:
        current_app.logger.exception("Server error on %s %s", request.method, request.path)
        return error_json(500, "internal_error", "Something went wrong on our side; nothing was changed.")
    code = HTTP_CODES.get(status, "invalid_request")
    return error_json(status, code, error.description or code)
