"""The credit ledger: the only code that writes credits.

Every operation runs inside the caller's transaction (a request, a CLI command or a job commits or
rolls back) and starts by locking the team's ``credit_balances`` row, so one team's changes run one
at a time: ``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite. Each takes an
idempotency key, unique per team: a repeat with the same parameters returns the first result and
changes nothing; different parameters raise ``IdempotencyConflict``.

Spends draw from credit blocks in one total order: soonest expiry first, never-expiring last,
then oldest, then id. Expired blocks are never drawn from, even before ``expire_due`` has written
their expiry.

    from starter import credits
    credits.spend(team.id, feature="ai_generation", key=request_key, actor=credits.Actor("user", user.id))

Modules: ``rules`` (errors, results, input checks), ``core`` (lock, replay, entry write), ``ledger``
(grant, spend, adjust, clawback, expiry), ``holds``, ``queries`` (balance, quote, history),
``limits`` (spend limits per key and member), ``overage`` (metered overage granted on demand),
``recharge_due`` (auto-recharge's crossing), ``rollover`` (the monthly job's bulk rollover and
expiry) and ``verify`` (the invariants ``flask credits verify`` checks).
"""

from .core import one_change
from .holds import capture, hold, release, release_expired_holds
from .ledger import adjust, clawback, expire_block, expire_due, grant, open_account, spend
from .limits import forget as forget_limit_usage
from .queries import Balance, Quote, balance, quote
from .rollover import (
    RolloverResult,
    due_block_team_ids,
    due_free_team_ids,
    expire_due_blocks,
    roll_over_free_teams,
)
from .rules import (
    MAX_AMOUNT,
    SYSTEM,
    Actor,
    CreditError,
    HoldNotActive,
    HoldNotFound,
    HoldResult,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    OverageCapReached,
    Receipt,
    SpendLimit,
    SpendLimitReached,
    UnknownFeature,
    plan_grant_key,
)
from .verify import Problem, verify

__all__ = [
    "MAX_AMOUNT",
    "SYSTEM",
    "Actor",
    "Balance",
    "CreditError",
    "HoldNotActive",
    "HoldNotFound",
    "HoldResult",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidRequest",
    "OverageCapReached",
    "Problem",
    "Quote",
    "Receipt",
    "RolloverResult",
    "SpendLimit",
    "SpendLimitReached",
    "UnknownFeature",
    "adjust",
    "balance",
    "capture",
    "clawback",
    "due_block_team_ids",
    "due_free_team_ids",
    "expire_block",
    "expire_due",
    "expire_due_blocks",
    "forget_limit_usage",
    "grant",
    "hold",
    "one_change",
    "open_account",
    "plan_grant_key",
    "quote",
    "release",
    "release_expired_holds",
    "roll_over_free_teams",
    "spend",
    "verify",
]
