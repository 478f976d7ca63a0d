"""What the JSON API reads and writes: body and query checks, and the shapes of its answers.

Status codes, kept consistent (``docs/api.md`` lists them): 400 when the request cannot be read as a
JSON object at all (``invalid_json``, or ``invalid_request`` for a wrong content type or a body that
is not an object); 422 when it can, but a field is missing, unknown, null, of the wrong type or out
of range (``invalid_request``, ``invalid_amount``, ``unknown_feature``, ``idempotency_key_mismatch``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import request

from ...credits import Balance, HoldResult, Receipt, history, usage
from ...models import ENTRY_KINDS, LedgerEntry

MAX_DESCRIPTION = 255
MAX_FEATURE = 64
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 16
DEFAULT_PAGE, MAX_PAGE = 50, 100
KEY_NAMESPACE = "api:"
MAX_CLIENT_KEY = 255 - len(KEY_NAMESPACE)
MAX_ID = 2**63 - 1  # beyond a BIGINT no row can exist; the database would refuse the comparison
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")


class ApiError(Exception):
    """A refused request, answered as ``{"error": {"code", "message", **details}}``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details


def invalid(message: str, field: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(422, code, message, **({"field": field} if field else {}))


# --- request bodies -------------------------------------------------------------------------------


def json_body(allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields, none of them null; empty means ``{}``."""
    data = request.get_data(cache=True)
    if not data.strip():
        return {}
    if not request.is_json:
        raise ApiError(400, "invalid_request", "Send the body as JSON with Content-Type: application/json.")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON (UTF-8).") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    for name, value in body.items():
        if name not in allowed:
            raise invalid(f"Unknown field {name!r}; expected some of: {', '.join(sorted(allowed))}.", name)
        if value is None:
            raise invalid(f"{name} must not be null; leave it out instead.", name)
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def idempotency_key(body: dict[str, Any]) -> str:
    """The key from the ``Idempotency-Key`` header or the ``idempotency_key`` field (the same if both)."""
    header = request.headers.get("Idempotency-Key")
    field = body.get("idempotency_key")
    if field is not None and not isinstance(field, str):
        raise invalid("idempotency_key must be a string.", "idempotency_key")
    if header is not None and field is not None and header != field:
        raise invalid(
            "The Idempotency-Key header and the idempotency_key field differ; send one, or the same in both.",
            "idempotency_key",
            code="idempotency_key_mismatch",
        )
    key = field if field is not None else header
    if key is None:
        raise invalid(
            "An idempotency key is required: the Idempotency-Key header or idempotency_key.", "idempotency_key"
        )
    if not key.strip() or len(key) > MAX_CLIENT_KEY:
        raise invalid(f"idempotency_key must be 1 to {MAX_CLIENT_KEY} printable characters.", "idempotency_key")
    # The client's keys live in their own namespace: a key such as "expire:hold:7" must never collide
    # with the keys the app makes for itself (plan grants, expiries, Stripe objects) in the same team.
    return f"{KEY_NAMESPACE}{key}"  # the ledger checks the characters


def text(body: dict[str, Any], name: str, max_length: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length or not storable(value):
        raise invalid(f"{name} must be a string of at most {max_length} characters.", name)
    return value


def metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict) or not _storable_json(value):
        raise invalid(f"metadata must be a JSON object nested at most {MAX_METADATA_DEPTH} deep.", "metadata")
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        raise invalid(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON.", "metadata")
    return value


def storable(value: str) -> bool:
    """No NUL (PostgreSQL text refuses it) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable_json(value: Any) -> bool:
    """Strings all storable, nesting at most MAX_METADATA_DEPTH deep; iterative, so depth cannot overflow."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH or (isinstance(item, str) and not storable(item)):
            return False
        if isinstance(item, dict):
            if not all(storable(key) for key in item):
                return False
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return True


def hold_id_in_range(hold_id: int) -> bool:
    return 1 <= hold_id <= MAX_ID


# --- ledger query ---------------------------------------------------------------------------------

LEDGER_QUERY = frozenset({"limit", "cursor", "kind", "feature", "since", "until"})


def ledger_query() -> dict[str, Any]:
    """The validated filters of ``GET /ledger``; unknown or repeated parameters are refused."""
    args = request.args
    for name in args:
        if name not in LEDGER_QUERY:
            raise invalid(f"Unknown query parameter {name!r}.", name)
        if len(args.getlist(name)) > 1:
            raise invalid(f"Give {name} once.", name)
    limit = args.get("limit", str(DEFAULT_PAGE))
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise invalid(f"limit must be a whole number from 1 to {MAX_PAGE}.", "limit")
    kind = args.get("kind")
    if kind is not None and kind not in ENTRY_KINDS:
        raise invalid(f"kind must be one of: {', '.join(ENTRY_KINDS)}.", "kind")
    feature = args.get("feature")
    if feature is not None and (not feature or len(feature) > MAX_FEATURE or not storable(feature)):
        raise invalid(f"feature must be 1 to {MAX_FEATURE} characters.", "feature")
    return {
        "limit": int(limit),
        "cursor": decode_cursor(args["cursor"]) if "cursor" in args else None,
        "kind": kind,
        "feature": feature,
        "since": timestamp(args, "since"),
        "until": timestamp(args, "until"),
    }


def timestamp(args: Any, name: str) -> datetime | None:
    """An RFC 3339 date-time, offset required (``2025-01-31T00:00:00Z``), as aware UTC."""
    value = args.get(name)
    if value is None:
        return None
    try:
        if not RFC3339.fullmatch(value):
            raise ValueError(value)
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid(
            f"{name} must be an RFC 3339 date-time with an offset, e.g. 2025-01-31T00:00:00Z.", name
        ) from None


def decode_cursor(value: str) -> tuple[datetime, int]:
    try:
        return history.decode_cursor(value)
    except ValueError:
        raise invalid("cursor is not one this API returned.", "cursor") from None


# --- usage query ----------------------------------------------------------------------------------

USAGE_QUERY = frozenset({"from", "to", "group_by"})
USAGE_DEFAULT_DAYS = 30


def usage_query(today: date) -> dict[str, Any]:
    """The validated ``GET /usage`` query: whole UTC days ``from`` … ``to`` (both included) and a grouping."""
    args = request.args
    for name in args:
        if name not in USAGE_QUERY:
            raise invalid(f"Unknown query parameter {name!r}.", name)
        if len(args.getlist(name)) > 1:
            raise invalid(f"Give {name} once.", name)
    group_by = args.get("group_by", "day")
    if group_by not in usage.GROUPS:
        raise invalid(f"group_by must be one of: {', '.join(usage.GROUPS)}.", "group_by")
    last = _day(args, "to") or today
    first = _day(args, "from") or last - timedelta(days=USAGE_DEFAULT_DAYS - 1)
    if first > last:
        raise invalid("from must not be after to.", "from")
    if (last - first).days >= usage.MAX_DAYS:
        raise invalid(f"A range covers at most {usage.MAX_DAYS} days.", "to")
    return {"first": first, "last": last, "group_by": group_by}


def _day(args: Any, name: str) -> date | None:
    value = args.get(name)
    if value is None:
        return None
    if not DAY.fullmatch(value):
        raise invalid(f"{name} must be a date, YYYY-MM-DD.", name)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid(f"{name} must be a real date, YYYY-MM-DD.", name) from None
    if not date(2000, 1, 1) <= day <= date(9000, 12, 31):
        raise invalid(f"{name} must be between 2000-01-01 and 9000-12-31.", name)
    return day


# --- answers --------------------------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def balance_json(balance: Balance) -> dict[str, Any]:
    return {
        "plan": balance.plan,
        "purchased": balance.purchased,
        "other": balance.other,
        "held": balance.held,
        "available": balance.available,
        "next_expiry_at": iso(balance.next_expiry_at),
        "next_expiry_amount": balance.next_expiry_amount,
    }


def spend_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "id": receipt.entry_id,
        "kind": receipt.kind,
        "amount": receipt.amount,
        "balance_after": receipt.balance_after,
        "feature": receipt.feature,
        "created_at": iso(receipt.created_at),
        "replayed": receipt.replayed,
    }


def hold_json(hold: HoldResult) -> dict[str, Any]:
    return {
        "id": hold.id,
        "amount": hold.amount,
        "captured_amount": hold.captured_amount,
        "status": hold.status,
        "feature": hold.feature,
        "expires_at": iso(hold.expires_at),
        "replayed": hold.replayed,
    }


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": entry.amount,
        "held_delta": entry.held_delta,
        "balance_after": entry.balance_after,
        "held_after": entry.held_after,
        "feature": entry.feature,
        "hold_id": entry.hold_id,
        "description": entry.description,
        "metadata": entry.meta or {},
        "actor_type": entry.actor_type,
        "api_key_id": entry.api_key_id,
        "created_at": iso(entry.created_at),
    }
