"""The live dashboard at `/`: its files as the server serves them, and the page itself in a real headless
Chromium (Debian's `chromium`, driven by Playwright through `executable_path`; nothing downloads a browser)
against a real `rohde serve` and a real simulated amplifier with loose contacts."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from rohde.server.app import create_app
from rohde.server.dashboard_routes import DASHBOARD_ASSETS, DASHBOARD_DIR, DASHBOARD_PAGE
from rohde.server.processes import Child, ChildGroup, free_port, unique_id
from rohde.server.security import origin_allowed
from rohde.server.settings import load_settings

from .conftest import REPO_ROOT, ROHDE, RunningOutlet, wait_for, wait_until_ready

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"  # screenshots of the browser test (ignored by git)
READ_TOKEN = "dashboard-read-token"
INSTALL_HINT = ("run `make install` as root (it installs Debian's `chromium` with apt when it is missing), or "
                "`apt-get install -y chromium`, or set ROHDE_CHROMIUM to a Chromium binary")


def test_the_page_and_only_its_files_are_served() -> None:
    client = TestClient(create_app(load_settings()))  # no lifespan: the page needs no runtime
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"  # the page's URL may carry the read token
    # Every file the page loads is served, with its type; nothing it loads comes from elsewhere.
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"dashboard/app.js", "dashboard/style.css"} <= set(loaded)
    for path in loaded:
        if path.startswith("data:"):
            continue
        assert not re.match(r"^(https?:)?//", path), path
        name = path.removeprefix("dashboard/")
        served = client.get(f"/{path}")
        assert served.status_code == 200, path
        assert served.headers["content-type"].startswith(DASHBOARD_ASSETS[name])
    assert client.get(f"/dashboard/{DASHBOARD_PAGE}").status_code == 404
    assert client.get("/dashboard/..%2Fapp.py").status_code == 404
    assert (DASHBOARD_DIR / DASHBOARD_PAGE).is_file()
    assert "/" not in create_app(load_settings()).openapi()["paths"]


def test_a_page_from_the_servers_own_address_may_open_the_websocket() -> None:
    own = ("192.168.1.5", 8000)  # the address a connection came in on (ASGI scope["server"])
    assert origin_allowed("http://192.168.1.5:8000", None, own_address=own)
    assert origin_allowed("http://192.168.1.5:8000", ["http://app.example"], own_address=own)
    assert origin_allowed("http://192.168.1.5", None, own_address=("192.168.1.5", 80))
    assert origin_allowed("https://[::1]:8443", ["http://app.example"], own_address=("::1", 8443))
    assert not origin_allowed("http://192.168.1.5:8001", None, own_address=own)
    assert not origin_allowed("http://rebound.example:8000", None, own_address=own)  # DNS rebinding: a name
    assert not origin_allowed("null", None, own_address=own)
    assert not origin_allowed("http://192.168.1.5:8000", None)  # without the rule: not a loopback page


def chromium_executable() -> str:
    """The system Chromium; its absence fails the test (never a skip), saying how to install it."""
    path = os.environ.get("ROHDE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(f"No Chromium found for the browser test: {INSTALL_HINT}.")
    return path


def start_server(processes: ChildGroup, tmp_path: Path, stream_name: str) -> tuple[str, Child]:
    """`rohde serve` with the shipped model and a read token, serving `stream_name`; returns its base URL."""
    port = free_port()
    # An allow-list without this page's origin: the page still connects, as a page from the server's own address.
    server = processes.start([ROHDE, "serve", "--port", str(port), "--stream-name", stream_name, "--no-marker-outlet",
                     "--allowed-origin", "http://elsewhere.example"],
                    log=tmp_path / "server.log",
                    extra_env={"ROHDE_RESOLVE_INTERVAL_S": "0.2", "ROHDE_READ_TOKEN": READ_TOKEN})
    base = f"http://127.0.0.1:{port}"

    wait_until_ready(base)
    return base, server


def loose_contact_channels(layout: dict[str, Any]) -> set[int]:
    """The channels the simulator's loose contact lifts: the last two rows of the last grid."""
    rows = layout["grids"][-1]["channels"][-2:]
    return {channel for row in rows for channel in row if channel >= 0}


@pytest.mark.browser
@pytest.mark.lsl
@pytest.mark.timeout(120)
def test_dashboard_in_chromium_shows_live_gestures_and_loose_contacts(
    tmp_path: Path, processes: ChildGroup, lsl_outlet: Callable[..., RunningOutlet]
) -> None:
    executable = chromium_executable()
    try:
        from playwright.sync_api import WebSocketRoute, expect, sync_playwright
    except ImportError:
        pytest.fail("The browser test needs the `playwright` Python package: `make install` "
                    "(or `pip install -e '.[dev]'`); it drives the system Chromium, no browser download.")

    name = unique_id("dash")
    lsl_outlet("simulate", "--schedule", "LC", "--no-markers", name=name, source_id=name)
    base, server = start_server(processes, tmp_path, name)
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    model = httpx.get(f"{base}/models/active", headers=auth).json()
    loose = loose_contact_channels(model["layout"])

    # The server's own quality monitor flags the lifted rows first: the page must show what /streams says.
    def flagged() -> set[int] | None:
        streams = httpx.get(f"{base}/streams", headers=auth).json()["streams"]
        quality = streams[0]["quality"] if streams else None
        bad = set(quality["bad_channels"]) if quality else set()
        return bad if bad & loose else None

    bad = wait_for(flagged, 20, 0.25)
    assert len(bad & loose) >= len(loose) // 2 and len(bad - loose) <= 2, (sorted(bad), sorted(loose))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            # The page's own WebSocket to the real server, through a route that can also add frames of its own.
            sockets: list[WebSocketRoute] = []

            def through(route: WebSocketRoute) -> None:
                route.connect_to_server()
                sockets.append(route)

            page.route_web_socket(re.compile(r"/ws(\?|$)"), through)
            page.goto(f"{base}/?token={READ_TOKEN}")
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=15_000)
            gesture = page.locator("#gesture")
            expect(gesture).to_have_attribute("data-status", re.compile("^(accepted|rejected)$"), timeout=15_000)
            assert gesture.text_content() in model["labels"]
            expect(page.locator(".prob-bar")).to_have_count(len(model["labels"]))
            expect(page.locator("#history li").first).to_be_visible()

            # The heatmap has one cell per electrode and crosses out the loose-contact rows.
            expect(page.locator(".cell[data-channel]")).to_have_count(model["n_channels"])
            page.wait_for_function(
                "channels => channels.some(c => document.querySelector(`.cell.bad[data-channel='${c}']`))",
                arg=sorted(loose), timeout=10_000)
            marked = {int(channel) for channel in page.eval_on_selector_all(
                ".cell.bad", "cells => cells.map(c => c.dataset.channel)")}
            assert len(marked & loose) >= len(loose) // 2 and len(marked - loose) <= 2, (sorted(marked), sorted(loose))

            # A calibration cue shows as a banner; kinds the page does not know and non-JSON are ignored.
            assert sockets, "the page's WebSocket did not go through the route"
            sockets[-1].send(json.dumps({"type": "cue", "label": "hand_close", "phase": "hold", "remaining_s": 3.0,
                                         "index": 2, "total": 14}))
            sockets[-1].send(json.dumps({"kind": "from_a_newer_server", "x": 1}))
            sockets[-1].send("not json")
            expect(page.locator("#cue-banner")).to_be_visible(timeout=5_000)
            expect(page.locator("#cue-label")).to_have_text("hand_close")
            expect(page.locator("#cue-phase")).to_have_text("hold")
            page.wait_for_function("() => /ignored messages\\s*([2-9]|\\d\\d)/.test("
                                   "document.getElementById('latency-info').textContent)", timeout=5_000)
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            screenshot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"dashboard screenshot: {screenshot}")  # noqa: T201  (where to find the test's artefact)
            assert not page_errors, page_errors

            # Without the token the page says what is missing and does not claim a connection.
            bare = browser.new_page()
            bare.goto(f"{base}/")
            expect(bare.locator("#problem")).to_contain_text("read token", timeout=10_000)
            expect(bare.locator("#connection")).to_have_attribute("data-state", "disconnected", timeout=10_000)
            bare.close()

            # When the server goes away the page says so, and the last decision is no longer shown as live.
            server.stop()
            expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected", timeout=10_000)
            expect(page.locator("#connection")).to_contain_text("retrying")
            expect(gesture).to_have_attribute("data-status", "stale", timeout=5_000)
            expect(page.locator("#heatmaps")).to_have_class(re.compile(r"\bstale\b"), timeout=8_000)
            assert not page_errors, page_errors
        finally:
            browser.close()
