"""The ledger's two PL/pgSQL functions on PostgreSQL: what they read and write, and nothing they decide.

A spend, hold, capture or release on PostgreSQL is BEGIN, ``credit_open``, ``credit_write``, COMMIT: four
round trips, the statements inside planned once per connection. The rules (the spending order's use,
replay checks, limits, overage, alerts, auto-recharge) stay in Python in ``starter.credits``; SQLite runs
the same reads and writes as separate statements (``core._open_statement_by_statement`` and
``core._write_statement_by_statement``).

- ``credit_open`` locks the team's balance row, then reads (each statement with a snapshot of its own, so
  after waiting for the lock it sees what the previous holder committed) the id of the entry an earlier
  call with the idempotency key wrote (Python reads a repeat's entry whole), the first spendable blocks
  in the spending order (the partial index ``ix_credit_blocks_spendable`` serves it), and a hold with
  the blocks it reserves.
- ``credit_write`` applies what Python decided: a hold the change opens, the per-block changes, the
  cached balance (returning the team's alert thresholds), the entry, the day's usage, the entry's
  allocations, and a hold the change closes.

Migration 9a1f3c7d2b60 creates them; ``create_all`` (the tests' schema) creates them through the
metadata's ``after_create`` hook below, and ``tests/test_migrations.py`` checks the two agree. A change of
either function is a new migration.
"""

from __future__ import annotations

from sqlalchemy import DDL, MetaData, event

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
    SELECT e.id INTO r_id FROM ledger_entries AS e
    WHERE e.team_id = p_team_id AND e.idempotency_key = p_key;
    IF r_id IS NOT NULL THEN
        RETURN;
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
                WHERE c.team_id = p_team_id AND c.expired_at IS NULL AND c.remaining > c.held
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
    INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id, hold_id,
        feature, actor_type, actor_user_id, api_key_id, description, metadata, idempotency_key, request_hash,
        created_at)
    VALUES (p_team_id, p_kind, p_amount, p_held_delta, p_balance_after, p_held_after, p_block_id, o_hold_id,
        p_feature, p_actor_type, p_actor_user_id, p_api_key_id, p_description, p_metadata, p_key,
        p_request_hash, p_now)
    RETURNING id INTO o_entry_id;
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

FUNCTIONS = {"credit_open": CREDIT_OPEN, "credit_write": CREDIT_WRITE}


def register(metadata: MetaData) -> None:
    """Create the functions with the tables (PostgreSQL only)."""
    for sql in FUNCTIONS.values():
        event.listen(metadata, "after_create", DDL(sql).execute_if(dialect="postgresql"))
