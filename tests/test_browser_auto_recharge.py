"""Browser test of auto-recharge in test mode, the issue's "done when": save a card on a pack purchase,
turn auto-recharge on, spend below the threshold, see the recharge land once, the receipt listed and
the email sent (printed to the console in development; collected in the test app's outbox here).

Needs Chromium like tests/test_browser.py (whose fixtures it shares); skips without it unless
``REQUIRE_BROWSER_TESTS=1``.
"""

from __future__ import annotations

import re

import pytest

from starter import catalog
from starter.billing import recharge_job
from starter.blueprints.dashboard.generation import fake_generation
from starter.extensions import db
from starter.models import AutoRecharge
from tests.browser_server import LiveServer
from tests.test_browser import browser, live_server, log_in, make_account, page, stat  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
MEDIUM, SMALL = catalog.PACKS["medium"], catalog.PACKS["small"]
PROMPT = "A slogan for a lighthouse that runs on credits"


def test_auto_recharge_from_a_saved_card_lands_once_with_its_receipt(page, live_server: LiveServer) -> None:  # noqa: F811
    email = make_account(live_server)
    log_in(page, email)
    start = stat(page, "available")

    # A pack bought on the test checkout with Stripe's 4242 test card saves that card.
    page.goto("/billing")
    page.get_by_role("button", name=re.compile(rf"Buy the {MEDIUM.name}")).click()
    page.wait_for_url("**/billing/test-checkout/**")
    page.get_by_text("The card is saved for later payments").wait_for()
    page.get_by_label("Test card").select_option("4242424242424242")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    receipt = page.get_by_test_id("receipt")
    assert f"{MEDIUM.total_credits:,}" in receipt.inner_text()
    balance = start + MEDIUM.total_credits
    assert page.get_by_test_id("new-balance").inner_text() == f"{balance:,} credits"

    # Auto-recharge: the card on file, then on with a threshold one generation will cross.
    cost = fake_generation(PROMPT, catalog.FEATURES["ai_generation"].credits).credits
    threshold = balance - cost + 1
    page.goto("/billing/auto-recharge")
    assert "ending in 4242" in page.get_by_test_id("card-on-file").inner_text()
    page.get_by_label("Recharge automatically").check()
    page.get_by_label("When the balance falls below (credits)").fill(str(threshold))
    page.get_by_label("Buy this pack").select_option(SMALL.code)
    page.get_by_label("Spend at most this much per month ($)").fill("50")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Auto-recharge is on.").wait_for()
    assert "On" in page.get_by_test_id("auto-recharge-status").inner_text()

    # Spend below the threshold with the example feature.
    page.goto("/generate")
    page.get_by_label("Prompt").fill(PROMPT)
    page.get_by_role("button", name=re.compile(r"^Generate")).click()
    page.get_by_test_id("output").wait_for()

    # The scheduler's job (off in tests) pays it; run it twice: the recharge lands once.
    with live_server.app.app_context():
        assert recharge_job.pay_due().charged == 1
        assert recharge_job.pay_due().claimed == 0
        statuses = db.session.scalars(db.select(AutoRecharge.status)).all()
        db.session.remove()
    assert statuses == ["succeeded"]

    page.goto("/dashboard")
    assert stat(page, "available") == balance - cost + SMALL.total_credits
    assert "$5.00 of $50.00 cap" in page.get_by_test_id("auto-recharge-month").inner_text()

    page.goto("/billing/receipts")
    rows = page.get_by_test_id("receipts").locator("tbody tr")
    texts = rows.all_inner_texts()
    assert len(texts) == 2, texts
    assert "Auto-recharge: Small pack" in texts[0] and "Paid" in texts[0], texts
    assert "Medium pack credit pack" in texts[1], texts
    rows.first.get_by_role("link", name="View receipt").click()
    page.get_by_role("heading", name="Receipt").wait_for()
    assert "pi_local_" in page.content()

    subjects = [m["Subject"] for m in live_server.app.extensions.get("outbox", []) if m["To"] == email]
    assert subjects.count("Receipt: Auto-recharge: Small pack") == 1, subjects
