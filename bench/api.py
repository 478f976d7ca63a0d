"""A spend through the JSON API under gunicorn, measured against the database's own floor for a spend.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/api.py
    (BENCH_ROUNDS=9 more rounds, BENCH_BURST=100 requests per client and burst)

PostgreSQL only; the script creates and drops its own database, ``starter_bench_api``, migrated to head. It starts
gunicorn on 127.0.0.1 with the project's gunicorn.conf.py (2 workers, gthread, 4 threads each) and sends
``POST /api/v1/spend`` from client threads on this machine, each over one kept-alive connection. The floor is the
minimal locked spend straight through psycopg2 (``harness.FLOOR_SQL``). Loads: 1 client; 8 clients on one team;
8 clients on 8 teams. HTTP and floor run in short bursts, rotated, round after round; each figure is the median
over rounds of the ratio within a round. What it shows is what HTTP, gunicorn, Flask, the key lookup, the rate
limiter, JSON and the ledger together cost over the bare SQL. A benchmark prints figures; it asserts nothing.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from credits import make_app, make_teams, migrate  # noqa: E402
from harness import FloorSpender, burst, interleave, machine, median_ratio, report, scratch_database, spread  # noqa: E402

from starter import api_keys  # noqa: E402
from starter.extensions import db  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
BURST = int(os.environ.get("BENCH_BURST", "100"))  # requests per client in one burst
WORKERS, THREADS = 2, 4
LOADS = (("1 client", 1, 1), ("8 clients, one team", 8, 1), ("8 clients, 8 teams", 8, 8))
RETRIES: list[str] = []


def http_spender(port: int, key: str, label: str) -> Callable[[], None]:
    """One client on one kept-alive connection, spending one credit per call."""
    state = {"connection": http.client.HTTPConnection("127.0.0.1", port, timeout=10), "count": 0}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def spend() -> None:
        state["count"] += 1
        body = json.dumps({"amount": 1, "idempotency_key": f"{label}-{state['count']}-{time.monotonic_ns()}"})
        for attempt in range(3):
            try:
                state["connection"].request("POST", "/api/v1/spend", body=body, headers=headers)
                response = state["connection"].getresponse()
                response.read()
                break
            except ConnectionError:
                # A dropped keep-alive connection: reconnect and send again. The idempotency key makes that
                # safe; a spend that did land answers 200 (a replay) instead of 201.
                RETRIES.append(label)
                state["connection"].close()
                state["connection"] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                if attempt == 2:
                    raise
        if response.status not in (200, 201):
            raise RuntimeError(f"spend answered {response.status}")

    return spend


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
    command += ["--log-level", "warning", "--keep-alive", "120"]  # bursts pause between rounds
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


def main() -> None:
    with scratch_database("starter_bench_api") as url:
        app = make_app(url)
        migrate(app)
        variants: dict[str, Callable[[], float]] = {}
        floors: list[FloorSpender] = []
        port = free_port()
        with tempfile.TemporaryFile("w+") as log:
            server = start_gunicorn(url, port, log)
            try:
                for label, clients, team_count in LOADS:
                    slug = label.replace(" ", "").replace(",", "")
                    floor_teams = make_teams(app, team_count, f"floor{slug}")
                    http_teams = make_teams(app, team_count, f"http{slug}")
                    with app.app_context():
                        keys = [api_keys.create(team_id, "bench")[1] for team_id, _ in http_teams]
                        db.session.commit()
                    floor_workers, http_workers = [], []
                    for index in range(clients):
                        team_id, block_id = floor_teams[index % team_count]
                        floors.append(FloorSpender(url, team_id, block_id, f"{slug}{index}"))
                        floor_workers.append(floors[-1].spend)
                        http_workers.append(http_spender(port, keys[index % team_count], f"{slug}{index}"))
                    variants[f"floor {label}"] = lambda workers=floor_workers: burst(workers, BURST)
                    variants[f"http {label}"] = lambda workers=http_workers: burst(workers, BURST)
                interleave(variants, 1)  # warm-up, not counted: connections, pools, caches
                figures = interleave(variants, ROUNDS)
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                for floor in floors:
                    floor.close()
                with app.app_context():
                    db.engine.dispose()
                log.seek(0)
                if errors := log.read().strip():
                    print(f"gunicorn said:\n{errors[-3000:]}", file=sys.stderr)
        described = machine()

    print(f"\nPOST /api/v1/spend under gunicorn ({WORKERS} workers x {THREADS} gthread threads) ÷ the minimal locked")
    print(f"spend through psycopg2 (PostgreSQL; {ROUNDS} rounds of {BURST} requests per client and variant, rotated;")
    print(f"median of per-round ratios). {described}\n")
    print("| load                 | HTTP spends/s | floor spends/s | HTTP ÷ floor | per-round range |")
    print("|----------------------|--------------:|---------------:|-------------:|----------------:|")
    for label, _, _ in LOADS:
        http_name, floor_name = f"http {label}", f"floor {label}"
        http_rate = sorted(figures[http_name])[len(figures[http_name]) // 2]
        floor_rate = sorted(figures[floor_name])[len(figures[floor_name]) // 2]
        ratio = median_ratio(figures, http_name, floor_name)
        print(
            f"| {label:<20} | {http_rate:13.0f} | {floor_rate:14.0f} | {ratio:12.2f} |"
            f" {spread(figures, http_name, floor_name):>15} |"
        )
    report(
        {
            f"HTTP spend ÷ floor, {label}": median_ratio(figures, f"http {label}", f"floor {label}")
            for label, _, _ in LOADS
        }
    )
    if RETRIES:
        print(f"\n{len(RETRIES)} request(s) resent after a dropped connection (same idempotency key).")


if __name__ == "__main__":
    main()
