"""No ping per transaction, and still no dead pooled connection in front of a request (PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from starter.extensions import db

from .conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_config() -> dict[str, object]:
    # One connection, so the next request gets the very one that was killed; pings only after an hour idle.
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0}, "DATABASE_PING_IDLE_SECONDS": 3600}


def backend_pid() -> int:
    pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    db.session.commit()  # the connection goes back to the pool
    return pid


def terminate(pid: int) -> None:
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            for _ in range(100):
                if not connection.execute(
                    text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).first():
                    return
                time.sleep(0.05)
        raise AssertionError(f"backend {pid} still running")
    finally:
        admin.dispose()


def test_transactions_in_a_row_send_no_ping(app, auth, make_user):
    make_user("pool@example.com")
    db.session.commit()
    auth.login("pool@example.com")
    watch = app.extensions["dbpool"][None]
    before = watch.pings
    for _ in range(20):
        assert auth.client.get("/dashboard").status_code == 200
        backend_pid()
    assert watch.pings == before  # no SELECT 1 in front of any of those transactions
    assert "pool_pre_ping" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"]


def test_a_terminated_backend_never_reaches_the_next_request(app, auth, make_user):
    make_user("killed@example.com")
    db.session.commit()
    auth.login("killed@example.com")
    assert auth.client.get("/dashboard").status_code == 200
    watch = app.extensions["dbpool"][None]
    killed = backend_pid()

    terminate(killed)  # as a restart, a failover or idle_session_timeout would

    assert auth.client.get("/dashboard").status_code == 200
    assert (watch.pings, watch.replaced) == (1, 1)
    assert backend_pid() != killed


@pytest.mark.parametrize("app_config", [{"DATABASE_PING_IDLE_SECONDS": 0}])
def test_a_connection_idle_longer_than_the_setting_is_pinged_first(app):
    watch = app.extensions["dbpool"][None]
    backend_pid()
    before = watch.pings
    time.sleep(0.01)
    backend_pid()
    assert (watch.pings - before, watch.replaced) == (1, 0)
