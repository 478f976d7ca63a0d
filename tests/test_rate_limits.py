"""Rate limits as deployed, under gunicorn: a Redis that is down or silent; the warning about in-memory counts.

A Redis outage must cost a logged warning and per-process counting, never a 500 on every request.
These run gunicorn itself (one worker, so per-process counting is still exact), on a SQLite file:
the store is what is under test, not the database. tests/test_multi_instance.py covers a live Redis.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from starter import api_keys, credits
from starter.extensions import db
from starter.models import Team
from tests.conftest import make_app
from tests.live_hosts import free_port, running_host

FALLBACK_WARNING = "Rate limit storage unreachable - falling back to in-memory storage"
MEMORY_WARNING = "Rate limits are in memory with 2 workers"


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[dict[str, str], str]:
    """The environment of a deployed app on a fresh SQLite file, and an API key of one of its teams."""
    url = f"sqlite:///{tmp_path / 'starter.db'}"
    app = make_app(url)
    with app.app_context():
        db.create_all()
        team = Team(name="Acme", slug="acme")
        db.session.add(team)
        db.session.flush()
        credits.open_account(team)
        _, token = api_keys.create(team.id, "limits")
        db.session.commit()
        db.engine.dispose()
    environment = {
        "DATABASE_URL": url,
        "SECRET_KEY": "rate-limit-test",
        "BILLING_TEST_MODE": "true",
        "STRIPE_SECRET_KEY": "",
        "SCHEDULER_ENABLED": "false",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
        "LOGIN_RATE_LIMIT": "3 per minute",
        "API_RATE_LIMIT": "3 per minute",
    }
    return environment, token


@contextmanager
def silent_redis() -> Iterator[str]:
    """A port that accepts connections (the kernel completes them) and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@contextmanager
def refused_redis() -> Iterator[str]:
    yield f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connections are refused


@pytest.mark.parametrize("outage", [refused_redis, silent_redis], ids=["refused", "silent"])
def test_a_redis_outage_degrades_to_per_process_limits_never_a_500(project_root, tmp_path, deployed, outage):
    environment, token = deployed
    with (
        outage() as storage,
        running_host(
            project_root, {**environment, "RATELIMIT_STORAGE_URI": storage}, tmp_path / "gunicorn.log"
        ) as host,
    ):
        browser = host.client()
        form = {
            "email": "nobody@example.com",
            "password": "wrong-password",
            "csrf_token": browser.csrf_token("/auth/login"),
        }
        logins = [browser.post_form("/auth/login", form) for _ in range(5)]
        api = host.client()
        balances = [api.get("/api/v1/balance", {"Authorization": f"Bearer {token}"})[0] for _ in range(5)]
        pages = [browser.get(path)[0] for path in ("/", "/auth/login", "/up")]
        log = host.log()

    assert logins == [200, 200, 200, 429, 429]
    assert balances == [200, 200, 200, 429, 429]
    assert pages == [200, 200, 200]
    assert FALLBACK_WARNING in log
    assert MEMORY_WARNING not in log


@pytest.mark.parametrize(("workers", "warned"), [("2", True), ("1", False)], ids=["2-workers", "1-worker"])
def test_gunicorn_warns_at_start_when_several_workers_count_rate_limits_in_memory(
    project_root, tmp_path, deployed, workers, warned
):
    environment, _ = deployed
    settings = {**environment, "WEB_CONCURRENCY": workers, "RATELIMIT_STORAGE_URI": "memory://"}
    with running_host(project_root, settings, tmp_path / "gunicorn.log") as host:
        log = host.log()

    assert (MEMORY_WARNING in log) is warned
    if warned:
        assert "Set RATELIMIT_STORAGE_URI=redis://" in log
