"""gunicorn settings; every value can be overridden from the environment (GUNICORN_CMD_ARGS too)."""

import os

from dotenv import dotenv_values

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def _setting(name: str) -> str | None:
    # The setting as the app will read it: the environment first, then .env (create_app loads it so).
    return os.environ[name] if name in os.environ else dotenv_values(".env").get(name)


def _warn_on_base_url(server) -> None:  # type: ignore[no-untyped-def]
    """Warn when BASE_URL names a local address this server does not listen on (links would miss it)."""
    from starter.config import DEFAULT_BASE_URL, address_mismatch

    base_url = (_setting("BASE_URL") or "").strip() or DEFAULT_BASE_URL
    problems = []
    for address in server.cfg.bind:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            return  # a unix socket: a proxy in front decides what BASE_URL is
        problem = address_mismatch(base_url, "http", host.strip("[]"), int(port))
        if problem is None:
            return
        problems.append(problem)
    if problems:
        server.log.warning(
            "%s: links in emails and Stripe's return URLs will not come back here. Set BASE_URL to the "
            "address people use (behind a proxy or a published Docker port, that address).",
            problems[0],
        )


def on_starting(server):  # type: ignore[no-untyped-def]
    """Warn when several workers would each count rate limits alone (the in-memory store), and when
    BASE_URL points at a local address this server does not listen on."""
    _warn_on_base_url(server)
    storage = _setting("RATELIMIT_STORAGE_URI")
    count = server.cfg.workers
    if count > 1 and (storage or "memory://").startswith("memory://"):
        server.log.warning(
            "Rate limits are in memory with %s workers: each worker counts alone, so log-in and API limits "
            "allow %s times what they say. Set RATELIMIT_STORAGE_URI=redis://… (README, Deploying).",
            count,
            count,
        )
