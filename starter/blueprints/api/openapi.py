"""The OpenAPI 3.1 description of ``/api/v1``, written by hand to match ``views.py``.

Served at ``GET /api/v1/openapi.json``; the test suite fuzzes the API against it with Schemathesis,
so a change to an endpoint that is not made here too fails a test.
"""

from __future__ import annotations

import copy
from typing import Any

from ... import catalog
from ...credits import MAX_AMOUNT, usage
from ...models import ENTRY_KINDS, HOLD_STATUSES
from .schemas import (
    DEFAULT_PAGE,
    MAX_DESCRIPTION,
    MAX_FEATURE,
    MAX_ID,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_PAGE,
)

JSON = "application/json"
METADATA_RULES = f"Any JSON object: up to {MAX_METADATA_BYTES} bytes, nested up to {MAX_METADATA_DEPTH} deep."
KEY_RULES = "1 to 251 printable characters, unique per team; a repeat with the same parameters replays the first result"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def integer(minimum: int, maximum: int, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {**schema, "description": description} if description else schema


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False, **extra}
    return {**schema, "required": required} if required else schema


def error(description: str, *codes: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON error answer whose ``code`` is one of ``codes``."""
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "allOf": [ref("ErrorBody")],
                "properties": {"code": {"enum": list(codes)}},
            }
        },
    }
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": 'Bearer realm="api"', "schema": {"type": "string"}}}

# Every authenticated call can answer these.
COMMON_ERRORS = {
    "401": error("Missing, unknown or revoked API key", "unauthorized", headers=WWW_AUTHENTICATE),
    "429": error("Rate limit of this API key exceeded", "rate_limited", headers=RETRY_AFTER),
}
BODY_ERRORS = {
    "400": error(
        "The body is not a JSON object (not JSON, not UTF-8, not an object, or not application/json)",
        "invalid_json",
        "invalid_request",
    ),
    "413": error("The body is larger than the server accepts", "request_too_large"),
}
INVALID = ("invalid_request", "invalid_amount", "unknown_feature", "idempotency_key_mismatch")
HOLD_NOT_FOUND = error(
    "No such hold for this team (another team's holds do not exist for you)", "hold_not_found", "page_not_found"
)

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": f"The idempotency key ({KEY_RULES}). Or send the idempotency_key field; if both, they must match.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 251},
}
HOLD_ID = {"name": "hold_id", "in": "path", "required": True, "schema": integer(1, MAX_ID)}

SCHEMAS: dict[str, Any] = {
    "ErrorBody": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable: branch on it."},
            "message": {"type": "string", "description": "For people: may change."},
            "field": {"type": "string", "description": "The field or query parameter at fault."},
            "required": {"type": "integer", "description": "insufficient_credits: what the call needs."},
            "available": {"type": "integer", "description": "insufficient_credits: what the team has free."},
            "limit": {"type": "integer", "description": "spend_limit_reached: the key's limit."},
            "used": {"type": "integer", "description": "spend_limit_reached: used and reserved this period."},
            "period": {"enum": ["month", "day"], "description": "spend_limit_reached: the limit's period."},
            "scope": {"enum": ["api_key", "member"], "description": "spend_limit_reached: whose limit."},
            "resets_at": {"type": "string", "format": "date-time", "description": "When the limit resets."},
            "reason": {
                "type": "string",
                "enum": ["overage_cap_reached"],
                "description": "insufficient_credits past the team's monthly overage cap.",
            },
            "overage_cap": {"type": "integer", "description": "overage_cap_reached: the monthly cap (credits)."},
            "overage_used": {"type": "integer", "description": "overage_cap_reached: overage used this period."},
        },
    },
    "Balance": obj(
        {
            "plan": {"type": "integer", "description": "Plan credits left this period (held ones included)."},
            "purchased": {"type": "integer", "description": "Purchased credits left (never expire)."},
            "other": {"type": "integer", "description": "Promo, adjustment and refund credits left."},
            "held": {"type": "integer", "description": "Reserved by active holds."},
            "available": {"type": "integer", "description": "What a spend or hold can use now."},
            "next_expiry_at": {"type": ["string", "null"], "format": "date-time"},
            "next_expiry_amount": {"type": "integer", "description": "Unheld credits expiring then."},
        },
        ["plan", "purchased", "other", "held", "available", "next_expiry_at", "next_expiry_amount"],
    ),
    "SpendRequest": obj(
        {
            "amount": integer(1, MAX_AMOUNT, "Credits to spend; default: the feature's catalog cost."),
            "feature": {"type": "string", "enum": sorted(catalog.FEATURES)},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 251, "description": KEY_RULES},
            "metadata": {"type": "object", "description": METADATA_RULES},
        },
        anyOf=[{"required": ["amount"]}, {"required": ["feature"]}],
    ),
    "SpendEntry": obj(
        {
            "id": {"type": "integer"},
            "kind": {"const": "spend"},
            "amount": {"type": "integer", "maximum": -1, "description": "The signed change: negative."},
            "balance_after": {"type": "integer", "minimum": 0, "description": "Held credits included."},
            "feature": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "replayed": {"type": "boolean", "description": "True when an earlier call with this key wrote it."},
        },
        ["id", "kind", "amount", "balance_after", "feature", "created_at", "replayed"],
    ),
    "HoldRequest": obj(
        {
            "amount": integer(1, MAX_AMOUNT, "Credits to reserve; default: the feature's catalog cost."),
            "feature": {"type": "string", "enum": sorted(catalog.FEATURES)},
            "ttl_seconds": integer(1, 86_400, "Seconds until the hold expires and is released (default 900)."),
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 251, "description": KEY_RULES},
            "metadata": {"type": "object", "description": METADATA_RULES},
        },
        anyOf=[{"required": ["amount"]}, {"required": ["feature"]}],
    ),
    "CaptureRequest": obj(
        {
            "amount": integer(0, MAX_AMOUNT, "What the work cost: 0 up to the held amount; the rest returns."),
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 251, "description": KEY_RULES},
        },
        ["amount"],
    ),
    "ReleaseRequest": obj(
        {"idempotency_key": {"type": "string", "minLength": 1, "maxLength": 251, "description": KEY_RULES}}
    ),
    "Hold": obj(
        {
            "id": {"type": "integer"},
            "amount": {"type": "integer", "minimum": 1},
            "captured_amount": {"type": ["integer", "null"], "minimum": 0},
            "status": {"enum": list(HOLD_STATUSES)},
            "feature": {"type": ["string", "null"]},
            "expires_at": {"type": "string", "format": "date-time"},
            "replayed": {"type": "boolean"},
        },
        ["id", "amount", "captured_amount", "status", "feature", "expires_at", "replayed"],
    ),
    "LedgerEntry": obj(
        {
            "id": {"type": "integer"},
            "kind": {"enum": list(ENTRY_KINDS)},
            "amount": {"type": "integer", "description": "Signed change of the balance."},
            "held_delta": {"type": "integer", "description": "Signed change of the held credits."},
            "balance_after": {"type": "integer", "minimum": 0},
            "held_after": {"type": "integer", "minimum": 0},
            "feature": {"type": ["string", "null"]},
            "hold_id": {"type": ["integer", "null"]},
            "description": {"type": "string"},
            "metadata": {"type": "object"},
            "actor_type": {"type": "string", "description": "user, api, admin, stripe or system"},
            "api_key_id": {"type": ["integer", "null"], "description": "The API key that caused it (actor api)."},
            "created_at": {"type": "string", "format": "date-time"},
        },
        [
            "id",
            "kind",
            "amount",
            "held_delta",
            "balance_after",
            "held_after",
            "feature",
            "hold_id",
            "description",
            "metadata",
            "actor_type",
            "api_key_id",
            "created_at",
        ],
    ),
    "Usage": obj(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "group_by": {"enum": list(usage.GROUPS)},
            "total": {"type": "integer", "minimum": 0, "description": "Credits used in the range."},
            "data": {
                "type": "array",
                "items": obj(
                    {
                        "group": {
                            "type": ["string", "null"],
                            "description": "The day (YYYY-MM-DD), feature code, member's user id or key id; "
                            "null: no feature, not a member (keys, system), or no key",
                        },
                        "label": {"type": "string", "description": "For people: a date, feature, name or key."},
                        "credits": {"type": "integer"},
                    },
                    ["group", "label", "credits"],
                ),
            },
        },
        ["from", "to", "group_by", "total", "data"],
    ),
    "LedgerPage": obj(
        {
            "data": {"type": "array", "items": ref("LedgerEntry")},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page."},
        },
        ["data", "next_cursor"],
    ),
}


def body(schema: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": ref(schema)}}}


def post(summary: str, request: str, answers: dict[str, Any], *, body_required: bool = True, **extra: Any):  # type: ignore[no-untyped-def]
    return {
        "summary": summary,
        "parameters": [*extra.pop("parameters", []), IDEMPOTENCY_HEADER],
        "requestBody": body(request, required=body_required),
        "responses": {**answers, **BODY_ERRORS, **COMMON_ERRORS},
        **extra,
    }


PATHS: dict[str, Any] = {
    "/api/v1/balance": {
        "get": {
            "operationId": "getBalance",
            "summary": "The team's credits now",
            "responses": {"200": ok("The balance", ref("Balance")), **COMMON_ERRORS},
        }
    },
    "/api/v1/spend": {
        "post": post(
            "Spend credits, by feature (its catalog cost) or by amount",
            "SpendRequest",
            {
                "201": ok("Spent: the ledger entry", ref("SpendEntry")),
                "200": ok("A replay: the entry the first call with this key wrote", ref("SpendEntry")),
                "402": error("Not enough credits (required, available)", "insufficient_credits"),
                "403": error("The key's spend limit is reached (limit, used, resets_at)", "spend_limit_reached"),
                "409": error("The idempotency key was used with other parameters", "idempotency_conflict"),
                "422": error("A field is missing, unknown, null, mistyped or out of range", *INVALID),
            },
            operationId="spend",
        )
    },
    "/api/v1/holds": {
        "post": post(
            "Reserve credits for work whose cost is known afterwards",
            "HoldRequest",
            {
                "201": ok("The hold, active", ref("Hold")),
                "200": ok("A replay: the hold the first call with this key made, as it is now", ref("Hold")),
                "402": error("Not enough credits (required, available)", "insufficient_credits"),
                "403": error("The key's spend limit is reached (limit, used, resets_at)", "spend_limit_reached"),
                "409": error("The idempotency key was used with other parameters", "idempotency_conflict"),
                "422": error("A field is missing, unknown, null, mistyped or out of range", *INVALID),
            },
            operationId="createHold",
        )
    },
    "/api/v1/holds/{hold_id}/capture": {
        "post": post(
            "Spend what the work cost (up to the hold) and return the rest",
            "CaptureRequest",
            {
                "200": ok("The hold, captured (or, for a replay, as it is now)", ref("Hold")),
                "404": HOLD_NOT_FOUND,
                "409": error(
                    "The hold is not active, or the key was used with other parameters",
                    "hold_not_active",
                    "idempotency_conflict",
                ),
                "422": error("A field is missing, unknown, null, mistyped or out of range", *INVALID),
            },
            operationId="captureHold",
            parameters=[HOLD_ID],
        )
    },
    "/api/v1/holds/{hold_id}/release": {
        "post": post(
            "Give back every credit of an active hold",
            "ReleaseRequest",
            {
                "200": ok("The hold, released (or, for a replay, as it is now)", ref("Hold")),
                "404": HOLD_NOT_FOUND,
                "409": error(
                    "The hold is not active, or the key was used with other parameters",
                    "hold_not_active",
                    "idempotency_conflict",
                ),
                "422": error("The idempotency key is missing, mismatched or invalid", *INVALID),
            },
            body_required=False,
            operationId="releaseHold",
            parameters=[HOLD_ID],
        )
    },
    "/api/v1/ledger": {
        "get": {
            "operationId": "listLedger",
            "summary": "The team's ledger entries, newest first, a page at a time",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": integer(1, MAX_PAGE, f"Page size (default {DEFAULT_PAGE})."),
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "next_cursor of the previous page",
                    "schema": {"type": "string", "pattern": r"^-?[0-9]{1,18}\.[0-9]{1,19}$"},
                },
                {"name": "kind", "in": "query", "schema": {"enum": list(ENTRY_KINDS)}},
                {
                    "name": "feature",
                    "in": "query",
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_FEATURE},
                },
                {
                    "name": "since",
                    "in": "query",
                    "description": "Entries at or after this RFC 3339 time (with an offset, e.g. Z)",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "until",
                    "in": "query",
                    "description": "Entries before this RFC 3339 time",
                    "schema": {"type": "string", "format": "date-time"},
                },
            ],
            "responses": {
                "200": ok("A page of entries", ref("LedgerPage")),
                "422": error("A query parameter is unknown, repeated or invalid", "invalid_request"),
                **COMMON_ERRORS,
            },
        }
    },
    "/api/v1/usage": {
        "get": {
            "operationId": "getUsage",
            "summary": "Credits used over whole UTC days, by day, feature, member or API key",
            "parameters": [
                {
                    "name": "from",
                    "in": "query",
                    "description": "First day (default: 29 days before to)",
                    "schema": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                },
                {
                    "name": "to",
                    "in": "query",
                    "description": f"Last day, included (default: today); at most {usage.MAX_DAYS} days in all",
                    "schema": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                },
                {"name": "group_by", "in": "query", "schema": {"enum": list(usage.GROUPS)}},
            ],
            "responses": {
                "200": ok("Usage in the range", ref("Usage")),
                "422": error("A query parameter is unknown, repeated or invalid", "invalid_request"),
                **COMMON_ERRORS,
            },
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict: callers may change it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Credits API",
            "version": "1",
            "description": "A team's credits: balance, spend, holds, ledger and usage. "
            "Authenticate with a team API key: Authorization: Bearer cs_…. "
            "Errors are JSON: {error: {code, message, …}}.",
        },
        "security": [{"apiKey": []}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A team API key (cs_…_…)"}
            },
        },
    }
