"""Fixtures: the app on SQLite always and on PostgreSQL when TEST_DATABASE_URL is set.

Every test that uses ``app`` runs once per database. Tables are created once per database and
emptied after each test (TRUNCATE on PostgreSQL), so tests that use threads or subprocesses see
committed data exactly as production would. Tests marked ``postgres`` run on PostgreSQL only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask, has_app_context
from flask.globals import app_ctx
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from starter import accounts, create_app
from starter.config import normalise_database_url
from starter.extensions import db
from starter.models import User
from tests.browser_session import browser  # noqa: F401  (one Chromium for every browser test module)

TEST_DATABASE_URL = normalise_database_url(os.environ.get("TEST_DATABASE_URL", "").strip())
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])
PASSWORD = "correct-horse-battery"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL-only tests never run on SQLite; without TEST_DATABASE_URL they skip, saying why."""
    keep, drop = [], []
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("database_url")
        if item.get_closest_marker("postgres") and backend == "sqlite" and TEST_DATABASE_URL:
            drop.append(item)
            continue
        if item.get_closest_marker("postgres") and not TEST_DATABASE_URL:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set TEST_DATABASE_URL"))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@contextmanager
def private_postgres_database(purpose: str = "test") -> Iterator[str]:
    """A database of this test run's own on the TEST_DATABASE_URL server, dropped afterwards.

    Two test runs at once (a developer and CI, or parallel sessions) never share tables; tests that
    need a database beside the shared one name another ``purpose``.
    """
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    name = f"starter_{purpose}_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per backend for the whole run, with the schema created from the models."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        else:
            url = stack.enter_context(private_postgres_database())
        app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False})
        with app.app_context():
            db.create_all()
            db.engine.dispose()
        yield url


def empty_tables(url: str) -> None:
    engine = create_engine(url)
    tables = [table.name for table in reversed(db.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


class FreshGlobalsClient(FlaskClient):
    """A test client whose every request (redirects included) starts with an empty ``g``, as in production.

    The ``app`` fixture keeps an app context pushed for the whole test and Flask reuses it for requests,
    so without this ``g`` (Flask-Login's current user, Flask-WTF's CSRF token) would leak from one
    request, and from one client, into the next.
    """

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not has_app_context():
            return super().open(*args, **kwargs)
        context = app_ctx._get_current_object()
        outer_g, context.g = context.g, self.application.app_ctx_globals_class()
        try:
            return super().open(*args, **kwargs)
        finally:
            context.g = outer_g


def make_app(database_url: str, **overrides: object) -> Flask:
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SCHEDULER_ENABLED": False,
        "STRIPE_SECRET_KEY": "",
        "BILLING_TEST_MODE": True,
        "SERVER_NAME": None,
        "BASE_URL": "http://localhost",
        "RATELIMIT_STORAGE_URI": "memory://",
        # Passwords are hashed for real, with a low work factor: scrypt's ~0.1-0.3 s per hash is
        # production's defence and would dominate the suite's run time.
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    }
    config.update(overrides)
    app = create_app(config)
    app.test_client_class = FreshGlobalsClient
    return app


@pytest.fixture
def app_config() -> dict[str, object]:
    """Override in a test module (or parametrize) to change settings for its ``app``."""
    return {}


@pytest.fixture
def app(database_url: str, app_config: dict[str, object]) -> Iterator[Flask]:
    app = make_app(database_url, **app_config)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
    empty_tables(database_url)


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


class DeliveredMail(list):
    """The mail the app sent, as the TESTING list ``app.extensions["outbox"]``, read after delivery.

    The app only queues mail (``starter.mail``); every read of this list first runs the real
    delivery job (``mail.deliver_due``, in an app context of its own, as the scheduler does), which
    appends what it sent. So a test sees exactly the mail that was committed and delivered.
    """

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.app = app

    def deliver(self) -> None:
        from starter import mail

        session = db.session
        if has_app_context() and not (session.new or session.dirty or session.deleted):
            # What a request leaves open ends with its app context in production; here the test's
            # context outlives the request, so end its (clean) transaction as the teardown would.
            session.rollback()
        with self.app.app_context():
            mail.deliver_due()

    def __len__(self) -> int:
        self.deliver()
        return super().__len__()

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.deliver()
        return super().__iter__()

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        self.deliver()
        return super().__getitem__(index)

    def __eq__(self, other: object) -> bool:
        self.deliver()
        return list(super().__iter__()) == other

    def __bool__(self) -> bool:
        return len(self) > 0

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def outbox(app: Flask) -> list:
    app.extensions["outbox"] = DeliveredMail(app)
    return app.extensions["outbox"]


def csrf_token(client: FlaskClient, path: str = "/auth/login") -> str:
    """The session's CSRF token, read from a page the way a browser would get it."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def signed_in_client(app: Flask, email: str) -> FlaskClient:
    """A test client signed in as ``email``, its session set as Flask-Login's ``login_user`` sets it
    (logging in through the form, and its password hash check, is test_auth.py's subject)."""
    user = db.session.scalar(select(User).filter_by(email=email))
    token = accounts.open_login_session(user, lifetime=timedelta(hours=1))
    db.session.commit()
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = token
        session["_fresh"] = True
    return client


class AuthActions:
    """Log in and out through the real forms, CSRF token included."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, data: dict | None = None, token_from: str = "/", **kwargs):  # type: ignore[no-untyped-def]
        data = dict(data or {})
        data.setdefault("csrf_token", csrf_token(self.client, token_from))
        return self.client.post(path, data=data, **kwargs)

    def login(self, email: str, password: str = PASSWORD, **extra: str):  # type: ignore[no-untyped-def]
        return self.post("/auth/login", {"email": email, "password": password, **extra}, token_from="/auth/login")

    def signup(self, name: str, email: str, password: str = PASSWORD, **extra: str):  # type: ignore[no-untyped-def]
        return self.post(
            "/auth/signup", {"name": name, "email": email, "password": password, **extra}, token_from="/auth/signup"
        )

    def logout(self):  # type: ignore[no-untyped-def]
        return self.post("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def make_user(app: Flask):  # type: ignore[no-untyped-def]
    """Factory: a committed user with a personal team (and its free credits)."""
    from starter import accounts

    counter = iter(range(1, 1_000_000))

    def make(email: str | None = None, name: str = "Test User", password: str = PASSWORD, **fields: object):
        user = accounts.sign_up(name, email or f"user{next(counter)}@example.com", password)
        for key, value in fields.items():
            setattr(user, key, value)
        db.session.commit()
        return user

    return make


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One real hash of PASSWORD, made once: scrypt is slow on purpose (about 0.1 s a hash)."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(PASSWORD)


@pytest.fixture
def fast_user(app: Flask, password_hash: str):  # type: ignore[no-untyped-def]
    """Factory: like ``make_user`` (password PASSWORD, a personal team with its free credits), built
    without hashing the password again. For tests whose subject is not sign-up itself."""
    from starter import accounts, teams
    from starter.models import User

    counter = iter(range(1, 1_000_000))

    def make(email: str | None = None, name: str = "Test User", **fields: object):
        email = accounts.normalise_email(email or f"fast{next(counter)}@example.com")
        user = User(email=email, name=name, password_hash=password_hash, **fields)
        db.session.add(user)
        db.session.flush()
        teams.create_team(user, f"{name.split(' ')[0]}'s team", personal=True)
        db.session.commit()
        return user

    return make


@pytest.fixture
def make_team(app: Flask):  # type: ignore[no-untyped-def]
    """Factory: a committed team owned by ``owner``, with extra members as (user, role) pairs."""
    from starter import teams
    from starter.models import Membership

    def make(owner, name: str = "Acme", members=()):  # type: ignore[no-untyped-def]
        team = teams.create_team(owner, name)
        for user, role in members:
            db.session.add(Membership(team_id=team.id, user_id=user.id, role=role))
        db.session.commit()
        return team

    return make


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
