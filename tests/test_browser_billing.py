"""Browser tests of what a paying user sees: the meter's width, the plan cards' layout, an ending plan resumed.

Chromium through Playwright on the real app (the fixtures and checks of tests/test_browser.py); screenshots of
the billing, dashboard, pricing and sign-up pages at 1280 and 375 px, light and dark, go to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import itertools
import re

import pytest

from starter import catalog
from tests import test_browser
from tests.browser_server import LiveServer
from tests.test_browser import DESKTOP, PHONE, SCREENSHOTS, check_page, log_in, make_account

pytestmark = pytest.mark.browser
# The fixtures of tests/test_browser.py (pytest finds them by their names here).
browser, live_server, page = test_browser.browser, test_browser.live_server, test_browser.page
PRO = catalog.PLANS["pro"]


def boxes(page, selector: str) -> list[dict]:  # type: ignore[no-untyped-def]
    visible = "s => [...document.querySelectorAll(s)].filter(e => e.checkVisibility())"
    return page.evaluate(visible + ".map(e => e.getBoundingClientRect().toJSON())", selector)


def test_the_meter_is_as_wide_as_what_is_left_of_the_allowance(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    log_in(page, make_account(live_server, spend=93))
    [bar] = boxes(page, 'svg[data-testid="meter"]')
    [plan] = boxes(page, 'svg[data-testid="meter"] rect.meter-plan')
    assert plan["x"] == pytest.approx(bar["x"], abs=0.5)
    assert plan["width"] / bar["width"] == pytest.approx(0.07, abs=0.005)  # 7 left of 100: 7% of the bar
    assert "Used 93 of 100" in page.get_by_test_id("plan-meta").inner_text()


def test_the_empty_usage_chart_is_one_centred_sentence(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    log_in(page, make_account(live_server))
    [box] = boxes(page, '[data-testid="chart-empty"]')
    [sentence] = boxes(page, '[data-testid="chart-empty"] > p')
    assert page.locator('[data-testid="chart-empty"] > *').count() == 1
    # One line, centred: no lone "." on a row of its own.
    assert sentence["height"] < 30
    assert abs((sentence["x"] - box["x"]) - (box["x"] + box["width"] - sentence["x"] - sentence["width"])) < 2


def subscribe_then_cancel_at_period_end(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/billing")
    page.get_by_role("button", name="Upgrade to Pro monthly").click()
    page.wait_for_url("**/billing/test-checkout/**")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    page.goto("/billing")
    page.get_by_role("button", name="Manage billing").click()
    page.wait_for_url("**/billing/test-portal")
    page.get_by_role("button", name="Cancel at period end").click()
    page.get_by_text("Done: the subscription was updated").wait_for()


def shoot(page, name: str, backend: str) -> list:  # type: ignore[no-untyped-def]
    saved = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for label, size in (("desktop", DESKTOP), ("375px", PHONE)):
            page.set_viewport_size(size)
            path = SCREENSHOTS / f"{name}-{scheme}-{label}-{backend}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
            saved.append(path)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(DESKTOP)
    return saved


def test_plan_cards_ending_plan_resume_and_screenshots(page, live_server: LiveServer, backend: str) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    seen: dict[str, set[str]] = {"light": set(), "dark": set()}
    saved = []

    # A signed-out visitor's choice, on the pricing page and the sign-up form it leads to.
    page.goto("/#pricing")
    saved += shoot(page, "pricing-signed-out", backend)
    page.get_by_role("link", name="Choose Pro").click()
    page.wait_for_url("**/auth/signup?plan=pro&interval=month")
    page.get_by_test_id("chosen-plan").wait_for()
    check_page(page, problems, seen)
    saved += shoot(page, "signup-with-plan", backend)

    log_in(page, make_account(live_server, spend=40, purchased=500))
    page.goto("/billing?plan=pro&interval=month")
    page.get_by_test_id("chosen-plan").wait_for()
    check_page(page, problems, seen)
    saved += shoot(page, "billing-chosen-plan", backend)

    # The plan cards: cards side by side at 1280 px with their buttons level, stacked at 375 px.
    page.goto("/billing")
    cards = boxes(page, ".plan-card")
    assert len(cards) == 3 and len({round(c["y"]) for c in cards}) == 1, cards
    buttons = boxes(page, ".plan-card .plan-card-action form .btn, .plan-card .plan-card-action > .btn")
    assert len({round(b["y"] + b["height"]) for b in buttons}) == 1, buttons  # every button on one line
    for a, b in itertools.pairwise(cards):
        assert a["x"] + a["width"] <= b["x"], (a, b)  # no card overlaps the next
    page.set_viewport_size(PHONE)
    cards = boxes(page, ".plan-card")
    assert len({round(c["x"]) for c in cards}) == 1, cards  # one column
    for a, b in itertools.pairwise(cards):
        assert a["y"] + a["height"] <= b["y"], (a, b)
    page.set_viewport_size(DESKTOP)
    # The header's subtitle sits under the title, not beside it.
    [title] = boxes(page, ".page-header h1")
    [subtitle] = boxes(page, '.page-header [data-testid="plan-status"]')
    assert subtitle["y"] >= title["y"] + title["height"] - 1
    assert "60 Free plan credits left expire" in page.get_by_test_id("upgrade-note-pro").inner_text()
    check_page(page, problems, seen)
    saved += shoot(page, "billing-free", backend)
    page.goto("/dashboard")
    page.locator('.page-actions [data-dialog-open="buy-credits"]').click()
    page.locator("dialog#buy-credits[open]").wait_for()
    assert page.locator("dialog#buy-credits").get_by_test_id("best-value").count() == 1
    saved += shoot(page, "purchase-dialog", backend)

    # Pro, cancelled at the period end: the date everywhere, then "Keep Pro".
    subscribe_then_cancel_at_period_end(page)
    check_page(page, problems, seen)
    saved += shoot(page, "test-portal-ending", backend)
    page.goto("/dashboard")
    notice = page.get_by_test_id("plan-ending")
    assert "plan ends on" in notice.inner_text() and "resets on" not in page.get_by_test_id("plan-meta").inner_text()
    check_page(page, problems, seen)
    saved += shoot(page, "dashboard-ending", backend)
    page.goto("/billing")
    check_page(page, problems, seen)
    saved += shoot(page, "billing-ending", backend)
    page.get_by_role("button", name="Keep Pro").click()
    page.get_by_text("The Pro plan will renew as usual.").wait_for()
    assert page.get_by_test_id("plan-ending").count() == 0
    check_page(page, problems, seen)
    saved += shoot(page, "billing-pro", backend)
    page.goto("/")
    pro_card = page.locator('article[aria-labelledby="plan-pro"]')
    assert "Current plan" in pro_card.inner_text()
    assert page.locator('article[aria-labelledby="plan-starter"]').get_by_role("link", name="Downgrade to Starter")
    check_page(page, problems, seen)
    saved += shoot(page, "pricing-signed-in", backend)

    assert not problems, "Reach problems:\n" + "\n".join(problems)
    assert all(path.stat().st_size > 10_000 for path in saved), saved
