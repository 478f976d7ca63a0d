"""The committed migrations build the schema of the models, on SQLite and PostgreSQL, and come back down."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from starter import create_app, ledger_functions
from starter.extensions import db

from .conftest import TEST_DATABASE_URL


def roundtrip(url: str) -> None:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False})
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            drift = compare_metadata(context, db.metadata)
            tables = set(inspect(connection).get_table_names())
        assert drift == [], f"models and migrations differ: {drift}"
        with db.engine.connect() as connection:
            assert partial_index_drift(connection) == []
            assert function_drift(connection) == []
        assert {table.name for table in db.metadata.sorted_tables} <= tables

        downgrade(revision="base")
        with db.engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
            if connection.dialect.name == "postgresql":
                assert ledger_function_definitions(connection) == {}
        db.engine.dispose()


def ledger_function_definitions(connection) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The ledger's functions as PostgreSQL keeps them (signature and body, in its own words)."""
    rows = connection.execute(
        text("SELECT proname, pg_get_functiondef(oid) FROM pg_proc WHERE proname = ANY(:names)"),
        {"names": list(ledger_functions.FUNCTIONS)},
    )
    return dict(rows.all())


def function_drift(connection) -> list[str]:  # type: ignore[no-untyped-def]
    """The migrations' functions against ``starter/ledger_functions.py`` (what ``create_all`` makes): the
    migrated definitions, then the app's replacing them in a transaction rolled back, compared."""
    if connection.dialect.name != "postgresql":
        return []
    migrated = ledger_function_definitions(connection)
    connection.rollback()  # end the autobegun read: the replacement below is rolled back on its own
    with connection.begin() as replacing:
        for sql in ledger_functions.FUNCTIONS.values():
            connection.exec_driver_sql(sql)
        current = ledger_function_definitions(connection)
        replacing.rollback()
    problems = [f"{name} is missing after the migrations" for name in current if name not in migrated]
    problems += [
        f"{name} differs from starter/ledger_functions.py"
        for name in current
        if migrated.get(name, current[name]) != current[name]
    ]
    return problems


def squeezed(sql: str) -> str:
    return "".join(ch for ch in sql.lower() if ch not in '() \n"')


def partial_index_drift(connection) -> list[str]:  # type: ignore[no-untyped-def]
    """Autogenerate does not compare a partial index's WHERE: the models' predicates, checked by hand."""
    dialect = connection.dialect.name
    problems = []
    for table in db.metadata.sorted_tables:
        for index in table.indexes:
            where = index.dialect_options[dialect].get("where")
            if where is None:
                continue
            if dialect == "postgresql":
                sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
            else:
                sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
            definition = connection.execute(text(sql), {"name": index.name}).scalar()
            if dialect == "sqlite":  # SQLite keeps the statement as written
                same = definition is not None and f"where{squeezed(str(where))}" in squeezed(definition)
            else:  # PostgreSQL rewrites it (IN becomes = ANY (ARRAY[...]), casts): the same columns, at least
                predicate = squeezed(definition or "").partition("where")[2]
                columns = [column.name for column in table.columns if column.name in str(where)]
                same = bool(predicate) and all(column in predicate for column in columns)
            if not same:
                problems.append(f"{index.name}: the models say WHERE {where}, the database has {definition}")
    return problems


def test_migrations_roundtrip_on_sqlite(tmp_path):
    roundtrip(f"sqlite:///{tmp_path / 'migrations.db'}")


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
def test_migrations_roundtrip_on_postgresql():
    name = "starter_migrations_check"
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        roundtrip(make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_the_stripe_fidelity_revision_keeps_every_row_and_carries_refunds_and_disputes_over(tmp_path):
    """Upgrading a database with data in it: SQLite's table copies must not cascade-delete a team's rows."""
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'data.db'}"})
    now = "2026-01-01 00:00:00"
    rows = [
        "INSERT INTO users (id, email, name, password_hash, session_token, is_site_admin, created_at)"
        f" VALUES (1, 'a@example.com', 'A', 'x', 't', 0, '{now}')",
        "INSERT INTO teams (id, name, slug, is_personal, created_at, plan_code, period_anchor, cancel_at_period_end,"
        f" stripe_customer_id) VALUES (1, 'T', 't', 1, '{now}', 'free', '{now}', 0, 'cus_1')",
        f"INSERT INTO memberships (id, team_id, user_id, role, created_at) VALUES (1, 1, 1, 'owner', '{now}')",
        f"INSERT INTO credit_balances (team_id, balance, held, updated_at) VALUES (1, 1100, 0, '{now}')",
        "INSERT INTO credit_blocks (id, team_id, source, amount, remaining, held, reference, created_at)"
        f" VALUES (1, 1, 'purchase', 2200, 1100, 0, 'cs_a', '{now}'), (2, 1, 'purchase', 2200, 0, 0, 'cs_b', '{now}')",
        "INSERT INTO ledger_entries (id, team_id, kind, amount, held_delta, balance_after, held_after, actor_type,"
        " description, metadata, idempotency_key, request_hash, created_at) VALUES"
        f" (1, 1, 'clawback', -1100, 0, 1100, 0, 'stripe', 'r', '{{}}', 'refund:ch_a:900', 'h', '{now}'),"
        f" (2, 1, 'clawback', -2200, 0, 1100, 0, 'stripe', 'd', '{{}}', 'dispute:dp_b', 'h', '{now}')",
        "INSERT INTO ledger_allocations (id, entry_id, block_id, amount, held_delta) VALUES (1, 1, 1, -1100, 0),"
        " (2, 2, 2, -2200, 0)",
        "INSERT INTO purchases (id, team_id, pack_code, credits, amount_cents, currency, stripe_checkout_session_id,"
        " stripe_payment_intent_id, status, refunded_cents, created_at, block_id) VALUES"
        f" (1, 1, 'medium', 2200, 1800, 'usd', 'cs_a', 'pi_a', 'partially_refunded', 900, '{now}', 1),"
        f" (2, 1, 'medium', 2200, 1800, 'usd', 'cs_b', 'pi_b', 'disputed', 0, '{now}', 2)",
    ]
    with app.app_context():
        upgrade(revision="a4049e3fafa9")
        with db.engine.begin() as connection:
            for statement in rows:
                connection.execute(text(statement))
        upgrade()
        with db.engine.connect() as connection:
            count = {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in
                     ("memberships", "credit_balances", "credit_blocks", "ledger_entries", "purchases")}  # fmt: skip
            reversals = connection.execute(
                text("SELECT payment_intent, kind, amount_cents, funds_withdrawn FROM payment_reversals ORDER BY id")
            ).all()
            figures = connection.execute(text("SELECT clawback_target, clawed_back FROM purchases ORDER BY id")).all()
        db.engine.dispose()
    assert count == {"memberships": 1, "credit_balances": 1, "credit_blocks": 2, "ledger_entries": 2, "purchases": 2}
    assert [tuple(r) for r in reversals] == [("pi_a", "refund", 900, False), ("pi_b", "dispute", 1800, True)]
    assert [tuple(f) for f in figures] == [(1100, 1100), (2200, 2200)]
