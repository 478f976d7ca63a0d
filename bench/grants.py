"""Benchmark: the monthly job over 100,000 due free-plan teams on PostgreSQL, batched vs one team at a time.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/grants.py
    (options: --teams 100000 --sample 5000 --batch-size 500 --tracemalloc --keep)

It creates a dedicated database, ``starter_bench``, on the server of DATABASE_URL (or TEST_DATABASE_URL)
and drops it at the end (unless ``--keep``). Every team signed up in January and holds its first
period's free credits, expiring at that period's end; on 1 March every team is due: expire those
credits, grant the current period's. The reference is the per-team path (``plans.roll_over_team``:
``credits.expire_block`` per due block, then ``plans.start_free_period``) run on ``--sample`` teams
with the same commit per batch, and extrapolated linearly to ``--teams``. Memory: the growth of the
process's peak RSS during the batched run and, with ``--tracemalloc``, the peak of Python allocations
during a second, traced run a month later (tracing slows it down several times).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import secrets
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, make_url, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starter import create_app, credits, plans, scheduler
from starter.catalog import FREE_PLAN
from starter.config import normalise_database_url
from starter.extensions import db
from starter.models import Team

BENCH_DB = "starter_bench"
MARCH = datetime(2026, 3, 1, 12, tzinfo=UTC)  # every team's first period has ended
APRIL = datetime(2026, 4, 1, 12, tzinfo=UTC)


def server_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not url or not normalise_database_url(url).startswith("postgresql"):
        sys.exit(
            "Set DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server (e.g. postgresql://postgres@127.0.0.1/test)."
        )
    return normalise_database_url(url)


def recreate_database(url: str, drop_only: bool = False) -> str:
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        if not drop_only:
            connection.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    admin.dispose()
    return make_url(url).set(database=BENCH_DB).render_as_string(hide_password=False)


def populate(teams: int) -> None:
    """``teams`` free teams signed up through January, each holding its first period's free credits.

    Written server-side in a few INSERT … SELECT statements (seconds, and no Python memory before the
    measured run), as consistent as the ledger writes them: ``credits verify`` passes.
    """
    statements = [
        """
        INSERT INTO teams (name, slug, is_personal, created_at, plan_code, period_anchor,
                           current_period_start, current_period_end, cancel_at_period_end)
        SELECT 'Bench ' || g, 'bench-' || g, true, anchor, 'free', anchor, anchor, anchor + interval '1 month', false
        FROM generate_series(1, :teams) AS g,
             LATERAL (SELECT timestamptz '2026-01-01 00:00+00'
                             + (g % 28) * interval '1 day' + (g % 1440) * interval '1 minute' AS anchor) AS a
        """,
        """
        INSERT INTO credit_blocks (team_id, source, amount, remaining, held, expires_at, period_start, created_at)
        SELECT id, 'plan', :credits, :credits, 0, current_period_end, current_period_start, current_period_start
        FROM teams
        """,
        """
        INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id,
                                    actor_type, description, metadata, idempotency_key, request_hash, created_at)
        SELECT team_id, 'grant', amount, 0, amount, 0, id, 'system', 'Free plan credits', '{}',
               'bench:' || team_id, md5(id::text), created_at
        FROM credit_blocks
        """,
        "INSERT INTO ledger_allocations (entry_id, block_id, amount, held_delta) "
        "SELECT id, block_id, amount, 0 FROM ledger_entries",
        "INSERT INTO credit_balances (team_id, balance, held, updated_at) SELECT id, :credits, 0, now() FROM teams",
        "ANALYZE",
    ]
    for statement in statements:
        db.session.execute(text(statement), {"teams": teams, "credits": FREE_PLAN.monthly_credits})
        db.session.commit()


def per_team_reference(team_ids: list[int], batch_size: int) -> float:
    """The per-team path over ``team_ids``, committing every ``batch_size`` teams; returns seconds."""
    started = time.perf_counter()
    for offset in range(0, len(team_ids), batch_size):
        for team_id in team_ids[offset : offset + batch_size]:
            plans.roll_over_team(team_id, MARCH)
        db.session.commit()
    return time.perf_counter() - started


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def traced_run(app: Flask, now: datetime) -> tuple[scheduler.RunSummary, float, int]:
    """A run under tracemalloc: (summary, seconds, peak bytes of Python allocations)."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    summary = scheduler.run_due_work(app, now)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return summary, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--teams", type=int, default=100_000, help="teams rolled over by the batched job")
    parser.add_argument("--sample", type=int, default=5_000, help="teams rolled over one at a time (reference)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true", help="add a traced run a month later (slower)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database afterwards")
    args = parser.parse_args()
    logging.getLogger("starter.scheduler").setLevel(logging.WARNING)  # the table below says it all

    url = recreate_database(server_url())
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SCHEDULER_ENABLED": False,
            "SCHEDULER_BATCH_SIZE": args.batch_size,
            "SECRET_KEY": secrets.token_urlsafe(32),  # the app refuses to start without one; nothing is signed here
        }
    )
    rows: list[tuple[str, str]] = []
    try:
        with app.app_context():
            db.create_all()
            started = time.perf_counter()
            populate(args.teams + args.sample)
            setup = time.perf_counter() - started
            print(f"setup: {args.teams + args.sample:,} teams holding January's credits, {setup:.1f} s", flush=True)

            # The reference first, on the last ``sample`` teams; the batched job then finds the others due.
            sample = sorted(db.session.scalars(select(Team.id).order_by(Team.id.desc()).limit(args.sample)))
            db.session.commit()
            reference = per_team_reference(sample, args.batch_size)
            per_team_ms = reference * 1000 / args.sample
            print(f"per-team reference: {args.sample:,} teams, {reference:.1f} s", flush=True)

            gc.collect()
            rss_before = max_rss_mb()
            started = time.perf_counter()
            march = scheduler.run_due_work(app, MARCH)
            batched = time.perf_counter() - started
            rss_after = max_rss_mb()
            assert march.teams_rolled_over == args.teams and march.failed_batches == 0, march.describe()
            print(f"batched: {march.describe()}", flush=True)

            started = time.perf_counter()
            problems = credits.verify()
            verify_seconds = time.perf_counter() - started
            db.session.commit()
            assert problems == [], problems[:5]

            extrapolated = per_team_ms * args.teams / 1000
            rows = [
                ("teams due", f"{args.teams:,} (each: expire last period's block, grant this period's)"),
                ("batched job (grant-due), wall", f"{batched:.1f} s  ({batched * 1e6 / args.teams:,.0f} µs/team)"),
                ("  batches", f"{-(-args.teams // args.batch_size)} of {args.batch_size} teams, a transaction each"),
                (
                    "  rows written",
                    f"{march.plan_grants:,} blocks, {march.plan_grants + march.blocks_expired:,} entries "
                    f"and as many allocations, {march.blocks_expired:,} expiries",
                ),
                ("  process peak RSS", f"{rss_after:.0f} MiB, grew {rss_after - rss_before:.1f} MiB during the run"),
                (
                    "per-team reference, wall",
                    f"{reference:.1f} s for {args.sample:,} teams ({per_team_ms:.2f} ms/team)",
                ),
                ("  extrapolated to all teams", f"{extrapolated:,.0f} s (~{extrapolated / 60:.1f} min, linear)"),
                ("speed-up, batched vs per-team", f"{extrapolated / batched:.1f} x"),
                ("credits verify afterwards", f"OK, {verify_seconds:.1f} s"),
            ]
            if args.tracemalloc:
                april, seconds, peak = traced_run(app, APRIL)
                assert april.teams_rolled_over == args.teams + args.sample, april.describe()
                rows.append(
                    (
                        "tracemalloc peak, batched",
                        f"{peak / 2**20:.1f} MiB over {april.teams_rolled_over:,} teams (traced run: {seconds:.0f} s)",
                    )
                )
    finally:
        with app.app_context():
            db.engine.dispose()
        if not args.keep:
            recreate_database(server_url(), drop_only=True)

    if os.environ.get("BENCH_JSON") and rows:
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps({"monthly job ÷ per-team loop": batched / extrapolated}))
    width = max(len(label) for label, _ in rows)
    print(f"\nMonthly grants on PostgreSQL ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
