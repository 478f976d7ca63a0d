"""The rules every credit operation checks, the errors it raises and the results it returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import catalog

MAX_AMOUNT = 1_000_000_000  # a billion credits in one call is a bug, not a purchase
MAX_KEY_LENGTH = 255


class CreditError(Exception):
    """A refused credit operation. ``code`` is stable (API clients rely on it); ``status`` is the HTTP one."""

    code = "credit_error"
    status = 400

    def details(self) -> dict[str, Any]:
        return {}


class InvalidAmount(CreditError):
    code, status = "invalid_amount", 422


class InvalidRequest(CreditError):
    code, status = "invalid_request", 422


class UnknownFeature(CreditError):
    code, status = "unknown_feature", 422


class IdempotencyConflict(CreditError):
    code, status = "idempotency_conflict", 409


class HoldNotFound(CreditError):
    code, status = "hold_not_found", 404


class HoldNotActive(CreditError):
    code, status = "hold_not_active", 409


class InsufficientCredits(CreditError):
    code, status = "insufficient_credits", 402

    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"This needs {required:,} credits; {available:,} are available.")
        self.required, self.available = required, available

    def details(self) -> dict[str, Any]:
        return {"required": self.required, "available": self.available}


class SpendLimitReached(CreditError):
    """The spend or hold would take an API key or a member past its spend limit for the period."""

    code, status = "spend_limit_reached", 403

    def __init__(self, limit: SpendLimit, used: int, required: int, window: tuple[datetime, datetime]) -> None:
        resets_at = window[1]
        who = "This API key's" if limit.scope == "api_key" else "Your"
        per = "day" if limit.period == "day" else "month"
        super().__init__(
            f"{who} spend limit of {limit.credits:,} credits per {per} is reached: {used:,} used, "
            f"{required:,} more needed. It resets at {resets_at:%Y-%m-%d %H:%M} UTC."
        )
        self.limit, self.used, self.required, self.window, self.resets_at = limit, used, required, window, resets_at

    def details(self) -> dict[str, Any]:
        return {
            "limit": self.limit.credits,
            "used": self.used,
            "required": self.required,
            "period": self.limit.period,
            "scope": self.limit.scope,
            "resets_at": self.resets_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class SpendLimit:
    """A cap on what one API key (``scope="api_key"``, subject its id) or one member (``"member"``, the user
    id) may spend and reserve per UTC ``period`` (``month`` or ``day``)."""

    scope: str
    subject_id: int
    credits: int
    period: str = "month"


class OverageCapReached(InsufficientCredits):
    """Past the credits and past the team's monthly overage cap: refused like any spend that does not fit."""

    def __init__(self, required: int, available: int, *, cap: int, used: int) -> None:
        super().__init__(required, available)
        self.cap, self.used = cap, used
        self.args = (
            f"This needs {required:,} credits; {available:,} are available and the monthly overage cap "
            f"allows {max(cap - used, 0):,} more ({used:,} of {cap:,} used).",
        )

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "reason": "overage_cap_reached",
            "overage_cap": self.cap,
            "overage_used": self.used,
        }


@dataclass(frozen=True)
class Actor:
    """Who or what caused a change: ``user``, ``api``, ``admin``, ``stripe`` or ``system``.

    An API call names its key (``api_key_id``); a person their ``user_id``. ``limit`` is the key's or the
    member's spend limit, loaded by the caller with the key or membership it has anyway, so a spend
    without a limit costs nothing extra; ``spend`` and ``hold`` enforce it under the team's lock.
    """

    type: str = "system"
    user_id: int | None = None
    api_key_id: int | None = None
    limit: SpendLimit | None = None


SYSTEM = Actor()


@dataclass(frozen=True)
class Receipt:
    """The ledger entry an operation wrote (or, with ``replayed``, the one an earlier call wrote)."""

    entry_id: int
    team_id: int
    kind: str
    amount: int
    balance_after: int
    held_after: int
    block_id: int | None
    hold_id: int | None
    feature: str | None
    created_at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class HoldResult:
    id: int
    team_id: int
    amount: int
    captured_amount: int | None
    status: str
    expires_at: datetime
    feature: str | None
    replayed: bool = False


def plan_grant_key(team_id: int, period_start: datetime) -> str:
    """The idempotency key of a period's plan grant: one per team and period, whoever grants it."""
    return f"plan:{team_id}:{period_start.isoformat()}"


def check_amount(value: Any, *, allow_zero: bool = False) -> int:
    """A whole number of credits within bounds, or ``InvalidAmount``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount("The amount must be a whole number of credits.")
    low = 0 if allow_zero else 1
    if value < low or value > MAX_AMOUNT:
        raise InvalidAmount(f"The amount must be between {low} and {MAX_AMOUNT:,} credits.")
    return value


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(f"An idempotency key of 1 to {MAX_KEY_LENGTH} printable characters is required.")
    return key


def feature_cost(feature: str | None, amount: int | None) -> tuple[str | None, int]:
    """Resolve a spend given by feature (its catalog cost) and/or by an explicit amount."""
    if feature is not None and catalog.feature(feature) is None:
        raise UnknownFeature(f"Unknown feature {feature!r}.")
    if amount is None:
        if feature is None:
            raise InvalidRequest("Give a feature or an amount.")
        amount = catalog.FEATURES[feature].credits
    return feature, check_amount(amount)
