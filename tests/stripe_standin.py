"""A local HTTP stand-in for the Stripe API, for tests (no dependency on the app code).

Point the real SDK at it::

    with StripeStandIn() as standin:
        client = stripe.StripeClient(api_key="sk_test_x", base_addresses={"api": standin.url})

Objects are deep copies of Stripe's published fixtures (tests/fixtures/stripe/*.json) with the fields a
test needs patched in. Errors have Stripe's shape ({"error": {"type", "code", "message", "param"}}), so the
SDK raises its own exception classes. Every request is recorded in `standin.requests`.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

Json = dict[str, Any]
FIXTURES_DIR = Path(__file__).parent / "fixtures" / "stripe"
_MAP_KEYS = frozenset({"metadata"})  # hashes whose keys may look numeric; never turned into lists
_PERIOD_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


# ----------------------------------------------------------------------------------------- helpers


@cache
def _fixture_text(name: str) -> str:
    return (FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8")


def load_fixture(name: str) -> Json:
    """A fresh deep copy of the fixture object `name` (e.g. "checkout.session")."""
    return json.loads(_fixture_text(name))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as `cus_Ab3...`."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def now() -> int:
    return int(time.time())


def deep_merge(base: Json, overrides: Json) -> Json:
    """A new dict: `base` with `overrides` merged in recursively (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def decode_form(body: str | bytes) -> Json:
    """Decode a Stripe form body (`a[b][0][c]=1`, `expand[0]=x`, `keys[]=y`) into nested dicts and lists.

    Values stay strings, as on the wire; numeric indices become lists (except under `metadata`)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: Json = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head, *rest[:-1].split("][")] if rest.endswith("]") else [key]
        node = root
        for i, part in enumerate(parts):
            part = part or str(len(node))  # `a[]` appends
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # `a=1&a[b]=2`: the nested form wins
                    child = node[part] = {}
                node = child
    return _listify(root, "")


def _listify(node: Any, key: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if key not in _MAP_KEYS and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _to_int(value: Any, default: int | None = None) -> int | None:
    return default if value is None or value == "" else int(value)


def _to_bool(value: Any, default: bool | None = None) -> bool | None:
    return default if value is None else value in (True, "true", "True", "1")


def _merge_metadata(existing: Json | None, new: Any) -> Json:
    """Stripe semantics: keys merge, `metadata[k]=` deletes k, `metadata=` clears all."""
    if new in (None, ""):
        return {} if new == "" else dict(existing or {})
    out = dict(existing or {})
    for key, value in new.items():
        if value == "":
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def _list_object(data: list[Json], url: str, has_more: bool = False) -> Json:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


class StripeApiError(Exception):
    """Raised inside handlers; becomes a Stripe-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        error: Json = {"type": type_, "message": message}
        if code:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            error["param"] = param
        self.body: Json = {"error": error}


def _missing(kind: str, obj_id: str, *, param: str = "id", status: int = 404) -> StripeApiError:
    return StripeApiError(status, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def _required(params: Json, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return params[name]


# --------------------------------------------------------------------------------------- factories


def _base(kind: str, prefix: str, id_length: int = 24, **fields: Any) -> Json:
    obj = load_fixture(kind)
    obj.update(id=new_id(prefix, id_length), created=now(), livemode=False, metadata={})
    obj.update(fields)
    return obj


def make_customer(
    *, email: str | None = None, name: str | None = None, metadata: Json | None = None, **overrides: Any
) -> Json:
    obj = _base("customer", "cus_", 14, email=email, name=name, metadata=dict(metadata or {}), discount=None)
    return deep_merge(obj, overrides)


def make_product(name: str = "Credits", *, metadata: Json | None = None, **overrides: Any) -> Json:
    obj = _base(
        "product",
        "prod_",
        14,
        name=name,
        metadata=dict(metadata or {}),
        description=None,
        default_price=None,
        package_dimensions=None,
        type="service",
        updated=now(),
    )
    return deep_merge(obj, overrides)


def make_price(
    unit_amount: int | None = 2000,
    *,
    currency: str = "usd",
    product: str | None = None,
    lookup_key: str | None = None,
    interval: str | None = "month",
    interval_count: int = 1,
    metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    recurring = (
        None
        if interval is None
        else {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "usage_type": "licensed",
            "trial_period_days": None,
        }
    )
    obj = _base(
        "price",
        "price_",
        24,
        unit_amount=unit_amount,
        currency=currency,
        unit_amount_decimal=None if unit_amount is None else str(unit_amount),
        product=product or new_id("prod_", 14),
        lookup_key=lookup_key,
        recurring=recurring,
        type="one_time" if recurring is None else "recurring",
        metadata=dict(metadata or {}),
        transform_quantity=None,
        custom_unit_amount=None,
    )
    return deep_merge(obj, overrides)


def make_checkout_session(**overrides: Any) -> Json:
    obj = _base(
        "checkout.session",
        "cs_test_",
        58,
        status="open",
        payment_status="unpaid",
        payment_intent=None,
        customer_details=None,
        expires_at=now() + 86400,
        shipping_cost=None,
        currency_conversion=None,
        collected_information=None,
        shipping_address_collection=None,
        after_expiration=None,
        payment_method_configuration_details=None,
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
    )
    obj["url"] = f"https://checkout.stripe.com/c/pay/{obj['id']}"
    return deep_merge(obj, overrides)


def _plan_for(price: Json) -> Json:
    recurring = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": True,
        "amount": price.get("unit_amount"),
        "amount_decimal": price.get("unit_amount_decimal"),
        "billing_scheme": "per_unit",
        "created": price.get("created"),
        "currency": price.get("currency"),
        "interval": recurring.get("interval", "month"),
        "interval_count": recurring.get("interval_count", 1),
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": price.get("product"),
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def make_subscription(
    customer: str,
    price_id: str | None = None,
    status: str = "active",
    period_start: int | None = None,
    period_end: int | None = None,
    *,
    metadata: Json | None = None,
    quantity: int = 1,
    price: Json | None = None,
    **overrides: Any,
) -> Json:
    """A subscription with one item; `current_period_start/end` live on `items.data[0]` (current API)."""
    start = period_start if period_start is not None else now()
    end = period_end if period_end is not None else start + 30 * 86400
    if price is None:
        price = make_price(**({"id": price_id} if price_id else {}))
    sub_id = new_id("sub_")
    item = _base(
        "subscription_item",
        "si_",
        14,
        subscription=sub_id,
        price=price,
        plan=_plan_for(price),
        quantity=quantity,
        current_period_start=start,
        current_period_end=end,
        created=start,
        discounts=[],
        tax_rates=[],
        billing_thresholds=None,
    )
    ended = status in ("canceled", "incomplete_expired")
    obj = _base(
        "subscription",
        "sub_",
        customer=customer,
        status=status,
        metadata=dict(metadata or {}),
        created=start,
        start_date=start,
        billing_cycle_anchor=start,
        billing_cycle_anchor_config=None,
        cancel_at=None,
        cancel_at_period_end=False,
        canceled_at=end if ended else None,
        ended_at=end if ended else None,
        trial_start=None,
        trial_end=None,
        pending_update=None,
        pause_collection=None,
        next_pending_invoice_item_invoice=None,
        latest_invoice=None,
        pending_invoice_item_interval=None,
        transfer_data=None,
        currency=price.get("currency", "usd"),
        billing_schedules=[],
        items=_list_object([item], f"/v1/subscription_items?subscription={sub_id}"),
    )
    obj["id"] = sub_id
    obj["items"]["total_count"] = 1
    return deep_merge(obj, overrides)


def make_invoice(
    customer: str,
    subscription_id: str | None,
    amount_paid: int,
    period_start: int,
    period_end: int,
    billing_reason: str = "subscription_cycle",
    *,
    status: str = "paid",
    price_id: str | None = None,
    subscription_item: str | None = None,
    currency: str = "usd",
    subscription_metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    """An invoice naming its subscription under `parent.subscription_details.subscription`.

    `amount_paid` is the invoice amount; with a `status` other than "paid" it is due, not paid. The service
    period is on `lines.data[0].period`; like Stripe, the top-level `period_start/end` of a renewal invoice
    describe the *previous* period (ending at `period_start`), so do not read the period from there."""
    paid = status == "paid"
    inv_id = new_id("in_")
    previous = period_start
    if billing_reason == "subscription_cycle":
        previous = period_start - (period_end - period_start)
    line = load_fixture("invoice")["lines"]["data"][0]
    if subscription_id is None:
        line_parent: Json = {
            "type": "invoice_item_details",
            "subscription_item_details": None,
            "invoice_item_details": {
                "invoice_item": new_id("ii_"),
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
        }
    else:
        line_parent = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": subscription_item,
            },
        }
    line.update(
        id=new_id("il_"),
        invoice=inv_id,
        amount=amount_paid,
        subtotal=amount_paid,
        currency=currency,
        description="1 x Subscription",
        period={"start": period_start, "end": period_end},
        parent=line_parent,
        taxes=[],
        pretax_credit_amounts=[],
        pricing={
            "type": "price_details",
            "unit_amount_decimal": str(amount_paid),
            "price_details": {"price": price_id or new_id("price_"), "product": new_id("prod_", 14)},
        },
    )
    parent = (
        None
        if subscription_id is None
        else {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": dict(subscription_metadata or {}), "subscription": subscription_id},
        }
    )
    obj = _base(
        "invoice",
        "in_",
        customer=customer,
        status=status,
        billing_reason=billing_reason,
        currency=currency,
        created=period_start,
        effective_at=period_start,
        period_start=previous,
        period_end=period_start,
        amount_due=amount_paid,
        amount_paid=amount_paid if paid else 0,
        amount_remaining=0 if paid else amount_paid,
        subtotal=amount_paid,
        total=amount_paid,
        subtotal_excluding_tax=amount_paid,
        total_excluding_tax=amount_paid,
        amount_overpaid=0,
        attempted=paid,
        attempt_count=1 if paid else 0,
        due_date=None,
        next_payment_attempt=None,
        from_invoice=None,
        last_finalization_error=None,
        shipping_cost=None,
        parent=parent,
        webhooks_delivered_at=period_start,
        number=f"STANDIN-{secrets.randbelow(10**6):06d}",
        status_transitions={
            "finalized_at": period_start,
            "marked_uncollectible_at": None,
            "paid_at": period_start if paid else None,
            "voided_at": None,
        },
        lines={**_list_object([line], f"/v1/invoices/{inv_id}/lines"), "total_count": 1},
    )
    obj["id"] = inv_id
    return deep_merge(obj, overrides)


def make_payment_intent(
    amount: int,
    *,
    customer: str | None = None,
    status: str = "succeeded",
    latest_charge: str | None = None,
    currency: str = "usd",
    metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    obj = _base(
        "payment_intent",
        "pi_",
        amount=amount,
        currency=currency,
        customer=customer,
        status=status,
        amount_received=amount if status == "succeeded" else 0,
        latest_charge=latest_charge,
        metadata=dict(metadata or {}),
        canceled_at=None,
        last_payment_error=None,
        next_action=None,
        processing=None,
        transfer_data=None,
    )
    obj["client_secret"] = f"{obj['id']}_secret_{new_id('', 25)}"
    return deep_merge(obj, overrides)


def make_charge(
    payment_intent: str | None,
    amount: int,
    amount_refunded: int = 0,
    refunded: bool | None = None,
    *,
    customer: str | None = None,
    currency: str = "usd",
    **overrides: Any,
) -> Json:
    obj = _base(
        "charge",
        "ch_",
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount if refunded is None else refunded,
        captured=True,
        paid=True,
        status="succeeded",
        disputed=False,
        customer=customer,
        currency=currency,
        description=None,
        source=None,
        transfer_data=None,
        balance_transaction=new_id("txn_"),
    )
    obj["refunds"] = _list_object([], f"/v1/charges/{obj['id']}/refunds")
    return deep_merge(obj, overrides)


def make_refund(
    charge: str, payment_intent: str | None, amount: int, status: str = "succeeded", **overrides: Any
) -> Json:
    obj = _base("refund", "re_", charge=charge, payment_intent=payment_intent, amount=amount, status=status)
    return deep_merge(obj, overrides)


def make_dispute(
    charge: str,
    payment_intent: str | None,
    amount: int,
    status: str = "needs_response",
    *,
    reason: str = "fraudulent",
    currency: str = "usd",
    **overrides: Any,
) -> Json:
    obj = _base(
        "dispute",
        "dp_",
        charge=charge,
        payment_intent=payment_intent,
        amount=amount,
        status=status,
        reason=reason,
        currency=currency,
        is_charge_refundable=False,
        evidence_details={
            "due_by": now() + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        },
    )
    return deep_merge(obj, overrides)


# ---------------------------------------------------------------------------------------- the server


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: Json
    headers: dict[str, str]
    body: str = ""
    status: int = 0
    response: Json = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class _Failure:
    method: str
    path_prefix: str
    status: int
    body: Json
    times: int
    should_retry: bool | None


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out as two writes: with Nagle and delayed ACKs each SDK call would wait ~40 ms.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    standin: StripeStandIn  # set on a per-instance subclass

    def do_GET(self) -> None:
        self.standin._serve(self, "GET")

    def do_POST(self) -> None:
        self.standin._serve(self, "POST")

    def do_DELETE(self) -> None:
        self.standin._serve(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass


_RETRIEVABLE = {
    "customers": "customer",
    "checkout/sessions": "checkout.session",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "charges": "charge",
    "payment_intents": "payment_intent",
    "products": "product",
    "prices": "price",
    "disputes": "dispute",
    "refunds": "refund",
    "subscription_items": "subscription_item",
}
_CUSTOMER_FIELDS = {
    "email",
    "name",
    "description",
    "phone",
    "address",
    "shipping",
    "preferred_locales",
    "invoice_settings",
    "tax_exempt",
}
_PRODUCT_FIELDS = {
    "name",
    "description",
    "active",
    "default_price",
    "images",
    "tax_code",
    "unit_label",
    "url",
    "statement_descriptor",
    "shippable",
}
_PRICE_FIELDS = {"active", "nickname", "lookup_key", "tax_behavior"}


class StripeStandIn:
    """A Stripe API stand-in on 127.0.0.1 (random port), served from a daemon thread."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.objects: dict[str, Json] = {}
        self._session_extras: dict[str, tuple[Json, list[Json]]] = {}  # create params, line items
        self._failures: list[_Failure] = []
        self._idempotent: dict[str, tuple[Json, int, Json]] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        route = Callable[..., Json]
        self._routes: list[tuple[str, re.Pattern[str], route]] = [
            (m, re.compile(p), f)
            for m, p, f in [
                ("POST", r"/v1/customers", self._create_customer),
                ("POST", r"/v1/customers/([^/]+)", self._update_customer),
                ("POST", r"/v1/checkout/sessions", self._create_checkout_session),
                ("GET", r"/v1/checkout/sessions/([^/]+)/line_items", self._session_line_items),
                ("POST", r"/v1/billing_portal/sessions", self._create_portal_session),
                ("GET", r"/v1/prices", self._list_prices),
                ("POST", r"/v1/prices", self._create_price),
                ("POST", r"/v1/prices/([^/]+)", self._update_price),
                ("POST", r"/v1/products", self._create_product),
                ("POST", r"/v1/products/([^/]+)", self._update_product),
                ("GET", rf"/v1/({'|'.join(_RETRIEVABLE)})/([^/]+)", self._retrieve),
            ]
        ]

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self) -> StripeStandIn:
        handler = type("StandInHandler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="stripe-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StripeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ test-facing API

    def reset(self) -> None:
        """Forget all objects, requests, pending failures and idempotency keys."""
        with self._lock:
            self.requests.clear()
            self.objects.clear()
            self._session_extras.clear()
            self._failures.clear()
            self._idempotent.clear()

    def put(self, obj: Json) -> Json:
        """Store a deep copy of `obj` under its id (so GET returns it); returns `obj`."""
        with self._lock:
            self.objects[obj["id"]] = copy.deepcopy(obj)
        return obj

    def get(self, obj_id: str) -> Json | None:
        """A copy of the stored object, or None."""
        with self._lock:
            obj = self.objects.get(obj_id)
            return copy.deepcopy(obj) if obj is not None else None

    def find(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper()) and r.path.startswith(path_prefix)
            ]

    def last(self, method: str, path_prefix: str) -> RecordedRequest:
        """The most recent matching request; LookupError (listing what was seen) if there is none."""
        found = self.find(method, path_prefix)
        if not found:
            seen = ", ".join(f"{r.method} {r.path}" for r in self.requests) or "nothing"
            raise LookupError(f"no {method.upper()} {path_prefix}* request; saw {seen}")
        return found[-1]

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 500,
        *,
        times: int = 1,
        error_type: str | None = None,
        code: str | None = None,
        message: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Make the next `times` matching calls fail with a Stripe-shaped error (api_error for 5xx).

        `should_retry` sets the `Stripe-Should-Retry` header, which the SDK's retry logic honours."""
        default_type = {401: "authentication_error", 402: "card_error"}.get(status, "invalid_request_error")
        err = StripeApiError(
            status,
            message or "An unknown error occurred",
            code=code,
            type_=error_type or ("api_error" if status >= 500 else default_type),
        )
        with self._lock:
            self._failures.append(_Failure(method.upper(), path_prefix, status, err.body, times, should_retry))

    def complete_checkout(
        self,
        session_id: str,
        payment_status: str = "paid",
        payment_intent: str | Json | None = None,
        subscription: str | Json | None = None,
        invoice: str | Json | None = None,
    ) -> Json:
        """Mark a session complete, as if the customer paid; returns (a copy of) the stored session.

        Ids or objects may be given (objects are stored). If omitted: payment mode gets a succeeded
        PaymentIntent (with `payment_intent_data.metadata`); subscription mode gets a customer (if the session
        had none), an active subscription (with `subscription_data.metadata`) and its paid first invoice."""
        with self._lock:
            session = self.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                raise KeyError(f"no checkout session {session_id!r}")
            params, items = self._session_extras.get(session_id, ({}, []))
            if session["customer"] is None and (
                session["mode"] == "subscription" or params.get("customer_creation") == "always"
            ):
                session["customer"] = self.put(make_customer(email=session.get("customer_email")))["id"]
            customer = self.objects.get(session["customer"] or "", {})
            details = load_fixture("checkout.session")["customer_details"]
            details.update(email=session.get("customer_email") or customer.get("email"), name=customer.get("name"))
            amount = session.get("amount_total") or 0
            if session["mode"] == "payment" and payment_intent is None and payment_status == "paid":
                meta = (params.get("payment_intent_data") or {}).get("metadata")
                payment_intent = make_payment_intent(
                    amount, customer=session["customer"], metadata=meta, currency=session.get("currency") or "usd"
                )
            if session["mode"] == "subscription" and subscription is None and items:
                price = next((i["price"] for i in items if i["price"].get("recurring")), items[0]["price"])
                interval = price["recurring"] or {}
                start = now()
                end = start + _PERIOD_DAYS.get(interval.get("interval", "month"), 30) * 86400 * int(
                    interval.get("interval_count", 1)
                )
                meta = (params.get("subscription_data") or {}).get("metadata")
                subscription = make_subscription(
                    session["customer"],
                    price=price,
                    period_start=start,
                    period_end=end,
                    metadata=meta,
                    quantity=items[0]["quantity"],
                )
                if invoice is None:
                    invoice = make_invoice(
                        session["customer"],
                        subscription["id"],
                        amount,
                        start,
                        end,
                        "subscription_create",
                        price_id=price["id"],
                        subscription_item=subscription["items"]["data"][0]["id"],
                        subscription_metadata=subscription["metadata"],
                    )
                    subscription["latest_invoice"] = invoice["id"]
            refs = {}
            for name, ref in (("payment_intent", payment_intent), ("subscription", subscription), ("invoice", invoice)):
                refs[name] = self.put(ref)["id"] if isinstance(ref, dict) else ref
            session.update(status="complete", payment_status=payment_status, customer_details=details, **refs)
            return copy.deepcopy(session)

    # ---------------------------------------------------------------------------------- HTTP layer

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode("utf-8") if length else ""
        record = RecordedRequest(
            method,
            split.path,
            decode_form(body if method == "POST" else split.query),
            dict(handler.headers.items()),
            body,
        )
        with self._lock:
            self.requests.append(record)
            status, payload, extra = self._dispatch(record)
            record.status, record.response = status, payload
        data = json.dumps(payload).encode("utf-8")
        handler.send_response(status)
        for key, value in {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "Request-Id": new_id("req_", 14),
            "Stripe-Version": record.header("Stripe-Version") or "",
            **extra,
        }.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(self, rec: RecordedRequest) -> tuple[int, Json, dict[str, str]]:
        auth = rec.header("Authorization") or ""
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            err = StripeApiError(401, "You did not provide an API key.", type_="invalid_request_error")
            return 401, err.body, {}
        for failure in self._failures:
            if failure.method == rec.method and rec.path.startswith(failure.path_prefix):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                retry = (
                    {} if failure.should_retry is None else {"Stripe-Should-Retry": str(failure.should_retry).lower()}
                )
                return failure.status, copy.deepcopy(failure.body), retry
        key = rec.header("Idempotency-Key") if rec.method == "POST" else None
        if key and key in self._idempotent:
            params, status, payload = self._idempotent[key]
            if params != rec.params:
                err = StripeApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
                return 400, err.body, {}
            return status, copy.deepcopy(payload), {"Idempotent-Replayed": "true", "Idempotency-Key": key}
        try:
            for method, pattern, fn in self._routes:
                match = pattern.fullmatch(rec.path)
                if method == rec.method and match:
                    status, payload = 200, fn(rec.params, *match.groups())
                    break
            else:
                raise StripeApiError(
                    404,
                    f"Unrecognized request URL ({rec.method}: {rec.path}). Please see "
                    "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                )
        except StripeApiError as err:
            status, payload = err.status, err.body
        if key and status == 200:  # like Stripe, failed validations are not saved for replay
            self._idempotent[key] = (rec.params, status, copy.deepcopy(payload))
        return status, payload, {"Idempotency-Key": key} if key else {}

    # ------------------------------------------------------------------------------------ handlers

    def _require(self, kind: str, obj_id: str, *, param: str = "id", status: int = 404) -> Json:
        obj = self.objects.get(obj_id)
        if obj is None or obj.get("object") != kind:
            raise _missing(kind, obj_id, param=param, status=status)
        return obj

    def _render(self, obj: Json, params: Json) -> Json:
        out = copy.deepcopy(obj)
        for path in params.get("expand") or []:
            if out.get("object") == "checkout.session" and path == "line_items":
                out["line_items"] = self._session_line_items({}, out["id"])
            else:
                self._expand(out, path.split("."))
        return out

    def _expand(self, node: Any, parts: list[str]) -> None:
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts)
        elif isinstance(node, dict) and parts:
            value = node.get(parts[0])
            if isinstance(value, str) and value in self.objects:
                value = node[parts[0]] = copy.deepcopy(self.objects[value])
            self._expand(value, parts[1:])

    def _update(self, obj: Json, params: Json, allowed: set[str]) -> Json:
        for name, value in params.items():
            if name == "expand":
                continue
            if name == "metadata":
                obj["metadata"] = _merge_metadata(obj.get("metadata"), value)
            elif name not in allowed:
                raise StripeApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
            elif name in ("active", "shippable"):
                obj[name] = _to_bool(value)
            else:
                obj[name] = None if value == "" else value
        if "updated" in obj:
            obj["updated"] = now()
        return self._render(obj, params)

    def _retrieve(self, params: Json, collection: str, obj_id: str) -> Json:
        return self._render(self._require(_RETRIEVABLE[collection], obj_id), params)

    def _create_customer(self, params: Json) -> Json:
        obj = make_customer(metadata=_merge_metadata({}, params.get("metadata")))
        self.put(obj)
        return self._update(
            self.objects[obj["id"]], {k: v for k, v in params.items() if k != "metadata"}, _CUSTOMER_FIELDS
        )

    def _update_customer(self, params: Json, obj_id: str) -> Json:
        return self._update(self._require("customer", obj_id), params, _CUSTOMER_FIELDS)

    def _price_from_data(self, data: Json) -> Json:
        product = data.get("product") or make_product(**(data.get("product_data") or {"name": "Item"}))["id"]
        recurring = data.get("recurring")
        price = make_price(
            _to_int(data.get("unit_amount")),
            currency=_required(data, "currency"),
            product=product,
            interval=recurring["interval"] if recurring else None,
            interval_count=_to_int((recurring or {}).get("interval_count"), 1) or 1,
        )
        if price["unit_amount"] is None and data.get("unit_amount_decimal"):
            price.update(
                unit_amount=round(float(data["unit_amount_decimal"])), unit_amount_decimal=data["unit_amount_decimal"]
            )
        return price

    def _create_checkout_session(self, params: Json) -> Json:
        mode = _required(params, "mode")
        customer = params.get("customer")
        if customer:
            self._require("customer", customer, param="customer", status=400)
        items, total, currency = [], 0, params.get("currency")
        for i, line in enumerate(params.get("line_items") or []):
            if line.get("price"):
                price = self._require("price", line["price"], param=f"line_items[{i}][price]", status=400)
            elif line.get("price_data"):
                price = self._price_from_data(line["price_data"])
            else:
                raise StripeApiError(
                    400,
                    f"Missing required param: line_items[{i}][price].",
                    code="parameter_missing",
                    param=f"line_items[{i}][price]",
                )
            quantity = _to_int(line.get("quantity"), 1) or 1
            items.append({"price": copy.deepcopy(price), "quantity": quantity})
            total += (price.get("unit_amount") or 0) * quantity
            currency = currency or price.get("currency")
        recurring = [i for i in items if i["price"].get("recurring")]
        if mode == "subscription" and not recurring:
            raise StripeApiError(
                400,
                "You must provide at least one recurring price in `subscription` mode when using prices.",
                param="line_items",
            )
        if mode == "payment" and recurring:
            raise StripeApiError(
                400,
                "You specified `payment` mode but passed a recurring price. Either "
                "switch to `subscription` mode or use only one-time prices.",
                param="line_items",
            )
        session = make_checkout_session(
            mode=mode,
            customer=customer or None,
            customer_email=params.get("customer_email"),
            client_reference_id=params.get("client_reference_id"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            metadata=_merge_metadata({}, params.get("metadata")),
            amount_total=total,
            amount_subtotal=total,
            currency=currency or "usd",
            ui_mode=params.get("ui_mode"),
            customer_creation=params.get("customer_creation"),
            locale=params.get("locale"),
        )
        session["url"] = f"{self.url}/pay/{session['id']}"
        self.put(session)
        self._session_extras[session["id"]] = (params, items)
        return self._render(session, params)

    def _session_line_items(self, params: Json, session_id: str) -> Json:
        self._require("checkout.session", session_id)
        data = [
            {
                "id": new_id("li_"),
                "object": "item",
                "quantity": i["quantity"],
                "price": i["price"],
                "currency": i["price"].get("currency"),
                "description": None,
                "amount_subtotal": (i["price"].get("unit_amount") or 0) * i["quantity"],
                "amount_total": (i["price"].get("unit_amount") or 0) * i["quantity"],
                "amount_discount": 0,
                "amount_tax": 0,
            }
            for i in self._session_extras.get(session_id, ({}, []))[1]
        ]
        return _list_object(data, f"/v1/checkout/sessions/{session_id}/line_items")

    def _create_portal_session(self, params: Json) -> Json:
        customer = _required(params, "customer")
        self._require("customer", customer, param="customer", status=400)
        obj = _base(
            "billing_portal.session",
            "bps_",
            customer=customer,
            return_url=params.get("return_url"),
            flow=None,
            locale=params.get("locale"),
            configuration=params.get("configuration") or new_id("bpc_"),
        )
        del obj["metadata"]
        obj["url"] = f"{self.url}/portal/{obj['id']}"
        return self.put(obj)

    def _list_prices(self, params: Json) -> Json:
        keys = params.get("lookup_keys")
        keys = [keys] if isinstance(keys, str) else keys
        active = _to_bool(params.get("active"))
        prices = [
            p
            for p in reversed(self.objects.values())
            if p.get("object") == "price"
            and (keys is None or p.get("lookup_key") in keys)
            and (active is None or p.get("active") == active)
            and all(params.get(f) in (None, p.get(f)) for f in ("product", "currency", "type"))
        ]
        limit = _to_int(params.get("limit"), 10) or 10
        return self._render(_list_object(prices[:limit], "/v1/prices", len(prices) > limit), params)

    def _claim_lookup_key(self, params: Json, price_id: str | None) -> None:
        key = params.get("lookup_key")
        holder = next(
            (
                p
                for p in self.objects.values()
                if p.get("object") == "price" and key and p.get("lookup_key") == key and p["id"] != price_id
            ),
            None,
        )
        if holder is not None:
            if not _to_bool(params.get("transfer_lookup_key"), False):
                raise StripeApiError(
                    400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
                )
            holder["lookup_key"] = None

    def _create_price(self, params: Json) -> Json:
        if not params.get("product") and not params.get("product_data"):
            raise StripeApiError(400, "Missing required param: product.", code="parameter_missing", param="product")
        if params.get("product"):
            self._require("product", params["product"], param="product", status=400)
        else:
            params = {**params, "product": self.put(make_product(**params["product_data"]))["id"]}
        self._claim_lookup_key(params, None)
        price = self._price_from_data(params)
        price.update(
            lookup_key=params.get("lookup_key"),
            nickname=params.get("nickname"),
            metadata=_merge_metadata({}, params.get("metadata")),
            active=_to_bool(params.get("active"), True),
            tax_behavior=params.get("tax_behavior", "unspecified"),
        )
        return self._render(self.put(price), params)

    def _update_price(self, params: Json, obj_id: str) -> Json:
        price = self._require("price", obj_id)
        self._claim_lookup_key(params, obj_id)
        rest = {k: v for k, v in params.items() if k != "transfer_lookup_key"}
        return self._update(price, rest, _PRICE_FIELDS)

    def _create_product(self, params: Json) -> Json:
        name = _required(params, "name")
        if params.get("id") in self.objects:
            raise StripeApiError(400, "Product already exists.", code="resource_already_exists", param="id")
        product = make_product(
            name,
            metadata=_merge_metadata({}, params.get("metadata")),
            **({"id": params["id"]} if params.get("id") else {}),
        )
        self.put(product)
        rest = {k: v for k, v in params.items() if k not in ("id", "name", "metadata")}
        return self._update(self.objects[product["id"]], rest, _PRODUCT_FIELDS)

    def _update_product(self, params: Json, obj_id: str) -> Json:
        return self._update(self._require("product", obj_id), params, _PRODUCT_FIELDS)
