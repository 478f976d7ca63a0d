"""The in-process scheduler: APScheduler wiring and the two jobs that keep credits on time.

``run_due_work`` (every ``SCHEDULER_ROLLOVER_SECONDS``) releases expired holds, rolls every
free-plan team whose period ended over to the period containing now (expiring what is left of
the old one), writes the expiry of any other block past its time, and marks paid teams past-due
when their period ended more than ``PAID_PERIOD_GRACE_HOURS`` ago without an ``invoice.paid``
(paid periods start only from Stripe: see ``billing``). ``release_holds`` (every
``SCHEDULER_HOLDS_SECONDS``) releases expired holds between those runs. ``flask credits
grant-due`` runs ``run_due_work`` once, for cron deployments. ``deliver_mail`` (every
``MAIL_OUTBOX_SECONDS``) sends the outbox (``starter.mail``); ``flask mail deliver`` runs it once.

Jobs hold no domain rules: they call ``credits`` and ``plans`` and commit once per batch, so a
crash loses at most the open batch and the next run picks up what is left. Exactly once comes
from three layers: a PostgreSQL advisory lock (one run at a time across processes), row locks
with the due conditions checked again on the locked rows, and the unique idempotency keys and
(team, source, period start) constraint in the database.

Yearly plans are paid once a year (Stripe's ``invoice.paid`` records the paid year); the same run
grants each paid year's month when it begins (``yearly.grant_due_months``), and reports metered
overage to Stripe's Billing Meter (``billing.overage.report_due``) outside any spend transaction.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from flask.helpers import get_debug_flag
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from . import credits, mail, plans, yearly
from .billing import BillingError
from .billing import overage as billing_overage
from .extensions import db
from .models import utcnow

log = logging.getLogger(__name__)

FIRST_RUN_DELAY = timedelta(seconds=10)  # catch up soon after a deploy, once the app has settled
_lock = threading.Lock()
_running: BackgroundScheduler | None = None  # at most one per process, however many apps are built


# -- when to start -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How this process was started, as far as the scheduler cares."""

    cli_command: str | None = None  # None: not under the flask CLI (gunicorn, a script); "run": the dev server
    reloader: bool = False  # ``flask run`` with the Werkzeug reloader on


def current_launch() -> Launch:
    """Read the launch from click's current context, set while the ``flask`` CLI loads the app.

    ``flask run`` loads it inside the ``run`` command; ``flask db upgrade`` inside ``upgrade``;
    app commands (``flask seed``, ``flask credits …``) while the ``flask`` group resolves them, so
    the innermost command is the group itself. Only ``run`` serves requests.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return Launch()
    names, node = [], ctx
    while node.parent is not None:
        names.append(node.info_name or node.command.name or "?")
        node = node.parent
    command = " ".join(reversed(names))
    reloader = False
    if command == "run":
        reload = ctx.params.get("reload")
        reloader = get_debug_flag() if reload is None else bool(reload)  # flask run's own default
    return Launch(cli_command=command, reloader=reloader)


def should_start(app: Flask, environ: Mapping[str, str], launch: Launch) -> tuple[bool, str]:
    """Whether this process should run the scheduler, and why (for the log)."""
    if app.testing:
        return False, "the app is in testing mode"
    if not app.config["SCHEDULER_ENABLED"]:
        return False, "SCHEDULER_ENABLED is off"
    if launch.cli_command is not None and launch.cli_command != "run":
        return False, f"`flask {launch.cli_command or '<app command>'}` does not serve requests"
    if launch.reloader and environ.get("WERKZEUG_RUN_MAIN") != "true":
        return False, "this is the reloader's watcher process; the serving child runs it"
    return True, "this process serves the app"


# -- lifecycle ------------------------------------------------------------------------------------


def init_app(
    app: Flask, *, environ: Mapping[str, str] | None = None, launch: Launch | None = None
) -> BackgroundScheduler | None:
    """Start the scheduler for ``app`` if this process should run it (``should_start``); once per process."""
    global _running
    start, reason = should_start(app, os.environ if environ is None else environ, launch or current_launch())
    if not start:
        log.debug("Scheduler not started: %s.", reason)
        return None
    with _lock:
        if _running is not None and _running.running:
            log.warning("A scheduler already runs in this process; not starting a second one.")
            return None
        # APScheduler logs INFO lines on start and two per job run; our jobs log one summary line instead.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        stop = threading.Event()  # set by ``shutdown``: a running job stops after its current batch
        scheduler = BackgroundScheduler(
            timezone=UTC,
            # One run of a job at a time per process; runs missed while busy or asleep fold into one.
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        first = datetime.now(UTC) + FIRST_RUN_DELAY
        rollover_every, holds_every = app.config["SCHEDULER_ROLLOVER_SECONDS"], app.config["SCHEDULER_HOLDS_SECONDS"]
        for job, seconds, job_id in (
            (run_due_work, rollover_every, "credits.due_work"),
            (release_holds, holds_every, "credits.release_holds"),
            (pay_due_recharges, app.config["SCHEDULER_RECHARGE_SECONDS"], "billing.auto_recharge"),
            (deliver_mail, app.config["MAIL_OUTBOX_SECONDS"], "mail.deliver"),
        ):
            scheduler.add_job(
                job, "interval", seconds=seconds, args=[app], kwargs={"stop": stop}, id=job_id, next_run_time=first
            )
        scheduler.start()
        _running = scheduler
    app.extensions["scheduler"], app.extensions["scheduler.stop"] = scheduler, stop
    atexit.register(shutdown, app)
    pid = os.getpid()
    log.info("Scheduler started (pid %s): due work every %ss, holds every %ss.", pid, rollover_every, holds_every)
    return scheduler


def scheduler_of(app: Flask) -> BackgroundScheduler | None:
    """The running scheduler ``init_app`` started for ``app``, or None."""
    scheduler = app.extensions.get("scheduler")
    return scheduler if scheduler is not None and scheduler.running else None


def shutdown(app: Flask) -> None:
    """Stop ``app``'s scheduler: no new runs; a running one stops after its current batch. Idempotent."""
    global _running
    scheduler, stop = app.extensions.pop("scheduler", None), app.extensions.pop("scheduler.stop", None)
    if scheduler is None:
        return
    if stop is not None:
        stop.set()
    if scheduler.running:
        scheduler.shutdown(wait=True)
    with _lock:
        if _running is scheduler:
            _running = None


# -- one run at a time across processes -----------------------------------------------------------


@contextmanager
def run_lock(name: str) -> Iterator[bool]:
    """Hold a cluster-wide lock named ``name`` for a whole run; yields False if another process holds it.

    PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated autocommit connection, not
    ``pg_try_advisory_xact_lock`` per batch. A run is many transactions (one per batch); per-batch
    locks would let two runs interleave their batches and both walk every due team, while one lock
    for the run lets the second process skip at once. Autocommit keeps that connection out of any
    transaction (no idle transaction holding back vacuum). If the process dies, PostgreSQL ends
    the session and frees the lock. It needs a session-pooled connection (not PgBouncer's
    transaction mode). SQLite has no advisory locks; its BEGIN IMMEDIATE already queues writers.
    """
    engine = db.engine
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = zlib.crc32(f"starter.scheduler:{name}".encode())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if not connection.scalar(select(func.pg_try_advisory_lock(key))):
            yield False
            return
        try:
            yield True
        finally:
            try:
                connection.scalar(select(func.pg_advisory_unlock(key)))
            except SQLAlchemyError:
                connection.invalidate()  # never pool a connection that may still hold the lock


# -- the jobs -------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What one run of ``run_due_work`` did: the job logs it, ``flask credits grant-due`` prints it."""

    now: datetime
    skipped: bool = False  # another process held the lock
    teams_rolled_over: int = 0
    plan_grants: int = 0
    credits_granted: int = 0
    blocks_expired: int = 0
    credits_expired: int = 0
    holds_released: int = 0
    paid_teams_flagged: int = 0
    teams_without_account: int = 0
    yearly_months: int = 0  # months of paid years granted
    overage_reported: int = 0  # overage usage rows sent to the Billing Meter
    failed_batches: int = 0
    duration_ms: int = 0

    def add(self, result: credits.RolloverResult | None) -> None:
        if result is None:
            return
        self.teams_rolled_over += result.teams
        self.plan_grants += result.grants
        self.credits_granted += result.credits_granted
        self.blocks_expired += result.blocks_expired
        self.credits_expired += result.credits_expired
        self.teams_without_account += result.without_account

    def describe(self) -> str:
        at = self.now.isoformat(timespec="seconds")
        if self.skipped:
            return f"credits due work at {at}: skipped, another process is running it ({self.duration_ms} ms)"
        line = (
            f"credits due work at {at}: {self.teams_rolled_over} team(s) rolled over, "
            f"{self.credits_granted:,} credits granted ({self.plan_grants} grant(s)), "
            f"{self.credits_expired:,} credits expired ({self.blocks_expired} block(s)), "
            f"{self.holds_released} hold(s) released, {self.paid_teams_flagged} paid team(s) flagged past_due"
        )
        if self.teams_without_account:
            line += f", {self.teams_without_account} due team(s) without a credit account"
        if self.yearly_months:
            line += f", {self.yearly_months} yearly plan month(s) started"
        if self.overage_reported:
            line += f", {self.overage_reported} overage usage report(s) sent"
        if self.failed_batches:
            line += f", {self.failed_batches} failed batch(es) left for the next run"
        return f"{line}; {self.duration_ms} ms"


def run_due_work(app: Flask, now: datetime | None = None, *, stop: threading.Event | None = None) -> RunSummary:
    """Do everything that is due at ``now`` (default: the current time), in batches; log one summary line.

    Each batch commits on its own. ``stop``, once set, ends the run after the current batch.
    """
    started = time.perf_counter()
    summary = RunSummary(now=now or utcnow())
    with app.app_context(), run_lock("due-work") as acquired:
        if acquired:
            size, grace = app.config["SCHEDULER_BATCH_SIZE"], timedelta(hours=app.config["PAID_PERIOD_GRACE_HOURS"])
            _run(summary, size, grace, stop or threading.Event())
        else:
            summary.skipped = True
    summary.duration_ms = round((time.perf_counter() - started) * 1000)
    log.log(logging.ERROR if summary.failed_batches else logging.INFO, summary.describe())
    return summary


def release_holds(app: Flask, now: datetime | None = None, *, stop: threading.Event | None = None) -> int:
    """Release expired holds in batches; returns how many. Logs a line when it released any."""
    started = time.perf_counter()
    summary = RunSummary(now=now or utcnow())
    with app.app_context(), run_lock("holds") as acquired:
        if acquired:
            size, stop = app.config["SCHEDULER_BATCH_SIZE"], stop or threading.Event()
            summary.holds_released = _repeat(summary, stop, credits.release_expired_holds, summary.now, limit=size)
    if summary.holds_released or summary.failed_batches:
        ms = round((time.perf_counter() - started) * 1000)
        log.info("credits holds: %s expired hold(s) released; %s ms", summary.holds_released, ms)
    return summary.holds_released


def pay_due_recharges(app: Flask, now: datetime | None = None, *, stop: threading.Event | None = None) -> Any:
    """Pay the auto-recharges that spends recorded as due (``billing.recharge_job``), one run at a time."""
    from .billing import recharge_job

    with app.app_context(), run_lock("auto-recharge") as acquired:
        if not acquired:
            return None
        result = recharge_job.pay_due(now)
    if result.claimed or result.errors:
        log.info(result.describe())
    return result


def deliver_mail(app: Flask, now: datetime | None = None, *, stop: threading.Event | None = None) -> mail.Delivery:
    """Send the outbox's due messages (batch after batch until none is due or ``stop`` is set)."""
    total = mail.Delivery()
    with app.app_context():
        size = app.config["SCHEDULER_BATCH_SIZE"]
        while not (stop and stop.is_set()):
            try:
                done = mail.deliver_due(now, limit=size)
            except SQLAlchemyError:
                db.session.rollback()
                log.exception("mail job: delivery failed; the next run retries")
                break
            total.sent, total.retrying, total.failed = (
                total.sent + done.sent,
                total.retrying + done.retrying,
                total.failed + done.failed,
            )
            if done.sent + done.retrying + done.failed < size:
                break
    if total.sent or total.retrying or total.failed:
        log.info(total.describe())
    return total


def _run(summary: RunSummary, size: int, grace: timedelta, stop: threading.Event) -> None:
    now = summary.now
    # Holds first: a hold never outlives the blocks it reserves from, so once expired holds are
    # released the due blocks hold nothing and the rollover stays on its bulk path.
    summary.holds_released = _repeat(summary, stop, credits.release_expired_holds, now, limit=size)
    cursor = 0
    while not stop.is_set() and (team_ids := credits.due_free_team_ids(now, after=cursor, limit=size)):
        cursor = team_ids[-1]
        summary.add(_batch(summary, credits.roll_over_free_teams, team_ids, now))
    # Paid years whose next month has begun: that month's credits (the month containing now only).
    cursor = 0
    while not stop.is_set() and (year_ids := yearly.due_year_ids(now, after=cursor, limit=size)):
        cursor = year_ids[-1]
        result = _batch(summary, yearly.grant_due_months, year_ids, now)
        if result is not None:
            summary.yearly_months += result.grants
            summary.plan_grants += result.grants
            summary.credits_granted += result.credits_granted
    # Whatever else is past its time: paid plans' credits, expiring promos.
    cursor = 0
    while not stop.is_set() and (team_ids := credits.due_block_team_ids(now, after=cursor, limit=size)):
        cursor = team_ids[-1]
        summary.add(_batch(summary, credits.expire_due_blocks, team_ids, now))
    summary.paid_teams_flagged = _repeat(summary, stop, plans.flag_lapsed_paid_periods, now, grace=grace, limit=size)
    summary.overage_reported = _repeat(summary, stop, billing_overage.report_due, now, limit=size)


def _batch(summary: RunSummary, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one batch in its own transaction; a failed batch is logged, rolled back and stepped over."""
    try:
        result = work(*args, **kwargs)
        db.session.commit()
        return result
    except (SQLAlchemyError, credits.CreditError, BillingError):
        db.session.rollback()
        summary.failed_batches += 1
        log.exception("credits job: a batch of %s failed; the next run retries it", work.__name__)
        return None


def _repeat(
    summary: RunSummary, stop: threading.Event, work: Callable[..., int], *args: Any, limit: int, **kwargs: Any
) -> int:
    """Call ``work`` (which handles up to ``limit`` items) batch after batch until a batch comes up short."""
    total = 0
    while not stop.is_set():
        done = _batch(summary, work, *args, limit=limit, **kwargs)
        total += done or 0
        if done is None or done < limit:
            break
    return total
