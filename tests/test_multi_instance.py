"""Three hosts, one system: three gunicorn servers on one PostgreSQL database and one Redis.

Each host runs ``gunicorn --config gunicorn.conf.py app:app`` (2 workers x 4 threads, as deployed) with
its scheduler on and a one-second interval, its rate limits in Redis under a key prefix of this run's
own, on a database of its own migrated with ``flask db upgrade``. What several hosts must keep:

- the API key's per-key limit and the log-in limit hold in total, not per process;
- the schedulers (one per worker, six in all) grant each due team its month once;
- a signed Stripe webhook delivered to every host grants once;
- spends racing through the JSON API on every host never overdraw.

Needs PostgreSQL (TEST_DATABASE_URL) and Redis: TEST_REDIS_URL, else redis://127.0.0.1:6379/0, else a
private redis-server started for the run; it skips only when none of those can be had, and fails
instead when TEST_REDIS_URL is set (CI sets it). ``pytest -rP`` prints the counts each check saw.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import func, insert, select

from starter import accounts, api_keys, catalog, credits
from starter.extensions import db
from starter.models import CreditBalance, CreditBlock, LedgerEntry, Purchase, Team, utcnow
from tests.conftest import make_app, private_postgres_database
from tests.live_hosts import Host, redis_for_tests, running_hosts
from tests.stripe_events import make_event, signed_request
from tests.stripe_factories import make_checkout_session

pytestmark = pytest.mark.postgres

HOSTS = 3
API_LIMIT, LOGIN_LIMIT = 20, 5  # per minute; Redis's fixed window starts at the first hit, so no edge to cross
DUE_TEAMS = 200
SPEND_CREDITS, SPEND_COST, SPENDS = 100, 7, 40
WEBHOOK_SECRET = "whsec_multi_instance_test"
MEDIUM = catalog.PACKS["medium"]


# --- the shared services ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_for_tests() as url:
        yield url


@pytest.fixture(scope="module")
def database(project_root: Path) -> Iterator[str]:
    """A database of this run's own, migrated the way a deploy does it: ``flask db upgrade``."""
    with private_postgres_database("multi") as url:
        upgrade = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
            cwd=project_root,
            env={**os.environ, "DATABASE_URL": url, "SCHEDULER_ENABLED": "false", "SECRET_KEY": "migrations"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        yield url


# --- what the hosts start with --------------------------------------------------------------------------


@dataclass
class Seed:
    api_key: str  # the key whose limit is counted
    login_email: str
    due_team_ids: list[int]
    webhook_team_id: int
    webhook_customer: str
    spend_team_id: int
    spend_keys: list[str]  # two, so the spends stay under one key's limit


def seed(app: Flask) -> Seed:
    """Committed before the hosts start, so their schedulers find the due teams on their first run."""
    with app.app_context():
        key_team = team_with_account("Keys")
        _, api_key = api_keys.create(key_team.id, "limit")
        login_user = accounts.sign_up("Lena Login", "lena@example.com", "the-right-password")

        anchor = utcnow() - timedelta(days=40)  # signed up last month: due now, and granted the current period
        rows = [
            {
                "name": f"Due {index}",
                "slug": f"due-{index}",
                "is_personal": True,  # only personal teams get the free plan's monthly allowance
                "plan_code": catalog.FREE_PLAN.code,
                "period_anchor": anchor + timedelta(minutes=index),
                "created_at": anchor,
                "current_period_start": anchor,
                "current_period_end": anchor,  # due: the rollover grants the period containing now
            }
            for index in range(DUE_TEAMS)
        ]
        db.session.execute(insert(Team), rows)
        due_ids = list(db.session.scalars(select(Team.id).where(Team.slug.like("due-%")).order_by(Team.id)))
        db.session.execute(insert(CreditBalance), [{"team_id": i, "balance": 0, "held": 0} for i in due_ids])

        webhook_team = team_with_account("Webhook")
        webhook_team.stripe_customer_id = "cus_multiinstance1"
        spend_team = team_with_account("Spend")
        credits.grant(spend_team.id, SPEND_CREDITS, source="purchase", key="seed")
        spend_keys = [api_keys.create(spend_team.id, f"spend {n}")[1] for n in range(2)]
        db.session.commit()
        customer = webhook_team.stripe_customer_id
        return Seed(api_key, login_user.email, due_ids, webhook_team.id, customer, spend_team.id, spend_keys)


def team_with_account(name: str) -> Team:
    """A team with an empty credit account and no period: never due, so the schedulers leave it alone."""
    team = Team(name=name, slug=name.lower())
    db.session.add(team)
    db.session.flush()
    credits.open_account(team)
    return team


def host_environment(database_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    # Set explicitly, as a deploy would: the secret, test-mode billing and its webhook secret.
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "multi-instance-test-secret",
        "BILLING_TEST_MODE": "true",
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SCHEDULER_ENABLED": "true",
        "SCHEDULER_ROLLOVER_SECONDS": "1",
        "SCHEDULER_HOLDS_SECONDS": "1",
        "SCHEDULER_BATCH_SIZE": "50",
        "RATELIMIT_STORAGE_URI": redis_url,
        "RATELIMIT_KEY_PREFIX": prefix,
        "API_RATE_LIMIT": f"{API_LIMIT} per minute",
        "LOGIN_RATE_LIMIT": f"{LOGIN_LIMIT} per minute",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }


@dataclass
class Cluster:
    hosts: list[Host]
    seed: Seed
    app: Flask  # in this process, to read the database the hosts share
    started_in: float


@pytest.fixture(scope="module")
def cluster(project_root: Path, tmp_path_factory: pytest.TempPathFactory, redis_url: str, database: str):  # type: ignore[no-untyped-def]
    app = make_app(database)
    seeded = seed(app)
    prefix = f"multi-{os.getpid()}-{secrets.token_hex(4)}"  # parallel runs on one Redis never share counters
    environment = host_environment(database, redis_url, prefix)
    started = time.perf_counter()
    with running_hosts(project_root, [environment] * HOSTS, tmp_path_factory.mktemp("hosts")) as hosts:
        yield Cluster(hosts, seeded, app, time.perf_counter() - started)
    store = redis.Redis.from_url(redis_url)
    for key in store.scan_iter(match=f"*{prefix}*"):
        store.delete(key)
    with app.app_context():
        db.engine.dispose()


def fan_out(cluster: Cluster, count: int, call: Callable[[int, Host], Any]) -> list[tuple[int, Any]]:
    """``count`` calls at once, round-robin over the hosts, each on a connection of its own: [(host index, result)]."""
    hosts = cluster.hosts

    def one(number: int) -> tuple[int, Any]:
        index = number % len(hosts)
        return index, call(number, hosts[index])

    with ThreadPoolExecutor(max_workers=min(count, 24)) as pool:
        return list(pool.map(one, range(count)))


def per_host(results: list[tuple[int, Any]], wanted: Any) -> list[int]:
    return [sum(1 for index, result in results if index == host and result == wanted) for host in range(HOSTS)]


# --- the checks -----------------------------------------------------------------------------------------


def test_the_api_keys_limit_holds_in_total_not_per_host(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.seed.api_key}"}

    def balance(_: int, host: Host) -> int:
        client = host.client()
        status, _, response_headers = client.get("/api/v1/balance", headers)
        client.close()
        assert status != 429 or int(response_headers["Retry-After"]) > 0
        return status

    results = fan_out(cluster, 3 * API_LIMIT, balance)

    statuses = Counter(status for _, status in results)
    print(
        f"API limit {API_LIMIT}/min: {statuses[200]} of {len(results)} requests across {HOSTS} hosts passed "
        f"(per host: {per_host(results, 200)}), {statuses[429]} got 429; hosts up in {cluster.started_in:.1f} s"
    )
    assert statuses == {200: API_LIMIT, 429: 2 * API_LIMIT}


def test_the_log_in_limit_holds_in_total_not_per_host(cluster: Cluster) -> None:
    browser = cluster.hosts[0].client()
    form = {
        "email": cluster.seed.login_email,
        "password": "a-wrong-guess",
        "csrf_token": browser.csrf_token("/auth/login"),
    }
    cookies = dict(browser.cookies)  # one browser session, valid on every host (one SECRET_KEY)

    def attempt(_: int, host: Host) -> int:
        client = host.client(dict(cookies))
        status = client.post_form("/auth/login", form)
        client.close()
        return status

    results = fan_out(cluster, 3 * LOGIN_LIMIT, attempt)

    statuses = Counter(status for _, status in results)
    print(
        f"Log-in limit {LOGIN_LIMIT}/min: {statuses[200]} of {len(results)} attempts across {HOSTS} hosts were "
        f"answered (per host: {per_host(results, 200)}), {statuses[429]} got 429"
    )
    assert statuses == {200: LOGIN_LIMIT, 429: 2 * LOGIN_LIMIT}


def test_a_webhook_delivered_to_every_host_grants_once(cluster: Cluster) -> None:
    session = make_checkout_session(
        mode="payment",
        status="complete",
        payment_status="paid",
        customer=cluster.seed.webhook_customer,
        amount_total=MEDIUM.price_cents,
        amount_subtotal=MEDIUM.price_cents,
        currency=catalog.CURRENCY,
        payment_intent=f"pi_{secrets.token_hex(12)}",
        metadata={"team_id": str(cluster.seed.webhook_team_id), "kind": "pack", "code": MEDIUM.code},
    )
    body, headers = signed_request(make_event("checkout.session.completed", session), WEBHOOK_SECRET)

    def deliver(_: int, host: Host) -> tuple[int, bool]:
        client = host.client()
        status, content, _ = client.request("POST", "/webhooks/stripe", body, headers)
        client.close()
        return status, b'"duplicate"' in content

    results = fan_out(cluster, 2 * HOSTS, deliver)  # twice to each host, all at once

    outcomes = Counter(result for _, result in results)
    with cluster.app.app_context():
        team_id = cluster.seed.webhook_team_id
        grants = db.session.scalar(
            select(func.count()).select_from(LedgerEntry).filter_by(idempotency_key=f"checkout:{session['id']}")
        )
        purchases = db.session.scalar(select(func.count()).select_from(Purchase).filter_by(team_id=team_id))
        balance = credits.balance(team_id).total
        db.session.remove()
    print(
        f"Webhook: one signed event delivered {len(results)} times to {HOSTS} hosts at once: "
        f"{outcomes[(200, False)]} applied, {outcomes[(200, True)]} answered as duplicates; "
        f"{grants} grant, balance {balance}"
    )
    assert outcomes == {(200, False): 1, (200, True): 2 * HOSTS - 1}
    assert (grants, purchases, balance) == (1, 1, MEDIUM.total_credits)


def test_spends_racing_on_every_host_never_overdraw(cluster: Cluster) -> None:
    keys = cluster.seed.spend_keys

    def spend(number: int, host: Host) -> int:
        client = host.client()
        payload = {"amount": SPEND_COST, "idempotency_key": f"race-{number}"}
        status, _ = client.post_json("/api/v1/spend", payload, keys[number % len(keys)])
        client.close()
        return status

    results = fan_out(cluster, SPENDS, spend)

    statuses = Counter(status for _, status in results)
    with cluster.app.app_context():
        team_id = cluster.seed.spend_team_id
        balance = credits.balance(team_id).total
        problems = credits.verify()
        db.session.remove()
    fits = SPEND_CREDITS // SPEND_COST
    print(
        f"Spends: {SPENDS} spends of {SPEND_COST} racing over {HOSTS} hosts on {SPEND_CREDITS} credits: "
        f"{statuses[201]} accepted (per host: {per_host(results, 201)}), {statuses[402]} refused with 402, "
        f"balance {balance}"
    )
    assert statuses == {201: fits, 402: SPENDS - fits}
    assert balance == SPEND_CREDITS - fits * SPEND_COST
    assert problems == []


def test_the_schedulers_of_every_host_grant_each_due_team_once(cluster: Cluster) -> None:
    due = cluster.seed.due_team_ids

    def plan_grants() -> dict[int, int]:
        """How many due teams have 0, 1, 2… plan blocks."""
        with cluster.app.app_context():
            per_team = (
                select(func.count(CreditBlock.id).label("grants"))
                .select_from(Team)
                .outerjoin(CreditBlock, (CreditBlock.team_id == Team.id) & (CreditBlock.source == "plan"))
                .where(Team.id.in_(due))
                .group_by(Team.id)
                .subquery()
            )
            counts = dict(db.session.execute(select(per_team.c.grants, func.count()).group_by(per_team.c.grants)).all())
            db.session.remove()
            return counts

    deadline = time.monotonic() + 45  # the first run waits scheduler.FIRST_RUN_DELAY (10 s) after a worker starts
    while plan_grants().get(0) and time.monotonic() < deadline:
        time.sleep(0.25)
    runs_before = [len(due_work_runs(host)) for host in cluster.hosts]
    # Every host runs again after the grants: a second grant would have its chance now.
    while time.monotonic() < deadline and any(
        len(due_work_runs(host)) < before + 2 for host, before in zip(cluster.hosts, runs_before, strict=True)
    ):
        time.sleep(0.25)

    counts = plan_grants()
    runs = [due_work_runs(host) for host in cluster.hosts]
    rolled = [sum(rolled_over for rolled_over, _ in host_runs) for host_runs in runs]
    skipped = [sum(1 for _, was_skipped in host_runs if was_skipped) for host_runs in runs]
    with cluster.app.app_context():
        problems = credits.verify()
        db.session.remove()
    print(
        f"Monthly grants: {DUE_TEAMS} due teams, {sum(len(r) for r in runs)} scheduler runs on {HOSTS} hosts; "
        f"teams rolled over per host {rolled}, runs skipped on the advisory lock per host {skipped}; "
        f"plan grants per team {counts}"
    )
    assert counts == {1: DUE_TEAMS}
    assert sum(rolled) == DUE_TEAMS
    assert all(host_runs for host_runs in runs), "every host's scheduler ran"
    assert problems == []


def test_no_host_logged_an_error_or_the_in_memory_warning(cluster: Cluster) -> None:
    for host in cluster.hosts:
        log = host.log()
        assert "Rate limits are in memory" not in log  # they are in Redis
        assert "Traceback" not in log, log[-3000:]


DUE_WORK_LINE = re.compile(r"credits due work at \S+: (?:(\d+) team\(s\) rolled over|(skipped))")


def due_work_runs(host: Host) -> list[tuple[int, bool]]:
    """(teams rolled over, skipped) for each run of the due-work job this host's workers logged."""
    return [(int(rolled or 0), bool(skipped)) for rolled, skipped in DUE_WORK_LINE.findall(host.log())]
