"""Spend throughput of the ledger, beside the same SQL run straight through the driver.

    python bench/credits.py            # SQLite, plus PostgreSQL when TEST_DATABASE_URL or BENCH_DATABASE_URL is set

Prints spends per second for: 1 thread; 8 threads on one team (every spend waits for the team's
row lock); 8 threads on 8 teams. The reference runs the same seven statements in one transaction
through psycopg2 (PostgreSQL) or sqlite3 directly, without SQLAlchemy or the app: the ratio is
what the app's code costs over the bare SQL. A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from starter import create_app, credits
from starter.config import normalise_database_url
from starter.extensions import db
from starter.models import Team

SPENDS_PER_THREAD = int(os.environ.get("BENCH_SPENDS", "400"))
THREADS = 8
STARTING_CREDITS = 10_000_000


def setup(url: str, teams: int) -> list[int]:
    """Fresh schema with ``teams`` teams, each holding a plan block and a purchased block."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False, "TESTING": True})
    with app.app_context():
        db.drop_all()
        db.create_all()
        ids = []
        for number in range(teams):
            team = Team(name=f"Bench {number}", slug=f"bench-{number}")
            db.session.add(team)
            db.session.flush()
            credits.open_account(team)
            credits.grant(team.id, STARTING_CREDITS, source="purchase", key="pack")
            ids.append(team.id)
        db.session.commit()
        db.engine.dispose()
    return ids


def run_threads(worker: Callable[[int, int], None], team_ids: list[int], threads: int) -> float:
    """Spends per second of ``threads`` workers doing SPENDS_PER_THREAD spends each."""
    barrier = threading.Barrier(threads + 1)

    def body(index: int) -> None:
        barrier.wait()
        worker(team_ids[index % len(team_ids)], index)

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return threads * SPENDS_PER_THREAD / (time.perf_counter() - started)


def app_worker(url: str) -> Callable[[int, int], None]:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SCHEDULER_ENABLED": False,
            "TESTING": True,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": THREADS + 2},
        }
    )

    def work(team_id: int, index: int) -> None:
        with app.app_context():
            for n in range(SPENDS_PER_THREAD):
                credits.spend(team_id, 1, key=f"app-{index}-{n}-{time.monotonic_ns()}")
                db.session.commit()
            db.session.remove()

    return work


SPEND_SQL = [
    "SELECT balance, held FROM credit_balances WHERE team_id = {p} FOR UPDATE",
    "SELECT id, request_hash FROM ledger_entries WHERE team_id = {p} AND idempotency_key = {p}",
    "SELECT id, remaining, held, expires_at FROM credit_blocks WHERE team_id = {p} AND expired_at IS NULL"
    " AND remaining > held AND (expires_at IS NULL OR expires_at > {p})"
    " ORDER BY expires_at IS NULL, expires_at, created_at, id",
    "UPDATE credit_blocks SET remaining = remaining + {p}, held = held + 0 WHERE id = {p}",
    "UPDATE credit_balances SET balance = {p}, held = {p}, updated_at = {p} WHERE team_id = {p}",
    "INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id, feature,"
    " actor_type, description, metadata, idempotency_key, request_hash, created_at)"
    " VALUES ({p}, 'spend', -1, 0, {p}, {p}, {p}, NULL, 'system', 'Spend', '{{}}', {p}, 'x', {p}) RETURNING id",
    "INSERT INTO ledger_allocations (entry_id, block_id, amount, held_delta) VALUES ({p}, {p}, -1, 0)",
]


def raw_spend(cursor, placeholder: str, team_id: int, key: str, now: object) -> None:  # type: ignore[no-untyped-def]
    sql = [s.format(p=placeholder) for s in SPEND_SQL]
    if placeholder == "?":
        sql[0] = sql[0].replace(" FOR UPDATE", "")
    cursor.execute(sql[0], (team_id,))
    balance, held = cursor.fetchone()
    cursor.execute(sql[1], (team_id, key))
    cursor.fetchone()
    cursor.execute(sql[2], (team_id, now))
    block_id = cursor.fetchall()[0][0]
    cursor.execute(sql[3], (-1, block_id))
    cursor.execute(sql[4], (balance - 1, held, now, team_id))
    cursor.execute(sql[5], (team_id, balance - 1, held, block_id, key, now))
    entry_id = cursor.fetchone()[0]
    cursor.execute(sql[6], (entry_id, block_id))


def driver_worker(url: str) -> Callable[[int, int], None]:
    parsed = make_url(url)

    def work(team_id: int, index: int) -> None:
        if parsed.get_backend_name() == "postgresql":
            connection = psycopg2.connect(
                host=parsed.host,
                port=parsed.port,
                user=parsed.username,
                password=parsed.password,
                dbname=parsed.database,
            )
            placeholder, now = "%s", None
        else:
            connection = sqlite3.connect(parsed.database, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            placeholder = "?"
        for n in range(SPENDS_PER_THREAD):
            from datetime import UTC, datetime

            now = datetime.now(UTC) if placeholder == "%s" else datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
            cursor = connection.cursor()
            if placeholder == "?":
                cursor.execute("BEGIN IMMEDIATE")
            raw_spend(cursor, placeholder, team_id, f"raw-{index}-{n}-{time.monotonic_ns()}", now)
            connection.commit()
        connection.close()

    return work


def bench(name: str, url: str) -> list[tuple[str, str, float, float]]:
    rows = []
    for label, threads, teams in (("1 thread", 1, 1), ("8 threads, one team", 8, 1), ("8 threads, 8 teams", 8, 8)):
        team_ids = setup(url, teams)
        app_rate = run_threads(app_worker(url), team_ids, threads)
        team_ids = setup(url, teams)
        raw_rate = run_threads(driver_worker(url), team_ids, threads)
        rows.append((name, label, app_rate, raw_rate))
        print(f"  {name:<10} {label:<22} app {app_rate:8.0f}/s   driver {raw_rate:8.0f}/s", file=sys.stderr)
    return rows


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        results += bench("SQLite", f"sqlite:///{folder}/bench.db")
    pg_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if pg_url:
        admin = create_engine(normalise_database_url(pg_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS starter_bench WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE starter_bench"))
        bench_url = make_url(normalise_database_url(pg_url)).set(database="starter_bench")
        try:
            results += bench("PostgreSQL", bench_url.render_as_string(hide_password=False))
        finally:
            with admin.connect() as connection:
                connection.execute(text("DROP DATABASE IF EXISTS starter_bench WITH (FORCE)"))
    print(f"\nSpends per second ({SPENDS_PER_THREAD} spends per thread; a spend is one short transaction)\n")
    print("| database   | load                   | app spend/s | same SQL via driver/s | driver ÷ app |")
    print("|------------|------------------------|------------:|----------------------:|-------------:|")
    for name, label, app_rate, raw_rate in results:
        print(f"| {name:<10} | {label:<22} | {app_rate:11.0f} | {raw_rate:21.0f} | {raw_rate / app_rate:11.2f}x |")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
