"""A spend through the app's ledger, measured against the database's own floor for a spend.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/credits.py
    (BENCH_ROUNDS=9 more rounds, BENCH_BURST=200 spends per thread and burst)

PostgreSQL only; the script creates and drops its own database, ``starter_bench_credits``, migrated to head. The
floor is the minimal locked spend straight through psycopg2 (``harness.FLOOR_SQL``: lock the balance row, check
the key, debit the block, update the balance, append the entry; seven round trips with BEGIN and COMMIT). The app
is ``credits.spend`` + commit inside an app context, as a request makes it. Loads: 1 thread; 8 threads on one
team (every spend waits for the team's row lock); 8 threads on 8 teams. Every variant runs in short bursts,
rotated, round after round; each figure is the median over rounds of the ratio measured within a round.
A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FloorSpender, burst, interleave, machine, median_ratio, report, scratch_database, spread
from sqlalchemy import event

from starter import create_app, credits
from starter.extensions import db
from starter.models import CreditBlock, Team

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
BURST = int(os.environ.get("BENCH_BURST", "150"))  # spends per thread in one burst
THREADS = 8
STARTING_CREDITS = 100_000_000
LOADS = (("1 thread", 1, 1), ("8 threads, one team", THREADS, 1), ("8 threads, 8 teams", THREADS, THREADS))


def make_app(url: str):  # type: ignore[no-untyped-def]
    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SCHEDULER_ENABLED": False,
            "TESTING": True,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": THREADS + 2},
        }
    )


def migrate(app) -> None:  # type: ignore[no-untyped-def]
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))


def make_teams(app, count: int, label: str) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """``count`` teams holding one purchased block each: (team id, block id)."""
    made = []
    with app.app_context():
        for number in range(count):
            team = Team(name=f"{label} {number}", slug=f"{label}-{number}")
            db.session.add(team)
            db.session.flush()
            credits.open_account(team)
            credits.grant(team.id, STARTING_CREDITS, source="purchase", key=f"pack-{label}-{number}")
            block_id = db.session.query(CreditBlock.id).filter_by(team_id=team.id).scalar()
            made.append((team.id, block_id))
        db.session.commit()
    return made


def app_spender(app, team_id: int, label: str) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    count = 0

    def spend() -> None:
        nonlocal count
        count += 1
        with app.app_context():
            credits.spend(team_id, 1, key=f"app-{label}-{count}-{time.monotonic_ns()}")
            db.session.commit()

    return spend


def round_trips_of_a_spend(app, team_id: int) -> int:  # type: ignore[no-untyped-def]
    """Round trips of one spend and its commit: each statement, plus psycopg2's BEGIN and the COMMIT."""
    sent: list[str] = []

    def statement(*_args) -> None:  # type: ignore[no-untyped-def]
        sent.append("statement")

    def commit(*_args) -> None:  # type: ignore[no-untyped-def]
        sent.append("COMMIT")

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", statement)
        event.listen(db.engine, "commit", commit)
        try:
            credits.spend(team_id, 1, key=f"round-trips-{time.monotonic_ns()}")
            db.session.commit()
        finally:
            event.remove(db.engine, "before_cursor_execute", statement)
            event.remove(db.engine, "commit", commit)
    return 1 + len(sent)  # BEGIN, sent by psycopg2 before the first statement


def main() -> None:
    with scratch_database("starter_bench_credits") as url:
        app = make_app(url)
        migrate(app)
        variants: dict[str, Callable[[], float]] = {}
        floors: list[FloorSpender] = []
        floor_team_ids: set[int] = set()
        for label, threads, team_count in LOADS:
            slug = label.replace(" ", "").replace(",", "")
            floor_teams = make_teams(app, team_count, f"floor{slug}")
            app_teams = make_teams(app, team_count, f"app{slug}")
            floor_team_ids.update(team_id for team_id, _ in floor_teams)
            floor_workers = []
            for index in range(threads):
                team_id, block_id = floor_teams[index % team_count]
                floors.append(FloorSpender(url, team_id, block_id, f"{slug}{index}"))
                floor_workers.append(floors[-1].spend)
            app_workers = [app_spender(app, app_teams[i % team_count][0], f"{slug}{i}") for i in range(threads)]
            variants[f"floor {label}"] = lambda workers=floor_workers: burst(workers, BURST)
            variants[f"app {label}"] = lambda workers=app_workers: burst(workers, BURST)
        try:
            interleave(variants, 1)  # warm-up, not counted: connections, pools, statement caches
            figures = interleave(variants, ROUNDS)
            trips = round_trips_of_a_spend(app, make_teams(app, 1, "trips")[0][0])
            with app.app_context():
                # The floor writes no allocations, so only the app's teams must add up.
                if problems := [p for p in credits.verify() if p.team_id not in floor_team_ids]:
                    raise RuntimeError(f"the ledger does not add up: {problems[:3]}")
        finally:
            for floor in floors:
                floor.close()
            with app.app_context():
                db.engine.dispose()
        described = machine()

    print(f"\nSpend ÷ the minimal locked spend through psycopg2 (PostgreSQL; {ROUNDS} rounds of {BURST} spends")
    print(f"per thread and variant, rotated; median of per-round ratios). {described}\n")
    print("| load                 | app spends/s | floor spends/s | app ÷ floor | per-round range |")
    print("|----------------------|-------------:|---------------:|------------:|----------------:|")
    for label, _, _ in LOADS:
        app_name, floor_name = f"app {label}", f"floor {label}"
        app_rate = sorted(figures[app_name])[len(figures[app_name]) // 2]
        floor_rate = sorted(figures[floor_name])[len(figures[floor_name]) // 2]
        ratio = median_ratio(figures, app_name, floor_name)
        print(
            f"| {label:<20} | {app_rate:12.0f} | {floor_rate:14.0f} | {ratio:11.2f} |"
            f" {spread(figures, app_name, floor_name):>15} |"
        )
    hot = median_ratio(figures, "app 8 threads, one team", "app 1 thread")
    headline = {
        f"in-process spend ÷ floor, {label}": median_ratio(figures, f"app {label}", f"floor {label}")
        for label, _, _ in LOADS
    }
    report({**headline, "one hot team, 8 threads ÷ 1 thread": hot, "round trips per spend": trips})
    print(
        f"\nOne hot team, 8 threads ÷ its 1-thread rate: {hot:.2f}"
        f" (per round {spread(figures, 'app 8 threads, one team', 'app 1 thread')})"
    )
    print(f"Round trips per spend, BEGIN and COMMIT included (counted, not timed): {trips}")


if __name__ == "__main__":
    main()
