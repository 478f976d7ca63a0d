"""The app factory, health check, error pages and security headers."""

from __future__ import annotations

import re

import pytest
from flask import Flask, abort

from starter import create_app


def test_up_answers_when_the_database_does(client):
    response = client.get("/up")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_up_reports_an_unreachable_database(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "postgresql://nobody@127.0.0.1:1/none",
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 1}},
        }
    )
    response = app.test_client().get("/up")
    assert response.status_code == 503
    assert response.json["status"] == "error"


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgres://user@db:5432/app")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("LOW_BALANCE_THRESHOLD", "7")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_123")
    from starter.config import from_environment

    settings = from_environment(str(tmp_path))
    assert settings["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://user@db:5432/app"
    assert settings["SECRET_KEY"] == "from-env"
    assert settings["LOW_BALANCE_THRESHOLD"] == 7
    assert settings["BILLING_TEST_MODE"] is False


def test_default_database_is_a_sqlite_file_in_instance(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from starter.config import from_environment

    assert from_environment(str(tmp_path))["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'starter.db'}"


def test_env_example_documents_every_setting(project_root, tmp_path):
    from starter import config

    source = (project_root / "starter" / "config.py").read_text()
    names = set(re.findall(r'(?:_bool|_int|os\.environ\.get)\("([A-Z_]+)"', source)) | {"DATABASE_URL"}
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (project_root / ".env.example").read_text(), re.M))
    assert names - documented == set(), "undocumented in .env.example"
    assert not hasattr(config, "DEV_WEBHOOK_SECRET"), "no webhook secret may be known from the source"


def test_security_headers_on_every_page(client):
    response = client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_unknown_page_is_our_404_page(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)
    assert response.mimetype == "text/html"


def test_api_paths_answer_errors_as_json(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "page_not_found"


@pytest.fixture
def crashing_app(app: Flask) -> Flask:
    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals")

    @app.get("/forbidden")
    def forbidden():  # type: ignore[no-untyped-def]
        abort(403)

    return app


def test_a_crash_shows_our_500_page_without_the_trace(crashing_app):
    response = crashing_app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong" in body
    assert "secret internals" not in body and "Traceback" not in body


def test_403_page(crashing_app):
    response = crashing_app.test_client().get("/forbidden")
    assert response.status_code == 403
    assert "Not allowed" in response.get_data(as_text=True)


def test_static_css_is_served_from_the_app(client):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert b"prefers-color-scheme: dark" in response.data
    page = client.get("/").get_data(as_text=True)
    external = re.findall(r'(?:src|href)="((?:https?:)?//[^"]+)"', page)
    assert external == [], "the app must work offline: no CDN or external assets"
