"""The example paid feature under repeats: a key runs the work once, and a repeat gets that run's result.

A replayed request used to reserve and capture by key but run the generation again, so the same key
with another prompt (of the same cost) returned a fresh result for one charge.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from starter import catalog, credits, generations
from starter.extensions import db
from starter.models import GenerationRun, Hold, LedgerEntry, User, utcnow
from tests.conftest import AuthActions

FEATURE = catalog.FEATURES["ai_generation"]
ACTOR = credits.Actor("user", None)


@pytest.fixture
def owner(make_user, auth) -> User:  # type: ignore[no-untyped-def]
    user = make_user("owner@example.com")
    auth.login("owner@example.com")
    return user


def generate(auth: AuthActions, prompt: str, key: str):  # type: ignore[no-untyped-def]
    return auth.post("/generate", {"prompt": prompt, "idempotency_key": key}, token_from="/generate")


def output_of(response) -> str:  # type: ignore[no-untyped-def]
    return response.get_data(as_text=True).split('data-testid="output">')[1].split("<")[0]


def count(model, **where) -> int:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0


def test_a_repeat_with_another_prompt_is_a_409_and_no_second_generation(owner, auth):
    team_id = owner.current_team_id
    first = generate(auth, "A tagline for a night bakery", "key-1")
    charged = credits.balance(team_id).available

    again = generate(auth, "A poem about a quiet river", "key-1")  # the same cost as the first

    assert first.status_code == 200 and again.status_code == 409
    assert "already used for another prompt" in again.get_data(as_text=True)
    assert count(GenerationRun) == 1 and count(LedgerEntry, kind="capture") == 1
    assert credits.balance(team_id).available == charged


def test_a_repeat_with_the_same_prompt_shows_the_stored_result_without_running_again(owner, auth):
    team_id = owner.current_team_id
    first = generate(auth, "A tagline for a night bakery", "key-1")
    charged = credits.balance(team_id).available
    # Mark the stored result: a repeat that ran the generation again would show the real text instead.
    db.session.execute(update(GenerationRun).values(output="The stored answer."))
    db.session.commit()

    again = generate(auth, "  A tagline for a night bakery ", "key-1")

    assert output_of(first) != "The stored answer."
    assert again.status_code == 200 and output_of(again) == "The stored answer."
    assert "this is its result, and you were charged once" in again.get_data(as_text=True)
    assert credits.balance(team_id).available == charged
    assert count(LedgerEntry, kind="hold") == 1 and count(LedgerEntry, kind="capture") == 1


def test_a_run_that_never_finished_is_reported_and_charges_nothing(app, owner, auth):
    """The process died between reserving and charging: the hold expires and is released."""
    team_id = owner.current_team_id
    generations.start(team_id, "generate:key-1", "A tagline", feature=FEATURE, actor=ACTOR)
    db.session.commit()
    db.session.execute(update(Hold).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    credits.release_expired_holds()
    db.session.commit()

    again = generate(auth, "A tagline", "key-1")

    assert again.status_code == 409 and "did not finish and nothing was charged" in again.get_data(as_text=True)
    assert db.session.scalar(select(GenerationRun.status)) == "failed"
    assert credits.balance(team_id).available == 100


def test_a_repeat_while_the_first_is_still_running_is_a_409(app, owner, auth):
    generations.start(owner.current_team_id, "generate:key-1", "A tagline", feature=FEATURE, actor=ACTOR)
    db.session.commit()

    again = generate(auth, "A tagline", "key-1")

    assert again.status_code == 409 and "still running" in again.get_data(as_text=True)
    assert count(GenerationRun) == 1 and count(LedgerEntry, kind="hold") == 1


def test_work_that_outlives_its_hold_charges_nothing(app, owner):
    team_id = owner.current_team_id
    started = generations.start(team_id, "generate:key-1", "A tagline", feature=FEATURE, actor=ACTOR)
    db.session.commit()
    db.session.execute(update(Hold).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()

    with pytest.raises(credits.HoldNotActive):
        generations.finish(started.run, "late", 5, actor=ACTOR)
    db.session.rollback()
    generations.fail(db.session.get(GenerationRun, started.run.id), actor=ACTOR)
    credits.release_expired_holds()
    db.session.commit()

    assert db.session.scalar(select(GenerationRun.status)) == "failed"
    assert credits.balance(team_id).available == 100 and count(LedgerEntry, kind="capture") == 0
    assert credits.verify() == []


@pytest.fixture
def app_config():
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}


@pytest.mark.postgres
def test_the_team_is_not_locked_while_the_work_runs(app, owner):
    team_id = owner.current_team_id
    generations.start(team_id, "generate:key-1", "A tagline", feature=FEATURE, actor=ACTOR)
    db.session.commit()  # between start and finish: where the AI call happens

    def spend_elsewhere():  # type: ignore[no-untyped-def]
        with app.app_context():
            db.session.execute(text("SET LOCAL lock_timeout = '2s'"))
            receipt = credits.spend(team_id, 1, key="meanwhile")
            db.session.commit()
            db.session.remove()
            return receipt

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(spend_elsewhere).result(timeout=10).amount == -1


@pytest.mark.postgres
def test_eight_double_submits_at_once_run_and_charge_once(app, owner):
    team_id = owner.current_team_id
    browsers = []
    for _ in range(8):
        browser = AuthActions(app.test_client())
        browser.login("owner@example.com")
        browsers.append(browser)
    tokens = [browser.client.get("/generate").get_data(as_text=True) for browser in browsers]
    barrier = threading.Barrier(len(browsers))

    def submit(pair):  # type: ignore[no-untyped-def]
        browser, page = pair
        token = page.split('name="csrf_token"')[1].split('value="')[1].split('"')[0]
        barrier.wait(timeout=5)
        with app.app_context():
            response = browser.client.post(
                "/generate", data={"prompt": "A tagline", "idempotency_key": "same-key", "csrf_token": token}
            )
            db.session.remove()
            return response.status_code

    with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
        statuses = list(pool.map(submit, zip(browsers, tokens, strict=True)))

    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    assert count(GenerationRun) == 1
    assert count(LedgerEntry, kind="hold") == 1 and count(LedgerEntry, kind="capture") == 1
    assert credits.balance(team_id).available == 100 - db.session.scalar(select(GenerationRun.credits))
    assert credits.verify() == []
