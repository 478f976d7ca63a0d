"""Lifecycles: what happens at Stripe over a purchase or a subscription, step by step, with the events it sends.

A lifecycle is a list of steps. Each step changes the stand-in through ``StripeBilling`` (so the stand-in always
holds Stripe's *current* state, which the app fetches) and returns the events Stripe sends at that point. The
expected end state is written out per lifecycle from the domain rules (docs/billing.md), not taken from a run:

- a team starts on the free plan with 100 plan credits; a current paid period's ``invoice.paid`` grants the
  plan's monthly credits, expiring at the period end of the invoice's non-proration line, and expires what is
  left of older plan periods; an invoice of a period that is over or older, or of a subscription that is not the
  team's current one, grants nothing;
- the team's subscription is the customer's newest active/trialing/past_due/unpaid/paused one in Stripe now; its
  plan is its item's price; with none the team is on free (status "canceled"): ending the current subscription
  expires its plan credits and starts a free period of 100 credits;
- a paid pack grants its credits and bonus once, never expiring; the money taken back (cumulative refunds plus
  disputes whose funds are withdrawn and not reinstated, at most what was paid) takes back that share of the
  pack's credits, floored, from what is left of them (and from holds on them).

Time: the Stripe story starts the second after the team signed up (``World.t0``) and runs ahead of the app's
clock. A renewal, a period end or an upgrade ten days in is played at once, with Stripe's timestamps for that
moment (in the app's future), so every period is still current when its events arrive, as in real life.

Orderings (``arrange``): as sent (each step's events right after the step; the other orderings run every step
first), reversed, shuffled with three fixed seeds, and duplicated (every event twice, the copy a little later,
and the first event once more at the very end). A lifecycle's ``setup`` is delivered in order before any of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starter import catalog
from tests.stripe_standin_billing import MONTH, StripeBilling
from tests.stripe_wire import Json, new_id

FREE = catalog.FREE_PLAN.monthly_credits
STARTER, PRO = catalog.PLANS["starter"], catalog.PLANS["pro"]
MEDIUM = catalog.PACKS["medium"]
DAY = 86_400
ORDERINGS = ("as_sent", "reversed", "shuffled_1", "shuffled_2", "shuffled_3", "duplicated")


@dataclass(frozen=True)
class State:
    """What the app must show for the team: its subscription mirror and its balance by kind."""

    plan_code: str
    subscription_status: str | None
    subscription_id: str | None
    cancel_at_period_end: bool
    plan: int
    purchased: int
    other: int = 0
    held: int = 0
    plan_expires_at: int | None = None  # when the plan credits expire (epoch seconds); None: not checked


@dataclass
class Step:
    name: str
    run: Callable[[], list[Json]]  # changes the stand-in; returns the events Stripe sends now
    check: State | None = None  # the state once this step's events are delivered (as sent only)


@dataclass
class Lifecycle:
    name: str
    steps: list[Step]
    expected: State
    setup: list[Step] = field(default_factory=list)  # always delivered as sent, before the steps
    after_setup: Callable[[], None] | None = None  # the app's own doing between setup and steps (a spend, a hold)
    final_check: Callable[[], None] | None = None


@dataclass
class World:
    """One team with a Stripe customer, and the catalog's prices at the stand-in."""

    billing: StripeBilling
    team_id: int
    user_id: int
    customer: str
    initial_status: str | None
    prices: dict[str, Json]  # plan or pack code: its Stripe price
    t0: int = 0  # when the Stripe story starts: just after the team signed up

    def __post_init__(self) -> None:
        self.t0 = self.t0 or self.billing.clock() + 1


def arrange(events: list[Json], ordering: str) -> list[Json]:
    """The delivery order of all of a lifecycle's events for an ordering other than ``as_sent``."""
    if ordering == "reversed":
        return events[::-1]
    if ordering.startswith("shuffled_"):
        shuffled = list(events)
        random.Random(int(ordering.removeprefix("shuffled_"))).shuffle(shuffled)
        return shuffled
    if ordering == "duplicated":
        out: list[Json] = []
        for i, event in enumerate(events):
            out.append(event)
            if i >= 2:
                out.append(events[i - 2])  # a redelivery, two events late
        out += events[max(len(events) - 2, 0) :]  # the copies of the last two
        return [*out, events[0]]  # and the oldest event once more, after everything
    raise ValueError(ordering)


# ------------------------------------------------------------------------------------------ states


def free(w: World, *, purchased: int = 0, plan: int = FREE, status: Any = ..., **more: Any) -> State:
    """On the free plan: never subscribed (the status as it started), or after a subscription ended."""
    status = w.initial_status if status is ... else status
    return State("free", status, None, False, plan, purchased, **more)


def paid(plan: catalog.Plan, sub: str, expires: int, *, status: str = "active", cancelling: bool = False) -> State:
    return State(plan.code, status, sub, cancelling, plan.monthly_credits, 0, plan_expires_at=expires)


# ------------------------------------------------------------------------------------------- steps


def _checkout_metadata(w: World, kind: str, code: str) -> Json:
    """What the app's Checkout Session carries (starter/billing/gateway.checkout_params)."""
    return {"team_id": str(w.team_id), "kind": kind, "code": code, "user_id": str(w.user_id)}


def subscribe(
    w: World, plan: catalog.Plan, sub: str, start: int, check: State | None = None, name: str = "checkout"
) -> Step:
    """A subscription Checkout paid: created incomplete, first invoice paid, active, session completed."""

    def run() -> list[Json]:
        session = w.billing.open_checkout(
            w.customer,
            "subscription",
            w.prices[plan.code],
            metadata=_checkout_metadata(w, "plan", plan.code),
            subscription_metadata={"team_id": str(w.team_id), "plan_code": plan.code},
        )
        return w.billing.complete_subscription_checkout(session["id"], start=start, subscription_id=sub)

    return Step(f"{name} ({plan.code})", run, check)


def buy(
    w: World, box: dict[str, Any], code: str = "medium", *, delayed: bool = False, hold_back_completed: bool = False
) -> Step:
    """A pack's Checkout paid (by card, or by a delayed method); `hold_back_completed` keeps its
    `checkout.session.completed` out of this step's deliveries (see `late_completed`)."""

    def run() -> list[Json]:
        meta = _checkout_metadata(w, "pack", code)
        session = w.billing.open_checkout(w.customer, "payment", w.prices[code], metadata=meta, payment_metadata=meta)
        box["session"] = session["id"]
        events = w.billing.complete_payment_checkout(session["id"], delayed=delayed)
        box["charge"] = w.billing.charge_of(session["id"])
        if hold_back_completed:
            box["completed"] = [e for e in events if e["type"] == "checkout.session.completed"]
            events = [e for e in events if e["type"] != "checkout.session.completed"]
        return events

    return Step(f"pay for the {code} pack" + (" (delayed method)" if delayed else ""), run)


def late_completed(box: dict[str, Any]) -> Step:
    """The held-back `checkout.session.completed` (its snapshot from the payment), delivered now: a retry."""
    return Step("checkout.session.completed, late", lambda: box.pop("completed"))


def refund(w: World, box: dict[str, Any], amount: int | None = None, check: State | None = None) -> Step:
    return Step(f"refund {amount or 'all'}", lambda: w.billing.refund(box["charge"], amount), check)


def dispute(w: World, box: dict[str, Any], *, inquiry: bool = False, check: State | None = None) -> list[Step]:
    """Opened, evidence submitted: the first two steps of an inquiry or a chargeback."""
    kind = "inquiry" if inquiry else "chargeback"
    return [
        Step(f"{kind} opened", lambda: w.billing.open_dispute(box["charge"], inquiry=inquiry), check),
        Step("evidence submitted", lambda: w.billing.submit_evidence(w.billing.dispute_of(box["charge"]))),
    ]


def close(w: World, box: dict[str, Any], outcome: str | None) -> Step:
    return Step(f"dispute closed ({outcome or 'warning_closed'})", lambda: _close(w, box, outcome))


def _close(w: World, box: dict[str, Any], outcome: str | None) -> list[Json]:
    return w.billing.close_dispute(w.billing.dispute_of(box["charge"]), outcome)


# -------------------------------------------------------------------------------------- lifecycles


def pack_card(w: World) -> Lifecycle:
    return Lifecycle("pack_card", [buy(w, {})], free(w, purchased=MEDIUM.total_credits))


def pack_delayed(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    first = buy(w, box, delayed=True)
    first.check = free(w)  # completed with payment_status=unpaid: nothing yet
    clears = Step("the payment clears", lambda: w.billing.settle_delayed_payment(box["session"]))
    return Lifecycle("pack_delayed", [first, clears], free(w, purchased=MEDIUM.total_credits))


def pack_delayed_fails(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    fails = Step("the payment fails", lambda: w.billing.settle_delayed_payment(box["session"], succeeded=False))
    return Lifecycle("pack_delayed_fails", [buy(w, box, delayed=True), fails], free(w))


def subscription_checkout(w: World) -> Lifecycle:
    sub = new_id("sub_")
    return Lifecycle("subscription_checkout", [subscribe(w, PRO, sub, w.t0)], paid(PRO, sub, w.t0 + MONTH))


def renewal(w: World) -> Lifecycle:
    sub, start = new_id("sub_"), w.t0
    steps = [
        subscribe(w, PRO, sub, start, paid(PRO, sub, start + MONTH)),
        Step("the period ends: renewed", lambda: w.billing.end_period(sub)),
    ]
    return Lifecycle("renewal", steps, paid(PRO, sub, start + 2 * MONTH))


def upgrade(w: World) -> Lifecycle:
    """Starter to pro in the portal, prorated, the period restarting now: pro's credits for the new period."""
    sub, start, switched = new_id("sub_"), w.t0, w.t0 + 10 * DAY
    switch = Step(
        "portal upgrade to pro, 10 days in (prorated, billing_cycle_anchor=now)",
        lambda: w.billing.change_price(sub, w.prices["pro"]["id"], at=switched),
    )
    steps = [subscribe(w, STARTER, sub, start, paid(STARTER, sub, start + MONTH)), switch]
    return Lifecycle("upgrade", steps, paid(PRO, sub, switched + MONTH))


def downgrade_at_period_end(w: World) -> Lifecycle:
    sub, start = new_id("sub_"), w.t0
    steps = [
        subscribe(w, PRO, sub, start),
        Step(
            "portal downgrade to starter at period end",
            lambda: w.billing.schedule_price_change(sub, w.prices["starter"]["id"]),
            paid(PRO, sub, start + MONTH),  # nothing changes until the period ends
        ),
        Step("the period ends: starter from now", lambda: w.billing.end_period(sub)),
    ]
    return Lifecycle("downgrade_at_period_end", steps, paid(STARTER, sub, start + 2 * MONTH))


def cancel_at_period_end(w: World) -> Lifecycle:
    sub, start = new_id("sub_"), w.t0
    steps = [
        subscribe(w, PRO, sub, start),
        Step(
            "portal cancel (at period end)",
            lambda: w.billing.cancel_at_period_end(sub),
            paid(PRO, sub, start + MONTH, cancelling=True),
        ),
        Step("the period ends: canceled", lambda: w.billing.end_period(sub)),
    ]
    return Lifecycle("cancel_at_period_end", steps, free(w, status="canceled"))


def cancel_now(w: World) -> Lifecycle:
    sub, start = new_id("sub_"), w.t0
    steps = [
        subscribe(w, PRO, sub, start, paid(PRO, sub, start + MONTH)),
        Step("canceled at once", lambda: w.billing.cancel_now(sub)),
    ]
    return Lifecycle("cancel_now", steps, free(w, status="canceled"))


def failed_payment_then_retry(w: World) -> Lifecycle:
    sub, start = new_id("sub_"), w.t0
    steps = [
        subscribe(w, PRO, sub, start),
        Step(
            "the period ends: the renewal payment fails",
            lambda: w.billing.end_period(sub, payment_fails=True),
            paid(PRO, sub, start + MONTH, status="past_due"),  # still the first period's credits
        ),
        Step("a retry pays the invoice", lambda: w.billing.retry_invoice(w.billing.obj(sub)["latest_invoice"])),
    ]
    return Lifecycle("failed_payment_then_retry", steps, paid(PRO, sub, start + 2 * MONTH))


def two_subscriptions(w: World) -> Lifecycle:
    """A second Checkout (another tab) makes a second subscription; the old one is then canceled."""
    old, new, later = new_id("sub_"), new_id("sub_"), w.t0 + 60
    steps = [
        subscribe(w, STARTER, old, w.t0, paid(STARTER, old, w.t0 + MONTH)),
        subscribe(w, PRO, new, later, paid(PRO, new, later + MONTH), name="second checkout, a minute later"),
        Step("the old subscription is canceled", lambda: w.billing.cancel_now(old)),
    ]
    return Lifecycle("two_subscriptions", steps, paid(PRO, new, later + MONTH))


def _owed(refunded_cents: int) -> int:
    """Credits a medium pack owes back for `refunded_cents` of money back."""
    return MEDIUM.total_credits * min(refunded_cents, MEDIUM.price_cents) // MEDIUM.price_cents


def refund_full(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    return Lifecycle("refund_full", [buy(w, box), refund(w, box)], free(w))


def refund_partial(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    left = MEDIUM.total_credits - _owed(900)  # 1,100
    return Lifecycle("refund_partial", [buy(w, box), refund(w, box, 900)], free(w, purchased=left))


def refund_twice(w: World) -> Lifecycle:
    """Two partial refunds: `amount_refunded` is cumulative (600, then 1,200)."""
    box: dict[str, Any] = {}
    steps = [
        buy(w, box),
        refund(w, box, 600, free(w, purchased=MEDIUM.total_credits - _owed(600))),
        refund(w, box, 600),
    ]
    return Lifecycle("refund_twice", steps, free(w, purchased=MEDIUM.total_credits - _owed(1200)))  # 734


def refund_before_fulfilment(w: World) -> Lifecycle:
    """Refunded at once; the `checkout.session.completed` delivery failed and its retry comes after the refund."""
    box: dict[str, Any] = {}
    steps = [buy(w, box, hold_back_completed=True), refund(w, box), late_completed(box)]
    return Lifecycle("refund_before_fulfilment", steps, free(w))


def partial_refund_before_fulfilment(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    steps = [buy(w, box, hold_back_completed=True), refund(w, box, 900), late_completed(box)]
    return Lifecycle("partial_refund_before_fulfilment", steps, free(w, purchased=MEDIUM.total_credits - _owed(900)))


def inquiry(w: World) -> Lifecycle:
    """An inquiry withdraws no funds: nothing moves, whatever its status."""
    box: dict[str, Any] = {}
    full = free(w, purchased=MEDIUM.total_credits)
    steps = [buy(w, box), *dispute(w, box, inquiry=True, check=full), close(w, box, None)]
    return Lifecycle("inquiry", steps, full)


def chargeback_won(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    steps = [buy(w, box), *dispute(w, box, check=free(w)), close(w, box, "won")]
    return Lifecycle("chargeback_won", steps, free(w, purchased=MEDIUM.total_credits))


def chargeback_lost(w: World) -> Lifecycle:
    box: dict[str, Any] = {}
    return Lifecycle("chargeback_lost", [buy(w, box), *dispute(w, box), close(w, box, "lost")], free(w))


def refund_then_lost_dispute(w: World) -> Lifecycle:
    """Half refunded, then a chargeback of the full amount, lost: 900 + 1,800 back, capped at the 1,800 paid.

    (Stripe refuses to refund a charged-back charge, `charge_disputed`: "a refund after a lost dispute" happens
    only in delivery order, which the reversed and shuffled orderings give.)"""
    box: dict[str, Any] = {}
    steps = [
        buy(w, box),
        refund(w, box, 900, free(w, purchased=MEDIUM.total_credits - _owed(900))),
        *dispute(w, box, check=free(w)),
        close(w, box, "lost"),
    ]
    return Lifecycle("refund_then_lost_dispute", steps, free(w))


def refund_then_won_dispute(w: World) -> Lifecycle:
    """Half refunded, a full chargeback (all credits back), won: only the refund's share stays taken."""
    box: dict[str, Any] = {}
    half = free(w, purchased=MEDIUM.total_credits - _owed(900))
    steps = [buy(w, box), refund(w, box, 900, half), *dispute(w, box, check=free(w)), close(w, box, "won")]
    return Lifecycle("refund_then_won_dispute", steps, half)


def inquiry_then_refund(w: World) -> Lifecycle:
    """An inquiry leaves the charge refundable: refunded in full while it is open, then it closes."""
    box: dict[str, Any] = {}
    steps = [buy(w, box), *dispute(w, box, inquiry=True), refund(w, box), close(w, box, None)]
    return Lifecycle("inquiry_then_refund", steps, free(w))


def refund_after_spending(w: World) -> Lifecycle:
    """1,000 of the pack spent: a full refund takes the 1,200 left; the rest is a shortfall, not a debt."""
    from starter import credits
    from starter.extensions import db

    def spend() -> None:
        credits.spend(w.team_id, FREE + 1_000, key="lifecycle-spend")  # the free credits go first
        db.session.commit()

    box: dict[str, Any] = {}
    return Lifecycle("refund_after_spending", [refund(w, box)], free(w, plan=0), [buy(w, box)], after_setup=spend)


def clawback_through_a_hold(w: World) -> Lifecycle:
    """A hold reserves the pack's credits; a full refund ends the hold and takes them."""
    from starter import credits
    from starter.extensions import db

    hold: dict[str, int] = {}

    def reserve() -> None:
        credits.spend(w.team_id, FREE, key="lifecycle-free-spend")
        hold["id"] = credits.hold(w.team_id, MEDIUM.total_credits, key="lifecycle-hold", ttl_seconds=3600).id
        db.session.commit()

    def capture_fails() -> None:
        try:
            credits.capture(w.team_id, hold["id"], 10, key="lifecycle-capture")
        except credits.HoldNotActive:
            db.session.rollback()
        else:
            raise AssertionError("a hold whose credits a refund took back was captured")

    box: dict[str, Any] = {}
    return Lifecycle(
        "clawback_through_a_hold",
        [refund(w, box)],
        free(w, plan=0),
        [buy(w, box)],
        after_setup=reserve,
        final_check=capture_fails,
    )


LIFECYCLES: dict[str, Callable[[World], Lifecycle]] = {
    build.__name__: build
    for build in (
        pack_card,
        pack_delayed,
        pack_delayed_fails,
        subscription_checkout,
        renewal,
        upgrade,
        downgrade_at_period_end,
        cancel_at_period_end,
        cancel_now,
        failed_payment_then_retry,
        two_subscriptions,
        refund_full,
        refund_partial,
        refund_twice,
        refund_before_fulfilment,
        partial_refund_before_fulfilment,
        inquiry,
        chargeback_won,
        chargeback_lost,
        refund_then_lost_dispute,
        refund_then_won_dispute,
        inquiry_then_refund,
        refund_after_spending,
        clawback_through_a_hold,
    )
}
