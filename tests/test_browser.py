"""Browser tests: Playwright drives Debian's Chromium through the real app served over HTTP.

The whole purchase path by mouse and by keyboard, then reach: no sideways scrolling at 375 px,
labelled inputs, dark mode from the system setting and WCAG AA contrast in both schemes. Every run
saves screenshots of the dashboard and the billing pages under ``artifacts/screenshots/`` (git-ignored).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``CHROMIUM_PATH`` names another binary);
Playwright never downloads a browser here. Without Chromium the tests skip, unless
``REQUIRE_BROWSER_TESTS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from starter import accounts, catalog, credits, mail
from starter.billing import recharge_job
from starter.blueprints.dashboard.generation import fake_generation
from starter.extensions import db
from starter.models import AutoRecharge, Membership
from tests.browser_layout_checks import COLOURS
from tests.browser_server import LiveServer, serve
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
SMALL_PACK = catalog.PACKS["small"]
FREE_CREDITS = catalog.FREE_PLAN.monthly_credits


@pytest.fixture(scope="module")
def live_server(database_url: str) -> Iterator[LiveServer]:
    """The real app (test-mode billing, CSRF on, no rate limits) on a free port; tables emptied afterwards."""
    with serve(database_url) as server:
        yield server


@pytest.fixture
def page(browser, live_server: LiveServer):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield page
    context.close()
    assert not errors, f"JavaScript errors or CSP violations in the browser: {errors}"


def _email() -> str:
    return f"browser-{uuid.uuid4().hex[:10]}@example.com"


def make_account(server: LiveServer, *, spend: int = 0, purchased: int = 0) -> str:
    """A user with a personal team (free plan credits), optionally a purchase and a spend; returns the email."""
    email = _email()
    with server.app.app_context():
        user = accounts.sign_up("Browser Tester", email, PASSWORD)
        team_id = db.session.scalar(db.select(Membership.team_id).filter_by(user_id=user.id))
        if purchased:
            credits.grant(
                team_id, purchased, source="purchase", key=f"seed-purchase-{email}", description="Small pack purchased"
            )
        if spend:
            credits.spend(team_id, spend, key=f"seed-spend-{email}", feature="ai_generation")
        db.session.commit()
        db.session.remove()
    return email


def stat(page, testid: str) -> int:  # type: ignore[no-untyped-def]
    return int(page.get_by_test_id(testid).inner_text().replace(",", ""))


def log_in(page, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/auth/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard")


def focus_is_inside(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("s => !!(document.activeElement && document.activeElement.closest(s))", selector)


def tab_to(page, selector: str, limit: int = 40) -> None:  # type: ignore[no-untyped-def]
    """Press Tab until the focused element matches ``selector`` (fails after ``limit`` presses)."""
    focused_matches = "s => !!document.activeElement && document.activeElement.matches(s)"
    for _ in range(limit):
        if page.evaluate(focused_matches, selector):
            return
        page.keyboard.press("Tab")
    if page.evaluate(focused_matches, selector):
        return
    focused = page.evaluate("() => document.activeElement && document.activeElement.outerHTML.slice(0, 200)")
    raise AssertionError(f"{limit} presses of Tab never reached {selector}; focus is on {focused}")


# 1. The whole purchase path, by mouse --------------------------------------------------------------


def test_purchase_path_sign_up_buy_spend_history_and_csv(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    page.goto("/auth/signup")
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/dashboard")
    assert stat(page, "plan-credits") == FREE_CREDITS == 100
    assert stat(page, "purchased-credits") == 0

    # The purchase dialog opens over the dashboard, with focus inside it.
    page.locator('.page-actions [data-dialog-open="buy-credits"]').click()
    dialog = page.locator("dialog#buy-credits[open]")
    dialog.wait_for()
    assert page.evaluate("() => document.getElementById('buy-credits').matches(':modal')")
    assert focus_is_inside(page, "dialog#buy-credits")

    dialog.get_by_role("button", name=re.compile(rf"Buy the {SMALL_PACK.name}")).click()
    page.wait_for_url("**/billing/test-checkout/**")
    page.get_by_text("Test mode — no card is charged").wait_for()
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    success = page.get_by_role("status").filter(has_text="credits added")
    assert f"{SMALL_PACK.total_credits:,} credits added" in success.inner_text()

    page.get_by_role("link", name="Go to the dashboard").click()
    page.wait_for_url("**/dashboard")
    assert stat(page, "purchased-credits") == SMALL_PACK.total_credits
    assert stat(page, "plan-credits") == FREE_CREDITS

    # The example feature: plan credits are spent first, purchased ones stay whole.
    prompt = "A tagline for a bakery that only opens at night"
    cost = fake_generation(prompt, catalog.FEATURES["ai_generation"].credits).credits
    page.goto("/generate")
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name=re.compile(r"^Generate")).click()
    output = page.get_by_test_id("output")
    output.wait_for()
    assert output.inner_text().strip()
    page.goto("/dashboard")
    assert stat(page, "plan-credits") == FREE_CREDITS - cost
    assert stat(page, "purchased-credits") == SMALL_PACK.total_credits

    # The history (one click from the navigation) lists the free grant, the purchase and the spend.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    page.wait_for_url("**/credits/history")
    rows = page.get_by_test_id("history").locator("tbody tr")
    texts = rows.all_inner_texts()
    # In people's words: one row per thing that happened, the generation's hold folded into its capture.
    assert len(texts) == 3, texts
    assert any("Free plan credits" in t and "Monthly credits" in t and f"+{FREE_CREDITS}" in t for t in texts), texts
    paid = f"{SMALL_PACK.name} purchased · ${SMALL_PACK.price_cents / 100:,.2f} paid"
    assert any(paid in t and "Purchase" in t and f"+{SMALL_PACK.total_credits}" in t for t in texts), texts
    generation = f"AI generation · {cost} credits (10 reserved)"
    assert any(generation in t and "Used" in t and f"\N{MINUS SIGN}{cost}" in t for t in texts), texts

    # CSV export: a real download with a header and the same entries.
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert re.fullmatch(r"credits-.+-\d{8}\.csv", download.suggested_filename), download.suggested_filename
    table = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert table, "the CSV has no rows"
    assert list(table[0]) == [
        "id",
        "created_at",
        "kind",
        "description",
        "feature",
        "amount",
        "balance_after",
        "held_change",
        "actor",
    ]
    entries = {(row["kind"], row["description"], int(row["amount"])) for row in table}
    assert ("grant", "Free plan credits", FREE_CREDITS) in entries, entries
    assert ("grant", f"{SMALL_PACK.name} purchased", SMALL_PACK.total_credits) in entries, entries
    assert ("capture", "AI generation", -cost) in entries, entries
    assert any(row["kind"] == "capture" and row["feature"] == "ai_generation" for row in table)


# 2. Keyboard only ------------------------------------------------------------------------------------


def test_keyboard_only_log_in_open_close_dialog_and_buy(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    email = make_account(live_server)
    page.goto("/auth/login")
    tab_to(page, "input#email")
    page.keyboard.type(email)
    tab_to(page, "input#password", limit=2)
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard")
    assert stat(page, "purchased-credits") == 0

    opener = '.page-actions [data-dialog-open="buy-credits"]'
    tab_to(page, opener)
    page.keyboard.press("Enter")
    page.locator("dialog#buy-credits[open]").wait_for()
    assert focus_is_inside(page, "dialog#buy-credits"), "focus did not move into the dialog"

    page.keyboard.press("Escape")
    page.locator("dialog#buy-credits").wait_for(state="hidden")
    assert not page.evaluate("() => document.getElementById('buy-credits').open")
    assert page.evaluate("s => document.activeElement === document.querySelector(s)", opener), (
        "focus did not return to the Buy credits button"
    )

    page.keyboard.press("Enter")
    page.locator("dialog#buy-credits[open]").wait_for()
    tab_to(page, f'dialog#buy-credits button[aria-label^="Buy the {SMALL_PACK.name}"]', limit=5)
    page.keyboard.press("Enter")
    page.wait_for_url("**/billing/test-checkout/**")
    tab_to(page, "form:has(input[name=action][value=pay]) button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/billing/success?session_id=cs_*")
    tab_to(page, "main a[href$='/dashboard']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard")
    assert stat(page, "purchased-credits") == SMALL_PACK.total_credits
    assert stat(page, "plan-credits") == FREE_CREDITS


# 3. Reach: 375 px, labels, dark mode, contrast ------------------------------------------------------

UNLABELLED_FIELDS = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && el.checkVisibility({visibilityProperty: true}))
  .filter(el => {
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    const named = (id) => { const n = document.getElementById(id); return n && n.textContent.trim(); };
    const byIds = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean).some(named);
    const label = (byFor && byFor.textContent.trim()) || el.closest('label') || byIds
      || (el.getAttribute('aria-label') || '').trim();
    return !label;
  })
  .map(el => el.outerHTML.slice(0, 160))"""

OVERFLOW = """() => {
  const width = window.innerWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(el => el.checkVisibility() && !el.closest('.table-wrap, pre, .code, dialog:not([open])'))
    .filter(el => el.getBoundingClientRect().right > width + 0.5)
    .slice(0, 5)
    .map(el => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')} right=${el.getBoundingClientRect().right}`);
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, wide};
}"""

# WCAG 2.x relative luminance and contrast ratio, measured on the rendered page: every visible element
# with text of its own, its text colour (with opacity) over the first opaque background found walking
# up the tree (semi-transparent ones composited on the way).
CONTRAST = (
    "() => {"
    + COLOURS
    + """  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage && style.backgroundImage !== 'none' && !node.matches('select')) return null;
      const c = parse(style.backgroundColor);
      if (c && c[3] > 0) {
        layers.push(c);
        if (c[3] >= 1) break;
      }
    }
    let result = [255, 255, 255, 1];
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + [...el.classList].map(c => '.' + c).join('');
  const describe = (el) => name(el) + (el.parentElement ? ' in ' + name(el.parentElement) : '');
  const results = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg, script, style, [aria-disabled="true"], :disabled')) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!text || !el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color);
    const bg = background(el);
    if (!fg || !bg) continue;
    let opacity = 1;
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      opacity *= Number(getComputedStyle(node).opacity);
    }
    const colour = over([fg[0], fg[1], fg[2], fg[3] * opacity], bg);
    const size = parseFloat(style.fontSize);
    const weight = parseInt(style.fontWeight, 10);
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    results.push({
      element: describe(el),
      text: text.slice(0, 40),
      ratio: Math.round(ratio(colour, bg) * 100) / 100,
      required: large ? 3 : 4.5,
      color: style.color,
      background: `rgb(${bg.slice(0, 3).map(Math.round).join(' ')})`,
      classes: [el, ...(el.parentElement ? [el.parentElement] : [])].map(n => n.className).join(' '),
      tag: el.tagName.toLowerCase(),
      nav: !!el.closest('.nav-links'),
    });
  }
  return results;
}"""
)

# The kinds of text the issue names; each must have been measured at least once in each scheme.
MEASURED_KINDS = {
    "body text": lambda r: r["tag"] in {"p", "h1", "h2", "td", "li", "span", "strong", "label"},
    ".muted": lambda r: "muted" in r["classes"].split(),
    ".btn-primary": lambda r: "btn-primary" in r["classes"].split(),
    "nav links": lambda r: r["nav"],
    ".badge": lambda r: "badge" in r["classes"].split(),
    ".alert": lambda r: "alert" in r["classes"].split(),
}


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait for CSS transitions and animations (a scheme switch, the dialog opening) to finish."""
    page.evaluate("() => Promise.all(document.getAnimations().map(a => a.finished.catch(() => null)))")


def contrast_failures(page, scheme: str, seen: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    path = page.evaluate("() => location.pathname")
    settle(page)
    results = page.evaluate(CONTRAST)
    seen.update(name for name, matches in MEASURED_KINDS.items() if any(matches(r) for r in results))
    return [
        f"{scheme} {path}: {r['element']} “{r['text']}” is {r['ratio']}:1 (needs {r['required']}:1), "
        f"{r['color']} on {r['background']}"
        for r in results
        if r["ratio"] < r["required"]
    ]


def check_page(page, problems: list[str], seen: dict[str, set[str]]) -> None:  # type: ignore[no-untyped-def]
    """Labels, contrast in light and dark, and no sideways scrolling at 375 px, on the current page."""
    path = page.evaluate("() => location.pathname")
    problems.extend(f"{path}: input without a label: {html}" for html in page.evaluate(UNLABELLED_FIELDS))
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems.extend(contrast_failures(page, scheme, seen[scheme]))
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(PHONE)
    overflow = page.evaluate(OVERFLOW)
    if overflow["scrollWidth"] > overflow["innerWidth"]:
        problems.append(f"{path}: {overflow['scrollWidth']} px wide at {overflow['innerWidth']} px: {overflow['wide']}")
    page.set_viewport_size(DESKTOP)


def test_reach_375px_labels_dark_mode_and_contrast(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    # 60 of 100 plan credits spent: the dashboard shows its low-balance warning.
    email = make_account(live_server, spend=60)
    problems: list[str] = []
    seen: dict[str, set[str]] = {"light": set(), "dark": set()}

    # A wrong password puts an error alert on the log-in page.
    page.goto("/auth/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").wait_for()
    check_page(page, problems, seen)
    page.goto("/auth/signup")
    check_page(page, problems, seen)
    log_in(page, email)

    page.get_by_text("Your balance is low").wait_for()
    for path in ("/dashboard", "/credits/history", "/billing", "/team/members", "/account", "/team/settings"):
        page.goto(path)
        check_page(page, problems, seen)
    page.goto("/generate")
    page.get_by_label("Prompt").fill("Reach test")
    page.get_by_role("button", name=re.compile(r"^Generate")).click()
    page.get_by_test_id("output").wait_for()
    check_page(page, problems, seen)

    # The dialog, the test checkout and the success page.
    page.goto("/dashboard")
    page.locator('.page-actions [data-dialog-open="buy-credits"]').click()
    page.locator("dialog#buy-credits[open]").wait_for()
    check_page(page, problems, seen)
    page.locator("dialog#buy-credits").get_by_role("button", name=re.compile(rf"Buy the {SMALL_PACK.name}")).click()
    page.wait_for_url("**/billing/test-checkout/**")
    check_page(page, problems, seen)
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    check_page(page, problems, seen)

    # Dark mode follows the system setting.
    page.goto("/dashboard")
    backgrounds = {}
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        backgrounds[scheme] = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert backgrounds["light"] != backgrounds["dark"], backgrounds

    for scheme in ("light", "dark"):
        missing = set(MEASURED_KINDS) - seen[scheme]
        assert not missing, f"{scheme}: no {sorted(missing)} measured: the contrast check lost its targets"
    assert not problems, "Reach problems:\n" + "\n".join(problems)


# 4. Screenshots, every run -----------------------------------------------------------------------------


def test_dashboard_screenshots(page, live_server: LiveServer, backend: str) -> None:  # type: ignore[no-untyped-def]
    """Dashboard in light and dark, 1280 and 375 px wide, under artifacts/screenshots/ (git-ignored)."""
    email = make_account(live_server, purchased=SMALL_PACK.total_credits, spend=35)
    log_in(page, email)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for name, size in (("desktop", DESKTOP), ("375px", PHONE)):
            page.set_viewport_size(size)
            page.goto("/dashboard")
            path = SCREENSHOTS / f"dashboard-{scheme}-{name}-{backend}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
            saved.append(path)
    assert all(path.stat().st_size > 10_000 for path in saved), saved


# 5. Auto-recharge, the "done when" ----------------------------------------------------------
# Save a card on a pack purchase, turn auto-recharge on, spend below the threshold, see the recharge
# land once, the receipt listed and the email sent (to the console in development; the outbox here).

MEDIUM = catalog.PACKS["medium"]
PROMPT = "A slogan for a lighthouse that runs on credits"


def test_auto_recharge_from_a_saved_card_lands_once_with_its_receipt(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
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
    page.get_by_label("Buy this pack").select_option(SMALL_PACK.code)
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
    assert stat(page, "available") == balance - cost + SMALL_PACK.total_credits
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

    with live_server.app.app_context():  # the mail job's work, done now rather than on its next tick
        mail.deliver_due()
        db.session.remove()
    subjects = [m["Subject"] for m in live_server.app.extensions.get("outbox", []) if m["To"] == email]
    assert subjects.count("Receipt: Auto-recharge: Small pack") == 1, subjects


# 6. Yearly plans and overage, by mouse ----------------------------------------------------------------


def test_buy_pro_yearly_with_the_switch_then_turn_overage_on_for_starter(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    pro, starter = catalog.PLANS["pro"], catalog.PLANS["starter"]
    log_in(page, make_account(live_server))
    page.goto("/billing")
    switch = page.get_by_role("navigation", name="Billing interval")
    switch.get_by_role("link", name=re.compile(r"^Yearly")).click()
    page.wait_for_url("**/billing?interval=year")
    assert switch.get_by_role("link", name=re.compile(r"^Yearly")).get_attribute("aria-current") == "true"
    page.get_by_role("button", name="Upgrade to Pro yearly").click()
    page.wait_for_url("**/billing/test-checkout/**")
    page.get_by_role("button", name=f"Pay ${pro.yearly_price_cents / 100:,.2f} (test)").click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    page.goto("/dashboard")
    assert stat(page, "plan-credits") == pro.monthly_credits  # one month's credits, not twelve
    assert "Paid yearly" in page.get_by_text(re.compile("Paid yearly")).first.inner_text()

    # A second person on Starter monthly turns overage on with a cap, by label.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r".*/(auth/login)?(\?.*)?$"))
    log_in(page, make_account(live_server))
    page.goto("/billing")
    page.get_by_role("button", name="Upgrade to Starter monthly").click()
    page.wait_for_url("**/billing/test-checkout/**")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url("**/billing/success?session_id=cs_*")
    page.goto("/billing")
    page.get_by_label("Allow spending past our credits, billed as overage").check()
    page.get_by_label("Monthly overage cap (credits)").fill("3000")
    page.get_by_role("button", name="Save overage settings").click()
    page.get_by_text("Overage is on.").wait_for()
    assert "0 of 3,000 overage credits used" in page.get_by_test_id("overage-billing").inner_text()
    assert f"${starter.overage_cents_per_1000 / 100:,.2f} per 1,000 credits" in page.content()


# 7. What a paying user sees (issue 16): the meter's width, the plan cards, an ending plan resumed ----------
# Screenshots of the billing, dashboard, pricing and sign-up pages at 1280 and 375 px, light and dark.

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


# History in people's words: at 375 px the credits and balance columns are in view without scrolling,
# and times follow the browser's time zone from the very first page (relabelled by app.js, then
# rendered by the server from the cookie it wrote). -------------------------------------------------


@pytest.fixture
def context_for(browser, live_server):  # type: ignore[no-untyped-def]
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


def test_at_375px_the_credits_and_balance_columns_are_in_view(context_for, live_server) -> None:
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


def test_times_follow_the_browsers_zone_from_the_first_page(context_for, live_server) -> None:
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
