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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from tests import stripe_standin_payments as payments
from tests.stripe_factories import (
    _base,
    make_charge,
    make_checkout_session,
    make_customer,
    make_dispute,
    make_invoice,
    make_payment_intent,
    make_price,
    make_product,
    make_refund,
    make_subscription,
)
from tests.stripe_standin_http import check_expand, included, list_invoice_lines, list_subscriptions
from tests.stripe_standin_meters import create_meter, create_meter_event, list_invoice_payments, list_meters
from tests.stripe_wire import (
    _PERIOD_DAYS,
    Json,
    StripeApiError,
    _list_object,
    _merge_metadata,
    _missing,
    _required,
    _to_bool,
    _to_int,
    decode_form,
    deep_merge,
    load_fixture,
    new_id,
    now,
)

__all__ = [
    "RecordedRequest",
    "StripeApiError",
    "StripeStandIn",
    "decode_form",
    "deep_merge",
    "load_fixture",
    "make_charge",
    "make_checkout_session",
    "make_customer",
    "make_dispute",
    "make_invoice",
    "make_payment_intent",
    "make_price",
    "make_product",
    "make_refund",
    "make_subscription",
    "new_id",
    "now",
]

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
    "payment_methods": "payment_method",
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
        self.meter_events: dict[str, Json] = {}  # by identifier: Stripe counts each identifier once
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
                ("POST", r"/v1/payment_intents", lambda params: payments.create_payment_intent(self, params)),
                (
                    "POST",
                    r"/v1/payment_intents/([^/]+)/confirm",
                    lambda params, pi: payments.confirm_payment_intent(self, params, pi),
                ),
                ("POST", r"/v1/customers/([^/]+)", self._update_customer),
                ("POST", r"/v1/checkout/sessions", self._create_checkout_session),
                ("GET", r"/v1/checkout/sessions/([^/]+)/line_items", self._session_line_items),
                ("POST", r"/v1/billing_portal/sessions", self._create_portal_session),
                ("GET", r"/v1/prices", self._list_prices),
                ("GET", r"/v1/subscriptions", lambda params: self._render(list_subscriptions(self, params), params)),
                ("POST", r"/v1/subscriptions/([^/]+)", self._update_subscription),
                ("GET", r"/v1/invoices/([^/]+)/lines", lambda params, inv: list_invoice_lines(self, params, inv)),
                ("POST", r"/v1/prices", self._create_price),
                ("POST", r"/v1/prices/([^/]+)", self._update_price),
                ("POST", r"/v1/products", self._create_product),
                ("POST", r"/v1/products/([^/]+)", self._update_product),
                ("POST", r"/v1/billing/meters", lambda params: create_meter(self, params)),
                ("GET", r"/v1/billing/meters", lambda params: list_meters(self, params)),
                ("POST", r"/v1/billing/meter_events", lambda params: create_meter_event(self, params)),
                ("GET", r"/v1/invoice_payments", lambda params: list_invoice_payments(self, params)),
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
            self.meter_events.clear()
            self._session_extras.clear()
            self._failures.clear()
            self._idempotent.clear()

    def put(self, obj: Json) -> Json:
        """Store a deep copy of `obj` under its id (so GET returns it); returns `obj`."""
        with self._lock:
            self.objects[obj["id"]] = copy.deepcopy(obj)
        return obj

    @property
    def lock(self) -> threading.RLock:
        """Held while a request is served: hold it to change several stored objects at once."""
        return self._lock

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
            check_expand(rec.params)  # Stripe refuses a too-deep expansion before doing anything
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
        # Like Stripe, failed validations are not saved for replay; a request that ran (a 402 decline) is.
        if key and status in (200, 402):
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
            elif (extra := included(self, out, path)) is not None:
                out[path] = extra
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

    def _update_subscription(self, params: Json, obj_id: str) -> Json:
        """`POST /v1/subscriptions/<id>` with `cancel_at_period_end` (and `metadata`): what the API's cancel and
        "renew" do. Cancelling sets `cancel_at` to the period's end and records the request; renewing clears
        them. A canceled subscription can no longer be changed so."""
        with self.lock:
            sub = self._require("subscription", obj_id)
            for name in params:
                if name not in ("cancel_at_period_end", "metadata", "expand"):
                    raise StripeApiError(
                        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
                    )
            if "cancel_at_period_end" in params:
                if sub["status"] in ("canceled", "incomplete_expired"):
                    raise StripeApiError(
                        400, "A canceled subscription can only update its cancellation_details and metadata."
                    )
                cancel = _to_bool(params["cancel_at_period_end"])
                end = sub["items"]["data"][0]["current_period_end"]
                sub.update(cancel_at_period_end=cancel, cancel_at=end if cancel else None)
                sub["canceled_at"] = now() if cancel else None
                reason = "cancellation_requested" if cancel else None
                sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": reason}
            if "metadata" in params:
                sub["metadata"] = _merge_metadata(sub.get("metadata"), params["metadata"])
            return self._render(sub, params)

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
            decimal = float(data["unit_amount_decimal"])
            # Stripe leaves unit_amount null when the decimal amount is not a whole number of cents.
            price.update(
                unit_amount=int(decimal) if decimal.is_integer() else None,
                unit_amount_decimal=data["unit_amount_decimal"],
            )
        if recurring and recurring.get("usage_type") == "metered":
            if not recurring.get("meter"):
                # Since 2025-03-31 (basil) a metered price must be backed by a Billing Meter.
                raise StripeApiError(400, "A metered price requires `recurring[meter]`.", param="recurring[meter]")
            price["recurring"].update(usage_type="metered", meter=recurring["meter"])
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
            metered = (price.get("recurring") or {}).get("usage_type") == "metered"
            if metered and line.get("quantity") is not None:
                raise StripeApiError(
                    400,
                    "Quantity should not be specified where usage_type is `metered`. "
                    f"Remove quantity from `line_items[{i}]`.",
                    param=f"line_items[{i}][quantity]",
                )
            quantity = 0 if metered else _to_int(line.get("quantity"), 1) or 1
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


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[StripeStandIn]:
    """A fresh stand-in per test, with the SDK's telemetry off (it writes an id to ~/.config)."""
    monkeypatch.setattr(stripe, "enable_telemetry", False)
    with StripeStandIn() as server:
        yield server
