"""Receipts and invoices: every payment a team made, and the receipt email after each one.

Three kinds, newest first: pack purchases (``Purchase`` rows from Checkout), auto-recharges
(``Purchase`` rows whose reference is their PaymentIntent) and subscription invoices
(``InvoiceRecord``, written by ``invoice.paid``). A purchase's status follows its refunds and
disputes (``reversals``). In live mode each links to Stripe's hosted receipt or invoice; in test
mode to our printable receipt page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from .. import catalog, mail
from ..extensions import db
from ..models import AutoRecharge, InvoiceRecord, Membership, Purchase, Team, User, utcnow

Json = dict[str, Any]
STATUS_LABELS = {
    "paid": "Paid",
    "partially_refunded": "Partly refunded",
    "refunded": "Refunded",
    "disputed": "Disputed",
    "dispute_lost": "Disputed (lost)",
}


@dataclass(frozen=True)
class Receipt:
    kind: str  # pack, recharge, invoice
    id: int
    created_at: datetime
    what: str
    credits: int
    amount_cents: int
    currency: str
    status: str
    reference: str  # cs_…, pi_…, in_…
    hosted_url: str | None = None

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status.replace("_", " ").capitalize())

    @property
    def anchor(self) -> str:
        return f"{self.kind}-{self.id}"


def _pack_name(code: str) -> str:
    pack = catalog.pack(code)
    return pack.name if pack else code


def _purchase_receipt(purchase: Purchase, is_recharge: bool) -> Receipt:
    name = _pack_name(purchase.pack_code)
    return Receipt(
        "recharge" if is_recharge else "pack",
        purchase.id,
        purchase.created_at,
        f"Auto-recharge: {name}" if is_recharge else f"{name} credit pack",
        purchase.credits,
        purchase.amount_cents,
        purchase.currency,
        purchase.status,
        purchase.stripe_checkout_session_id,
    )


def _invoice_receipt(invoice: InvoiceRecord) -> Receipt:
    plan = catalog.plan(invoice.plan_code or "")
    return Receipt(
        "invoice",
        invoice.id,
        invoice.created_at,
        f"{plan.name if plan else 'Subscription'} plan invoice",
        invoice.credits,
        invoice.amount_cents,
        invoice.currency,
        invoice.status,
        invoice.stripe_invoice_id,
        invoice.hosted_invoice_url,
    )


def list_for(team_id: int, limit: int = 200) -> list[Receipt]:
    """The team's payments, newest first (two queries, whatever the team's size)."""
    recharge_pis = select(AutoRecharge.payment_intent_id).where(
        AutoRecharge.team_id == team_id, AutoRecharge.payment_intent_id.is_not(None)
    )
    purchases = db.session.execute(
        select(Purchase, Purchase.stripe_payment_intent_id.in_(recharge_pis).label("is_recharge"))
        .where(Purchase.team_id == team_id)
        .order_by(Purchase.created_at.desc(), Purchase.id.desc())
        .limit(limit)
    )
    found = [_purchase_receipt(purchase, bool(is_recharge)) for purchase, is_recharge in purchases]
    invoices = db.session.scalars(
        select(InvoiceRecord)
        .where(InvoiceRecord.team_id == team_id)
        .order_by(InvoiceRecord.created_at.desc(), InvoiceRecord.id.desc())
        .limit(limit)
    )
    found += [_invoice_receipt(invoice) for invoice in invoices]
    found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return found[:limit]


def find(team_id: int, kind: str, receipt_id: int) -> Receipt | None:
    """One of the team's receipts (another team's is simply not found)."""
    if kind == "invoice":
        invoice = db.session.scalar(
            select(InvoiceRecord).where(InvoiceRecord.id == receipt_id, InvoiceRecord.team_id == team_id)
        )
        return _invoice_receipt(invoice) if invoice else None
    purchase = db.session.scalar(select(Purchase).where(Purchase.id == receipt_id, Purchase.team_id == team_id))
    if purchase is None:
        return None
    pi_id = purchase.stripe_payment_intent_id
    is_recharge = (
        bool(pi_id)
        and db.session.scalar(
            select(AutoRecharge.id).where(AutoRecharge.payment_intent_id == pi_id, AutoRecharge.team_id == team_id)
        )
        is not None
    )
    found = _purchase_receipt(purchase, is_recharge)
    return found if found.kind == kind else None


def record_invoice(team: Team, invoice: Json) -> tuple[InvoiceRecord, bool]:
    """A paid subscription invoice, once per invoice id (a redelivery updates the same row); and whether
    this was its first delivery."""
    record = db.session.scalar(select(InvoiceRecord).where(InvoiceRecord.stripe_invoice_id == invoice["id"]))
    first = record is None
    if record is None:
        record = InvoiceRecord(team_id=team.id, stripe_invoice_id=invoice["id"], created_at=utcnow())
        db.session.add(record)
    record.amount_cents = int(invoice.get("amount_paid") or 0)
    record.currency = str(invoice.get("currency") or catalog.CURRENCY)
    if first:
        record.status = "paid"  # a redelivery keeps what refunds and disputes made of it since
    record.hosted_invoice_url = invoice.get("hosted_invoice_url")
    db.session.flush()
    return record, first


def email_invoice_receipt(team: Team, record: InvoiceRecord, hosted_url: str | None) -> None:
    """The receipt email of a subscription invoice, once its credits are known."""
    email_receipt(
        team, "Subscription invoice", record.amount_cents, record.credits, record.stripe_invoice_id, hosted_url
    )


def absolute_url(endpoint: str, **values: Any) -> str:
    """A link for an email on ``BASE_URL``; works in a job too, where no request is there to build it from."""
    return current_app.config["BASE_URL"] + current_app.url_map.bind("localhost").build(endpoint, values)


def email_receipt(
    team: Team, what: str, amount_cents: int, credits: int, reference: str, hosted_url: str | None = None
) -> None:
    """The receipt email after a successful payment, to the team's owners and admins."""
    emails = db.session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team.id, Membership.role.in_(("owner", "admin")))
        .order_by(User.id)
    )
    link = hosted_url or absolute_url("payments.receipts")
    for email in emails:
        mail.send(
            email,
            f"Receipt: {what}",
            "receipt",
            team=team,
            what=what,
            amount_cents=amount_cents,
            credits=credits,
            reference=reference,
            link=link,
        )
