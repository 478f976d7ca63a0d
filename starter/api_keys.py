"""Team API keys: shown once, stored as a hash, looked up by their visible prefix, revocable.

A key reads ``cs_<8 hex>_<32 letters and digits>``: ``cs_<8 hex>`` is the prefix, stored as is,
shown in the UI and used to find the key; the whole key is stored only as its SHA-256.

Service functions change models and flush; the caller (a request or a CLI command) commits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import ColumnElement, Select, Update, bindparam, or_, select, update
from sqlalchemy.orm import joinedload

from . import credits
from .extensions import db
from .models import LIMIT_PERIODS, ApiKey, Membership, utcnow

ADMIN_ROLES = ("owner", "admin")  # who may create and use a team's keys
KEY_PATTERN = re.compile(r"cs_[0-9a-f]{8}_[0-9A-Za-z]{32}")
SECRET_ALPHABET = string.ascii_letters + string.digits
# last_used_at is a hint for the UI ("used 3 minutes ago"), not an audit log: writing it at most
# once a minute per key keeps a busy key from turning every API call into a row update.
LAST_USED_PRECISION = timedelta(seconds=60)


def hash_key(raw: str) -> str:
    """SHA-256, not a password hash: the secret is 190 random bits, so there is no dictionary to try
    and nothing for a slow hash to protect; a slow hash would only slow down every API call."""
    return hashlib.sha256(raw.encode()).hexdigest()


class LimitError(ValueError):
    """A spend limit that is not a whole number of credits from 1 to a billion, or an unknown period."""


def check_limit(spend_limit: int | None, period: str) -> tuple[int | None, str]:
    if period not in LIMIT_PERIODS:
        raise LimitError(f"A limit is per {' or per '.join(LIMIT_PERIODS)}.")
    if spend_limit is not None and (
        isinstance(spend_limit, bool) or not isinstance(spend_limit, int) or not 1 <= spend_limit <= credits.MAX_AMOUNT
    ):
        raise LimitError(f"A spend limit is a whole number of credits from 1 to {credits.MAX_AMOUNT:,}.")
    return spend_limit, period


def create(
    team_id: int,
    name: str,
    *,
    created_by_id: int | None = None,
    spend_limit: int | None = None,
    limit_period: str = "month",
) -> tuple[ApiKey, str]:
    """A new key for the team: returns the stored key and the raw key, which is never shown again.

    ``spend_limit`` caps what the key may spend and reserve per UTC ``limit_period`` (month or day).
    """
    spend_limit, limit_period = check_limit(spend_limit, limit_period)
    name = (name or "").strip()[:120] or "API key"
    while True:  # 2^32 prefixes: a collision is rare, but the column is unique, so pick another
        prefix = f"cs_{secrets.token_hex(4)}"
        if db.session.scalar(select(ApiKey.id).filter_by(prefix=prefix)) is None:
            break
    raw = f"{prefix}_{''.join(secrets.choice(SECRET_ALPHABET) for _ in range(32))}"
    key = ApiKey(
        team_id=team_id,
        name=name,
        prefix=prefix,
        key_hash=hash_key(raw),
        created_by_id=created_by_id,
        spend_limit=spend_limit,
        limit_period=limit_period,
    )
    db.session.add(key)
    db.session.flush()
    return key, raw


def prefix_of(raw: str | None) -> str | None:
    """The prefix of a well-formed key (``cs_1a2b3c4d``), or None."""
    if raw is None or not KEY_PATTERN.fullmatch(raw):
        return None
    return raw[:11]


@dataclass(frozen=True)
class ActiveKey:
    """An active key as one API call sees it: plain values, so they outlive the transaction that read them."""

    id: int
    team_id: int
    prefix: str
    spend_limit: int | None
    limit_period: str
    last_used_at: datetime | None


def authenticate(raw: str | None) -> ActiveKey | None:
    """The active (unrevoked) key ``raw`` names, else None. Follow with ``record_use``; the caller commits.

    One statement, in the caller's transaction (an API call's lookup shares the spend's BEGIN and
    COMMIT), read afresh on every call: a key revoked a moment ago is refused on the very next request.
    The lookup is by prefix, which is not secret; the secret part is checked by comparing hashes in
    constant time, so response times do not reveal how much of a guess was right.
    """
    prefix = prefix_of(raw)
    if prefix is None or raw is None:
        return None
    row = db.session.connection().execute(_lookup(), {"prefix": prefix}).first()
    if row is None or not hmac.compare_digest(hash_key(raw), row.key_hash):
        return None
    return ActiveKey(row.id, row.team_id, prefix, row.spend_limit, row.limit_period, row.last_used_at)


@cache
def _lookup() -> Select:
    """The key lookup, built once (a Core statement: no ORM objects, compiled once by SQLAlchemy's cache)."""
    return select(
        ApiKey.id, ApiKey.team_id, ApiKey.key_hash, ApiKey.spend_limit, ApiKey.limit_period, ApiKey.last_used_at
    ).where(ApiKey.prefix == bindparam("prefix"), ApiKey.revoked_at.is_(None), _creator_still_admin())


def _creator_still_admin() -> ColumnElement[bool]:
    """A key made by a member works only while they are an owner or admin of its team.

    ``revoke_created_by`` revokes such keys when the member leaves or is demoted; this condition (in
    the same lookup, so no extra query) holds even for a change made some other way. Keys made
    from the command line have no creator and stay until revoked.
    """
    creator_is_admin = (
        select(Membership.id)
        .where(
            Membership.team_id == ApiKey.team_id,
            Membership.user_id == ApiKey.created_by_id,
            Membership.role.in_(ADMIN_ROLES),
        )
        .exists()
    )
    return or_(ApiKey.created_by_id.is_(None), creator_is_admin)


def revoke_created_by(team_id: int, user_id: int, *, now: datetime | None = None) -> int:
    """Revoke the team's active keys that ``user_id`` created (they left or are no longer an admin); how many."""
    result = db.session.execute(
        update(ApiKey)
        .where(ApiKey.team_id == team_id, ApiKey.created_by_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount  # type: ignore[attr-defined]


def revoke_all(team_id: int, *, now: datetime | None = None) -> int:
    """Revoke every active key of the team (it was deleted); how many."""
    result = db.session.execute(
        update(ApiKey)
        .where(ApiKey.team_id == team_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount  # type: ignore[attr-defined]


def record_use(key: ActiveKey, *, now: datetime | None = None) -> bool:
    """Set ``last_used_at`` unless it is less than a minute old; True when a row was written.

    The check against what the lookup read skips the statement on most calls; the conditional UPDATE
    makes concurrent requests of one key write once. It joins the caller's transaction.
    """
    now = now or utcnow()
    stale = now - LAST_USED_PRECISION
    if key.last_used_at is not None and key.last_used_at >= stale:
        return False
    result = db.session.connection().execute(_touch(), {"key_id": key.id, "stale": stale, "now": now})
    return bool(result.rowcount)  # type: ignore[attr-defined]


@cache
def _touch() -> Update:
    table = ApiKey.__table__
    return (
        update(table)
        .where(
            table.c.id == bindparam("key_id"),
            or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("stale")),
        )
        .values(last_used_at=bindparam("now"))
    )


def revoke(team_id: int, key_id: int, *, now: datetime | None = None) -> ApiKey | None:
    """Revoke one of the team's keys (idempotent); None when the team has no such key."""
    key = db.session.scalar(select(ApiKey).filter_by(id=key_id, team_id=team_id))
    if key is not None and key.revoked_at is None:
        key.revoked_at = now or utcnow()
        db.session.flush()
    return key


def set_limit(team_id: int, key_id: int, spend_limit: int | None, period: str) -> ApiKey | None:
    """Change (or with None remove) a key's spend limit; None when the team has no such key."""
    spend_limit, period = check_limit(spend_limit, period)
    key = db.session.scalar(select(ApiKey).filter_by(id=key_id, team_id=team_id))
    if key is not None:
        key.spend_limit, key.limit_period = spend_limit, period
        credits.forget_limit_usage(key.team_id, "api_key", key.id)
        db.session.flush()
    return key


def actor_for(key_id: int, spend_limit: int | None, period: str) -> credits.Actor:
    """The ledger's actor for a call made with a key: the key itself, with its limit if it has one."""
    limit = credits.SpendLimit("api_key", key_id, spend_limit, period) if spend_limit else None
    return credits.Actor("api", None, api_key_id=key_id, limit=limit)


def team_keys(team_id: int, *, include_revoked: bool = True) -> list[ApiKey]:
    """The team's keys, newest first, each with the user who created it."""
    query = (
        select(ApiKey)
        .options(joinedload(ApiKey.created_by))
        .filter_by(team_id=team_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(db.session.scalars(query))
