"""Error pages and JSON errors: no stack trace ever reaches a user."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .config import FLASK_RUN
from .extensions import db, limiter
from .models import utcnow

TITLES = {
    400: "Bad request",
    401: "Please log in",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Something went wrong",
}


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/webhooks/")) or request.accept_mimetypes.best == "application/json"


def error_response(code: int, message: str | None = None, error_code: str | None = None, **context):  # type: ignore[no-untyped-def]
    title = TITLES.get(code, "Error")
    if wants_json():
        body = {"error": {"code": error_code or title.lower().replace(" ", "_"), "message": message or title}}
        return jsonify(body), code
    template = f"errors/{code}.html" if code in (400, 403, 404, 429, 500) else "errors/error.html"
    return render_template(template, code=code, title=title, message=message, **context), code


def back_link() -> str | None:
    """Where the user was, as a path on this site: the Referer if it is same-origin, else this page if
    it was a GET (reloading it is the retry); None otherwise. Never another origin."""
    from .blueprints.auth.views import safe_next

    referrer = request.referrer
    if referrer:
        parts = urlsplit(referrer)
        if parts.scheme in ("http", "https") and parts.netloc == request.host and parts.path.startswith("/"):
            path = safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))
            if path:
                return path
    return safe_next(request.full_path.rstrip("?")) if request.method == "GET" else None


def retry_seconds(value: str | None) -> int | None:
    """Retry-After in seconds (flask-limiter sends a number of seconds); None if absent or unreadable."""
    if value and value.strip().isdigit() and len(value.strip()) <= 9:
        return max(1, int(value))
    return None


def limit_reset_seconds() -> int | None:
    """Seconds until the limit this request broke resets (flask-limiter's own window), if known."""
    try:
        current = limiter.current_limit
        return max(1, int(current.reset_at - time.time())) if current is not None else None
    except Exception:  # the limiter's storage is down: the page still renders, without a time
        return None


def wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{-(-minutes // 60)} hours"


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):  # type: ignore[no-untyped-def]
        return error_response(
            400,
            "Your session expired or the form was tampered with. Reload the page and try again.",
            "csrf_failed",
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        if error.code is None or error.code >= 500:
            return internal_error(error)
        if error.code == 429:
            return too_many_requests(error)
        return error_response(error.code, error.description if error.code not in (404, 405) else None)

    def too_many_requests(error: HTTPException):  # type: ignore[no-untyped-def]
        # flask-limiter puts Retry-After on its own response; keep it on ours, and say it in words.
        retry_after = error.response.headers.get("Retry-After") if error.response is not None else None
        seconds = retry_seconds(retry_after) or limit_reset_seconds()
        retry_after = retry_after or (str(seconds) if seconds else None)
        message = None
        if seconds is not None:
            message = f"Too many requests in a short time. Try again in {wait_text(seconds)}."
        body, status = error_response(
            429,
            message or error.description,
            retry_seconds=seconds,
            retry_at=utcnow() + timedelta(seconds=seconds) if seconds is not None else None,
            back_url=back_link(),
        )
        return body, status, ({"Retry-After": retry_after} if retry_after else {})

    def internal_error(error: Exception):  # type: ignore[no-untyped-def]
        if not isinstance(error, HTTPException) or isinstance(error, InternalServerError):
            app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return error_response(500)

    # `flask run --debug` (make run): a crash reaches Werkzeug's debugger, with its traceback, instead of
    # our 500 page. Anywhere else (gunicorn, even with FLASK_DEBUG=1 left on) no trace reaches a user.
    if not (app.debug and os.environ.get(FLASK_RUN) == "true"):
        app.register_error_handler(Exception, internal_error)
