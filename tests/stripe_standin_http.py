"""Stand-in HTTP behaviours for the billing flows: the subscription list, the expansion depth limit, the
charge's includable `refunds`. Used by tests/stripe_standin.py; state lives on the stand-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.stripe_wire import Json, StripeApiError, _list_object, _missing, _to_int

if TYPE_CHECKING:
    from tests.stripe_standin import StripeStandIn

# "Expansions have a maximum depth of four levels (for example, the deepest expansion allowed when listing charges
# is data.payment_intent.customer.default_source)" (Stripe's API reference): on a list `data` is the first level.
MAX_EXPAND_DEPTH = 4
SUBSCRIPTION_STATUSES = {
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "paused",
}
_LIST_STATUS = SUBSCRIPTION_STATUSES | {"all", "ended"}
_LIST_PARAMS = {
    "automatic_tax",
    "collection_method",
    "created",
    "current_period_end",
    "current_period_start",
    "customer",
    "customer_account",
    "ending_before",
    "expand",
    "limit",
    "price",
    "starting_after",
    "status",
    "test_clock",
}


def check_expand(params: Json) -> None:
    """Stripe's 400 for an expansion deeper than four levels (the whole request fails)."""
    paths = params.get("expand") or []
    for path in [paths] if isinstance(paths, str) else paths:
        if len(str(path).split(".")) > MAX_EXPAND_DEPTH:
            raise StripeApiError(400, f"You cannot expand more than 4 levels of a property. Property: {path}")


def included(standin: StripeStandIn, obj: Json, path: str) -> Json | None:
    """A field sent only when asked for with `expand` (a charge's `refunds` since API version 2022-11-15)."""
    if obj.get("object") == "charge" and path == "refunds":
        refunds = [r for r in reversed(standin.objects.values()) if r.get("object") == "refund"]
        mine = [copy.deepcopy(r) for r in refunds if r.get("charge") == obj["id"]]
        return {**_list_object(mine, f"/v1/charges/{obj['id']}/refunds"), "total_count": len(mine)}
    return None


def _created_matches(created: int, condition: Any) -> bool:
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return created == int(condition)
    checks: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    return all(checks[op](created, int(value)) for op, value in condition.items() if op in checks)


def list_subscriptions(standin: StripeStandIn, params: Json) -> Json:
    """`GET /v1/subscriptions`: newest first; without `status`, every subscription that is not canceled."""
    for name in params:
        if name not in _LIST_PARAMS:
            raise StripeApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    status = params.get("status")
    if status is not None and status not in _LIST_STATUS:
        raise StripeApiError(400, f"Invalid status: must be one of {', '.join(sorted(_LIST_STATUS))}", param="status")
    limit = _to_int(params.get("limit"), 10)
    if limit is None or not 1 <= limit <= 100:
        raise StripeApiError(400, "This value must be between 1 and 100.", param="limit")
    order = {obj_id: i for i, obj_id in enumerate(standin.objects)}
    subs = [o for o in standin.objects.values() if o.get("object") == "subscription"]
    subs.sort(key=lambda s: (s["created"], order[s["id"]]), reverse=True)

    def wanted(sub: Json) -> bool:
        if params.get("customer") and sub["customer"] != params["customer"]:
            return False
        if params.get("price") and all(i["price"]["id"] != params["price"] for i in sub["items"]["data"]):
            return False
        if status == "ended":
            ok = sub["status"] in ("canceled", "incomplete_expired")
        elif status in (None, "all"):
            ok = status == "all" or sub["status"] != "canceled"
        else:
            ok = sub["status"] == status
        return ok and _created_matches(sub["created"], params.get("created"))

    found = [s for s in subs if wanted(s)]
    for cursor, forward in ((params.get("starting_after"), True), (params.get("ending_before"), False)):
        if cursor:
            ids = [s["id"] for s in found]
            if cursor not in ids:
                raise _missing("subscription", cursor, param="starting_after" if forward else "ending_before")
            at = ids.index(cursor)
            found = found[at + 1 :] if forward else found[:at][-limit:]
    page = [copy.deepcopy(s) for s in found[:limit]]
    return _list_object(page, "/v1/subscriptions", len(found) > limit)


def list_invoice_lines(standin: StripeStandIn, params: Json, invoice_id: str) -> Json:
    """`GET /v1/invoices/<id>/lines`: the invoice's lines, paged like every list (an event carries page one)."""
    invoice = standin.get(invoice_id)
    if invoice is None or invoice.get("object") != "invoice":
        raise _missing("invoice", invoice_id)
    lines = list(invoice["lines"]["data"])
    limit = int(params.get("limit") or 10)
    cursor = params.get("starting_after")
    if cursor:
        ids = [line["id"] for line in lines]
        if cursor not in ids:
            raise _missing("line_item", cursor, param="starting_after")
        lines = lines[ids.index(cursor) + 1 :]
    return _list_object(lines[:limit], f"/v1/invoices/{invoice_id}/lines", len(lines) > limit)
