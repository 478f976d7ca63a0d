"""How costs grow with a team: spend latency by number of active blocks, pages by number of ledger entries.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/scale.py [--big]
    (BENCH_ROUNDS=9 more rounds; --big adds a team with 1,000,000 entries)

PostgreSQL only; the script creates and drops its own database, ``starter_bench_scale``, migrated to head.
Spends: three teams holding 1, 100 and 10,000 spendable blocks, one credit spent per call through
``credits.spend``. Pages: teams with 10 and 100,000 (and with ``--big`` 1,000,000) ledger entries in the last
30 days, each read by a signed-in member through the app (Flask's test client, so no network in the figure):
``/dashboard``, ``/credits/history`` and ``/credits/history.csv`` to the first byte of the body. Every variant runs
in short bursts, rotated, round after round; each figure is the median over rounds of the ratio to the smallest
team, measured within a round. Rows are bulk-inserted with SQL (the ledger's own functions would take hours for a
million entries); those teams are not checked by ``credits verify``. A benchmark prints figures; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from credits import migrate
from harness import interleave, machine, median_ratio, report, scratch_database, spread
from sqlalchemy import text

from starter import accounts, create_app, credits
from starter.extensions import db
from starter.models import Team

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
SPENDS = 40  # spends in one burst
PAGE_READS = 4  # requests of one page in one burst
PASSWORD = "bench-password-1"
BLOCK_COUNTS = (1, 100, 10_000)

BULK_BLOCKS = text(
    "INSERT INTO credit_blocks (team_id, source, amount, remaining, held, expires_at, created_at)"
    " SELECT :team, 'purchase', 1000000, 1000000, 0,"
    " now() + interval '30 days' + g * interval '1 minute', now() FROM generate_series(1, :count) AS g"
)
BULK_ENTRIES = text(
    "INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, feature,"
    " actor_type, description, metadata, idempotency_key, request_hash, created_at)"
    " SELECT :team, 'spend', -1, 0, 1000, 0, 'ai_generation', 'api', 'AI generation', '{}',"
    " 'bulk-' || g, 'bulk', now() - (g % 43200) * interval '1 minute' FROM generate_series(1, :count) AS g"
)
# What the ledger would have kept in its usage rollup for those entries (the dashboard reads that).
BULK_USAGE = text(
    "INSERT INTO usage_days (team_id, day, feature, credits)"
    " SELECT team_id, (created_at AT TIME ZONE 'UTC')::date, COALESCE(feature, ''), SUM(-amount)"
    " FROM ledger_entries WHERE team_id = :team AND kind IN ('spend', 'capture') GROUP BY 1, 2, 3"
    " ON CONFLICT (team_id, day, feature) DO UPDATE SET credits = EXCLUDED.credits"
)


def make_app(url: str):  # type: ignore[no-untyped-def]
    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SCHEDULER_ENABLED": False,
            "TESTING": True,
            "RATELIMIT_ENABLED": False,
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )


def block_team(app, count: int) -> int:  # type: ignore[no-untyped-def]
    """A team holding ``count`` spendable purchased blocks, its balance row agreeing with them."""
    with app.app_context():
        team = Team(name=f"Blocks {count}", slug=f"blocks-{count}")
        db.session.add(team)
        db.session.flush()
        credits.open_account(team)
        db.session.execute(BULK_BLOCKS, {"team": team.id, "count": count})
        db.session.execute(
            text("UPDATE credit_balances SET balance = :total WHERE team_id = :team"),
            {"total": count * 1_000_000, "team": team.id},
        )
        db.session.commit()
        return team.id


def spender(app, team_id: int) -> Callable[[], float]:  # type: ignore[no-untyped-def]
    """Milliseconds per spend over one burst."""

    def burst() -> float:
        started = time.perf_counter()
        for _ in range(SPENDS):
            with app.app_context():
                credits.spend(team_id, 1, key=f"scale-{time.monotonic_ns()}")
                db.session.commit()
        return (time.perf_counter() - started) * 1000 / SPENDS

    return burst


def member_client(app, entries: int):  # type: ignore[no-untyped-def]
    """A signed-in test client whose personal team holds ``entries`` ledger entries of the last 30 days."""
    email = f"entries{entries}@example.com"
    with app.app_context():
        user = accounts.sign_up(f"Entries {entries}", email, PASSWORD)
        db.session.commit()
        team_id = user.memberships[0].team_id
        db.session.execute(BULK_ENTRIES, {"team": team_id, "count": max(0, entries - 1)})
        db.session.execute(BULK_USAGE, {"team": team_id})
        db.session.commit()
        db.session.execute(text("ANALYZE ledger_entries"))
        db.session.commit()
    client = app.test_client()
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    answer = client.post("/auth/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    if answer.status_code != 302:
        raise RuntimeError(f"log-in answered {answer.status_code}")
    return client


def reader(client, path: str) -> Callable[[], float]:  # type: ignore[no-untyped-def]
    """Milliseconds to the first byte of ``path``'s body, the median of one burst."""

    def burst() -> float:
        timings = []
        for _ in range(PAGE_READS):
            started = time.perf_counter()
            response = client.get(path, buffered=False)
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}")
            next(iter(response.response), b"")
            timings.append((time.perf_counter() - started) * 1000)
            response.close()
        return statistics.median(timings)

    return burst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", action="store_true", help="add a team with 1,000,000 entries")
    args = parser.parse_args()
    sizes = (10, 100_000, 1_000_000) if args.big else (10, 100_000)
    pages = (("dashboard", "/dashboard"), ("history", "/credits/history"), ("CSV", "/credits/history.csv"))

    with scratch_database("starter_bench_scale") as url:
        app = make_app(url)
        migrate(app)
        variants: dict[str, Callable[[], float]] = {}
        for count in BLOCK_COUNTS:
            variants[f"spend {count}"] = spender(app, block_team(app, count))
        for size in sizes:
            client = member_client(app, size)
            for name, path in pages:
                variants[f"{name} {size}"] = reader(client, path)
        interleave(variants, 1)  # warm-up, not counted
        figures = interleave(variants, ROUNDS)
        with app.app_context():
            db.engine.dispose()
        described = machine()

    def ms(name: str) -> float:
        return statistics.median(figures[name])

    print(f"\nCosts as a team grows (PostgreSQL; {ROUNDS} rounds, rotated; ratios are medians of per-round ratios")
    print(f"to the smallest team). {described}\n")
    print(f"| {'figure':<38} | ms (median) | ÷ smallest | per-round range |")
    print(f"|{'-' * 40}|------------:|-----------:|----------------:|")
    for count in BLOCK_COUNTS:
        name, base = f"spend {count}", f"spend {BLOCK_COUNTS[0]}"
        label = f"spend, {count:,} blocks"
        print(
            f"| {label:<38} | {ms(name):11.2f} | {median_ratio(figures, name, base):10.2f} |"
            f" {spread(figures, name, base):>15} |"
        )
    for page, _ in pages:
        for size in sizes:
            name, base = f"{page} {size}", f"{page} {sizes[0]}"
            label = f"{page}, {size:,} entries" + (" (first byte)" if page != "dashboard" else "")
            print(
                f"| {label:<38} | {ms(name):11.2f} | {median_ratio(figures, name, base):10.2f} |"
                f" {spread(figures, name, base):>15} |"
            )
    headline = {"spend, 10,000 blocks ÷ 1 block": median_ratio(figures, "spend 10000", "spend 1")}
    for page, _ in pages:
        for size in sizes[1:]:
            headline[f"{page}, {size:,} entries ÷ 10"] = median_ratio(figures, f"{page} {size}", f"{page} 10")
    report(headline)


if __name__ == "__main__":
    main()
