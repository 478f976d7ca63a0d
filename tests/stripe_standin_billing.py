"""Stripe's billing and payment flows, played on the stand-in (tests/stripe_standin.py), as Stripe plays them.

    billing = StripeBilling(standin)
    session = billing.open_checkout(customer, "subscription", price, metadata=..., subscription_metadata=...)
    events = billing.complete_subscription_checkout(session["id"])  # what Stripe sends at that moment

Every operation changes the stored objects the way Stripe changes them, so the stand-in's API always answers
Stripe's *current* state, and returns the webhook events Stripe would send at that point, each carrying a
deep-copied snapshot of its object (several often share one `created` second). The rules followed are those of
/work/shared/stripe/BEHAVIOUR.md, not of the app: the portal changes a subscription item's price and never its
metadata; an upgrade with prorations bills a credit for the old price's unused time (a proration line, listed
first) and, with `billing_cycle_anchor=now`, the new price for the new period (the one non-proration line);
changes "at period end" change nothing until `end_period`; money moves in a dispute only with its balance
transactions; a charged-back charge cannot be refunded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.stripe_events import make_event
from tests.stripe_factories import (
    _plan_for,
    make_balance_transaction,
    make_charge,
    make_checkout_session,
    make_customer,
    make_dispute,
    make_invoice,
    make_invoice_line,
    make_payment_intent,
    make_price,
    make_product,
    make_refund,
    make_subscription,
)
from tests.stripe_wire import Json, StripeApiError, _list_object, load_fixture, new_id, now

if TYPE_CHECKING:
    from tests.stripe_standin import StripeStandIn

DAY = 86_400
MONTH = 30 * DAY

# ---------------------------------------------------------------------------------------- the flows


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def _day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%-d %b %Y")


class StripeBilling:
    """Stripe's side of checkouts, subscriptions, refunds and disputes, on one stand-in."""

    def __init__(self, standin: StripeStandIn, clock: Callable[[], int] = now) -> None:
        self.standin = standin
        self.clock = clock
        self._pending_prorations: dict[str, list[Json]] = {}  # subscription id: invoice items for its next invoice

    # ----------------------------------------------------------------------------------- plumbing

    def obj(self, obj_id: str) -> Json:
        """The stored (live) object; change it only while holding `standin.lock`."""
        return self.standin.objects[obj_id]

    def _put(self, obj: Json) -> Json:
        self.standin.objects[obj["id"]] = obj
        return obj

    def event(self, event_type: str, obj: Json, previous: Json | None = None) -> Json:
        """An event carrying a snapshot of `obj` now (later changes to `obj` do not reach it)."""
        return make_event(event_type, obj, created=self.clock(), previous_attributes=previous)

    # ------------------------------------------------------------------------------------ catalog

    def customer(self, customer_id: str, *, email: str, team_id: int) -> Json:
        with self.standin.lock:
            return copy.deepcopy(
                self._put(make_customer(id=customer_id, email=email, metadata={"team_id": str(team_id)}))
            )

    def plan_price(
        self,
        code: str,
        amount: int,
        *,
        name: str | None = None,
        lookup_key: bool = True,
        product_metadata: bool = True,
        price_id: str | None = None,
    ) -> Json:
        """A product for a plan (metadata `plan_code`) and its monthly price (lookup key `plan_<code>`)."""
        with self.standin.lock:
            product = self._put(
                make_product(name or f"{code.title()} plan", metadata={"plan_code": code} if product_metadata else {})
            )
            price = make_price(
                amount,
                product=product["id"],
                lookup_key=f"plan_{code}" if lookup_key else None,
                **({"id": price_id} if price_id else {}),
            )
            product["default_price"] = price["id"]
            return copy.deepcopy(self._put(price))

    def pack_price(self, code: str, amount: int, *, name: str | None = None) -> Json:
        with self.standin.lock:
            product = self._put(make_product(name or f"{code.title()} pack", metadata={"kind": "pack", "code": code}))
            price = make_price(amount, product=product["id"], lookup_key=f"pack_{code}", interval=None)
            return copy.deepcopy(self._put(price))

    # ----------------------------------------------------------------------------------- checkout

    def open_checkout(
        self,
        customer: str,
        mode: str,
        price: Json,
        *,
        metadata: Json,
        payment_metadata: Json | None = None,
        subscription_metadata: Json | None = None,
    ) -> Json:
        """An open Checkout Session for one unit of `price` (as `POST /v1/checkout/sessions` makes it)."""
        amount = price["unit_amount"]
        params: Json = {"mode": mode, "customer": customer, "metadata": dict(metadata)}
        if payment_metadata is not None:
            params["payment_intent_data"] = {"metadata": dict(payment_metadata)}
        if subscription_metadata is not None:
            params["subscription_data"] = {"metadata": dict(subscription_metadata)}
        session = make_checkout_session(
            mode=mode,
            customer=customer,
            client_reference_id=metadata.get("team_id"),
            metadata=dict(metadata),
            amount_total=amount,
            amount_subtotal=amount,
            currency=price["currency"],
            success_url="http://localhost/billing/success?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://localhost/billing/cancel",
        )
        with self.standin.lock:
            session["url"] = f"{self.standin.url}/pay/{session['id']}"
            self._put(session)
            self.standin._session_extras[session["id"]] = (params, [{"price": copy.deepcopy(price), "quantity": 1}])
            return copy.deepcopy(session)

    def _session_params(self, session_id: str) -> tuple[Json, Json]:
        params, items = self.standin._session_extras[session_id]
        return params, items[0]["price"]

    def _complete_session(self, session: Json, payment_status: str, **refs: Any) -> None:
        customer = self.standin.objects.get(session["customer"] or "", {})
        details = load_fixture("checkout.session")["customer_details"]
        details.update(email=customer.get("email"), name=customer.get("name"))
        session.update(status="complete", payment_status=payment_status, customer_details=details, **refs)

    def _payment(
        self, amount: int, customer: str, metadata: Json | None, *, pending: bool = False
    ) -> tuple[Json, Json]:
        """A PaymentIntent and its charge: succeeded, or processing (a delayed method such as a bank debit)."""
        intent = self._put(
            make_payment_intent(
                amount, customer=customer, metadata=metadata, status="processing" if pending else "succeeded"
            )
        )
        charge = make_charge(intent["id"], amount, customer=customer, status="pending" if pending else "succeeded")
        del charge["refunds"]  # not sent since API version 2022-11-15 (ask with expand[]=refunds)
        charge["paid"] = not pending
        intent["latest_charge"] = self._put(charge)["id"]
        return intent, charge

    def complete_payment_checkout(self, session_id: str, *, delayed: bool = False) -> list[Json]:
        """The customer pays a `mode=payment` session: by card, or by a delayed method (`payment_status=unpaid`)."""
        with self.standin.lock:
            session = self.obj(session_id)
            params, _ = self._session_params(session_id)
            meta = (params.get("payment_intent_data") or {}).get("metadata")
            intent, charge = self._payment(session["amount_total"], session["customer"], meta, pending=delayed)
            self._complete_session(session, "unpaid" if delayed else "paid", payment_intent=intent["id"])
            if delayed:
                return [
                    self.event("payment_intent.processing", intent),
                    self.event("charge.pending", charge),
                    self.event("checkout.session.completed", session),
                ]
            return [
                self.event("charge.succeeded", charge),
                self.event("payment_intent.succeeded", intent),
                self.event("checkout.session.completed", session),
            ]

    def settle_delayed_payment(self, session_id: str, *, succeeded: bool = True) -> list[Json]:
        """The delayed payment of a completed session clears (or fails), maybe days later."""
        with self.standin.lock:
            session = self.obj(session_id)
            intent = self.obj(session["payment_intent"])
            charge = self.obj(intent["latest_charge"])
            if succeeded:
                intent.update(status="succeeded", amount_received=intent["amount"])
                charge.update(status="succeeded", paid=True)
                session["payment_status"] = "paid"
                return [
                    self.event("charge.succeeded", charge),
                    self.event("payment_intent.succeeded", intent),
                    self.event("checkout.session.async_payment_succeeded", session),
                ]
            intent.update(status="requires_payment_method")
            charge.update(status="failed", paid=False, failure_code="insufficient_funds")
            return [
                self.event("charge.failed", charge),
                self.event("payment_intent.payment_failed", intent),
                self.event("checkout.session.async_payment_failed", session),
            ]

    def complete_subscription_checkout(
        self, session_id: str, *, start: int | None = None, subscription_id: str | None = None
    ) -> list[Json]:
        """The customer pays a `mode=subscription` session: the subscription is created `incomplete`, its first
        invoice is paid and it turns `active`, all in the same second; Checkout completes last."""
        with self.standin.lock:
            session = self.obj(session_id)
            params, price = self._session_params(session_id)
            start = self.clock() if start is None else start
            sub = make_subscription(
                session["customer"],
                price=copy.deepcopy(price),
                status="incomplete",
                period_start=start,
                period_end=start + MONTH,
                metadata=(params.get("subscription_data") or {}).get("metadata"),
            )
            if subscription_id:
                sub["id"] = sub["items"]["data"][0]["subscription"] = subscription_id
                sub["items"]["url"] = f"/v1/subscription_items?subscription={subscription_id}"
            self._put(sub)
            item = sub["items"]["data"][0]
            invoice = self._invoice(sub, "subscription_create", start, [(price, price["unit_amount"], start, False)])
            sub["latest_invoice"] = invoice["id"]
            events = [self.event("customer.subscription.created", sub)]
            events += self._bill(invoice, draft_first=True)
            sub["status"] = "active"
            events.insert(-2, self.event("customer.subscription.updated", sub, {"status": "incomplete"}))
            assert item["current_period_end"] > start
            self._complete_session(session, "paid", subscription=sub["id"], invoice=invoice["id"])
            return [*events, self.event("checkout.session.completed", session)]

    # -------------------------------------------------------------------------------------- invoices

    def _invoice(
        self,
        sub: Json,
        reason: str,
        at: int,
        lines: list[tuple[Json, int, int, bool]],
        *,
        period_end: int | None = None,
        credited: Json | None = None,
    ) -> Json:
        """A draft invoice of `sub` whose lines are (price, amount, period start, proration), stored.

        A proration line covers [its start, the old period end]; a regular line [its start, +1 month]."""
        item = sub["items"]["data"][0]
        total = sum(amount for _, amount, _, _ in lines)
        previous = at - MONTH if reason == "subscription_cycle" else at
        invoice = make_invoice(
            sub["customer"],
            sub["id"],
            total,
            previous,
            at,
            reason,
            status="draft",
            subscription_item=item["id"],
            subscription_metadata=sub["metadata"],  # the snapshot: stale after a portal change, like Stripe's
            currency=sub["currency"],
        )
        if reason != "subscription_cycle":
            invoice.update(period_start=at, period_end=at)
        invoice.update(created=at, effective_at=None, number=None, webhooks_delivered_at=None)
        invoice["status_transitions"].update(finalized_at=None, paid_at=None)
        data = []
        for price, amount, begin, proration in lines:
            end = (period_end or begin + MONTH) if proration else begin + MONTH
            product = self.standin.objects.get(price["product"], {}).get("name", "Subscription")
            if proration and amount < 0:
                text = f"Unused time on {product} after {_day(begin)}"
            elif proration:
                text = f"Remaining time on {product} after {_day(begin)}"
            else:
                text = f"1 \N{MULTIPLICATION SIGN} {product} (at {_money(price['unit_amount'])} / month)"
            data.append(
                make_invoice_line(
                    invoice["id"],
                    price,
                    amount,
                    begin,
                    end,
                    subscription=sub["id"],
                    subscription_item=item["id"],
                    proration=proration,
                    credited_items=credited if proration and amount < 0 else None,
                    description=text,
                )
            )
        invoice["lines"] = {**_list_object(data, f"/v1/invoices/{invoice['id']}/lines"), "total_count": len(data)}
        due = max(total, 0)  # a negative total becomes a credit on the customer's balance
        invoice.update(attempted=False, attempt_count=0, amount_due=due, amount_paid=0, amount_remaining=due)
        return self._put(invoice)

    def _finalize(self, invoice: Json) -> None:
        invoice.update(status="open", number=f"STANDIN-{invoice['id'][-6:].upper()}", effective_at=self.clock())
        invoice["status_transitions"]["finalized_at"] = self.clock()

    def _pay(self, invoice: Json) -> list[Json]:
        """The invoice's payment succeeds: its PaymentIntent and charge, and the invoice `paid`."""
        events = []
        if invoice["amount_due"] > 0:  # nothing to charge, no charge
            intent, charge = self._payment(invoice["amount_due"], invoice["customer"], None)
            events = [self.event("charge.succeeded", charge), self.event("payment_intent.succeeded", intent)]
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            attempted=True,
            attempt_count=invoice["attempt_count"] + 1,
            next_payment_attempt=None,
        )
        invoice["status_transitions"]["paid_at"] = self.clock()
        return [*events, self.event("invoice.paid", invoice), self.event("invoice.payment_succeeded", invoice)]

    def _bill(self, invoice: Json, *, draft_first: bool, fail: bool = False) -> list[Json]:
        events = [self.event("invoice.created", invoice)] if draft_first else []
        self._finalize(invoice)
        events.append(self.event("invoice.finalized", invoice))
        if not fail:
            return events + self._pay(invoice)
        invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
        invoice["next_payment_attempt"] = self.clock() + 3 * DAY
        return [*events, self.event("invoice.payment_failed", invoice)]

    # --------------------------------------------------------------------------------- subscriptions

    def _sub_and_item(self, subscription_id: str) -> tuple[Json, Json]:
        sub = self.obj(subscription_id)
        return sub, sub["items"]["data"][0]

    @staticmethod
    def _set_price(item: Json, price: Json) -> None:
        item["price"] = copy.deepcopy(price)
        item["plan"] = _plan_for(price)

    def change_price(
        self,
        subscription_id: str,
        price_id: str,
        *,
        at: int | None = None,
        proration_behavior: str = "always_invoice",
        billing_cycle_anchor: str = "now",
    ) -> list[Json]:
        """What the customer portal does on a plan switch: the item's price changes (never the metadata).

        With prorations: a credit line for the old price's unused time (first), then, with
        `billing_cycle_anchor=now`, the new price for a new period starting now (the only non-proration line);
        without the anchor, a proration line for the new price's remaining time, the period unchanged.
        `always_invoice` (or a reset anchor) bills at once; `create_prorations` leaves them for the next invoice."""
        with self.standin.lock:
            sub, item = self._sub_and_item(subscription_id)
            at = self.clock() if at is None else at
            old_price, new_price = item["price"], self.obj(price_id)
            old_start, old_end = item["current_period_start"], item["current_period_end"]
            before = {"items": copy.deepcopy(sub["items"]), "latest_invoice": sub["latest_invoice"]}
            lines: list[tuple[Json, int, int, bool]] = []
            if proration_behavior != "none" and at < old_end:
                share = (old_end - at) / (old_end - old_start)
                lines.append((old_price, -round(old_price["unit_amount"] * share), at, True))
                if billing_cycle_anchor != "now":
                    lines.append((new_price, round(new_price["unit_amount"] * share), at, True))
            self._set_price(item, new_price)
            if billing_cycle_anchor == "now":
                before["billing_cycle_anchor"] = sub["billing_cycle_anchor"]
                sub["billing_cycle_anchor"] = at
                item.update(current_period_start=at, current_period_end=at + MONTH)
                lines.append((new_price, new_price["unit_amount"], at, False))
            credited = self._credited(sub)
            if not lines:
                return [self.event("customer.subscription.updated", sub, before)]
            if billing_cycle_anchor != "now" and proration_behavior == "create_prorations":
                self._pending_prorations.setdefault(subscription_id, []).extend(
                    {"line": line, "period_end": old_end, "credited": credited} for line in lines
                )
                return [self.event("customer.subscription.updated", sub, before)]
            invoice = self._invoice(sub, "subscription_update", at, lines, period_end=old_end, credited=credited)
            sub["latest_invoice"] = invoice["id"]
            return [self.event("customer.subscription.updated", sub, before), *self._bill(invoice, draft_first=True)]

    def _credited(self, sub: Json) -> Json | None:
        latest = self.standin.objects.get(sub.get("latest_invoice") or "")
        if not latest:
            return None
        return {"invoice": latest["id"], "invoice_line_items": [line["id"] for line in latest["lines"]["data"]]}

    def schedule_price_change(self, subscription_id: str, price_id: str) -> list[Json]:
        """A downgrade "at period end" (the portal makes a subscription schedule): nothing else changes now."""
        with self.standin.lock:
            sub, item = self._sub_and_item(subscription_id)
            start, end = item["current_period_start"], item["current_period_end"]
            schedule = {
                "id": new_id("sub_sched_"),
                "object": "subscription_schedule",
                "created": self.clock(),
                "customer": sub["customer"],
                "subscription": sub["id"],
                "status": "active",
                "end_behavior": "release",
                "current_phase": {"start_date": start, "end_date": end},
                "phases": [
                    {"start_date": start, "end_date": end, "items": [{"price": item["price"]["id"], "quantity": 1}]},
                    {"start_date": end, "end_date": end + MONTH, "items": [{"price": price_id, "quantity": 1}]},
                ],
                "released_at": None,
                "released_subscription": None,
                "livemode": False,
                "metadata": {},
            }
            sub["schedule"] = self._put(schedule)["id"]
            return [
                self.event("subscription_schedule.created", schedule),
                self.event("customer.subscription.updated", sub, {"schedule": None}),
            ]

    def cancel_at_period_end(self, subscription_id: str) -> list[Json]:
        """The customer cancels in the portal (default: at period end): only flags change until the period ends."""
        with self.standin.lock:
            sub, item = self._sub_and_item(subscription_id)
            before = {
                "cancel_at": sub["cancel_at"],
                "cancel_at_period_end": sub["cancel_at_period_end"],
                "canceled_at": sub["canceled_at"],
                "cancellation_details": copy.deepcopy(sub["cancellation_details"]),
            }
            sub.update(cancel_at=item["current_period_end"], cancel_at_period_end=True, canceled_at=self.clock())
            sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
            return [self.event("customer.subscription.updated", sub, before)]

    def cancel_now(self, subscription_id: str) -> list[Json]:
        """Cancelled at once (dashboard or API): status `canceled` and `customer.subscription.deleted`."""
        with self.standin.lock:
            sub, _ = self._sub_and_item(subscription_id)
            at = self.clock()
            sub.update(status="canceled", canceled_at=at, ended_at=at, cancel_at=None)
            sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
            return [self.event("customer.subscription.deleted", sub)]

    def end_period(self, subscription_id: str, *, payment_fails: bool = False) -> list[Json]:
        """What Stripe does when the item's period ends: cancel (if asked to at period end), or apply a scheduled
        price and renew: the period moves on and a `subscription_cycle` invoice bills it (pending prorations
        first). A failed payment leaves the invoice open and the subscription `past_due`."""
        with self.standin.lock:
            sub, item = self._sub_and_item(subscription_id)
            end = item["current_period_end"]
            if sub["cancel_at_period_end"]:
                sub.update(status="canceled", ended_at=end)
                return [self.event("customer.subscription.deleted", sub)]
            before = {"items": copy.deepcopy(sub["items"]), "latest_invoice": sub["latest_invoice"]}
            schedule = self.standin.objects.get(sub.get("schedule") or "")
            if schedule is not None:
                phase = next(p for p in schedule["phases"] if p["start_date"] == end)
                self._set_price(item, self.obj(phase["items"][0]["price"]))
                schedule["current_phase"] = {"start_date": phase["start_date"], "end_date": phase["end_date"]}
            item.update(current_period_start=end, current_period_end=end + MONTH)
            credited = self._credited(sub)
            pending = self._pending_prorations.pop(subscription_id, [])
            lines = [p["line"] for p in pending] + [(item["price"], item["price"]["unit_amount"], end, False)]
            period_end = pending[0]["period_end"] if pending else None
            invoice = self._invoice(sub, "subscription_cycle", end, lines, period_end=period_end, credited=credited)
            sub["latest_invoice"] = invoice["id"]
            events = [self.event("customer.subscription.updated", sub, before)]
            events += self._bill(invoice, draft_first=True, fail=payment_fails)
            if payment_fails:
                sub["status"] = "past_due"
                events.append(self.event("customer.subscription.updated", sub, {"status": "active"}))
            return events

    def retry_invoice(self, invoice_id: str) -> list[Json]:
        """Smart Retries (or the customer) pay an open invoice: paid, and the subscription `active` again."""
        with self.standin.lock:
            invoice = self.obj(invoice_id)
            sub_id = invoice["parent"]["subscription_details"]["subscription"]
            sub = self.obj(sub_id)
            events = self._pay(invoice)
            previous = sub["status"]
            sub["status"] = "active"
            return [*events, self.event("customer.subscription.updated", sub, {"status": previous})]

    # ------------------------------------------------------------------------------ refunds, disputes

    def charge_of(self, session_id: str) -> str:
        with self.standin.lock:
            return self.obj(self.obj(session_id)["payment_intent"])["latest_charge"]

    def refund(self, charge_id: str, amount: int | None = None) -> list[Json]:
        """A refund (all that is left, or `amount`): `charge.refunded` carries the cumulative `amount_refunded`."""
        with self.standin.lock:
            charge = self.obj(charge_id)
            left = charge["amount"] - charge["amount_refunded"]
            amount = left if amount is None else amount
            chargebacks = [
                d
                for d in self.standin.objects.values()
                if d.get("object") == "dispute" and d["charge"] == charge_id and not d["status"].startswith("warning")
            ]
            if chargebacks:
                raise StripeApiError(
                    400, "The charge you're attempting to refund has been charged back.", code="charge_disputed"
                )
            if not 0 < amount <= left:
                raise StripeApiError(
                    400,
                    f"Refund amount ({_money(amount)}) is greater than unrefunded amount on charge ({_money(left)})",
                    param="amount",
                )
            refund = self._put(
                make_refund(
                    charge_id,
                    charge["payment_intent"],
                    amount,
                    reason="requested_by_customer",
                    currency=charge["currency"],
                    balance_transaction=new_id("txn_"),
                )
            )
            before = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return [self.event("charge.refunded", charge, before), self.event("refund.created", refund)]

    def open_dispute(self, charge_id: str, *, inquiry: bool = False, amount: int | None = None) -> list[Json]:
        """The cardholder's bank opens a dispute: an inquiry moves no money; a chargeback withdraws the disputed
        amount (plus a fee) at once, its one balance transaction, with `charge.dispute.funds_withdrawn`."""
        with self.standin.lock:
            charge = self.obj(charge_id)
            amount = charge["amount"] if amount is None else amount
            status = "warning_needs_response" if inquiry else "needs_response"
            dispute = make_dispute(charge_id, charge["payment_intent"], amount, status, currency=charge["currency"])
            dispute["is_charge_refundable"] = inquiry
            dispute["payment_method_details"]["card"]["case_type"] = "inquiry" if inquiry else "chargeback"
            dispute["balance_transactions"] = []
            self._put(dispute)
            charge["disputed"] = True
            if inquiry:
                return [self.event("charge.dispute.created", dispute)]
            withdrawal = make_balance_transaction(
                -amount, source=dispute["id"], description=f"Chargeback withdrawal for {charge_id}", fee=1500
            )
            dispute["balance_transactions"].append(withdrawal)
            return [
                self.event("charge.dispute.created", dispute),
                self.event("charge.dispute.funds_withdrawn", dispute),
            ]

    def dispute_of(self, charge_id: str) -> str:
        with self.standin.lock:
            found = [d for d in self.standin.objects.values() if d.get("object") == "dispute"]
            return [d for d in found if d["charge"] == charge_id][-1]["id"]

    def submit_evidence(self, dispute_id: str) -> list[Json]:
        """Evidence submitted: `needs_response` → `under_review` (inquiries: `warning_` statuses)."""
        with self.standin.lock:
            dispute = self.obj(dispute_id)
            before = {"status": dispute["status"], "evidence_details": copy.deepcopy(dispute["evidence_details"])}
            dispute["status"] = dispute["status"].replace("needs_response", "under_review")
            dispute["evidence_details"].update(has_evidence=True, submission_count=1)
            dispute["evidence"]["uncategorized_text"] = "The customer used the credits."
            return [self.event("charge.dispute.updated", dispute, before)]

    def close_dispute(self, dispute_id: str, outcome: str | None = None) -> list[Json]:
        """An inquiry closes (`warning_closed`); a chargeback is `won` (the funds come back, a second balance
        transaction, `charge.dispute.funds_reinstated`) or `lost` (they stay withdrawn)."""
        with self.standin.lock:
            dispute = self.obj(dispute_id)
            inquiry = dispute["status"].startswith("warning")
            if inquiry == (outcome is not None) or outcome not in (None, "won", "lost"):
                raise ValueError(f"a {dispute['status']} dispute cannot close as {outcome!r}")
            before = {"status": dispute["status"]}
            dispute.update(status="warning_closed" if inquiry else outcome, is_charge_refundable=False)
            events = [self.event("charge.dispute.closed", dispute, before)]
            if outcome == "won":
                dispute["balance_transactions"].append(
                    make_balance_transaction(
                        dispute["amount"],
                        source=dispute["id"],
                        description=f"Chargeback reversal for {dispute['charge']}",
                        reporting_category="dispute_reversal",
                    )
                )
                events.append(self.event("charge.dispute.funds_reinstated", dispute))
            return events
