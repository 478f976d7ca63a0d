"""The app as deployed, for tests: real gunicorn processes on ports of their own, Redis, a small HTTP client.

    with running_host(project_root, environment, log_path) as host:
        status, body, _ = host.client().get("/up")

``launch_host`` runs ``gunicorn --config gunicorn.conf.py app:app`` (the README's command) with the
environment it is given, the log (gunicorn's and the app's) going to a file the test can read.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
START_SECONDS = 30  # gunicorn and its workers importing the app, on a busy two-CPU machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Host:
    """One gunicorn master and its workers, answering on 127.0.0.1:``port``."""

    process: subprocess.Popen
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, cookies: dict[str, str] | None = None) -> Client:
        return Client(self.port, cookies)


class Client:
    """One connection to a host, with the cookies it was given and those the host sets (a browser, roughly)."""

    def __init__(self, port: int, cookies: dict[str, str] | None = None) -> None:
        self.port = port
        self.cookies = cookies if cookies is not None else {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if method not in ("GET", "HEAD"):
                raise
            # The host closed the idle keep-alive connection (gunicorn's keepalive is 2 s): a browser
            # sends an idempotent request again on a new one, and so does this client.
            self.connection.close()
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        content = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, content, response.headers

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
        return self.request("GET", path, headers=headers)

    def post_json(self, path: str, payload: Any, token: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, content, _ = self.request("POST", path, json.dumps(payload).encode(), headers)
        return status, json.loads(content) if content else None

    def post_form(self, path: str, fields: Mapping[str, str]) -> int:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, _ = self.request("POST", path, urlencode(fields).encode(), headers)
        return status

    def csrf_token(self, path: str) -> str:
        """The CSRF token of the form on ``path`` (and the session cookie it belongs to)."""
        status, content, _ = self.get(path)
        assert status == 200, (path, status)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', content.decode())
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def close(self) -> None:
        self.connection.close()


def launch_host(project_root: Path, environment: Mapping[str, str], log_path: Path) -> Host:
    """Start gunicorn with the project's gunicorn.conf.py on a free port; ``wait_until_up`` waits for it."""
    port = free_port()
    env = {**os.environ, **environment, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    with log_path.open("w") as log:
        command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"]
        # The access log goes to stdout: dropped, the tests count the answers themselves.
        process = subprocess.Popen(command, cwd=project_root, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return Host(process, port, log_path)


def wait_until_up(host: Host) -> None:
    """Return once ``GET /up`` answers 200; stop the host and raise, with its log, if it exits or never does."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {host.process.returncode}:\n{host.log()[-3000:]}")
        try:
            client = host.client()
            status, _, _ = client.get("/up")
            client.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    stop_host(host)
    raise RuntimeError(f"gunicorn did not answer within {START_SECONDS} s:\n{host.log()[-3000:]}")


def stop_host(host: Host) -> None:
    stop_hosts([host])


def stop_hosts(hosts: list[Host]) -> None:
    """SIGTERM (gunicorn's graceful stop: the workers' schedulers shut down), then SIGKILL if one lingers.

    All at once: each takes a few seconds to wind down its workers, and they need not queue for it.
    """
    running = [host for host in hosts if host.process.poll() is None]
    for host in running:
        host.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 25
    for host in running:
        try:
            host.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait(timeout=5)


@contextmanager
def running_hosts(project_root: Path, environments: list[Mapping[str, str]], log_dir: Path) -> Iterator[list[Host]]:
    """One host per environment, started side by side (workers import the app in parallel), stopped at the end."""
    hosts: list[Host] = []
    try:
        for number, environment in enumerate(environments, start=1):
            hosts.append(launch_host(project_root, environment, log_dir / f"host{number}.log"))
        for host in hosts:
            wait_until_up(host)
        yield hosts
    finally:
        stop_hosts(hosts)


@contextmanager
def running_host(project_root: Path, environment: Mapping[str, str], log_path: Path) -> Iterator[Host]:
    host = launch_host(project_root, environment, log_path)
    try:
        wait_until_up(host)
        yield host
    finally:
        stop_host(host)


# --- Redis ----------------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@contextmanager
def private_redis() -> Iterator[str | None]:
    """A throwaway redis-server on a free port (no persistence), or None where none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if redis_answers(url):
                break
            time.sleep(0.05)
        yield url if redis_answers(url) else None
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def redis_for_tests() -> Iterator[str]:
    """TEST_REDIS_URL, else the default local Redis, else a private redis-server started for the run.

    Skips when none of those can be had, and fails instead when TEST_REDIS_URL is set: whoever set
    it (CI) said the tests that need Redis must run.
    """
    configured = os.environ.get("TEST_REDIS_URL", "").strip()
    url = configured or DEFAULT_REDIS_URL
    if redis_answers(url):
        yield url
        return
    with private_redis() as started:
        if started is None:
            reason = f"needs Redis: nothing answers at {url} and no redis-server is installed to start one"
            if configured:
                pytest.fail(f"{reason} (TEST_REDIS_URL is set, so this test must run)", pytrace=False)
            pytest.skip(reason)
        yield started
