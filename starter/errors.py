"""Error pages and JSON errors: no stack trace ever reaches a user."""

from __future__ import annotations

import os

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .config import FLASK_RUN
from .extensions import db

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


def error_response(code: int, message: str | None = None, error_code: str | None = None):  # type: ignore[no-untyped-def]
    title = TITLES.get(code, "Error")
    if wants_json():
        body = {"error": {"code": error_code or title.lower().replace(" ", "_"), "message": message or title}}
        return jsonify(body), code
    template = f"errors/{code}.html" if code in (400, 403, 404, 429, 500) else "errors/error.html"
    return render_template(template, code=code, title=title, message=message), code


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
        response = error_response(error.code, error.description if error.code not in (404, 405) else None)
        if error.code == 429 and error.response is not None:
            # flask-limiter puts Retry-After on its own response; keep it on ours.
            retry_after = error.response.headers.get("Retry-After")
            body, status = response
            response = (body, status, {"Retry-After": retry_after} if retry_after else {})
        return response

    def internal_error(error: Exception):  # type: ignore[no-untyped-def]
        if not isinstance(error, HTTPException) or isinstance(error, InternalServerError):
            app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return error_response(500)

    # `flask run --debug` (make run): a crash reaches Werkzeug's debugger, with its traceback, instead of
    # our 500 page. Anywhere else (gunicorn, even with FLASK_DEBUG=1 left on) no trace reaches a user.
    if not (app.debug and os.environ.get(FLASK_RUN) == "true"):
        app.register_error_handler(Exception, internal_error)
