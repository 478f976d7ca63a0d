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


def on_starting(server):  # type: ignore[no-untyped-def]
    """Warn when several workers would each count rate limits alone (the in-memory store)."""
    # The setting as the app will read it: the environment first, then .env (create_app loads it so).
    name = "RATELIMIT_STORAGE_URI"
    storage = os.environ[name] if name in os.environ else dotenv_values(".env").get(name)
    count = server.cfg.workers
    if count > 1 and (storage or "memory://").startswith("memory://"):
        server.log.warning(
            "Rate limits are in memory with %s workers: each worker counts alone, so log-in and API limits "
            "allow %s times what they say. Set RATELIMIT_STORAGE_URI=redis://… (README, Deploying).",
            count,
            count,
        )
