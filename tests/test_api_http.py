"""The JSON API over real HTTP: a multi-threaded server on PostgreSQL, many clients at once.

Each request runs in its own server thread with its own connection and transaction, as under
gunicorn, so these are the races the ledger's row lock must win: no overdraft, no lost update,
and a key repeated by racing clients debits once.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from werkzeug.serving import make_server

from starter import credits
from starter.extensions import db

from .test_api import new_key, new_team

pytestmark = pytest.mark.postgres
CLIENTS = 16


@pytest.fixture
def app_config() -> dict[str, object]:
    return {
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": CLIENTS + 4, "max_overflow": 4, "pool_timeout": 60},
        "API_RATE_LIMIT": "100000 per minute",
    }


@pytest.fixture
def server(app) -> Iterator[tuple[str, int]]:  # type: ignore[no-untyped-def]
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def call(address: tuple[str, int], method: str, path: str, key: str, body: dict | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        connection.request(
            method, f"/api/v1{path}", body=json.dumps(body) if body is not None else None, headers=headers
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def together(calls: list[Any], run: Any) -> list[Any]:
    """Run ``run(arg)`` for every call from CLIENTS threads that start at the same moment."""
    barrier = threading.Barrier(CLIENTS)

    def start(arg: Any) -> Any:
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass  # later calls start as soon as a client is free
        return run(arg)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(start, calls))


def test_16_clients_spending_over_http_never_overdraw(app, server):
    team = new_team("race", purchased=100)
    key = new_key(team)
    calls = [f"c{c}-s{s}" for c in range(CLIENTS) for s in range(10)]  # 160 spends of 3 = 480 wanted

    results = together(calls, lambda k: call(server, "POST", "/spend", key, {"amount": 3, "idempotency_key": k}))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 33, 402: 160 - 33}, statuses
    assert sorted(body["balance_after"] for status, body in results if status == 201) == list(range(1, 100, 3))
    refused = [body["error"] for status, body in results if status == 402]
    assert all(e["code"] == "insufficient_credits" and e["required"] == 3 and e["available"] < 3 for e in refused)
    assert call(server, "GET", "/balance", key)[1]["available"] == 1
    db.session.expire_all()
    assert credits.balance(team).available == 1
    assert credits.verify() == []


def test_racing_repeats_of_one_idempotency_key_debit_once(app, server):
    team = new_team("repeat", purchased=100)
    key = new_key(team)

    results = together(
        [None] * (CLIENTS * 2),
        lambda _: call(server, "POST", "/spend", key, {"amount": 7, "idempotency_key": "the-same-key"}),
    )

    assert Counter(status for status, _ in results) == {201: 1, 200: CLIENTS * 2 - 1}
    assert len({body["id"] for _, body in results}) == 1
    assert Counter(body["replayed"] for _, body in results) == {False: 1, True: CLIENTS * 2 - 1}
    assert call(server, "GET", "/balance", key)[1]["available"] == 93
    ledger = call(server, "GET", "/ledger?kind=spend", key)[1]["data"]
    assert [entry["amount"] for entry in ledger] == [-7]
    assert credits.verify() == []


def test_racing_capture_and_release_of_each_hold_one_wins(app, server):
    team = new_team("holds", purchased=1_000)
    key = new_key(team)
    holds = [call(server, "POST", "/holds", key, {"amount": 10, "idempotency_key": f"h{i}"})[1] for i in range(8)]
    calls = [(hold["id"], action) for hold in holds for action in ("capture", "release")]

    def close(arg: tuple[int, str]) -> tuple[int, Any]:
        hold_id, action = arg
        body = {"idempotency_key": f"{action}-{hold_id}", **({"amount": 6} if action == "capture" else {})}
        return call(server, "POST", f"/holds/{hold_id}/{action}", key, body)

    results = together(calls, close)

    for index in range(len(holds)):
        pair = sorted(status for status, _ in results[2 * index : 2 * index + 2])
        assert pair == [200, 409], results[2 * index : 2 * index + 2]
    captured = sum(1 for status, body in results if status == 200 and body["status"] == "captured")
    balance = call(server, "GET", "/balance", key)[1]
    assert balance["held"] == 0 and balance["available"] == 1_000 - 6 * captured
    assert credits.verify() == []
