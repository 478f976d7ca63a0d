"""What one ``POST /api/v1/spend`` costs on PostgreSQL around the ledger's own work: counted, never timed.

The request's share is the HTTP call's SQL minus what the same ``credits.spend`` sends called directly
(with the same actor), so the budget holds whatever shape the ledger's statements take. Round trips
count what psycopg2 sends: every statement, the ``BEGIN`` it sends before the first statement of a
transaction, a ``COMMIT`` or ``ROLLBACK`` of a transaction that is open, and any ping at checkout.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg2.extensions
import pytest
import redis.connection
from flask import current_app
from sqlalchemy import event, select, update

from starter import api_keys, credits
from starter.extensions import db
from starter.models import ApiKey, utcnow

from .test_api import Api, new_key, new_team

pytestmark = pytest.mark.postgres
IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


@dataclass
class Trace:
    """Statements and round trips on the app's engine while it is active."""

    statements: list[str] = field(default_factory=list)
    round_trips: int = 0

    def __enter__(self) -> Trace:
        self.pings = current_pings()
        event.listen(db.engine, "before_cursor_execute", self.execute)
        event.listen(db.engine, "commit", self.end)
        event.listen(db.engine, "rollback", self.end)
        event.listen(db.engine.pool, "reset", self.reset)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(db.engine, "before_cursor_execute", self.execute)
        event.remove(db.engine, "commit", self.end)
        event.remove(db.engine, "rollback", self.end)
        event.remove(db.engine.pool, "reset", self.reset)
        self.round_trips += current_pings() - self.pings  # a SELECT 1 (and its rollback) counts once

    def execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if conn.connection.dbapi_connection.info.transaction_status == IDLE:
            self.round_trips += 1  # psycopg2 sends BEGIN first
        self.statements.append(" ".join(statement.split()))
        self.round_trips += 1

    def end(self, conn) -> None:  # type: ignore[no-untyped-def]
        if conn.connection.dbapi_connection.info.transaction_status != IDLE:
            self.round_trips += 1  # COMMIT or ROLLBACK of an open transaction (psycopg2 skips an idle one)

    def reset(self, dbapi_connection, record, reset_state) -> None:  # type: ignore[no-untyped-def]
        if dbapi_connection.info.transaction_status != IDLE:
            self.round_trips += 1  # the pool's rollback when a connection comes back mid-transaction


def current_pings() -> int:
    watch = current_app.extensions["dbpool"][None]
    return watch.pings if watch else 0


def ledger_alone(team_id: int, key_id: int, idempotency_key: str) -> Trace:
    """What the ledger sends for the spend the endpoint makes: the same call, the same actor, one commit."""
    with Trace() as trace:
        credits.spend(team_id, 1, key=idempotency_key, actor=api_keys.actor_for(key_id, None, "month"))
        db.session.commit()
    return trace


def http_spend(api: Api, idempotency_key: str) -> Trace:
    with Trace() as trace:
        response = api.post("/spend", {"amount": 1, "idempotency_key": idempotency_key})
    assert response.status_code == 201, response.get_json()
    assert "Set-Cookie" not in response.headers and "Cookie" not in response.headers.get("Vary", "")
    return trace


@pytest.fixture
def caller(client) -> tuple[Api, int, int]:
    team_id = new_team("budget")
    api = Api(client, new_key(team_id))
    key_id = db.session.scalar(select(ApiKey.id).filter_by(prefix=api.key[:11]))
    assert api.post("/spend", {"amount": 1, "idempotency_key": "warm-up"}).status_code == 201  # last use recorded
    return api, team_id, key_id


def test_a_spend_over_http_costs_one_statement_and_one_round_trip_beyond_the_ledger(caller):
    """The key lookup, inside the spend's own transaction: no BEGIN or COMMIT of its own, no ping, no write."""
    api, team_id, key_id = caller
    ledger = ledger_alone(team_id, key_id, "api:direct")
    http = http_spend(api, "over-http")

    own = http.statements[: len(http.statements) - len(ledger.statements)]
    assert [s.split()[0] for s in http.statements[len(own) :]] == [s.split()[0] for s in ledger.statements]
    assert len(own) == 1 and own[0].startswith("SELECT api_keys.id") and "FROM api_keys" in own[0], http.statements
    assert http.round_trips - ledger.round_trips == 1, (http.round_trips, ledger.round_trips, http.statements)


def test_the_once_a_minute_last_use_write_joins_the_spends_transaction(caller):
    api, team_id, key_id = caller
    db.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    ledger = ledger_alone(team_id, key_id, "api:direct")
    http = http_spend(api, "stale")

    own = http.statements[: len(http.statements) - len(ledger.statements)]
    assert [s.split()[0] for s in own] == ["SELECT", "UPDATE"] and "UPDATE api_keys" in own[1], http.statements
    assert http.round_trips - ledger.round_trips == 2  # the two statements: no COMMIT and BEGIN between them
    assert db.session.get(ApiKey, key_id).last_used_at > utcnow() - timedelta(minutes=1)


def test_a_key_revoked_between_two_calls_refuses_the_second(caller):
    """Nothing about a key is kept across requests: the lookup reads the row on every call."""
    api, team_id, key_id = caller
    assert api.get("/balance").status_code == 200
    api_keys.revoke(team_id, key_id)
    db.session.commit()
    response = api.post("/spend", {"amount": 1, "idempotency_key": "after-revoke"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


REDIS_URL = os.environ.get("TEST_REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="needs a Redis: set TEST_REDIS_URL")
@pytest.mark.parametrize(
    "app_config",
    [{"RATELIMIT_STORAGE_URI": REDIS_URL, "RATELIMIT_KEY_PREFIX": f"budget-{uuid.uuid4().hex}:"}],
)
def test_counting_a_call_against_the_rate_limit_is_one_redis_round_trip(caller, monkeypatch):
    """Increment, window start and what the headers need come back from one Lua call."""
    api, _, _ = caller
    assert api.get("/balance").status_code == 200  # the script is loaded by now
    sent: list[object] = []
    real = redis.connection.Connection.send_packed_command

    def send(self, command, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(command)
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", send)
    response = api.post("/spend", {"amount": 1, "idempotency_key": "counted"})
    assert response.status_code == 201 and len(sent) == 1, sent
    assert int(response.headers["X-RateLimit-Remaining"]) == 120 - 3  # warm-up spend, balance, this one
    assert 0 < int(response.headers["Retry-After"]) <= 60
