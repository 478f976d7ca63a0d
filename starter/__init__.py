"""Flask Credits Starter: ``create_app`` reads as the table of contents of the application."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from dotenv import load_dotenv
from flask import Flask, Request, g, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_login import current_user
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from . import config as settings
from . import dbpool, ratelimit
from .extensions import csrf, db, limiter, login_manager, migrate

MAX_ROW_ID = 2**63 - 1  # the largest BIGINT
API_PREFIX = "/api/"  # the JSON API: a key authenticates there, never a cookie


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


class SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions for pages; none for the JSON API.

    An API call is authenticated by its key alone, so its session cookie is not even read (no
    signature checked, no user loaded) and its answer sets no cookie and says no ``Vary: Cookie``.
    It gets an empty session that is never saved, so nothing that happens to look at it fails.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if request.path.startswith(API_PREFIX):
            return
        super().save_session(app, session, response)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment (``.env`` loaded), then ``config`` on top."""
    app = Flask(__name__, instance_relative_config=True)
    app.session_interface = SessionInterface()
    configure(app, config)
    trust_proxies(app)
    register_extensions(app)
    register_billing(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_error_handlers(app)
    register_template_helpers(app)
    register_commands(app)
    start_scheduler(app)
    return app


def configure(app: Flask, config: Mapping[str, Any] | None) -> None:
    # Before anything logs: otherwise Flask attaches its own handler first and lines print twice.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
    os.makedirs(app.instance_path, exist_ok=True)
    environment = settings.from_environment(app.instance_path)
    settings.follow_serving_address(environment, settings.serving_address())
    app.config.from_mapping(environment)
    if config:
        app.config.from_mapping(config)
    app.config["SQLALCHEMY_DATABASE_URI"] = settings.normalise_database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", settings.ratelimit_storage_options(app.config["RATELIMIT_STORAGE_URI"])
    )
    settings.check(app.config, instance_path=app.instance_path, debug=app.debug)


def trust_proxies(app: Flask) -> None:
    """Behind ``TRUSTED_PROXY_COUNT`` proxies, take the client's address, scheme and host from their headers.

    Without it every client behind a proxy has the proxy's address (one shared rate-limit bucket);
    with a count higher than the real number of proxies, a client could forge its address.
    """
    hops = app.config["TRUSTED_PROXY_COUNT"]
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def register_extensions(app: Flask) -> None:
    from . import models

    db.init_app(app)
    with app.app_context():
        app.extensions["dbpool"] = {
            bind: dbpool.install(engine, app.config["DATABASE_PING_IDLE_SECONDS"])
            for bind, engine in db.engines.items()
        }
    migrate.init_app(
        app,
        db,
        directory=os.path.join(os.path.dirname(app.root_path), "migrations"),
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copying them; Alembic's batch mode does that
    )
    csrf.init_app(app)
    limiter.init_app(app)
    ratelimit.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(login_token: str) -> models.User | None:
        from .accounts import user_for_login_token

        return user_for_login_token(login_token)

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            _make_sqlite_writers_queue(db.engine)


def register_billing(app: Flask) -> None:
    """Stripe, test mode or "not configured": chosen once, here."""
    from .billing import init_app

    init_app(app)


def _make_sqlite_writers_queue(engine: Any) -> None:
    """SQLite: every transaction takes the write lock up front and waits for it (busy timeout).

    Without this, two requests that read and then write fail with "database is locked"
    instead of queueing. PostgreSQL needs none of it: the ledger locks rows there.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; skips an fsync per commit
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class RowId(IntegerConverter):
    """``<id:name>`` in a route: a positive id that fits a BIGINT. A larger number typed into a URL is a
    404 like any unknown id, instead of an overflow in the database driver."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ROW_ID)


def register_blueprints(app: Flask) -> None:
    app.url_map.converters["id"] = RowId
    from .blueprints.account.views import bp as account_bp
    from .blueprints.admin.views import bp as admin_bp
    from .blueprints.api.views import bp as api_bp
    from .blueprints.auth.views import bp as auth_bp
    from .blueprints.billing.views import bp as billing_bp
    from .blueprints.dashboard.views import bp as dashboard_bp
    from .blueprints.main.views import bp as main_bp
    from .blueprints.payments.views import bp as payments_bp
    from .blueprints.teams.views import bp as teams_bp
    from .blueprints.usage.views import bp as usage_bp
    from .blueprints.webhooks.views import bp as webhooks_bp

    blueprints = (main_bp, auth_bp, account_bp, dashboard_bp, usage_bp, teams_bp, billing_bp, payments_bp, webhooks_bp)
    for blueprint in (*blueprints, admin_bp, api_bp):
        app.register_blueprint(blueprint)


def register_request_hooks(app: Flask) -> None:
    from .forms import refuse_control_characters
    from .teams import resolve_current_team

    app.before_request(refuse_control_characters)  # NUL and friends: a 400 before any view reads them

    @app.before_request
    def load_current_team() -> None:
        # Checked on every request: the team in the session must still be one of the user's.
        g.team, g.membership = (None, None)
        if not is_api_request() and current_user.is_authenticated:
            g.team, g.membership = resolve_current_team(current_user)

    @app.after_request
    def security_headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            # hooks.stripe.com: the 3-D Secure page an auto-recharge's confirmation redirects to.
            "form-action 'self' https://checkout.stripe.com https://billing.stripe.com https://hooks.stripe.com; "
            "frame-ancestors 'none'; base-uri 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.endpoint != "static" and not is_api_request() and current_user.is_authenticated:
            # Balances, keys, the CSV: nothing of a signed-in user stays in a shared cache or the back button.
            response.headers["Cache-Control"] = "no-store"
        return response


def register_error_handlers(app: Flask) -> None:
    from .errors import register

    register(app)


def register_template_helpers(app: Flask) -> None:
    from . import localtime
    from .billing import gateway as billing_gateway
    from .credits import history
    from .teams import user_teams

    @app.context_processor
    def inject_globals() -> dict[str, Any]:
        # A function, not a list: only pages that draw the navigation query it, so the 500 page
        # still renders when the database is what failed.
        return {
            "test_mode": billing_gateway.is_test_mode(),
            "user_teams": lambda: user_teams(current_user) if current_user.is_authenticated else [],
        }

    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions
    app.jinja_env.filters["credits"] = lambda n: f"{int(n or 0):,}"
    app.jinja_env.globals["actor_label"] = history.actor_label
    app.jinja_env.filters["money"] = lambda cents: f"${(cents or 0) / 100:,.2f}"
    localtime.register(app)


def register_commands(app: Flask) -> None:
    from .cli import register

    register(app)


def start_scheduler(app: Flask) -> None:
    """The monthly-credits jobs, in serving processes only: never in tests, CLI commands or the reloader's watcher."""
    from .scheduler import init_app

    init_app(app)
