"""The history in people's words: one row per thing that happened, kinds named for people, the ledger's
detail a click away, the CSV keeping every entry; times in the viewer's time zone; filter errors beside
the fields, with a count and a total for the range."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from starter import credits
from starter.extensions import db
from starter.models import Purchase, Team, User


@pytest.fixture
def owner(make_user, auth) -> User:  # type: ignore[no-untyped-def]
    user = make_user("owner@example.com", name="Olivia Owner")
    auth.login("owner@example.com")
    return user


def team_of(user: User) -> Team:
    return db.session.get(Team, user.current_team_id)


def history(auth, query: str = "") -> str:  # type: ignore[no-untyped-def]
    response = auth.client.get(f"/credits/history{query}")
    assert response.status_code == 200, query
    return response.get_data(as_text=True)


def rows_of(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page else ""
    return [row.split("</tr>", 1)[0] for row in body.split("<tr ")[1:]]


def csv_rows(auth, query: str = "") -> list[list[str]]:  # type: ignore[no-untyped-def]
    return list(csv.reader(io.StringIO(auth.client.get(f"/credits/history.csv{query}").get_data(as_text=True))))


def test_a_generation_is_one_row_with_what_it_charged_and_reserved_and_the_csv_keeps_both_entries(owner, auth):
    team = team_of(owner)
    held = credits.hold(team.id, 10, key="h1", feature="ai_generation", description="AI generation")
    credits.capture(team.id, held.id, 6, key="c1")
    db.session.commit()

    rows = rows_of(history(auth))
    assert len(rows) == 2  # the generation and the free plan credits
    assert "AI generation · 6 credits (10 reserved)" in rows[0]
    assert ">Used</span>" in rows[0] and "\u22126" in rows[0]
    assert "10 reserved, 6 charged, 4 returned" in rows[0]  # the ledger's detail, one click away
    assert "Monthly credits" in rows[1] and "Free plan credits" in rows[1]

    ledger = rows_of(history(auth, "?view=ledger"))
    assert len(ledger) == 3 and "#" in ledger[1] and "· hold" in ledger[1]
    kinds = [row[2] for row in csv_rows(auth)[1:]]
    assert kinds == ["capture", "hold", "grant"]
    dashboard = auth.client.get("/dashboard").get_data(as_text=True)  # recent activity: the same one line
    assert dashboard.count("AI generation · 6 credits (10 reserved)") == 1 and "Reserved for" not in dashboard


def test_a_hold_in_progress_shows_as_reserved_and_a_released_one_as_not_charged(owner, auth):
    team = team_of(owner)
    running = credits.hold(team.id, 10, key="h1", feature="ai_generation", description="AI generation")
    db.session.commit()
    rows = rows_of(history(auth))
    assert "AI generation · 10 credits reserved, in progress" in rows[0] and ">Reserved</span>" in rows[0]

    credits.release(team.id, running.id, key="r1")
    db.session.commit()
    rows = rows_of(history(auth))
    assert len(rows) == 2
    assert "AI generation · not charged (10 reserved, released)" in rows[0] and ">Not charged</span>" in rows[0]


def test_a_purchase_says_what_was_paid_and_kinds_filter_by_their_peoples_names(owner, auth):
    team = team_of(owner)
    receipt = credits.grant(
        team.id, 550, source="purchase", key="cs_1", reference="cs_1", description="Starter pack purchased"
    )
    db.session.add(
        Purchase(
            team_id=team.id,
            pack_code="small",
            credits=550,
            amount_cents=1000,
            currency="usd",
            stripe_checkout_session_id="cs_1",
            block_id=receipt.block_id,
        )
    )
    credits.spend(team.id, 3, key="s1", feature="export_pdf")
    db.session.commit()

    purchases = rows_of(history(auth, "?kind=purchase"))
    assert len(purchases) == 1
    assert "Starter pack purchased · $10.00 paid" in purchases[0] and ">Purchase</span>" in purchases[0]
    monthly = rows_of(history(auth, "?kind=monthly"))
    assert len(monthly) == 1 and "Free plan credits" in monthly[0]
    used = rows_of(history(auth, "?kind=used"))
    assert len(used) == 1 and "PDF export" in used[0]
    page = history(auth)
    for name in ("Purchase", "Monthly credits", "Used", "Expired", "Refund", "Adjustment"):
        assert f">{name}</option>" in page, name
    assert auth.client.get("/credits/history.csv?kind=purchase").get_data(as_text=True).count("\n") == 2


def test_an_adjustment_shows_its_description_never_its_internal_reason(owner, auth):
    team = team_of(owner)
    credits.adjust(team.id, 25, reason="ticket 991: angry customer", description="Goodwill credits", key="a1")
    db.session.commit()
    page = history(auth, "?kind=adjustment")
    assert "Goodwill credits" in page and ">Adjustment</span>" in page
    assert "angry customer" not in page
    assert "angry customer" not in auth.client.get("/credits/history.csv").get_data(as_text=True)


def test_a_reversed_or_malformed_range_is_a_field_error_on_the_history_page(owner, auth):
    reversed_range = auth.client.get("/credits/history?since=2026-03-10&until=2026-03-01")
    page = reversed_range.get_data(as_text=True)
    assert reversed_range.status_code == 400
    assert "The end date is before the start date" in page
    assert 'id="until"' in page and 'aria-invalid="true"' in page and 'value="2026-03-10"' in page
    assert "Error 400" not in page  # the history page itself, not the error page
    malformed = auth.client.get("/credits/history?since=yesterday")
    assert malformed.status_code == 400 and "Not a valid date value" in malformed.get_data(as_text=True)
    # The CSV of a bad range is refused with the reason, not an empty file.
    assert auth.client.get("/credits/history.csv?since=2026-03-10&until=2026-03-01").status_code == 400


def test_a_filtered_range_shows_its_count_and_total(owner, auth):
    team = team_of(owner)
    for n, amount in enumerate((2, 3, 4)):
        credits.spend(team.id, amount, key=f"s{n}", now=datetime(2026, 3, 5, 12, n, tzinfo=UTC))
    credits.spend(team.id, 50, key="later", now=datetime(2026, 4, 5, 12, tzinfo=UTC))
    db.session.commit()
    page = history(auth, "?since=2026-03-01&until=2026-03-31")
    summary = page.split('data-testid="history-summary">', 1)[1].split("</p>", 1)[0]
    assert "<strong>3</strong> entries match" in summary and "\u22129</span> used" in summary
    assert "+0</span> added" in summary and "2026-03-01 to 2026-03-31" in summary
    assert 'data-testid="history-summary"' not in history(auth)  # no filter, no count to pay for


# -- time zones --------------------------------------------------------------------------------


def test_times_are_shown_in_the_browsers_zone_labelled_and_stored_utc(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 2, key="s1", description="Winter", now=datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    db.session.commit()
    utc = history(auth)
    assert "When (<span data-tz-label>UTC</span>)" in utc and ">15 Jan 2026 12:00</time>" in utc

    auth.client.set_cookie("tz", "Europe/Paris")
    paris = history(auth)
    assert "When (<span data-tz-label>Europe/Paris</span>)" in paris
    assert (
        '<time datetime="2026-01-15T12:00:00Z" data-style="cell" title="15 Jan 2026, 12:00 UTC">15 Jan 2026 13:00'
        in (paris)
    )
    assert 'data-tz="Europe/Paris" data-tz-source="browser"' in paris
    dashboard = auth.client.get("/dashboard").get_data(as_text=True)
    assert "Times in <span data-tz-label>Europe/Paris</span>" in dashboard
    assert 'data-testid="chart-days-utc"' in dashboard  # the chart's rollup counts UTC days: it says so
    assert "Winter" in dashboard and "15 Jan 13:00</time>" in dashboard  # recent activity, local

    for bogus in ("Mars/Olympus", "../../etc/passwd", "x" * 100):
        auth.client.set_cookie("tz", bogus)
        assert "When (<span data-tz-label>UTC</span>)" in history(auth), bogus


def test_date_filters_count_whole_days_in_the_viewers_zone(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 2, key="late", description="Late night", now=datetime(2026, 1, 15, 23, 30, tzinfo=UTC))
    db.session.commit()
    assert "Late night" in history(auth, "?since=2026-01-15&until=2026-01-15")  # UTC: the 15th
    auth.client.set_cookie("tz", "Europe/Paris")  # 00:30 on the 16th in Paris
    assert "Late night" not in history(auth, "?since=2026-01-15&until=2026-01-15")
    assert "Late night" in history(auth, "?since=2026-01-16&until=2026-01-16")


def test_a_picked_time_zone_wins_over_the_browsers_until_set_back_to_automatic(owner, auth):
    auth.client.set_cookie("tz", "Europe/Paris")
    response = auth.post(
        "/time-zone", {"zone": "America/New_York", "next": "/credits/history"}, token_from="/time-zone"
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/credits/history")
    page = history(auth)
    assert "When (<span data-tz-label>America/New_York</span>)" in page and 'data-tz-source="setting"' in page

    bad = auth.post("/time-zone", {"zone": "Mars/Olympus"}, token_from="/time-zone")
    assert bad.status_code == 400 and "Not a valid choice" in bad.get_data(as_text=True)
    assert "America/New_York" in history(auth)  # unchanged

    evil = auth.post("/time-zone", {"zone": "", "next": "https://evil.example/"}, token_from="/time-zone")
    assert evil.status_code == 302 and "evil.example" not in evil.headers["Location"]
    assert "When (<span data-tz-label>Europe/Paris</span>)" in history(auth)  # the browser's again


def test_the_usage_page_counts_days_in_the_viewers_zone_by_default(owner, auth):
    auth.client.set_cookie("tz", "Asia/Tokyo")
    page = auth.client.get("/credits/usage").get_data(as_text=True)
    assert 'value="Asia/Tokyo"' in page and "data-fill-timezone" not in page
    assert 'value="UTC"' in auth.client.get("/credits/usage?tz=UTC").get_data(as_text=True)
