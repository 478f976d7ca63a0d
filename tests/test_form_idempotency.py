"""Forms that change credits carry a hidden idempotency key; without it nothing happens.

The server used to make a key up when the field was missing, so the two halves of a double submit
were two requests: charged twice.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from starter import credits
from starter.extensions import db
from starter.models import LedgerEntry, User

MISSING_OR_MALFORMED = [{}, {"idempotency_key": ""}, {"idempotency_key": "bad key!"}, {"idempotency_key": "x" * 65}]


def ledger_entries() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry)) or 0


@pytest.fixture
def owner(make_user, auth) -> User:  # type: ignore[no-untyped-def]
    user = make_user("owner@example.com", is_site_admin=True)
    auth.login("owner@example.com")
    return user


@pytest.mark.parametrize("key", MISSING_OR_MALFORMED, ids=["absent", "empty", "malformed", "too-long"])
def test_a_generation_posted_without_its_key_is_a_400_that_charges_nothing(owner, auth, key):
    before = (ledger_entries(), credits.balance(owner.current_team_id).available)

    responses = [auth.post("/generate", {"prompt": "A tagline", **key}, token_from="/generate") for _ in range(2)]

    assert [response.status_code for response in responses] == [400, 400]
    assert "idempotency key" in responses[0].get_data(as_text=True)
    assert (ledger_entries(), credits.balance(owner.current_team_id).available) == before


@pytest.mark.parametrize("key", MISSING_OR_MALFORMED, ids=["absent", "empty", "malformed", "too-long"])
def test_an_admin_adjustment_posted_without_its_key_is_a_400_that_changes_nothing(owner, auth, key):
    team_id = owner.current_team_id
    before = (ledger_entries(), credits.balance(team_id).available)

    responses = [
        auth.post(f"/admin/teams/{team_id}/adjust", {"amount": "25", "reason": "goodwill", **key}, token_from="/admin")
        for _ in range(2)
    ]

    assert [response.status_code for response in responses] == [400, 400]
    assert (ledger_entries(), credits.balance(team_id).available) == before


def test_the_rendered_forms_carry_a_fresh_key_each_time(owner, auth):
    keys = set()
    for path in ("/generate", "/generate", f"/admin/teams/{owner.current_team_id}"):
        page = auth.client.get(path).get_data(as_text=True)
        keys.add(page.split('name="idempotency_key"')[1].split('value="')[1].split('"')[0])

    assert len(keys) == 3 and all(len(key) == 32 for key in keys)


def test_a_double_submitted_adjustment_with_its_key_changes_the_balance_once(owner, auth):
    team_id = owner.current_team_id
    # The confirmation step's form: it carries the key the review was rendered with.
    form = {"amount": "25", "reason": "goodwill", "idempotency_key": "adjust-1", "confirmed": "yes"}

    for _ in range(2):
        assert auth.post(f"/admin/teams/{team_id}/adjust", form, token_from="/admin").status_code == 302

    assert credits.balance(team_id).available == 125
