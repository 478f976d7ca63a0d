"""What every benchmark shares: a throwaway PostgreSQL database, the database's own floor for a spend, and
interleaved measurement.

The machine is shared and noisy, so no figure here is a lone absolute time. Each benchmark names its variants
(the app, the floor, a scale), runs them in short bursts in a rotated order, round after round, and reports the
median over rounds of a ratio between variants measured in the same round: whatever noise hits one round hits
every variant of it alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from starter.config import normalise_database_url  # noqa: E402


def server_url() -> str:
    """The PostgreSQL server to benchmark on (BENCH_DATABASE_URL or TEST_DATABASE_URL), or exit saying so."""
    base = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not base or not base.startswith(("postgres://", "postgresql")):
        sys.exit("Set BENCH_DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server.")
    return normalise_database_url(base)


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A fresh database called ``name`` on the benchmark server, dropped afterwards; yields its URL."""
    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def connect(url: str):  # type: ignore[no-untyped-def]
    """A plain psycopg2 connection to ``url`` (SQLAlchemy's URL form)."""
    parsed = make_url(url)
    return psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, dbname=parsed.database
    )


# The minimal locked spend: what any correct ledger has to send for one spend, straight through the driver.
# BEGIN (psycopg2 sends it before the first statement), lock the balance row, check the idempotency key, debit
# the block, update the balance, append the entry, COMMIT: seven round trips, no ORM, no Python ledger rules.
FLOOR_SQL = (
    "SELECT balance, held FROM credit_balances WHERE team_id = %s FOR UPDATE",
    "SELECT id FROM ledger_entries WHERE team_id = %s AND idempotency_key = %s",
    "UPDATE credit_blocks SET remaining = remaining - 1 WHERE id = %s",
    "UPDATE credit_balances SET balance = %s, updated_at = %s WHERE team_id = %s",
    "INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id,"
    " actor_type, description, metadata, idempotency_key, request_hash, created_at)"
    " VALUES (%s, 'spend', -1, 0, %s, %s, %s, 'system', 'Spend', '{}', %s, 'floor', %s)",
)


class FloorSpender:
    """One connection doing minimal locked spends of one credit on one team's block."""

    def __init__(self, url: str, team_id: int, block_id: int, label: str) -> None:
        self.connection = connect(url)
        self.team_id, self.block_id, self.label = team_id, block_id, label
        self.count = 0

    def spend(self) -> None:
        self.count += 1
        now = datetime.now(UTC)
        key = f"floor-{self.label}-{self.count}-{time.monotonic_ns()}"
        cursor = self.connection.cursor()
        cursor.execute(FLOOR_SQL[0], (self.team_id,))
        balance, held = cursor.fetchone()
        cursor.execute(FLOOR_SQL[1], (self.team_id, key))
        if cursor.fetchone() is not None or balance - held < 1:
            raise RuntimeError("the floor's team ran out of credits or replayed a key")
        cursor.execute(FLOOR_SQL[2], (self.block_id,))
        cursor.execute(FLOOR_SQL[3], (balance - 1, now, self.team_id))
        cursor.execute(FLOOR_SQL[4], (self.team_id, balance - 1, held, self.block_id, key, now))
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


def burst(workers: list[Callable[[], None]], calls: int) -> float:
    """Calls per second of ``len(workers)`` threads each calling its worker ``calls`` times, started together."""
    barrier = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def body(worker: Callable[[], None]) -> None:
        barrier.wait()
        try:
            for _ in range(calls):
                worker()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(worker,), daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return len(workers) * calls / elapsed


def interleave(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round, the order rotated every round; the figures per variant, by round."""
    names = list(variants)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(variants[name]())
    return figures


def median_ratio(figures: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of ``numerator ÷ denominator`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(figures[numerator], figures[denominator], strict=True))


def spread(figures: dict[str, list[float]], numerator: str, denominator: str) -> str:
    """Lowest and highest per-round ratio, to show how much the noise moved it."""
    ratios = [a / b for a, b in zip(figures[numerator], figures[denominator], strict=True)]
    return f"{min(ratios):.2f} to {max(ratios):.2f}"


def machine() -> str:
    """One line naming what the figures ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    engine = create_engine(server_url())
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar_one()
    finally:
        engine.dispose()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; PostgreSQL {version}; "
        f"Python {platform.python_version()}; commit {commit or 'unknown'}"
    )


def report(figures: dict[str, float]) -> None:
    """Hand the headline figures to ``bench/run_all.py`` (BENCH_JSON names the file) when it runs this script."""
    if path := os.environ.get("BENCH_JSON"):
        Path(path).write_text(json.dumps(figures))
