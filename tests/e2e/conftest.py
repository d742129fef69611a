"""Browser tests: a real server (uvicorn in a thread) over a migrated SQLite database holding the
demo jurisdiction, driven by Playwright with Debian's chromium.

Part of `make test`; skipped only outside CI when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    url: str
    data_dir: Path
    users: dict[str, str]  # username → password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load_data(url: str, data_dir: Path) -> dict[str, str]:
    from civicgrid.core.db import Database

    db = Database(url)
    try:
        with db.session() as session:
            try:
                from civicgrid.demo.service import load_demo
            except ImportError:  # the demo loader is not there: the factories' small tree
                from tests import factories

                factories.make_users(session, factories.make_tree(session))
                return {str(r): factories.PASSWORD for r in factories.ROLE_HOME}
            creds: dict[str, Any] = load_demo(session, grids=60, seed=1, data_dir=data_dir)
        return {u["username"]: u["password"] for u in creds["users"]}
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    from civicgrid.core.config import Settings
    from civicgrid.core.migrate import upgrade
    from civicgrid.main import create_app

    data_dir = tmp_path_factory.mktemp("e2e-data")
    settings = Settings(data_dir=data_dir, embedded_worker=False)
    upgrade(settings.resolved_database_url)
    users = _load_data(settings.resolved_database_url, data_dir)
    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", data_dir, users)
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing in CI: `make test` installs it as root (scripts/system-deps.sh)"
            )
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (no cookies) that fails on requests leaving the loopback server."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    outside: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith(server.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()
    assert not outside, f"the page tried to reach the internet: {outside}"


def log_in(page: Any, server: Server, username: str, password: str | None = None) -> None:
    page.goto(server.url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password if password is not None else server.users[username])
    page.click("button[type=submit]")


def credentials_file(server: Server) -> dict[str, Any]:
    return json.loads((server.data_dir / "demo-credentials.json").read_text(encoding="utf-8"))
