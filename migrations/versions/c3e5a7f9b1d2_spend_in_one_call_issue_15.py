"""a spend in one call, and block updates that stay HOT (issue 15)

- ``credit_spend``: a debit (a spend, or an admin's negative adjustment) by an actor without a spend
  limit, decided and written in one call under the team's lock: ``credit_open`` without the key
  lookup, the draw from the first spendable blocks in the spending order, ``credit_write``. A spend is
  then three round trips (BEGIN, the call, COMMIT). When the first blocks do not cover the amount it
  writes nothing and says ``short``: the ledger takes the general way, which decides on overage or
  refuses.
- ``credit_write`` inserts the entry first, ``ON CONFLICT (team_id, idempotency_key) DO NOTHING``: an
  earlier change with the key means nothing is written and no entry id comes back. That insert is
  ``credit_spend``'s idempotency check, served by the unique index whatever the planner's statistics
  say. ``credit_open`` looks the key up only when given one (the general way always gives it).
- ``spendable``, a stored generated column (``remaining > held``), and the spendable index's predicate
  on PostgreSQL reading it instead of ``remaining > held``. A column an index's predicate reads is one
  PostgreSQL checks on every UPDATE, so no change of a block's ``remaining`` or ``held`` could be a HOT
  update: each one put new entries into every index of ``credit_blocks`` and left dead ones behind
  until VACUUM. ``spendable`` changes only when a block runs out or comes back. SQLite keeps its
  predicate (it has no HOT updates); the column is added there for the model's sake.

On PostgreSQL adding a stored generated column rewrites ``credit_blocks`` under an exclusive lock and
the index is rebuilt without CONCURRENTLY: on a big ledger, run it when a short pause of spends is
acceptable.

The functions as they are at this revision (``starter/ledger_functions.py`` holds the current text;
tests/test_migrations.py checks the head of the migrations agrees with it). Downgrading restores the
functions revision 9a1f3c7d2b60 created, from that revision's file.

Revision ID: c3e5a7f9b1d2
Revises: b7c4e2a91d05
Create Date: 2026-12-03 15:10:00.000000

"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c3e5a7f9b1d2"
down_revision = "b7c4e2a91d05"
branch_labels = None
depends_on = None

INDEX_COLUMNS = ["team_id", "expires_at", "created_at", "id"]
OLD_PREDICATE = "expired_at IS NULL AND remaining > held"
NEW_PREDICATE = "expired_at IS NULL AND spendable"

CREDIT_OPEN = """
CREATE OR REPLACE FUNCTION credit_open(
    p_team_id bigint, p_key varchar, p_now timestamptz, p_batch integer, p_hold_id bigint,
    OUT o_account boolean, OUT o_balance bigint, OUT o_held bigint, OUT o_recharge_below bigint,
    OUT r_id bigint,
    OUT b_ids bigint[], OUT b_remaining bigint[], OUT b_held bigint[], OUT b_expires_at timestamptz[],
    OUT h_id bigint, OUT h_amount bigint, OUT h_status varchar, OUT h_feature varchar,
    OUT h_description varchar, OUT h_expires_at timestamptz, OUT h_blocks bigint[], OUT h_held bigint[]
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT b.balance, b.held, b.recharge_below INTO o_balance, o_held, o_recharge_below
    FROM credit_balances AS b WHERE b.team_id = p_team_id FOR UPDATE;
    o_account := FOUND;
    IF NOT o_account THEN
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT e.id INTO r_id FROM ledger_entries AS e
        WHERE e.team_id = p_team_id AND e.idempotency_key = p_key;
        IF r_id IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    IF p_batch IS NULL OR p_batch > 0 THEN
        SELECT array_agg(s.id ORDER BY s.n), array_agg(s.remaining ORDER BY s.n),
               array_agg(s.held ORDER BY s.n), array_agg(s.expires_at ORDER BY s.n)
        INTO b_ids, b_remaining, b_held, b_expires_at
        FROM (
            SELECT k.id, k.remaining, k.held, k.expires_at,
                   row_number() OVER (ORDER BY k.expires_at ASC NULLS LAST, k.created_at, k.id) AS n
            FROM (
                SELECT c.id, c.remaining, c.held, c.expires_at, c.created_at FROM credit_blocks AS c
                WHERE c.team_id = p_team_id AND c.expired_at IS NULL AND c.spendable
                  AND (c.expires_at IS NULL OR c.expires_at > p_now)
                ORDER BY c.expires_at ASC NULLS LAST, c.created_at, c.id
                LIMIT p_batch
            ) AS k
        ) AS s;
    END IF;
    IF p_hold_id IS NOT NULL THEN
        SELECT h.id, h.amount, h.status, h.feature, h.description, h.expires_at
        INTO h_id, h_amount, h_status, h_feature, h_description, h_expires_at
        FROM holds AS h WHERE h.id = p_hold_id AND h.team_id = p_team_id;
        IF h_id IS NOT NULL THEN
            SELECT array_agg(a.block_id ORDER BY a.id), array_agg(a.held_delta ORDER BY a.id)
            INTO h_blocks, h_held
            FROM ledger_allocations AS a JOIN ledger_entries AS e ON e.id = a.entry_id
            WHERE e.hold_id = p_hold_id AND e.kind = 'hold';
        END IF;
    END IF;
END
$$
"""

CREDIT_WRITE = """
CREATE OR REPLACE FUNCTION credit_write(
    p_team_id bigint, p_kind varchar, p_amount bigint, p_held_delta bigint, p_balance_after bigint,
    p_held_after bigint, p_block_id bigint, p_hold_id bigint, p_feature varchar, p_actor_type varchar,
    p_actor_user_id bigint, p_api_key_id bigint, p_description varchar, p_metadata json, p_key varchar,
    p_request_hash varchar, p_now timestamptz,
    p_block_ids bigint[], p_d_remaining bigint[], p_d_held bigint[],
    p_usage_day date, p_usage_feature varchar, p_usage_credits bigint,
    p_open_hold_amount bigint, p_open_hold_description varchar, p_open_hold_expires_at timestamptz,
    p_close_hold_status varchar, p_close_hold_captured bigint,
    OUT o_entry_id bigint, OUT o_hold_id bigint, OUT o_alert_levels json
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    o_hold_id := p_hold_id;
    IF p_open_hold_amount IS NOT NULL THEN
        INSERT INTO holds (team_id, amount, status, feature, description, expires_at, created_at)
        VALUES (p_team_id, p_open_hold_amount, 'active', p_feature, p_open_hold_description,
                p_open_hold_expires_at, p_now)
        RETURNING id INTO o_hold_id;
    END IF;
    -- The entry first: if an earlier change wrote this idempotency key, nothing is written (o_entry_id NULL).
    INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id, hold_id,
        feature, actor_type, actor_user_id, api_key_id, description, metadata, idempotency_key, request_hash,
        created_at)
    VALUES (p_team_id, p_kind, p_amount, p_held_delta, p_balance_after, p_held_after, p_block_id, o_hold_id,
        p_feature, p_actor_type, p_actor_user_id, p_api_key_id, p_description, p_metadata, p_key,
        p_request_hash, p_now)
    ON CONFLICT (team_id, idempotency_key) DO NOTHING
    RETURNING id INTO o_entry_id;
    IF o_entry_id IS NULL THEN
        DELETE FROM holds WHERE id = o_hold_id AND p_open_hold_amount IS NOT NULL;
        RETURN;
    END IF;
    UPDATE credit_blocks AS b SET remaining = b.remaining + c.d_remaining, held = b.held + c.d_held
    FROM (
        SELECT u.block_id, CAST(sum(u.d_remaining) AS bigint) AS d_remaining, CAST(sum(u.d_held) AS bigint) AS d_held
        FROM unnest(p_block_ids, p_d_remaining, p_d_held) AS u(block_id, d_remaining, d_held)
        GROUP BY u.block_id
    ) AS c
    WHERE b.id = c.block_id AND (c.d_remaining <> 0 OR c.d_held <> 0);
    UPDATE credit_balances SET balance = p_balance_after, held = p_held_after, updated_at = p_now
    WHERE team_id = p_team_id
    RETURNING alert_levels INTO o_alert_levels;
    IF p_usage_credits IS NOT NULL THEN
        INSERT INTO usage_days (team_id, day, feature, credits)
        VALUES (p_team_id, p_usage_day, p_usage_feature, p_usage_credits)
        ON CONFLICT (team_id, day, feature) DO UPDATE SET credits = usage_days.credits + EXCLUDED.credits;
    END IF;
    INSERT INTO ledger_allocations (entry_id, block_id, amount, held_delta)
    SELECT o_entry_id, u.block_id, u.d_remaining, u.d_held
    FROM unnest(p_block_ids, p_d_remaining, p_d_held) WITH ORDINALITY AS u(block_id, d_remaining, d_held, n)
    ORDER BY u.n;
    IF p_close_hold_status IS NOT NULL THEN
        UPDATE holds SET status = p_close_hold_status, closed_at = p_now,
            captured_amount = COALESCE(p_close_hold_captured, captured_amount)
        WHERE id = o_hold_id;
    END IF;
END
$$
"""

CREDIT_SPEND = """
CREATE OR REPLACE FUNCTION credit_spend(
    p_team_id bigint, p_kind varchar, p_amount bigint, p_batch integer, p_feature varchar, p_actor_type varchar,
    p_actor_user_id bigint, p_api_key_id bigint, p_description varchar, p_metadata json, p_key varchar,
    p_request_hash varchar, p_now timestamptz, p_usage_day date, p_usage_feature varchar, p_usage_credits bigint,
    OUT o_status varchar, OUT o_balance bigint, OUT o_held bigint, OUT o_recharge_below bigint,
    OUT o_entry_id bigint, OUT o_block_id bigint, OUT o_alert_levels json
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    opened record;
    v_left bigint := p_amount;
    v_take bigint;
    v_ids bigint[] := '{}';
    v_deltas bigint[] := '{}';
    v_zeros bigint[] := '{}';
BEGIN
    -- No key given to credit_open: credit_write's insert of the entry is the idempotency check.
    SELECT * INTO opened FROM credit_open(p_team_id, NULL, p_now, p_batch, NULL);
    o_balance := opened.o_balance;
    o_held := opened.o_held;
    o_recharge_below := opened.o_recharge_below;
    IF NOT opened.o_account THEN
        o_status := 'no account';
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(opened.b_ids, 1), 0) LOOP
        EXIT WHEN v_left = 0;
        v_take := least(v_left, opened.b_remaining[i] - opened.b_held[i]);
        v_ids := v_ids || opened.b_ids[i];
        v_deltas := v_deltas || -v_take;
        v_zeros := v_zeros || 0::bigint;
        v_left := v_left - v_take;
    END LOOP;
    IF v_left > 0 THEN
        o_status := 'short';
        RETURN;
    END IF;
    SELECT w.o_entry_id, w.o_alert_levels INTO o_entry_id, o_alert_levels
    FROM credit_write(p_team_id, p_kind, -p_amount, 0, o_balance - p_amount, o_held, v_ids[1], NULL, p_feature,
        p_actor_type, p_actor_user_id, p_api_key_id, p_description, p_metadata, p_key, p_request_hash, p_now,
        v_ids, v_deltas, v_zeros, p_usage_day, p_usage_feature, p_usage_credits, NULL, NULL, NULL, NULL, NULL) AS w;
    o_block_id := v_ids[1];
    o_status := CASE WHEN o_entry_id IS NULL THEN 'repeat' ELSE 'spent' END;
END
$$
"""


def spendable_column() -> sa.Column:
    return sa.Column("spendable", sa.Boolean(), sa.Computed("remaining > held", persisted=True))


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        # SQLite adds a stored generated column only by copying the table.
        with op.batch_alter_table("credit_blocks", recreate="always") as batch_op:
            batch_op.add_column(spendable_column())
        return
    op.add_column("credit_blocks", spendable_column())
    op.drop_index("ix_credit_blocks_spendable", table_name="credit_blocks")
    op.create_index(
        "ix_credit_blocks_spendable", "credit_blocks", INDEX_COLUMNS, postgresql_where=sa.text(NEW_PREDICATE)
    )
    op.execute(CREDIT_OPEN)
    op.execute(CREDIT_WRITE)
    op.execute(CREDIT_SPEND)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("credit_blocks", recreate="always") as batch_op:
            batch_op.drop_column("spendable")
        return
    previous = earlier_revision("9a1f3c7d2b60_ledger_functions_issue_15.py")
    op.execute("DROP FUNCTION credit_spend")
    op.execute("DROP FUNCTION credit_write")
    op.execute("DROP FUNCTION credit_open")
    op.execute(previous.CREDIT_OPEN)
    op.execute(previous.CREDIT_WRITE)
    op.drop_index("ix_credit_blocks_spendable", table_name="credit_blocks")
    op.create_index(
        "ix_credit_blocks_spendable", "credit_blocks", INDEX_COLUMNS, postgresql_where=sa.text(OLD_PREDICATE)
    )
    op.drop_column("credit_blocks", "spendable")


def earlier_revision(filename: str):  # type: ignore[no-untyped-def]
    """The module of an earlier revision in this directory, for the functions it created."""
    spec = importlib.util.spec_from_file_location(f"revision_{filename[:12]}", Path(__file__).with_name(filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
