"""Spends per second through the JSON API under gunicorn, beside the ledger called in-process.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/api.py

PostgreSQL only (BENCH_DATABASE_URL or TEST_DATABASE_URL names the server; the script creates and
drops its own database, ``starter_bench_api``). It starts gunicorn on 127.0.0.1 (2 workers, gthread,
4 threads each), and for each load sends a fixed number of ``POST /api/v1/spend`` from client
threads on this machine, each over one kept-alive connection, timing every request. Then it runs
the same number of spends in this process, ``credits.spend`` + commit in a loop per thread (what
``bench/credits.py`` measures), on the same database. The ratio is what HTTP, gunicorn, Flask,
the key lookup, the rate limiter and JSON cost over the ledger itself. It stops by itself well
within two minutes; a benchmark prints figures and asserts nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from starter import api_keys, create_app, credits  # noqa: E402
from starter.config import normalise_database_url  # noqa: E402
from starter.extensions import db  # noqa: E402
from starter.models import Team  # noqa: E402

DATABASE = "starter_bench_api"
WORKERS, THREADS = 2, 4
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "480"))  # per load, split between the clients
WARM_UP = 5  # requests per client before the clock starts: connections, pools, caches
LOADS = [("1 client, 1 team", 1, 1), ("8 clients, 1 team", 8, 1), ("8 clients, 8 teams", 8, 8)]
DEADLINE_SECONDS = 110


class Deadline(Exception):
    pass


def make_teams(app, count: int, label: str) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """``count`` fresh teams with plenty of credits, and an API key for each."""
    teams = []
    with app.app_context():
        for number in range(count):
            team = Team(name=f"{label} {number}", slug=f"{label}-{number}-{time.monotonic_ns()}")
            db.session.add(team)
            db.session.flush()
            credits.open_account(team)
            credits.grant(team.id, 100_000_000, source="purchase", key="pack")
            teams.append((team.id, api_keys.create(team.id, "bench")[1]))
        db.session.commit()
    return teams


def run_clients(clients: int, work: Callable[[int, int], list[float]], total: int) -> tuple[float, list[float]]:
    """(calls per second, latencies) of ``clients`` threads each making ``total // clients`` calls."""
    per_client = total // clients
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def body(index: int) -> None:
        barrier.wait()
        latencies[index] = work(index, per_client)

    pool = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(clients)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    return clients * per_client / elapsed, [t for per in latencies for t in per]


RETRIES: list[str] = []


def http_worker(port: int, teams: list[tuple[int, str]], label: str) -> Callable[[int, int], list[float]]:
    def work(index: int, count: int) -> list[float]:
        _, key = teams[index % len(teams)]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        timings = []
        for n in range(count):
            body = json.dumps({"amount": 1, "idempotency_key": f"{label}-{index}-{n}"})
            started = time.perf_counter()
            for attempt in range(3):
                try:
                    connection.request("POST", "/api/v1/spend", body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    break
                except ConnectionError:
                    # A dropped keep-alive connection: reconnect and send again. The idempotency key
                    # makes that safe; a spend that did land answers 200 (a replay) instead of 201.
                    RETRIES.append(label)
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    if attempt == 2:
                        raise
            timings.append(time.perf_counter() - started)
            if response.status not in (200, 201):
                raise RuntimeError(f"spend answered {response.status}")
        connection.close()
        return timings

    return work


def ledger_worker(app, teams: list[tuple[int, str]], label: str) -> Callable[[int, int], list[float]]:  # type: ignore[no-untyped-def]
    def work(index: int, count: int) -> list[float]:
        team_id, _ = teams[index % len(teams)]
        timings = []
        with app.app_context():
            for n in range(count):
                started = time.perf_counter()
                credits.spend(team_id, 1, key=f"{label}-{index}-{n}", actor=credits.Actor("api", None))
                db.session.commit()
                timings.append(time.perf_counter() - started)
            db.session.remove()
        return timings

    return work


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(url: str, port: int, log: Any) -> subprocess.Popen:
    """gunicorn with the project's gunicorn.conf.py (access log included), on 127.0.0.1 only."""
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": "bench-only",
        "SCHEDULER_ENABLED": "false",
        "API_RATE_LIMIT": "10000000 per minute",  # measured, not hit: the limiter still runs on every call
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    command = [sys.executable, "-m", "gunicorn", "app:app", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(WORKERS), "--worker-class", "gthread", "--threads", str(THREADS)]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/up")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("gunicorn did not start")


def measure(app, port: int, number: int, label: str, clients: int, team_count: int) -> tuple:  # type: ignore[no-untyped-def]
    """One load: HTTP spends on fresh teams, then in-process spends on other fresh teams."""
    teams = make_teams(app, team_count, f"http{number}")
    run_clients(clients, http_worker(port, teams, f"warm{number}"), WARM_UP * clients)
    http_rate, latencies = run_clients(clients, http_worker(port, teams, f"http{number}"), REQUESTS)
    teams = make_teams(app, team_count, f"app{number}")
    ledger_rate, _ = run_clients(clients, ledger_worker(app, teams, f"app{number}"), REQUESTS)
    print(f"  {label:<20} http {http_rate:7.0f}/s   in-process {ledger_rate:7.0f}/s", file=sys.stderr)
    return label, http_rate, percentile(latencies, 0.5), percentile(latencies, 0.99), ledger_rate


def bench(url: str) -> list[tuple[str, float, float, float, float]]:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SCHEDULER_ENABLED": False,
            "TESTING": True,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 10},
        }
    )
    with app.app_context():
        db.create_all()
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = start_gunicorn(url, port, log)
        try:
            rows = [measure(app, port, number, *load) for number, load in enumerate(LOADS)]
            with app.app_context():
                if problems := credits.verify():
                    raise RuntimeError(f"the ledger does not add up: {problems[:3]}")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            with app.app_context():
                db.engine.dispose()
            log.seek(0)
            if errors := log.read().strip():
                print(f"gunicorn said:\n{errors[-3000:]}", file=sys.stderr)
    return rows


def main() -> None:
    base = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not base or not base.startswith(("postgres://", "postgresql")):
        sys.exit("Set BENCH_DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server.")

    def out_of_time(*_: object) -> None:
        raise Deadline(f"stopped after {DEADLINE_SECONDS} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(DEADLINE_SECONDS)
    admin = create_engine(normalise_database_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {DATABASE}"))
    url = make_url(normalise_database_url(base)).set(database=DATABASE).render_as_string(hide_password=False)
    try:
        rows = bench(url)
    finally:
        signal.alarm(0)
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        admin.dispose()
    print(
        f"\nPOST /api/v1/spend under gunicorn ({WORKERS} workers x {THREADS} gthread threads) vs credits.spend "
        f"in-process; PostgreSQL, {REQUESTS} spends per load, {os.cpu_count()} CPUs shared by clients, "
        "server and database\n"
    )
    print("| load                 | HTTP spends/s | p50 ms | p99 ms | in-process spends/s | in-process ÷ HTTP |")
    print("|----------------------|--------------:|-------:|-------:|--------------------:|------------------:|")
    for label, http_rate, p50, p99, ledger_rate in rows:
        ratio = ledger_rate / http_rate
        print(f"| {label:<20} | {http_rate:13.0f} | {p50:6.1f} | {p99:6.1f} | {ledger_rate:19.0f} | {ratio:16.2f}x |")
    if RETRIES:
        print(f"\n{len(RETRIES)} request(s) resent after a dropped connection (same idempotency key).")


if __name__ == "__main__":
    main()
