"""The one Chromium of a test session, for every browser test module (``tests/conftest.py`` imports it).

Defined once here rather than in a test module: a session fixture imported into two modules is two
fixtures, and a second Playwright started while the first runs fails.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``CHROMIUM_PATH`` names another binary);
Playwright never downloads a browser here. Without Chromium the tests skip, unless
``REQUIRE_BROWSER_TESTS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Without these Chromium phones home at start-up, and this machine's closed network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(message: str) -> None:
    """Skip with ``message``, or fail when the environment says browser tests are required (CI)."""
    if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
        pytest.fail(f"{message} (REQUIRE_BROWSER_TESTS=1: browser tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One Chromium for the session: Debian's, never a Playwright download."""
    if not CHROMIUM.exists():
        _unavailable(f"Chromium not installed: apt-get install chromium (browser tests need {CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
