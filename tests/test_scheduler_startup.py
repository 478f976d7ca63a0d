"""When the scheduler starts: never in tests, other flask commands or the reloader's watcher; once per process.

The decision is a pure function (``should_start``) of the app, the environment and how the process
was launched (``current_launch``, read from click's context); the last tests go through the real
``FlaskGroup`` and start a real ``BackgroundScheduler``.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime, timedelta

import click
import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from click.testing import CliRunner
from flask import current_app
from flask.cli import FlaskGroup, run_command

from starter import create_app, scheduler
from starter.extensions import db


def test_no_scheduler_runs_in_tests(app):
    assert app.testing
    assert scheduler.scheduler_of(app) is None


class FakeApp:
    def __init__(self, testing: bool = False, enabled: bool = True) -> None:
        self.testing, self.config = testing, {"SCHEDULER_ENABLED": enabled}


CHILD = {"WERKZEUG_RUN_MAIN": "true"}
Launch = scheduler.Launch


@pytest.mark.parametrize(
    ("app_", "environ", "launch", "expected"),
    [
        pytest.param(FakeApp(testing=True), {}, Launch(), False, id="testing"),
        pytest.param(FakeApp(enabled=False), {}, Launch(), False, id="disabled"),
        pytest.param(FakeApp(), {}, Launch("db upgrade"), False, id="db-upgrade"),
        pytest.param(FakeApp(), {}, Launch(""), False, id="app-command"),  # seed, credits …: resolved by the group
        pytest.param(FakeApp(), {}, Launch("run", reloader=True), False, id="reloader-parent"),
        pytest.param(FakeApp(), CHILD, Launch("run", reloader=True), True, id="reloader-child"),
        pytest.param(FakeApp(), {}, Launch("run", reloader=False), True, id="run-no-reload"),
        pytest.param(FakeApp(), {}, Launch(), True, id="gunicorn"),  # no CLI at all
        pytest.param(FakeApp(testing=True), CHILD, Launch("run", reloader=True), False, id="testing-child"),
    ],
)
def test_should_start(app_, environ, launch, expected):
    start, reason = scheduler.should_start(app_, environ, launch)
    assert start is expected, reason


def test_current_launch_reads_the_click_context(monkeypatch):
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    assert scheduler.current_launch() == scheduler.Launch(None)
    group = FlaskGroup()
    with click.Context(group, info_name="flask") as root:
        assert scheduler.current_launch() == scheduler.Launch("")
        with click.Context(run_command, parent=root, info_name="run") as run_ctx:
            run_ctx.params = {"reload": None}
            assert scheduler.current_launch() == scheduler.Launch("run", reloader=False)
            monkeypatch.setenv("FLASK_DEBUG", "1")  # `flask --debug run` reloads by default
            assert scheduler.current_launch() == scheduler.Launch("run", reloader=True)
            run_ctx.params = {"reload": False}
            assert scheduler.current_launch() == scheduler.Launch("run", reloader=False)
        db_group = click.Group("db")
        with (
            click.Context(db_group, parent=root, info_name="db") as db_ctx,
            click.Context(click.Command("upgrade"), parent=db_ctx, info_name="upgrade"),
        ):
            assert scheduler.current_launch() == scheduler.Launch("db upgrade")


@pytest.fixture
def serving_app_factory(tmp_path):
    """Build non-testing apps with the scheduler enabled (a throwaway SQLite file); shut them all down."""
    built = []

    def build():
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'serving.db'}",
                "SCHEDULER_ENABLED": True,
                "SECRET_KEY": "serving-test",
            }
        )
        built.append(app)
        return app

    yield build
    for app in built:
        scheduler.shutdown(app)


def test_a_serving_app_starts_the_scheduler_once_and_shuts_it_down(serving_app_factory):
    app = serving_app_factory()
    running = scheduler.scheduler_of(app)
    assert running is not None and running.running
    jobs = {job.id: job for job in running.get_jobs()}
    assert set(jobs) == {"credits.due_work", "credits.release_holds", "billing.auto_recharge", "mail.deliver"}
    recharge_every = timedelta(seconds=app.config["SCHEDULER_RECHARGE_SECONDS"])
    assert jobs["billing.auto_recharge"].trigger.interval == recharge_every
    assert jobs["credits.due_work"].trigger.interval == timedelta(seconds=app.config["SCHEDULER_ROLLOVER_SECONDS"])
    assert jobs["credits.release_holds"].trigger.interval == timedelta(seconds=app.config["SCHEDULER_HOLDS_SECONDS"])
    assert jobs["mail.deliver"].trigger.interval == timedelta(seconds=app.config["MAIL_OUTBOX_SECONDS"])
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())
    assert jobs["credits.due_work"].args == (app,)

    second = serving_app_factory()
    assert scheduler.scheduler_of(second) is None, "one scheduler per process"

    scheduler.shutdown(app)
    assert not running.running and scheduler.scheduler_of(app) is None
    scheduler.shutdown(app)  # idempotent, as atexit will call it again


def test_the_scheduled_job_runs_in_its_own_thread_and_logs_one_summary(serving_app_factory, caplog, monkeypatch):
    app = serving_app_factory()
    with app.app_context():
        db.create_all()
    running, done = scheduler.scheduler_of(app), queue.Queue()
    running.add_listener(done.put, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    # Alembic's logging setup (migration tests, in this same process) disables existing loggers.
    monkeypatch.setattr(logging.getLogger("starter.scheduler"), "disabled", False)
    caplog.set_level(logging.INFO, logger="starter.scheduler")

    running.modify_job("credits.due_work", next_run_time=datetime.now(UTC))
    event = done.get(timeout=10)

    assert event.job_id == "credits.due_work" and event.exception is None
    assert isinstance(event.retval, scheduler.RunSummary) and not event.retval.skipped
    summaries = [r for r in caplog.records if r.name == "starter.scheduler" and "credits due work" in r.message]
    assert len(summaries) == 1 and "0 team(s) rolled over" in summaries[0].message
    assert summaries[0].threadName != threading.current_thread().name


def test_flask_cli_commands_do_not_start_it(serving_app_factory, monkeypatch):
    """Through the real FlaskGroup: app commands and built-in commands load the app without a scheduler."""
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)  # FlaskGroup sets it; restored after the test
    seen = []

    def factory():
        app = serving_app_factory()
        seen.append(app)

        @app.cli.command("probe")
        def probe():
            click.echo(f"scheduler={scheduler.scheduler_of(current_app) is not None}")

        return app

    cli = FlaskGroup(create_app=factory)
    result = CliRunner().invoke(cli, ["probe"], catch_exceptions=False)
    assert "scheduler=False" in result.output
    CliRunner().invoke(cli, ["routes"], catch_exceptions=False)
    assert len(seen) == 2 and all(scheduler.scheduler_of(app) is None for app in seen)
