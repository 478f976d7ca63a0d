"""THE models module: every table of the app, typed, with its constraints in the database.

Credits and money are integers. Datetimes are timezone-aware UTC in Python; ``UTCDateTime`` stores
them as ``timestamptz`` on PostgreSQL and as naive UTC on SQLite. Only ``starter.credits`` writes
credit blocks, ledger entries, holds and balances.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from . import ledger_functions
from .extensions import db

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids for the big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")

ROLES = ("owner", "admin", "member")
# overage: credits granted on demand past the balance, billed on the next invoice (``credits.overage``).
BLOCK_SOURCES = ("plan", "purchase", "promo", "adjustment", "refund", "overage")
ENTRY_KINDS = ("grant", "spend", "expire", "clawback", "adjustment", "hold", "capture", "release", "overage")
# revoked: a refund or dispute took back the credits the hold reserved.
HOLD_STATUSES = ("active", "captured", "released", "expired", "revoked")
REVERSAL_KINDS = ("refund", "dispute")
RUN_STATUSES = ("running", "succeeded", "failed")
# An auto-recharge: due (recorded by a spend) → processing (the job is paying) → confirming (Stripe took
# it; payment_intent.succeeded grants) → succeeded; or retrying (declined, backoff), requires_action
# (3-D Secure, the customer finishes on-session), failed, canceled. See starter/billing/recharge.py.
RECHARGE_STATUSES = (
    "due",
    "processing",
    "confirming",
    "retrying",
    "requires_action",
    "succeeded",
    "failed",
    "canceled",
)
RECHARGE_IN_FLIGHT = ("due", "processing", "confirming", "retrying", "requires_action")
LIMIT_PERIODS = ("month", "day")  # an API key's spend limit resets at the start of each UTC month or day
OUTBOX_STATUSES = ("pending", "sent", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)  # stored normalised (lower case)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    current_team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An email change waiting for its confirmation link (``accounts.request_email_change``): the new address
    # and the nonce its one valid link carries. A newer request, or confirming, makes every older link dead.
    pending_email: Mapped[str | None] = mapped_column(String(255))
    pending_email_nonce: Mapped[str | None] = mapped_column(String(32))

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")

    # Not a column: the token of the login session (``LoginSession``) this object was loaded or logged
    # in with, which is what Flask-Login keeps in the session and the remember-me cookie.
    login_token = None

    def get_id(self) -> str:
        if self.login_token is None:
            raise RuntimeError("open a login session first: accounts.open_login_session(user, …)")
        return self.login_token

    def set_password(self, password: str) -> None:
        # PASSWORD_HASH_METHOD exists so the test suite can use a cheap work factor; production keeps scrypt.
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


class LoginSession(db.Model):
    """One signed-in browser; its random token (stored hashed) is Flask-Login's user id. Log-out
    deletes the row, ending that browser's session and remember-me cookies; a new password, all rows."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token
    remember: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Team(db.Model):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    is_personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The plan and its current period. Free plans roll over monthly from ``period_anchor``;
    # paid plans follow Stripe's invoices.
    plan_code: Mapped[str] = mapped_column(String(32), default="free")
    period_anchor: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Stripe: the customer is created lazily; subscription state comes only from webhooks.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    subscription_status: Mapped[str | None] = mapped_column(String(32))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # Deleted by its owner (``teams.delete_team``): archived, not removed, so its ledger, payments and
    # Stripe customer stay whole (a late refund still finds it); it has no members and no usable keys.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(back_populates="team", cascade="all, delete-orphan")

    @property
    def is_paying(self) -> bool:
        return bool(self.stripe_subscription_id) and self.subscription_status in {
            "active",
            "trialing",
            "past_due",
        }

    def __repr__(self) -> str:
        return f"<Team {self.id} {self.slug}>"


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("team_id", "user_id"),
        CheckConstraint(_in("role", ROLES), "role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Credits this member may spend per UTC month (web spends they cause); None: no limit.
    monthly_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Low-balance, out-of-credits and limit emails (owners and admins get them); each person can opt out.
    alert_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")

    team: Mapped[Team] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Invitation(db.Model):
    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint(_in("role", ("admin", "member")), "role"),
        # How many an inviter sent in the last day: the per-user invitation limit asks on every invite.
        Index("ix_invitations_inviter_recent", "invited_by_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="member")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the emailed token
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    team: Mapped[Team] = relationship()
    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_id])

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > utcnow()


class CreditBalance(db.Model):
    """One row per team: the lock point of every credit change and the cached totals."""

    __tablename__ = "credit_balances"
    __table_args__ = (
        CheckConstraint("balance >= 0", "balance_not_negative"),
        CheckConstraint("held >= 0 AND held <= balance", "held_within_balance"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of remaining over unexpired-written blocks
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Auto-recharge's threshold while it is on (else NULL), read by the lock every change takes: a spend
    # that crosses it records the recharge without one more query (AutoRechargeSettings is the setting).
    recharge_below: Mapped[int | None] = mapped_column(BigInteger)
    # The team's low-balance thresholds (credits, sorted); None: the LOW_BALANCE_THRESHOLD default, []: none.
    # Kept on the lock row so every change sees them in the UPDATE it makes anyway (RETURNING), at no extra cost.
    alert_levels: Mapped[list[int] | None] = mapped_column(JSON)


class CreditBlock(db.Model):
    """A grant of credits: spends draw from blocks, soonest expiry first."""

    __tablename__ = "credit_blocks"
    __table_args__ = (
        CheckConstraint(_in("source", BLOCK_SOURCES), "source"),
        CheckConstraint("amount > 0", "amount_positive"),
        CheckConstraint("held >= 0 AND held <= remaining AND remaining <= amount", "remaining_within_amount"),
        # One plan grant per team and period: the final guard of the monthly job and of invoice.paid.
        UniqueConstraint("team_id", "source", "period_start"),
        Index("ix_credit_blocks_team_spend_order", "team_id", "expires_at", "created_at", "id"),
        Index("ix_credit_blocks_team_reference", "team_id", "reference"),
        # The spending order (expires_at ASC NULLS LAST, created_at, id) over the blocks a spend can draw
        # from: a spend reads the first few rows, however many blocks, spent or expired, the team has.
        # On PostgreSQL the predicate names the stored ``spendable`` instead of ``remaining > held``: a
        # column an index's predicate reads makes every UPDATE of it a non-HOT one (new entries in all
        # five indexes, dead ones behind), so a spend would pay for every spend before it until VACUUM.
        # ``spendable`` changes only when a block runs out or comes back; a spend's update stays HOT.
        Index(
            "ix_credit_blocks_spendable",
            "team_id",
            "expires_at",
            "created_at",
            "id",
            postgresql_where=text("expired_at IS NULL AND spendable"),
            sqlite_where=text("expired_at IS NULL AND remaining > held"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    # remaining > held, kept by the database: what the spendable index's predicate reads (see above).
    spendable: Mapped[bool] = mapped_column(Boolean, Computed("remaining > held", persisted=True))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the expiry was written
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)  # plan blocks only
    reference: Mapped[str | None] = mapped_column(String(255))  # what created it: cs_…, in_…, admin:…
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def available(self) -> int:
        return self.remaining - self.held


class Hold(db.Model):
    """Credits reserved for work whose cost is known only afterwards; captured or released."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(_in("status", HOLD_STATUSES), "status"),
        CheckConstraint("amount > 0", "amount_positive"),
        CheckConstraint("captured_amount IS NULL OR (captured_amount >= 0 AND captured_amount <= amount)", "capture"),
        Index("ix_holds_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    captured_amount: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="active")
    feature: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LedgerEntry(db.Model):
    """Append-only: every change of a team's credits, with the balance after it."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(_in("kind", ENTRY_KINDS), "kind"),
        CheckConstraint("balance_after >= 0 AND held_after >= 0", "after_not_negative"),
        UniqueConstraint("team_id", "idempotency_key"),
        Index("ix_ledger_entries_team_history", "team_id", "created_at", "id"),
        Index("ix_ledger_entries_team_kind", "team_id", "kind", "created_at"),
        # What one key or one member spent since a time: spend limits and the key and member lists.
        Index("ix_ledger_entries_api_key_usage", "api_key_id", "created_at"),
        Index("ix_ledger_entries_team_actor_usage", "team_id", "actor_user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)  # signed change of the balance
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)  # signed change of the held credits
    balance_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    block_id: Mapped[int | None] = mapped_column(ForeignKey("credit_blocks.id"), index=True)  # first block touched
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"), index=True)
    feature: Mapped[str | None] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16), default="system")  # user, api, admin, stripe, system
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))  # actor "api"
    description: Mapped[str] = mapped_column(String(255), default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))  # fingerprint of the parameters the key was used with
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    actor: Mapped[User | None] = relationship()
    allocations: Mapped[list[LedgerAllocation]] = relationship(back_populates="entry", order_by="LedgerAllocation.id")


class LedgerAllocation(db.Model):
    """How one ledger entry touched one block: the per-block audit trail behind ``verify``."""

    __tablename__ = "ledger_allocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id", ondelete="CASCADE"), index=True)
    block_id: Mapped[int] = mapped_column(ForeignKey("credit_blocks.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)  # signed change of block.remaining
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)  # signed change of block.held

    entry: Mapped[LedgerEntry] = relationship(back_populates="allocations")


class Purchase(db.Model):
    """A paid credit pack: the link from a Stripe payment to the block it granted (for refunds)."""

    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    pack_code: Mapped[str] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    stripe_checkout_session_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(32), default="paid")
    block_id: Mapped[int | None] = mapped_column(ForeignKey("credit_blocks.id"))
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    # What refunds and disputes owe back (credits), what was actually taken (the rest was spent already),
    # and a counter that keys each clawback or reinstatement uniquely.
    clawback_target: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    reversal_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PaymentReversal(db.Model):
    """Money a payment lost after it was made: a charge's refunds, or one dispute.

    Kept by payment intent, not by purchase, because Stripe may deliver a refund or a dispute before
    the checkout it reverses; fulfilment applies what is waiting here. Fields only ever grow
    (cumulative refunds, funds withdrawn, funds reinstated), so events merge in any order.
    """

    __tablename__ = "payment_reversals"
    __table_args__ = (
        CheckConstraint(_in("kind", REVERSAL_KINDS), "kind"),
        UniqueConstraint("kind", "stripe_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    payment_intent: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    stripe_id: Mapped[str] = mapped_column(String(255))  # ch_… for refunds (cumulative), dp_… for a dispute
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str | None] = mapped_column(String(32))
    funds_withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    funds_reinstated: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeEvent(db.Model):
    """Every webhook event received: the dedupe key and the audit trail."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    stripe_created: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    # Applied, but something disagreed (metadata vs the price paid, an unexpected amount): for the admin.
    warning: Mapped[str | None] = mapped_column(Text)


class TestModeObject(db.Model):
    """The built-in test mode's Stripe: the objects it would keep (subscriptions, invoices, sessions).

    Only test mode reads or writes it; it lets test mode answer "retrieve the latest object" like Stripe.
    """

    __tablename__ = "test_mode_objects"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    object: Mapped[str] = mapped_column(String(64))
    customer: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GenerationRun(db.Model):
    """A run of the example paid feature under its idempotency key: a repeat returns this result
    (or hears it is still running) instead of redoing the work. See ``starter.generations``."""

    __tablename__ = "generation_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), "status"),
        UniqueConstraint("team_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the prompt the key was first used with
    status: Mapped[str] = mapped_column(String(16), default="running")
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"))
    held: Mapped[int] = mapped_column(BigInteger)  # credits reserved for the run
    credits: Mapped[int | None] = mapped_column(BigInteger)  # credits it cost, once it succeeded
    output: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(db.Model):
    """A team's API key: the prefix is shown and looked up, the secret is stored only as a hash."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_in("limit_period", LIMIT_PERIODS), "limit_period"),
        CheckConstraint("spend_limit IS NULL OR spend_limit > 0", "spend_limit_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Credits the key may spend per ``limit_period`` (UTC month or day); None: no limit.
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)
    limit_period: Mapped[str] = mapped_column(String(8), default="month", server_default="month")

    created_by: Mapped[User | None] = relationship()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AutoRechargeSettings(db.Model):
    """A team's auto-recharge: off by default; the card on file (learnt from Stripe's events) and its
    guardrails. ``credit_balances.recharge_below`` mirrors ``threshold`` while it is on."""

    __tablename__ = "auto_recharge_settings"
    __table_args__ = (
        CheckConstraint("threshold >= 0 AND monthly_cap_cents >= 0 AND consecutive_failures >= 0", "not_negative"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold: Mapped[int] = mapped_column(BigInteger, default=0)  # credits
    pack_code: Mapped[str | None] = mapped_column(String(32))
    # The pack's price and credits when it was chosen: what a due recharge records in the spend's statement.
    pack_price_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    pack_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    monthly_cap_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    payment_method_created: Mapped[int | None] = mapped_column(BigInteger)  # Stripe's timestamp: newest wins
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[str | None] = mapped_column(String(255))
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


_IN_FLIGHT = _in("status", RECHARGE_IN_FLIGHT)


class AutoRecharge(db.Model):
    """One recharge: recorded by the spend that crossed the threshold, paid by the job outside it."""

    __tablename__ = "auto_recharges"
    __table_args__ = (
        CheckConstraint(_in("status", RECHARGE_STATUSES), "status"),
        CheckConstraint("amount_cents > 0 AND credits > 0 AND attempts >= 0", "positive"),
        # At most one in flight per team: the database's guard, whatever the application does.
        Index(
            "ux_auto_recharges_one_in_flight",
            "team_id",
            unique=True,
            postgresql_where=text(_IN_FLIGHT),
            sqlite_where=text(_IN_FLIGHT),
        ),
        Index("ix_auto_recharges_team_created", "team_id", "created_at"),
        Index("ix_auto_recharges_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="due")
    pack_code: Mapped[str] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    balance_at_crossing: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)  # the latest attempt's
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InvoiceRecord(db.Model):
    """A paid subscription invoice, for the receipts page (the plan credits it granted are in the ledger)."""

    __tablename__ = "invoice_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    plan_code: Mapped[str | None] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(32), default="paid")
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(db.Model):
    """An email waiting to leave: written in the transaction of the change that causes it, delivered by
    the scheduler (``starter.mail.deliver_due``) with retries. A rolled-back change leaves no row."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(_in("status", OUTBOX_STATUSES), "status"),
        Index("ix_outbox_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    to: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    # Mail that must go once per event (an alert per crossing, per limit period): a second insert is a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SpendLimitUsage(db.Model):
    """What a limited API key or member spent in one limit period: the spend limit's running counter.

    Created from the ledger (the sum of the subject's spends and captures in the period) the first
    time a limited spend of the period needs it, then moved by every limited spend and capture, so
    the check stays one statement however many entries the period holds. Deleted when the limit
    changes, so it is rebuilt from the ledger. Active holds are counted apart, from ``holds``.
    """

    __tablename__ = "spend_limit_usage"

    # The team is part of the key: a member's limit in one team never counts their spends in another.
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # api_key or member
    subject_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the key's id or the user's
    period: Mapped[str] = mapped_column(String(8), primary_key=True)  # month or day
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class PaidYear(db.Model):
    """A yearly subscription's paid year (from its ``invoice.paid``): the scheduler grants its plan
    credits one month at a time, each month's expiring at that month's end (``starter.yearly``)."""

    __tablename__ = "paid_years"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", "year_not_empty"),
        Index("ix_paid_years_due", "stopped_at", "next_grant_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255))
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    plan_code: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The end of the month granted last: the next month is due then (None once the year is done).
    next_grant_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    months_granted: Mapped[int] = mapped_column(Integer, default=0)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # refunded, replaced or cancelled
    stopped_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OverageSetting(db.Model):
    """A team's opt-in to metered overage: the monthly cap, and what this period used of it.

    Read and updated only under the team's balance-row lock (``credits.overage``), so concurrent
    spends see one another's overage. ``subscription_item_id`` is the subscription's metered item
    (set from Stripe by ``billing.subscriptions``): without it nothing could bill the overage, so none is allowed.
    """

    __tablename__ = "overage_settings"
    __table_args__ = (
        CheckConstraint("cap_credits >= 0", "cap_not_negative"),
        CheckConstraint("used_credits >= 0", "used_not_negative"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    cap_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the period ``used_credits`` counts
    used_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    subscription_item_id: Mapped[str | None] = mapped_column(String(255))
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OverageUsage(db.Model):
    """Overage credits drawn by one spend or hold: an outbox row until its meter event reached Stripe.

    Written in the spend's transaction; the scheduler reports it afterwards (``billing.overage``),
    with ``identifier`` as the meter event's identifier so a retry is never counted twice.
    """

    __tablename__ = "overage_usage"
    __table_args__ = (
        CheckConstraint("credits > 0", "credits_positive"),
        Index("ix_overage_usage_unreported", "reported_at", "id"),
        Index("ix_overage_usage_team_period", "team_id", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id", ondelete="CASCADE"), unique=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    plan_code: Mapped[str] = mapped_column(String(32))
    stripe_customer_id: Mapped[str] = mapped_column(String(255))
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    identifier: Mapped[str] = mapped_column(String(100), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class UsageDay(db.Model):
    """Credits used (spends and captures) per team, UTC day and feature: the dashboard's usage chart.

    Kept by the ledger in the same transaction as each spend or capture (``credits.rollup``), so the
    chart reads at most (30 days) x (features) rows however many entries the window holds;
    ``flask credits verify`` checks it against the entries. ``feature`` is "" for usage without one.
    """

    __tablename__ = "usage_days"

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger)


# The ledger's PL/pgSQL functions live in the schema too: ``create_all`` makes them after the tables.
ledger_functions.register(db.metadata)
