"""A first run: `make run` (reloader, debugger, only what running needs), `make serve`, `make reset-db`, and a
BASE_URL that follows the port `flask run` serves on unless it is set, with a warning when a set one misses."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from flask.cli import run_command

from starter import config, create_app

FLASK = Path(sys.executable).with_name("flask")


def serving(host: str = "127.0.0.1", port: int = 5001, **params: object) -> click.Context:
    """The click context `flask run --host HOST --port PORT` loads the app in."""
    ctx = click.Context(run_command, info_name="run")
    ctx.params = {"host": host, "port": port, "reload": False, "cert": None, **params}
    return ctx


@pytest.fixture
def bare_environment(monkeypatch, tmp_path):
    """No BASE_URL in the environment and no .env to read one from."""
    monkeypatch.delenv("BASE_URL", raising=False)
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def build(tmp_path: Path):  # type: ignore[no-untyped-def]
    return create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'first.db'}", "SCHEDULER_ENABLED": False}
    )


# --- BASE_URL follows the served port ----------------------------------------------------------------


def test_an_unset_base_url_follows_the_port_flask_run_serves_on(bare_environment):
    with serving(port=5001):
        app = build(bare_environment)
    assert app.config["BASE_URL"] == "http://127.0.0.1:5001"

    with serving(host="0.0.0.0", port=8123):  # noqa: S104
        assert build(bare_environment).config["BASE_URL"] == "http://127.0.0.1:8123"
    # Outside `flask run` (gunicorn, a script) the documented default stays.
    assert build(bare_environment).config["BASE_URL"] == config.DEFAULT_BASE_URL


def test_a_set_base_url_is_kept_and_a_mismatch_is_logged_at_start(bare_environment, monkeypatch, caplog):
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:5000")

    with caplog.at_level(logging.WARNING, logger="starter"), serving(port=5001):
        app = build(bare_environment)

    assert app.config["BASE_URL"] == "http://127.0.0.1:5000"
    warnings = [r.getMessage() for r in caplog.records if "BASE_URL" in r.getMessage()]
    assert warnings and "listens on http://127.0.0.1:5001" in warnings[0]


@pytest.mark.parametrize(
    ("base_url", "host", "port", "mismatch"),
    [
        ("http://127.0.0.1:5000", "127.0.0.1", 5000, False),
        ("http://127.0.0.1:5000", "0.0.0.0", 5000, False),  # noqa: S104 - every interface includes 127.0.0.1
        ("http://127.0.0.1:5000", "127.0.0.1", 5001, True),
        ("http://localhost:5000", "127.0.0.1", 5000, True),  # another cookie jar: the session is lost
        ("https://127.0.0.1:5000", "127.0.0.1", 5000, True),
        ("http://localhost", "127.0.0.1", 80, True),
        ("https://app.example.com", "127.0.0.1", 5000, False),  # a public address: a proxy may forward it
        ("http://127.0.0.1:notaport", "127.0.0.1", 5000, True),
    ],
)
def test_address_mismatch(base_url, host, port, mismatch):
    assert (config.address_mismatch(base_url, "http", host, port) is not None) is mismatch


def test_a_matching_base_url_logs_nothing(bare_environment, monkeypatch, caplog):
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:5001")
    with caplog.at_level(logging.WARNING, logger="starter"), serving(port=5001):
        build(bare_environment)
    assert not [r for r in caplog.records if "BASE_URL" in r.getMessage()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_flask_run_on_another_port_warns_about_a_base_url_that_misses_it(project_root, tmp_path):
    """The real `flask run`: the warning is in its log at start, and it serves on the port it was given."""
    port = free_port()
    environment = {
        **os.environ,
        "FLASK_APP": str(project_root / "app.py"),
        "BASE_URL": "http://127.0.0.1:5000",
        "SECRET_KEY": "first-run-test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "SCHEDULER_ENABLED": "false",
    }
    environment.pop("FLASK_DEBUG", None)
    process = subprocess.Popen(
        [str(FLASK), "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("Running on" in line for line in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        log = "".join(lines)
        assert f"listens on http://127.0.0.1:{port}" in log, log
        assert f"Running on http://127.0.0.1:{port}" in log, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_gunicorn_warns_when_base_url_names_a_port_it_does_not_bind(monkeypatch, project_root):
    namespace: dict[str, object] = {}
    exec(compile((project_root / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)  # noqa: S102
    warnings: list[str] = []
    server = SimpleNamespace(
        cfg=SimpleNamespace(bind=["0.0.0.0:8000"], workers=1),
        log=SimpleNamespace(warning=lambda message, *args: warnings.append(message % args)),
    )

    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:5000")
    namespace["on_starting"](server)
    assert warnings and "listens on http://127.0.0.1:8000" in warnings[0]

    warnings.clear()
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:8000")  # docker-compose.yml's default
    namespace["on_starting"](server)
    assert warnings == []


def test_docker_compose_defaults_base_url_to_the_published_port(project_root):
    compose = (project_root / "docker-compose.yml").read_text()
    published = re.search(r'-\s*"(\d+):8000"', compose).group(1)
    assert f"BASE_URL: ${{BASE_URL:-http://127.0.0.1:{published}}}" in compose
    for name in ("TRUSTED_PROXY_COUNT", "FORWARDED_ALLOW_IPS"):
        assert f"{name}:" in compose


# --- the debugger under `flask run --debug`, our 500 page everywhere else ---------------------------


def with_crash(app):  # type: ignore[no-untyped-def]
    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals")

    return app


def test_flask_run_debug_lets_a_crash_reach_the_debugger(bare_environment, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.setenv(config.FLASK_RUN, "true")
    app = with_crash(build(bare_environment))

    with pytest.raises(RuntimeError, match="secret internals"):
        app.test_client().get("/boom")


def test_debug_outside_flask_run_still_shows_our_500_page(bare_environment, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")  # left on under gunicorn
    monkeypatch.delenv(config.FLASK_RUN, raising=False)
    app = with_crash(
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x" * 32, "SCHEDULER_ENABLED": False})
    )

    response = app.test_client().get("/boom")

    assert response.status_code == 500
    assert "secret internals" not in response.get_data(as_text=True)


# --- the Makefile ---------------------------------------------------------------------------------------


def make_dry_run(project_root: Path, tmp_path: Path, target: str) -> str:
    """What `make TARGET` would run on a fresh clone (no virtualenv yet), without running it."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout


def test_make_run_installs_only_what_running_needs_and_serves_with_reloader_and_debugger(project_root, tmp_path):
    commands = make_dry_run(project_root, tmp_path, "run")

    assert "pip install --quiet -e .\n" in commands or "pip install --quiet -e . " in commands
    assert "[test]" not in commands
    assert re.search(r"flask run --debug --host 127.0.0.1 --port 5000", commands)


def test_make_serve_is_a_plain_server(project_root, tmp_path):
    commands = make_dry_run(project_root, tmp_path, "serve")

    assert re.search(r"flask run --host 127.0.0.1 --port 5000", commands)
    assert "--debug" not in commands


def test_make_reset_db_starts_the_development_database_afresh(project_root, tmp_path):
    commands = make_dry_run(project_root, tmp_path, "reset-db")

    assert "rm -f instance/starter.db" in commands
    assert "setup-db" in commands


def test_make_test_still_installs_the_test_extras(project_root, tmp_path):
    commands = make_dry_run(project_root, tmp_path, "test")

    assert "pip install --quiet -e '.[test]'" in commands
    assert "pytest" in commands
