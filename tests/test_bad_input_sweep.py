"""Bad input everywhere: every route of the app, every form field and every API field, with NUL,
control characters, line breaks, huge and missing values. Nothing answers 5xx and the ledger does
not move (entry count, every team's balance and held credits, every hold's status).

The routes come from the app's URL map, so a new page or endpoint is swept without being listed; a
route with a path argument this file does not know fails the test until it gets sample values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import IntegerField
from wtforms.fields.core import UnboundField

from starter import accounts, api_keys, credits, teams
from starter.extensions import db
from starter.models import CreditBalance, Hold, LedgerEntry, Membership, StripeEvent, Team, User
from tests.conftest import AuthActions, csrf_token

# Each value is wrong for every field it lands in, so no request can be valid and move the ledger.
FORM_VALUES = {
    "nul": "\x00",
    "nul-inside": "ab\x00cd",
    "escape": "ab\x1b[2Jcd",
    "bell": "\x07",
    "del": "ab\x7fcd",
    "c1": "ab\x85cd",
    "crlf": "ab\r\ncd",
    "line-separator": "ab\u2028cd",
    "huge": "x" * 5_000,
    "huge-number": "9" * 70,
    "empty": "",
}
# Into number fields only (the other fields left out): "0" would be a fine prompt or key elsewhere.
NUMBER_VALUES = {"zero": "0", "negative": "-1", "out-of-range": "-99999999999", "decimal": "1.5", "overflow": "1e309"}
QUERY_NAMES = {"q", "session_id", "after", "next", "invite", "kind", "feature", "since", "until", "limit", "cursor"}
JSON_VALUES: list[Any] = [
    "\x00",
    "ab\x00cd",
    "\x1b",
    "\r\n",
    "\u2028",
    "x" * 5_000,
    10**30,
    -(10**30),
    -1,
    0,
    1.5,
    True,
    None,
    [],
    {},
    {"a": "\x00"},
    {"\x00": 1},
    [[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]],
]
API_FIELDS = ["amount", "feature", "description", "idempotency_key", "metadata", "ttl_seconds", "unknown"]
RAW_BODIES = [b"", b"null", b"[]", b'"x"', b"\x00", b"{", b'{"amount": NaN}', b"\xff\xfe{}", b"[" * 50_000]
BAD_KEYS = ["\x1b", "x" * 1_000, " "]
# These act on their path id with nothing else to check but the CSRF token: a real id would just
# carry the action out (remove a member, revoke a key), so they get ids that do not exist.
LIMITS = teams.InvitationLimits(per_team=50, per_user=50)
ONLY_CSRF = {"teams.remove", "teams.revoke", "teams.revoke_key", "auth.logout", "admin.replay"}


@pytest.fixture
def app_config():
    return {"RATELIMIT_ENABLED": False}  # the sweep checks validation, not the limiter, on every request


def form_fields() -> dict[str, type]:
    """Every field of every form of the app (``starter`` modules), CSRF token aside: name → field class."""
    fields, stack = {}, [FlaskForm]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("starter."):
            for name in dir(cls):
                if isinstance(getattr(cls, name), UnboundField) and name != "csrf_token":
                    fields[name] = getattr(cls, name).field_class
    return fields


def form_values() -> Iterator[tuple[str, dict[str, str] | None]]:
    """(what, the fields to send): every bad value in every field, numbers in number fields, nothing at all."""
    fields = form_fields()
    for name, value in FORM_VALUES.items():
        yield name, dict.fromkeys(fields, value)
    numbers = [name for name, field in fields.items() if issubclass(field, IntegerField)]
    assert numbers, "the admin's amount and the team switch are number fields"
    for name, value in NUMBER_VALUES.items():
        yield name, dict.fromkeys(numbers, value)
    yield "missing", None


class World:
    """A team with credits, a member, an invitation, an API key, an active hold and a stored event.

    Real ids and tokens reach the views' validation; made-up ones their 404s.
    """

    def __init__(self, app: Flask, fast_user) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        owner = fast_user("owner@example.com", is_site_admin=True)
        member = fast_user("member@example.com")
        bystander = fast_user("bystander@example.com")
        self.owner_id, self.team_id = owner.id, owner.current_team_id
        db.session.add(Membership(team_id=self.team_id, user_id=member.id, role="member"))
        credits.grant(self.team_id, 500, source="purchase", key="pack", reference="cs_sweep")
        credits.spend(self.team_id, 7, key="spent")
        self.hold_id = credits.hold(self.team_id, 20, key="held").id
        self.membership_id = db.session.scalar(select(Membership.id).filter_by(user_id=member.id))
        key, self.api_key = api_keys.create(self.team_id, "Sweep", created_by_id=owner.id)
        self.key_id = key.id
        event = {"id": "evt_sweep", "object": "event", "type": "ping", "created": 0, "data": {"object": {}}}
        db.session.add(StripeEvent(id="evt_sweep", type="ping", stripe_created=0, payload=event))
        self.reset_token = accounts.reset_token(bystander)
        team = db.session.get(Team, self.team_id)
        _invitation, self.invitation_token = teams.invite(team, owner, bystander.email, "member", 7, LIMITS)
        db.session.commit()
        self.checkout_tokens: list[str] = []

    def start_checkout(self, browser: AuthActions) -> None:
        """A test-mode checkout page's token, when this instance has one, from a real purchase click."""
        form = {"kind": "pack", "code": "small", "attempt": "sweep-1"}
        location = browser.post("/billing/checkout", form, token_from="/billing").headers.get("Location", "")
        if "/billing/test-checkout/" in location:
            self.checkout_tokens = [location.rsplit("/", 1)[1]]

    def path_values(self, endpoint: str, argument: str, signed_in: bool) -> list[str]:
        fake = {"team_id": ["99999999"], "membership_id": ["99999999"], "invitation_id": ["99999999"]}
        fake |= {"key_id": ["99999999"], "hold_id": ["0", str(2**70)]}
        fake |= {"recharge_id": ["99999999", str(2**70)], "receipt_id": ["99999999"], "kind": ["pack", "nope"]}
        real = {
            "team_id": [str(self.team_id)],
            "membership_id": [str(self.membership_id)],
            "key_id": [str(self.key_id)],
            "hold_id": [str(self.hold_id)],
        }
        bad_strings = ["ab\x00cd", "ab\x1bcd", "x" * 3_000, "not-a-token"]
        if argument in ("token", "event_id"):  # billing.test_authenticate's are only ever made-up ones here
            real_tokens = {
                # For a visitor only: a reset signs the browser in as the bystander.
                "auth.reset_password": [] if signed_in else [self.reset_token],
                "teams.accept": [self.invitation_token],
                "billing.test_checkout": self.checkout_tokens,
                "admin.replay": ["evt_sweep"],
            }
            return bad_strings + real_tokens.get(endpoint, [])
        if argument not in fake:
            raise AssertionError(f"{endpoint}: give the sweep sample values for <{argument}>")
        return fake[argument] + ([] if endpoint in ONLY_CSRF else real.get(argument, []))

    def ledger(self) -> tuple[Any, ...]:
        db.session.expire_all()
        return (
            db.session.scalar(select(func.count()).select_from(LedgerEntry)),
            # Teams with credits: a swept form may create a team (any one-line name is fine), with none.
            db.session.execute(
                select(CreditBalance.team_id, CreditBalance.balance, CreditBalance.held)
                .where((CreditBalance.balance != 0) | (CreditBalance.held != 0))
                .order_by(CreditBalance.team_id)
            ).all(),
            db.session.execute(select(Hold.id, Hold.status).order_by(Hold.id)).all(),
        )

    def back_home(self) -> None:
        """A swept form may create a team (any one-line name is valid) and make it current: switch back."""
        db.session.expire_all()
        db.session.get(User, self.owner_id).current_team_id = self.team_id
        db.session.commit()


@pytest.fixture
def world(app, fast_user) -> World:  # type: ignore[no-untyped-def]
    return World(app, fast_user)


SIGNS_OUT = {"auth.logout", "account.sign_out_everywhere"}


def routes(app: Flask, *, api: bool) -> Iterator[Any]:
    """The app's routes (log-out and sign out everywhere last: they end the sweeping browser's session)."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: (rule.endpoint in SIGNS_OUT, rule.rule)):
        if rule.endpoint == "static" or rule.rule.startswith("/api/") != api:
            continue
        yield rule


def paths(world: World, rule: Any, signed_in: bool) -> Iterator[str]:
    combos: list[dict[str, str]] = [{}]
    for argument in rule.arguments:
        values = world.path_values(rule.endpoint, argument, signed_in)
        combos = [{**combo, argument: value} for combo in combos for value in values]
    for combo in combos:
        yield re.sub(r"<(?:[^:<>]+:)?(\w+)>", lambda match, combo=combo: combo[match.group(1)], rule.rule)


def check(response, what: str, failures: list[str]) -> None:  # type: ignore[no-untyped-def]
    if response.status_code >= 500:
        failures.append(f"{response.status_code} {what}")


def sweep_pages(world: World, client: FlaskClient, signed_in: bool, failures: list[str]) -> set[str]:
    swept = set()
    for rule in routes(world.app, api=False):
        if not signed_in:
            client = world.app.test_client()  # a visitor's fresh browser per route: nothing carries over
        # Signed in, until the last routes (SIGNS_OUT) end the session: from then on a visitor's token.
        still_in = signed_in and client.get("/dashboard").status_code == 200
        token = csrf_token(client, "/dashboard" if still_in else "/auth/login")
        for path in paths(world, rule, signed_in):
            for name, values in form_values():
                if "GET" in rule.methods:
                    query = (
                        {} if values is None else {**dict.fromkeys(QUERY_NAMES, next(iter(values.values()))), **values}
                    )
                    check(client.get(path, query_string=query), f"GET {path!r} {name}", failures)
                if "POST" in rule.methods:
                    data = {"csrf_token": token, **(values or {})}
                    check(client.post(path, data=data), f"POST {path!r} {name}", failures)
            if "POST" in rule.methods:
                check(client.post(path, data=b"x" * (2 * 1024 * 1024)), f"POST {path!r} 2 MB", failures)
            world.back_home()
        swept.add(rule.endpoint)
    return swept


def api_bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    for field in API_FIELDS:
        for value in JSON_VALUES:
            yield f"{field}={value!r:.30}", {"data": json.dumps({field: value}), "content_type": "application/json"}
    for value in JSON_VALUES:
        body = json.dumps(dict.fromkeys(API_FIELDS[:-1], value))
        yield f"all={value!r:.30}", {"data": body, "content_type": "application/json"}
    for raw in RAW_BODIES:
        yield f"raw={raw[:20]!r}", {"data": raw, "content_type": "application/json"}
    yield "text/plain", {"data": '{"amount": 5}', "content_type": "text/plain"}
    for key in BAD_KEYS:
        yield (
            f"key={key[:10]!r}",
            {"json": {"amount": 5, "feature": "ai_generation"}, "headers": {"Idempotency-Key": key}},
        )
    yield "missing", {}


def sweep_api(world: World, failures: list[str]) -> set[str]:
    swept = set()
    auth = {"Authorization": f"Bearer {world.api_key}"}
    for headers in (auth, {"Authorization": "Bearer cs_00000000_" + "x" * 32}, {}):
        client = world.app.test_client()
        for rule in routes(world.app, api=True):
            for path in paths(world, rule, signed_in=False):
                if "POST" in rule.methods:
                    for name, kwargs in api_bodies():
                        sent = {**kwargs, "headers": {**headers, **kwargs.get("headers", {})}}
                        check(client.post(path, **sent), f"POST {path!r} {name}", failures)
                if "GET" in rule.methods:
                    for value in FORM_VALUES.values():
                        query = dict.fromkeys(["limit", "cursor", "kind", "feature", "since", "until", "x"], value)
                        check(client.get(path, query_string=query, headers=headers), f"GET {path!r}", failures)
                        for name in query:
                            check(client.get(path, query_string={name: value}, headers=headers), path, failures)
            swept.add(rule.endpoint)
    return swept


def test_every_form_and_page_refuses_bad_input_without_a_5xx_or_a_ledger_change(app, world):
    before = world.ledger()
    failures: list[str] = []
    signed_in = AuthActions(app.test_client())
    signed_in.login("owner@example.com")
    world.start_checkout(signed_in)

    swept = sweep_pages(world, app.test_client(), signed_in=False, failures=failures)
    swept &= sweep_pages(world, signed_in.client, signed_in=True, failures=failures)

    assert failures == []
    assert world.ledger() == before
    pages = {rule.endpoint for rule in app.url_map.iter_rules() if not rule.rule.startswith(("/api/", "/static/"))}
    assert swept == pages
    assert credits.verify() == []


def test_every_api_endpoint_refuses_bad_input_without_a_5xx_or_a_ledger_change(app, world):
    before = world.ledger()
    failures: list[str] = []

    swept = sweep_api(world, failures)

    assert failures == []
    assert world.ledger() == before
    assert swept == {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")}
    assert credits.verify() == []
