"""The console in a real browser: Playwright driving Debian's Chromium headless against a real fleet.

One fleet of real processes (``simulations.console_fleet``: a cloud with its CA and a published release,
two sites, four agents, a device waiting to enroll, a site-1 viewer) and one browser serve the whole
module; the tests run in order, as an operator's session would. Each view's screenshot is saved in a
directory (``EDGEFLEET_SCREENSHOTS``, e.g. ``docs/img`` for `make screenshots`; else the test's temp dir).

Chromium is Debian's (``/usr/bin/chromium``, installed by `make tools` from tests/tools.txt); Playwright
never downloads a browser. Without it the module is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_tools import missing
from tests.waits import HANG_GUARD_S, until_true

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(missing("chromium") is not None, reason=missing("chromium") or "")]

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
expect = playwright_api.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = HANG_GUARD_S * 1000


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from simulations.console_fleet import start_console_fleet
    from simulations.fleet import ProcFleet

    root = tmp_path_factory.mktemp("console-fleet")
    started = None
    try:
        started = start_console_fleet(root)
        yield started
    finally:
        if started is not None:
            started.fleet.kill_all()
        else:  # start failed half way: stop what it started (the same root)
            ProcFleet(root).kill_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("EDGEFLEET_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def admin(cf, browser) -> Iterator[object]:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def shot(page, shots: Path, name: str) -> None:  # noqa: ANN001
    page.screenshot(path=str(shots / f"console-{name}.png"), full_page=True)


def test_log_in_with_a_token_into_a_strict_httponly_session(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/")
    assert "/login" in admin.url  # no session: to the login page first
    admin.fill("#token", "not-a-token")
    admin.click("#login")
    expect(admin.locator("#login-problem")).to_contain_text("not valid")
    admin.fill("#token", cf.token)
    admin.click("#login")
    expect(admin.locator(".site")).to_have_count(2)
    expect(admin.locator("#who")).to_contain_text("bootstrap-admin")
    cookie = next(c for c in admin.context.cookies() if c["name"] == "ef_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert admin.evaluate("document.cookie").find("ef_session") == -1  # no script can read it
    expect(admin.locator(".site[data-site='site-1'] .online")).to_have_text("2")
    shot(admin, shots, "overview")


def test_filter_devices_with_the_query_language(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/devices")
    expect(admin.locator("#devices tbody tr[data-device]")).to_have_count(4)
    admin.fill("#q", 'site = "site-2" and id != "dev-2-002"')
    admin.click("#apply")
    expect(admin.locator("#devices tbody tr[data-device]")).to_have_count(1)
    expect(admin.locator("#devices tbody tr[data-device]")).to_have_attribute("data-device", "dev-2-001")
    shot(admin, shots, "devices")
    admin.fill("#q", 'site = ')
    admin.click("#apply")
    expect(admin.locator("#query-problem")).to_contain_text("^")  # the caret under the mistake


def test_open_a_device_and_see_its_chart(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/devices")
    admin.click("a[href='/devices/dev-1-001']")
    expect(admin.locator("h1")).to_contain_text("dev-1-001")
    chart = admin.locator("#charts svg.chart[data-metric='cpu_percent']")
    expect(chart).to_be_visible()
    assert int(chart.get_attribute("data-points") or 0) >= 2
    expect(chart.locator("polyline.line")).to_have_count(1)
    admin.click("#ping")
    expect(admin.locator("#commands tr[data-command='ping']")).to_have_count(1)
    shot(admin, shots, "device")


def test_approve_a_pending_device(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/enrollment")
    row = admin.locator("#pending tr[data-device='dev-9-001']")
    expect(row).to_contain_text("pending")
    shot(admin, shots, "enrollment")
    row.get_by_role("button", name="Approve").click()
    expect(admin.locator("#pending tr[data-device='dev-9-001']")).to_have_count(1)
    # the serial is now preauthorized: the device's next attempt enrolls it
    until_true(lambda: any(i["device_id"] == "dev-9-001" and i["status"] == "enrolled"
                           for i in cf.api("/v1/identities")["identities"]), "dev-9-001 to enroll after approval")
    admin.goto(cf.url + "/enrollment")
    expect(admin.locator("#pending tr[data-device='dev-9-001']")).to_have_count(0)
    approvals = cf.api("/v1/audit?action=devices.approve")["records"]
    assert [(r["who"], r["target"], r["result"]) for r in approvals] == [("bootstrap-admin", "dev-9-001", "allowed")]


def test_rollout_wizard_dry_run_then_live_progress_to_completion(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/rollouts/new")
    admin.select_option("#release", cf.release)
    admin.fill("#where", 'site = "site-1"')
    admin.fill("#canary", "1")
    admin.fill("#waves", "100%")
    admin.fill("#soak", "1")
    admin.click("#dry-run")
    result = admin.locator("#dry-run-result")
    expect(result).to_contain_text("to 2 devices")
    expect(result.locator("tr.stage")).to_have_count(2)
    expect(result).to_contain_text("site-1")
    shot(admin, shots, "rollout-wizard")
    admin.click("#start")
    admin.wait_for_url(re.compile(r".*/rollouts/r\d+$"))
    admin.evaluate("window.__same_page = true")  # a full reload would lose it
    expect(admin.locator("#rollout-state")).to_have_text("completed")  # htmx polls the progress in place
    assert admin.evaluate("window.__same_page === true")
    expect(admin.locator("#rollout-devices")).to_contain_text("succeeded")
    expect(admin.locator(".pill[data-state='succeeded']")).to_have_text("succeeded 2")
    shot(admin, shots, "rollout-progress")


def test_pause_and_resume_a_rollout(cf, admin, shots) -> None:  # noqa: ANN001
    admin.goto(cf.url + "/rollouts/new")
    admin.select_option("#release", cf.release)
    admin.fill("#where", 'site = "site-2"')
    admin.fill("#waves", "100%")
    admin.fill("#window", "0 3 1 1 *")  # a window far off: nothing installs, the rollout stays running
    admin.click("#start")
    admin.wait_for_url(re.compile(r".*/rollouts/r\d+$"))
    rid = admin.url.rsplit("/", 1)[1]
    expect(admin.locator("#rollout-state")).to_have_text("running")
    admin.click("#pause")
    expect(admin.locator("#rollout-state")).to_have_text("paused")
    assert cf.api(f"/v1/rollouts/{rid}")["state"] == "paused"
    admin.click("#resume")
    expect(admin.locator("#rollout-state")).to_have_text("running")
    actions = [(r["action"], r["target"]) for r in cf.api("/v1/audit?action=rollout.")["records"]]
    assert ("rollout.pause", f"/v1/rollouts/{rid}/pause") in actions
    assert ("rollout.abort", f"/v1/rollouts/{rid}/resume") in actions  # resume is the abort permission's, as in the API
    admin.goto(cf.url + "/rollouts")
    expect(admin.locator(f"#rollouts tr[data-rollout='{rid}']")).to_contain_text("running")
    shot(admin, shots, "rollouts")


def test_acknowledge_an_alert(cf, admin, shots) -> None:  # noqa: ANN001
    cf.fleet.stop(["dev-2-002"])  # silent: the device_offline rule opens an alert a few seconds later

    def opened() -> str | None:
        rows = cf.api("/v1/alerts?state=open")["alerts"]
        return next((a["id"] for a in rows if a["subject"] == "dev-2-002"), None)

    alert_id = until_true(opened, "an offline alert on dev-2-002")
    admin.goto(cf.url + "/alerts")
    row = admin.locator(f"#alerts tr[data-alert='{alert_id}']")
    expect(row).to_contain_text("device_offline")
    shot(admin, shots, "alerts")
    row.locator(".ack-button").click()
    expect(admin.locator(f"#alerts tr[data-alert='{alert_id}'] .ack")).to_contain_text("acked by bootstrap-admin")
    assert next(a for a in cf.api("/v1/alerts?state=acknowledged")["alerts"] if a["id"] == alert_id)["acked_by"] == "bootstrap-admin"
    assert any(r["action"] == "alerts.ack" and r["result"] == "allowed" for r in cf.api("/v1/audit?action=alerts.")["records"])


def test_the_other_views_render(cf, admin, shots) -> None:  # noqa: ANN001
    for path, name, marker in (("/releases", "releases", f"#releases tr[data-release='{cf.release}']"),
                               ("/audit", "audit", "#audit tr[data-action='console.login']"),
                               ("/sites/site-1", "site", "#gateways")):
        admin.goto(cf.url + path)
        expect(admin.locator(marker).first).to_be_visible()
        shot(admin, shots, name)
        if name == "site":  # each gateway's site cache, from its own inventory report
            expect(admin.locator("#gateways td.cache").first).to_contain_text("hits")
    admin.goto(cf.url + "/audit")
    expect(admin.locator("#chain")).to_have_text("chain verified")


def test_a_scoped_viewer_sees_one_site_and_no_button_that_changes_anything(cf, browser, shots) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(cf.url + "/login")
        page.fill("#token", cf.viewer_token)
        page.click("#login")
        expect(page.locator("#who")).to_contain_text("viewer-a")
        expect(page.locator(".site")).to_have_count(1)
        expect(page.locator(".site[data-site='site-1']")).to_have_count(1)
        for path in ("/", "/devices", "/devices/dev-1-001", "/enrollment", "/releases", "/rollouts", "/alerts",
                     "/sites/site-1", "/rollouts/r1"):
            response = page.goto(cf.url + path)
            assert response is not None and response.status == 200, path
            changes = page.locator("main [hx-post], main form[method=post]")
            assert changes.count() == 0, f"{path}: {changes.first.evaluate('e => e.outerHTML')}"
        page.goto(cf.url + "/devices")
        devices = page.locator("#devices tbody tr[data-device]")
        expect(devices).to_have_count(2)
        assert sorted(devices.evaluate_all("rows => rows.map(r => r.dataset.device)")) == ["dev-1-001", "dev-1-002"]
        for path, status in (("/devices/dev-2-001", 404), ("/sites/site-2", 403), ("/rollouts/new", 403), ("/audit", 403)):
            response = page.goto(cf.url + path)
            assert response is not None and response.status == status, path
            expect(page.locator("#error-detail")).to_be_visible()
        # a forged form post is refused too (no CSRF token of this session, and no role for it)
        pings = len(cf.api("/v1/devices/dev-1-001/commands")["commands"])
        response = page.request.post(cf.url + "/devices/dev-1-001/ping", form={"csrf": "forged"})
        assert response.status == 403
        assert len(cf.api("/v1/devices/dev-1-001/commands")["commands"]) == pings
    finally:
        context.close()
