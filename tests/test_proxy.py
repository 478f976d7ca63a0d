"""Behind a reverse proxy: TRUSTED_PROXY_COUNT decides whose X-Forwarded-* headers are believed."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, AuthActions

PROXY_ADDRESS = "10.0.0.1"  # every request arrives from the proxy


def through_proxy(forwarded_for: str, **headers: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": PROXY_ADDRESS}, "headers": {"X-Forwarded-For": forwarded_for, **headers}}


def login_via_proxy(app, forwarded_for: str, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """A log-in from a fresh browser, forwarded by the proxy."""
    browser = AuthActions(app.test_client())
    form = {"email": email, "password": password}
    return browser.post("/auth/login", form, token_from="/auth/login", **through_proxy(forwarded_for))


@pytest.mark.parametrize(
    "app_config", [{"TRUSTED_PROXY_COUNT": 1, "LOGIN_RATE_LIMIT": "3 per minute"}], ids=["one-proxy"]
)
def test_behind_one_trusted_proxy_each_client_has_its_own_log_in_limit(app, fast_user):
    fast_user("alice@example.com")
    fast_user("bob@example.com")
    for _ in range(3):
        assert login_via_proxy(app, "203.0.113.5", "alice@example.com", "wrong-password-1").status_code == 200
    assert login_via_proxy(app, "203.0.113.5", "alice@example.com").status_code == 429

    assert login_via_proxy(app, "198.51.100.7", "bob@example.com").status_code == 302
    assert login_via_proxy(app, "198.51.100.8", "alice@example.com").status_code == 302


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": "3 per minute"}], ids=["default"])
def test_by_default_a_forwarded_address_is_not_believed(app, fast_user):
    fast_user("alice@example.com")
    for number in range(3):
        assert login_via_proxy(app, f"203.0.113.{number}", "alice@example.com", "wrong-password-1").status_code == 200

    # A new forged address each time gives no new budget: the limit counts REMOTE_ADDR.
    assert login_via_proxy(app, "203.0.113.99", "alice@example.com").status_code == 429


@pytest.mark.parametrize(
    "app_config", [{"TRUSTED_PROXY_COUNT": 1, "LOGIN_RATE_LIMIT": "3 per minute"}], ids=["one-proxy"]
)
def test_with_one_proxy_only_the_entry_it_appended_is_believed(app, fast_user):
    fast_user("alice@example.com")
    for number in range(3):
        forged = f"192.0.2.{number}, 203.0.113.5"  # the client's own header, then the proxy's entry
        assert login_via_proxy(app, forged, "alice@example.com", "wrong-password-1").status_code == 200

    assert login_via_proxy(app, "192.0.2.99, 203.0.113.5", "alice@example.com").status_code == 429


@pytest.mark.parametrize("app_config", [{"TRUSTED_PROXY_COUNT": 1}], ids=["one-proxy"])
def test_the_scheme_the_proxy_saw_makes_the_request_secure(client):
    response = client.get("/", **through_proxy("203.0.113.5", **{"X-Forwarded-Proto": "https"}))

    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_by_default_a_forwarded_scheme_is_not_believed(client):
    response = client.get("/", **through_proxy("203.0.113.5", **{"X-Forwarded-Proto": "https"}))

    assert "Strict-Transport-Security" not in response.headers
