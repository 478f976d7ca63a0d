"""The monthly job's batch on PostgreSQL as one statement: expiries, grants, balances and periods.

``rollover.roll_over_free_teams`` and ``rollover.expire_due_blocks`` lock a batch's rows (teams,
then balances) and send this statement with the locked team ids; the database computes and writes
every row the per-team path would (``plans.roll_over_team``: ``credits.expire_block`` per due block,
then ``plans.start_free_period``), so no row of the batch passes through Python. SQLite runs the
same rules in Python (``rollover._LedgerBatch``); ``tests/test_scheduler.py`` holds both to the
per-team path, row by row, and pins the SQL forms of the rules below to their Python originals.

What it mirrors, rule by rule:

- the period containing now (``periods.period_containing``): months from the anchor, clamped to
  short months: PostgreSQL's ``timestamp + n months`` clamps the day exactly as ``add_months``;
- the plan grant key (``rules.plan_grant_key``) and the fingerprints (``core.fingerprint_of``: the
  SHA-256 of ``json.dumps(sort_keys=True, default=str)``), written out for the two operations here;
- each team's entries in the per-team order (its due blocks by expiry then id, then the grant), the
  running balance after each, one allocation per entry, the balance row moved by their sum;
- the low-balance alerts: a team's batch is one change (``credits.one_change``), from the credits
  available before it to after it; the teams whose credits fell come back to Python with their
  thresholds and newest entry, and ``core.alert_if_crossed`` decides.

A team that already holds a plan block for the period moves on without a second grant (the unique
(team, source, period start) constraint backs it); blocks with held credits never reach it (the
caller expires them through ``credits.expire_block`` first).
"""

from __future__ import annotations

from sqlalchemy import text


def _iso(utc: str, separator: str = "T") -> str:
    """SQL for Python's ``isoformat()`` (or ``str()`` with a space) of an aware UTC datetime.

    ``utc`` is a ``timestamp`` (without time zone) holding UTC; microseconds appear only when nonzero.
    """
    return (
        f"(to_char({utc}, 'YYYY-MM-DD\"{separator}\"HH24:MI:SS') "
        f"|| CASE WHEN to_char({utc}, 'US') = '000000' THEN '' ELSE '.' || to_char({utc}, 'US') END || '+00:00')"
    )


def _sha256(json_text: str) -> str:
    return f"encode(sha256(convert_to({json_text}, 'UTF8')), 'hex')"


# fingerprint_of("expire", block_id=…) and fingerprint_of("grant", amount=…, source="plan", expires_at=…,
# period_start=…, reference=None): keys sorted, json.dumps's separators, datetimes as str().
_EXPIRE_FINGERPRINT = _sha256("""'{"block_id": ' || due.id || ', "op": "expire"}'""")
_GRANT_FINGERPRINT = _sha256(
    """'{"amount": ' || CAST(:credits AS bigint) || ', "expires_at": '"""
    f""" || CASE WHEN :rollover THEN 'null' ELSE '"' || {_iso("g.end_utc", " ")} || '"' END"""
    f""" || ', "op": "grant", "period_start": "' || {_iso("g.start_utc", " ")}"""
    """ || '", "reference": null, "source": "plan"}'"""
)

BATCH_SQL = text(
    f"""
WITH accounts AS (
    SELECT team_id, balance, held, alert_levels FROM credit_balances
    WHERE team_id = ANY(CAST(:team_ids AS bigint[]))
), anchors AS (
    -- roll_over: the teams move to the period containing now; else only their due blocks expire.
    SELECT t.id AS team_id, t.is_personal, t.period_anchor AT TIME ZONE 'UTC' AS anchor,
           CAST(:now AS timestamptz) AT TIME ZONE 'UTC' AS now_utc
    FROM teams AS t JOIN accounts AS a ON a.team_id = t.id
    WHERE CAST(:roll_over AS boolean)
), months AS (
    SELECT a.*, CASE
        WHEN a.now_utc < a.anchor THEN 0
        WHEN a.anchor + m.n * interval '1 month' > a.now_utc THEN m.n - 1
        ELSE m.n
    END AS n
    FROM anchors AS a, LATERAL (
        SELECT CAST((extract(year FROM a.now_utc) - extract(year FROM a.anchor)) * 12
                    + extract(month FROM a.now_utc) - extract(month FROM a.anchor) AS integer) AS n
    ) AS m
), periods AS (
    SELECT team_id, is_personal, anchor + n * interval '1 month' AS start_utc,
           anchor + (n + 1) * interval '1 month' AS end_utc
    FROM months
), grants AS (
    SELECT p.*, p.start_utc AT TIME ZONE 'UTC' AS start_at, p.end_utc AT TIME ZONE 'UTC' AS end_at
    FROM periods AS p
    WHERE p.is_personal AND CAST(:credits AS bigint) > 0 AND NOT EXISTS (
        SELECT 1 FROM credit_blocks AS k
        WHERE k.team_id = p.team_id AND k.source = 'plan' AND k.period_start = p.start_utc AT TIME ZONE 'UTC'
    )
), due AS (
    SELECT k.id, k.team_id, k.source, k.remaining, k.expires_at,
           row_number() OVER (PARTITION BY k.team_id ORDER BY k.expires_at, k.id) AS n
    FROM credit_blocks AS k
    WHERE k.team_id = ANY(CAST(:team_ids AS bigint[])) AND k.expired_at IS NULL AND k.expires_at <= :now
), closed AS (
    UPDATE credit_blocks AS k SET remaining = 0, expired_at = :now FROM due WHERE k.id = due.id
), new_blocks AS (
    INSERT INTO credit_blocks (team_id, source, amount, remaining, held, expires_at, period_start, created_at)
    SELECT team_id, 'plan', :credits, :credits, 0, CASE WHEN :rollover THEN NULL ELSE end_at END, start_at, :now
    FROM grants ORDER BY team_id
    RETURNING id, team_id
), changes AS (
    -- Every entry of the batch, in the per-team order, with the team's running change after it.
    SELECT x.*, sum(x.amount) OVER (PARTITION BY x.team_id ORDER BY x.n) AS change
    FROM (
        SELECT due.team_id, due.n, 'expire' AS kind, -due.remaining AS amount, due.id AS block_id,
               'expire:block:' || due.id AS key, {_EXPIRE_FINGERPRINT} AS fingerprint,
               'Credits expired' AS description,
               json_build_object('source', due.source, 'expires_at', {_iso("due.expires_at AT TIME ZONE 'UTC'")})
                   AS meta
        FROM due WHERE due.remaining > 0
        UNION ALL
        SELECT g.team_id, 2147483647, 'grant', :credits, b.id, 'plan:' || g.team_id || ':' || {_iso("g.start_utc")},
               {_GRANT_FINGERPRINT}, :description,
               json_build_object('plan', CAST(:plan_code AS text), 'period_start', {_iso("g.start_utc")},
                                 'period_end', {_iso("g.end_utc")})
        FROM grants AS g JOIN new_blocks AS b ON b.team_id = g.team_id
    ) AS x
), entries AS (
    INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id,
                                actor_type, description, metadata, idempotency_key, request_hash, created_at)
    SELECT c.team_id, c.kind, c.amount, 0, a.balance + c.change, a.held, c.block_id, 'system', c.description,
           c.meta, c.key, c.fingerprint, :now
    FROM changes AS c JOIN accounts AS a ON a.team_id = c.team_id
    ORDER BY c.team_id, c.n  -- ids in this order: a team's newest entry states its new balance
    RETURNING id, team_id, block_id, amount
), allocated AS (
    INSERT INTO ledger_allocations (entry_id, block_id, amount, held_delta)
    SELECT id, block_id, amount, 0 FROM entries
), totals AS (
    SELECT team_id, sum(amount) AS change, max(id) AS newest FROM entries GROUP BY team_id
), moved AS (
    UPDATE credit_balances AS b SET balance = b.balance + t.change, updated_at = :now
    FROM totals AS t WHERE b.team_id = t.team_id
), rolled AS (
    UPDATE teams AS t SET current_period_start = p.start_utc AT TIME ZONE 'UTC',
                          current_period_end = p.end_utc AT TIME ZONE 'UTC'
    FROM periods AS p WHERE t.id = p.team_id
)
SELECT
    (SELECT count(*) FROM periods) AS teams,
    (SELECT count(*) FROM grants) AS grants,
    (SELECT count(*) FROM due) AS blocks_expired,
    (SELECT CAST(coalesce(sum(remaining), 0) AS bigint) FROM due) AS credits_expired,
    (SELECT json_agg(json_build_array(a.team_id, a.alert_levels, a.balance - a.held,
                                      a.balance + t.change - a.held, t.newest) ORDER BY a.team_id)
     FROM totals AS t JOIN accounts AS a ON a.team_id = t.team_id WHERE t.change < 0) AS fallen
"""  # noqa: S608 (the fragments are constants of this module; every value is a bound parameter)
)
