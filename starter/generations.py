"""Runs of the example paid feature: the pattern to copy around a slow, costly call (an AI model).

A run is stored under the request's idempotency key, so a repeat of the key (a double submit, a
reload, a retry) is answered from what the first request did and never does the work again:

1. ``start`` reserves the most the call can cost (a hold) and records the run as ``running``;
   the caller commits. A key seen before returns its run instead: its result, ``running`` if the
   first request is still working, ``failed``; the same key with another prompt is
   ``IdempotencyConflict`` (409).
2. The caller does the work **outside any transaction**: no row stays locked while the model
   thinks, so the team's other spends and API calls carry on.
3. ``finish`` captures what the work cost (the rest of the hold goes back) and stores the result;
   ``fail`` releases the hold. The caller commits.

If the process dies between 1 and 3, the hold expires after its TTL and the scheduler releases
it; a repeat then finds the run ``failed``, and nothing was charged.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

from sqlalchemy import select

from . import catalog, credits
from .extensions import db
from .models import GenerationRun, utcnow


class RunInProgress(Exception):
    """The first request with this key is still working on it."""


@dataclass(frozen=True)
class Started:
    run: GenerationRun
    first: bool  # this request created the run and must do the work; False: a repeat


def fingerprint(prompt: str) -> str:
    return hashlib.sha256(prompt.strip().encode()).hexdigest()


def start(
    team_id: int, key: str, prompt: str, *, feature: catalog.Feature, actor: credits.Actor, ttl_seconds: int = 900
) -> Started:
    """Reserve ``feature``'s cost and record a running run under ``key``, or find the run of a repeat.

    Raises ``InsufficientCredits`` (nothing reserved) and ``IdempotencyConflict`` (the key was used
    with another prompt). Works in the caller's transaction, which must commit before the work.
    """
    hold = credits.hold(
        team_id,
        feature=feature.code,
        key=f"{key}:hold",
        actor=actor,
        description=feature.name,
        ttl_seconds=ttl_seconds,
    )
    # The hold locked the team's balance row: two requests with one key get here one after the other,
    # and the second finds the run the first committed.
    run = db.session.scalar(select(GenerationRun).filter_by(team_id=team_id, idempotency_key=key))
    if run is not None:
        if run.request_hash != fingerprint(prompt):
            raise credits.IdempotencyConflict("This key was already used for another prompt.")
        if run.status == "running" and hold.status != "active":
            _close(run, "failed")  # its hold expired or was released: that request never finished
        return Started(run, first=False)
    run = GenerationRun(
        team_id=team_id,
        idempotency_key=key,
        request_hash=fingerprint(prompt),
        status="running",
        hold_id=hold.id,
        held=hold.amount,
        created_by_id=actor.user_id,
    )
    db.session.add(run)
    db.session.flush()
    return Started(run, first=True)


def finish(run: GenerationRun, output: str, cost: int, *, actor: credits.Actor) -> GenerationRun:
    """Charge ``cost`` (at most what was held) and store ``output``; the caller commits.

    Raises ``HoldNotActive`` when the work outlived its hold: then call ``fail`` (nothing is charged).
    """
    assert run.hold_id is not None
    credits.capture(run.team_id, run.hold_id, cost, key=f"{run.idempotency_key}:capture", actor=actor)
    run.output, run.credits = output, cost
    _close(run, "succeeded")
    return run


def fail(run: GenerationRun, *, actor: credits.Actor) -> GenerationRun:
    """The work failed: give the hold back (if it is still active) and mark the run failed; the caller commits."""
    assert run.hold_id is not None
    # Already expired or released by the scheduler: then nothing is held any more.
    with contextlib.suppress(credits.HoldNotActive):
        credits.release(run.team_id, run.hold_id, key=f"{run.idempotency_key}:release", actor=actor)
    _close(run, "failed")
    return run


def _close(run: GenerationRun, status: str) -> None:
    run.status, run.finished_at = status, utcnow()
    db.session.flush()
