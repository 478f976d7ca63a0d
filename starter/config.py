"""Settings from the environment, in one place.

Every variable read here is documented in ``.env.example``. ``create_app(config)`` applies a mapping
on top, which is how tests and scripts override a setting.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask.helpers import get_debug_flag

# Only ever used under `flask run --debug` or in tests; any other process refuses to start without SECRET_KEY.
DEV_SECRET_KEY = "dev-only-change-me"  # noqa: S105
FLASK_RUN = "FLASK_RUN_FROM_CLI"  # set by `flask run`, not by gunicorn
RELOADER_CHILD = "WERKZEUG_RUN_MAIN"  # set in the serving child of `flask run --debug`, not in its watcher
WEBHOOK_SECRET_FILE = "test_mode_webhook_secret"  # noqa: S105 - a file name
DEFAULT_BASE_URL = "http://127.0.0.1:5000"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}  # noqa: S104 - names compared, nothing bound
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}  # noqa: S104

log = logging.getLogger("starter")


class ConfigurationError(RuntimeError):
    """A setting is missing or unsafe: the app refuses to start rather than run with a default anyone knows."""


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def database_url(instance_path: str) -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    return normalise_database_url(url) if url else f"sqlite:///{Path(instance_path) / 'starter.db'}"


def normalise_database_url(url: str) -> str:
    """Plain PostgreSQL URLs use psycopg2 (SQLAlchemy 2.1 would pick psycopg 3); postgres:// is accepted."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def ratelimit_storage_options(storage_uri: str) -> dict:
    """Redis: give up on a connection within a second, so an unreachable Redis (dropped packets, not
    just a refused port) costs a request a second before the in-memory fallback, not a hang."""
    if storage_uri.startswith(("redis://", "rediss://", "redis+unix://")):
        return {"socket_connect_timeout": 1, "socket_timeout": 1}
    return {}


def from_environment(instance_path: str) -> dict:
    """Read the settings the app needs; pure, so tests can call it with a patched environment."""
    stripe_key = os.environ.get("STRIPE_SECRET_KEY", "").strip()
    return {
        "APP_NAME": os.environ.get("APP_NAME", "Credits Starter"),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or None,
        # Unset: under `flask run`, the address it serves on (follow_serving_address); else DEFAULT_BASE_URL.
        "BASE_URL": (os.environ.get("BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/"),
        "BASE_URL_SET": bool(os.environ.get("BASE_URL", "").strip()),
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        # No pool_pre_ping (a round trip per transaction): starter/dbpool.py pings only a connection that
        # was idle longer than DATABASE_PING_IDLE_SECONDS or that the server spoke to, and the pool
        # replaces every connection after DATABASE_POOL_RECYCLE_SECONDS.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_recycle": _int("DATABASE_POOL_RECYCLE_SECONDS", 1800)},
        "DATABASE_PING_IDLE_SECONDS": _int("DATABASE_PING_IDLE_SECONDS", 30),
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", "").strip() or None,
        "STRIPE_API_BASE": os.environ.get("STRIPE_API_BASE", "").strip() or None,
        # The built-in test checkout is an explicit opt-in: a forgotten key must never mean free credits.
        "BILLING_TEST_MODE": _bool("BILLING_TEST_MODE", False),
        "SCHEDULER_ENABLED": _bool("SCHEDULER_ENABLED", True),
        "SCHEDULER_ROLLOVER_SECONDS": _int("SCHEDULER_ROLLOVER_SECONDS", 300),
        "SCHEDULER_HOLDS_SECONDS": _int("SCHEDULER_HOLDS_SECONDS", 60),
        "SCHEDULER_BATCH_SIZE": _int("SCHEDULER_BATCH_SIZE", 500),
        "PAID_PERIOD_GRACE_HOURS": _int("PAID_PERIOD_GRACE_HOURS", 24),
        # Auto-recharge (docs/billing.md): how often the job pays due recharges, the waits after the 1st, 2nd, …
        # decline, how many declines in a row turn it off, and when a "processing" attempt counts as stalled.
        "SCHEDULER_RECHARGE_SECONDS": _int("SCHEDULER_RECHARGE_SECONDS", 30),
        "AUTO_RECHARGE_BACKOFF_SECONDS": tuple(
            int(step)
            for step in os.environ.get("AUTO_RECHARGE_BACKOFF_SECONDS", "3600,21600").split(",")
            if step.strip()
        ),
        "AUTO_RECHARGE_MAX_FAILURES": _int("AUTO_RECHARGE_MAX_FAILURES", 3),
        "AUTO_RECHARGE_STALE_SECONDS": _int("AUTO_RECHARGE_STALE_SECONDS", 600),
        "AUTO_RECHARGE_ACTION_HOURS": _int("AUTO_RECHARGE_ACTION_HOURS", 72),  # to confirm a 3-D Secure payment
        "LOW_BALANCE_THRESHOLD": _int("LOW_BALANCE_THRESHOLD", 50),
        "HOLD_TTL_SECONDS": _int("HOLD_TTL_SECONDS", 900),
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", "").strip() or None,
        "MAIL_PORT": _int("MAIL_PORT", 587),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME") or None,
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD") or None,
        "MAIL_USE_TLS": _bool("MAIL_USE_TLS", True),
        "MAIL_DEFAULT_SENDER": os.environ.get("MAIL_DEFAULT_SENDER", "Credits Starter <noreply@localhost>"),
        # The outbox: how often the scheduler delivers, how long one SMTP call may take, the first retry
        # delay (doubling each time) and how many attempts before a message is marked failed.
        "MAIL_OUTBOX_SECONDS": _int("MAIL_OUTBOX_SECONDS", 15),
        "MAIL_TIMEOUT": _int("MAIL_TIMEOUT", 10),
        "MAIL_RETRY_SECONDS": _int("MAIL_RETRY_SECONDS", 60),
        "MAIL_MAX_ATTEMPTS": _int("MAIL_MAX_ATTEMPTS", 8),
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        # Keeps apps (or test runs) that share one Redis from counting into each other's limits.
        "RATELIMIT_KEY_PREFIX": os.environ.get("RATELIMIT_KEY_PREFIX", ""),
        # A Redis outage degrades to per-process counting and a logged warning, never a 500 per request.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_ENABLED": _bool("RATELIMIT_ENABLED", True),
        "RATELIMIT_HEADERS_ENABLED": True,
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT", "10 per minute;50 per hour"),
        "API_RATE_LIMIT": os.environ.get("API_RATE_LIMIT", "120 per minute"),
        "INVITATION_RATE_LIMIT": os.environ.get("INVITATION_RATE_LIMIT", "20 per hour;100 per day"),
        "PASSWORD_HASH_METHOD": "scrypt",
        # The account page (/account): its forms that check the password, per person; and its confirmation
        # links, each a mail to an address the person typed (per person too), valid EMAIL_CHANGE_MAX_AGE seconds.
        "ACCOUNT_RATE_LIMIT": os.environ.get("ACCOUNT_RATE_LIMIT", "10 per minute;30 per hour"),
        "EMAIL_CHANGE_RATE_LIMIT": os.environ.get("EMAIL_CHANGE_RATE_LIMIT", "5 per hour;20 per day"),
        "EMAIL_CHANGE_MAX_AGE": _int("EMAIL_CHANGE_MAX_AGE", 86400),
        "PASSWORD_RESET_MAX_AGE": _int("PASSWORD_RESET_MAX_AGE", 3600),
        "INVITATION_MAX_AGE_DAYS": _int("INVITATION_MAX_AGE_DAYS", 7),
        "INVITATIONS_PER_TEAM_PER_DAY": _int("INVITATIONS_PER_TEAM_PER_DAY", 50),
        "INVITATIONS_PER_USER_PER_DAY": _int("INVITATIONS_PER_USER_PER_DAY", 20),
        # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host are believed (0: none).
        "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 0),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
        "SQLALCHEMY_RECORD_QUERIES": False,
        "MAX_CONTENT_LENGTH": 1024 * 1024,  # webhook bodies and forms are far smaller
        # Configured Stripe prices override the catalog's inline price_data: STRIPE_PRICE_PACK_SMALL=price_…
        **{name: value for name, value in os.environ.items() if name.startswith("STRIPE_PRICE_") and value},
    }


def serving_address() -> tuple[str, str, int] | None:
    """(scheme, host, port) that ``flask run`` serves on, from its command line; None in any other process."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run":
        return None
    host, port = ctx.params.get("host"), ctx.params.get("port")
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    return ("https" if ctx.params.get("cert") else "http"), host, port


def _is_reloader_watcher() -> bool:
    # `flask run --debug` starts a watcher that only restarts the serving child: one warning, from the child.
    ctx = click.get_current_context(silent=True)
    reload = ctx.params.get("reload") if ctx is not None else None
    reloading = get_debug_flag() if reload is None else bool(reload)
    return reloading and os.environ.get(RELOADER_CHILD) != "true"


def url_for_address(scheme: str, host: str, port: int) -> str:
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"{scheme}://[{shown}]:{port}" if ":" in shown else f"{scheme}://{shown}:{port}"


def address_mismatch(base_url: str, scheme: str, host: str, port: int) -> str | None:
    """Why links on ``base_url`` would miss a server on (scheme, host, port); None when they reach it.

    Only a local ``base_url`` is judged: a public one may be a proxy that forwards here. A different
    local name (localhost against 127.0.0.1) counts too: the browser keeps another cookie jar for it,
    so coming back from Checkout would find no session.
    """
    parts = urlsplit(base_url)
    try:
        base_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"BASE_URL={base_url} has no valid port"
    base_host = parts.hostname or ""
    if base_host not in LOCAL_HOSTS and base_host != host:
        return None
    if base_port != port or parts.scheme != scheme or (host not in WILDCARD_HOSTS and base_host != host):
        return f"BASE_URL={base_url}, but this server listens on {url_for_address(scheme, host, port)}"
    return None


def follow_serving_address(config: dict, address: tuple[str, str, int] | None) -> None:
    """Under ``flask run``: an unset BASE_URL becomes the address it serves on, so email links and
    Stripe's return URLs come back to this server (``make run PORT=5001`` included); a set one that
    misses it is logged as a warning at start. Mutates ``config``; does nothing elsewhere."""
    if address is None:
        return
    if not config.get("BASE_URL_SET"):
        config["BASE_URL"] = url_for_address(*address)
        return
    problem = address_mismatch(config["BASE_URL"], *address)
    if problem and not _is_reloader_watcher():
        log.warning(
            "%s: links in emails and Stripe's return URLs will not come back here. "
            "Unset BASE_URL (it then follows the served address) or make it match.",
            problem,
        )


def check(config: dict, *, instance_path: str, debug: bool) -> None:
    """Fail closed: refuse to start on a missing secret, and give test mode a secret of its own.

    Mutates ``config``: the development key under debug or tests, the per-instance webhook secret
    in test mode. Raises ``ConfigurationError`` naming the setting otherwise.
    """
    # The development key only for tests and the interactive `flask run --debug`: FLASK_DEBUG=1 under
    # gunicorn or in compose must not quietly sign sessions with a key printed in the source.
    development = bool(config.get("TESTING")) or (debug and os.environ.get(FLASK_RUN) == "true")
    if not config.get("SECRET_KEY") or config["SECRET_KEY"] == DEV_SECRET_KEY:
        if not development:
            raise ConfigurationError(
                "SECRET_KEY is not set (or is the development key): set a long random value (make run writes one)."
            )
        config["SECRET_KEY"] = DEV_SECRET_KEY
    if config.get("STRIPE_SECRET_KEY"):
        if not config.get("STRIPE_WEBHOOK_SECRET"):
            raise ConfigurationError(
                "STRIPE_WEBHOOK_SECRET is not set: with STRIPE_SECRET_KEY set, webhooks must be verified "
                "with your endpoint's signing secret (whsec_…)."
            )
    elif config.get("BILLING_TEST_MODE") and not config.get("STRIPE_WEBHOOK_SECRET"):
        config["STRIPE_WEBHOOK_SECRET"] = instance_webhook_secret(instance_path)


def instance_webhook_secret(instance_path: str) -> str:
    """Test mode's webhook secret: random, made once per instance and kept in ``instance/``, never public."""
    path = Path(instance_path) / WEBHOOK_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(secret)
    except FileExistsError:  # another worker wrote it first: use theirs
        return path.read_text().strip()
    return secret
