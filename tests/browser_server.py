"""The real app served over HTTP on 127.0.0.1 for the browser tests, in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask
from werkzeug.serving import make_server

from starter.extensions import db
from tests.conftest import empty_tables, make_app


@dataclass(frozen=True)
class LiveServer:
    app: Flask
    url: str  # http://127.0.0.1:PORT, no trailing slash


def _not_ready(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


@contextmanager
def serve(database_url: str, **overrides: object) -> Iterator[LiveServer]:
    """Serve the app on a free port (the OS picks it, so there is no race for it) until the block ends.

    The socket is bound first so that ``BASE_URL`` (Stripe success URLs, links in emails) can name
    the real port; then the app is built with it. Afterwards the tables are emptied.
    """
    server = make_server("127.0.0.1", 0, _not_ready, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(
        database_url,
        SERVER_NAME=None,
        BASE_URL=url,
        WTF_CSRF_ENABLED=True,
        RATELIMIT_ENABLED=False,
        STRIPE_SECRET_KEY="",
        BILLING_TEST_MODE=True,
        **overrides,
    )
    server.app = app
    thread = threading.Thread(target=server.serve_forever, name="browser-test-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(app=app, url=url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        empty_tables(database_url)
