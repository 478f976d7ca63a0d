"""Browser checks of the history in people's words: at 375 px the credits and balance columns are in
view without scrolling, and times follow the browser's time zone from the very first page (relabelled
by app.js, then rendered by the server from the cookie it wrote). Same setup as test_browser.py."""

from __future__ import annotations

import pytest

from starter import accounts, credits
from starter.extensions import db
from starter.models import Membership
from tests.conftest import PASSWORD
from tests.test_browser import PHONE, SCREENSHOTS, _email, browser, live_server, log_in  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def context_for(browser, live_server):  # type: ignore[no-untyped-def]  # noqa: F811
    contexts = []

    def make(**options):  # type: ignore[no-untyped-def]
        context = browser.new_context(base_url=live_server.url, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.errors = errors
        return page

    yield make
    for context in contexts:
        context.close()


def account_with_history(server) -> str:  # type: ignore[no-untyped-def]
    email = _email()
    with server.app.app_context():
        user = accounts.sign_up("Browser Tester", email, PASSWORD)
        team_id = db.session.scalar(db.select(Membership.team_id).filter_by(user_id=user.id))
        held = credits.hold(team_id, 10, key=f"h-{email}", feature="ai_generation", description="AI generation")
        credits.capture(team_id, held.id, 6, key=f"c-{email}")
        credits.spend(team_id, 12, key=f"s-{email}", description="A rather long description " * 3)
        db.session.commit()
        db.session.remove()
    return email


def test_at_375px_the_credits_and_balance_columns_are_in_view(context_for, live_server) -> None:  # noqa: F811
    page = context_for(viewport=PHONE)
    log_in(page, account_with_history(live_server))
    page.goto("/credits/history")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    table = page.get_by_test_id("history")
    for header in ("Credits", "Balance"):
        box = table.get_by_role("columnheader", name=header).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (header, box)
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth"), "the table scrolls sideways at 375 px"
    first_row = table.locator("tbody tr").first
    assert "6 credits (10 reserved)" in first_row.inner_text() or "A rather long" in first_row.inner_text()
    page.get_by_text("Details").first.click()  # the ledger's detail, one click away
    assert page.locator("details[open] dl").first.is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "history-375px.png"), full_page=True)
    page.goto("/generate")
    page.screenshot(path=str(SCREENSHOTS / "generate-375px.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert not page.errors


def test_times_follow_the_browsers_zone_from_the_first_page(context_for, live_server) -> None:  # noqa: F811
    page = context_for(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo")
    email = account_with_history(live_server)
    page.goto("/auth/login")  # no tz cookie yet: the server renders UTC, app.js relabels
    assert page.locator("[data-tz-label]").first.inner_text() == "Asia/Tokyo"
    assert any(cookie["name"] == "tz" and cookie["value"] == "Asia/Tokyo" for cookie in page.context.cookies())
    log_in(page, email)
    page.goto("/credits/history")
    assert page.locator("html").get_attribute("data-tz-source") == "browser"  # rendered by the server
    assert page.locator("thead th").first.inner_text().lower() == "when (asia/tokyo)"
    stamp = page.locator("tbody time").first
    utc = stamp.get_attribute("datetime")
    shown = page.evaluate(
        """iso => new Intl.DateTimeFormat('en-GB', {timeZone: 'Asia/Tokyo', hour: '2-digit', minute: '2-digit',
            hourCycle: 'h23'}).format(new Date(iso))""",
        utc,
    )
    assert stamp.inner_text().endswith(shown), (stamp.inner_text(), shown)
    assert not page.errors
