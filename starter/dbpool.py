"""Dead pooled connections caught at checkout without a round trip per transaction.

``pool_pre_ping`` sends ``SELECT 1`` before every transaction: a round trip each time, on the spend path
too. Instead, on PostgreSQL, a connection taken from the pool is pinged only when

- it sat idle in the pool longer than ``DATABASE_PING_IDLE_SECONDS`` (a firewall or the server may
  have dropped it meanwhile without a word), or
- its socket is readable while it is idle: the server said something unasked, which is what a
  terminated backend (``pg_terminate_backend``, a restart, ``idle_session_timeout``) does before it
  closes. Checking that is one ``select()`` call on the socket, no traffic.

A failed ping raises ``DisconnectionError``, so the pool throws the connection away and hands out a
fresh one: the request never sees it. ``pool_recycle`` (``DATABASE_POOL_RECYCLE_SECONDS``) still
replaces every connection after a while. SQLite has no server and gets none of this.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

IDLE_SINCE = "starter_idle_since"


@dataclass
class Watch:
    """What the checkout check did on one engine (for tests and for anyone looking at a live app)."""

    pings: int = 0  # SELECT 1 sent: the connection was idle long, or the server spoke unasked
    replaced: int = 0  # pings that failed: the pool opened a new connection instead


def install(engine: Engine, ping_idle_seconds: float) -> Watch | None:
    if engine.dialect.name != "postgresql":
        return None
    watch = Watch()

    @event.listens_for(engine, "checkin")
    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(IDLE_SINCE, None)
        if since is None:  # just connected
            return
        if time.monotonic() - since > ping_idle_seconds or spoke_unasked(dbapi_connection):
            watch.pings += 1
            if not alive(dbapi_connection):
                watch.replaced += 1
                raise DisconnectionError("the pooled connection is gone; the pool opens a new one")

    return watch


def spoke_unasked(dbapi_connection: Any) -> bool:
    """Whether the server sent anything to a connection no one is using (no round trip: a poll)."""
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError):  # the socket is already closed
        return True
    return bool(readable)


def alive(dbapi_connection: Any) -> bool:
    """One ``SELECT 1`` (and the rollback that ends its implicit transaction)."""
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        dbapi_connection.rollback()
    except Exception:
        return False
    return True
