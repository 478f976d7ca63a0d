"""Nothing a signed-in user sees may be kept by a cache: every authenticated page answers no-store."""

from __future__ import annotations

import pytest


def parameterless_get_pages(app) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.arguments and rule.endpoint != "static"
    )


@pytest.fixture
def signed_in(make_user, auth):  # type: ignore[no-untyped-def]
    make_user("owner@example.com", is_site_admin=True)  # a site admin sees every page, /admin included
    auth.login("owner@example.com")
    return auth.client


def test_every_page_of_a_signed_in_user_is_no_store(app, signed_in):
    seen = []
    for path in parameterless_get_pages(app):
        response = signed_in.get(path)
        seen.append(path)
        assert response.headers.get("Cache-Control") == "no-store", (path, response.status_code)
    assert {"/dashboard", "/credits/history", "/credits/history.csv", "/team/api-keys", "/admin"} <= set(seen)


def test_the_csv_export_is_no_store(signed_in):
    response = signed_in.get("/credits/history.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Cache-Control"] == "no-store"


def test_public_pages_and_static_files_stay_cacheable(app, signed_in):
    assert "no-store" not in (signed_in.get("/static/css/app.css").headers.get("Cache-Control") or "")
    assert "no-store" not in (app.test_client().get("/").headers.get("Cache-Control") or "")
