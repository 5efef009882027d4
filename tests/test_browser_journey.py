"""The whole journey in a real browser, against the example app served on 127.0.0.1.

Register (the answer is a "check your mail" page, as for a taken address), verify the address
from the demo mailbox, log in and enrol TOTP, log out, log in with
password and code, add a second address, let the sweep (run from the command line in the
middle) find that its domain was released, see the reset for it refused with the same page
as an allowed one and no mail to it, reset the password through the other address, and look
at the admin's sweep report with held unverifications. Every page is screenshotted
(``test-artifacts/screenshots/journey/``) and checked: one ``h1``, a ``lang``, labelled
inputs, and a CSRF token in every form.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from example_app.demo import DEMO_PASSWORD
from tests.browser import (
    Authenticator,
    LiveApp,
    Mailbox,
    PageChecker,
    chromium,
    fresh_artifact_dir,
    new_page,
    require_chromium,
)

pytestmark = pytest.mark.browser

PAT = "pat@pat-studio.example"  # primary: a domain of her own, expiring in 20 days
SIDE = "pat@pat-side.example"  # second address: its domain is released mid-journey
PASSWORD = "first-password-123"
NEW_PASSWORD = "second-password-456"


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_status(app: LiveApp, **changes: dict[str, Any]) -> None:
    data = json.loads(app.status_file.read_text())
    data.update(changes)
    app.status_file.write_text(json.dumps(data, indent=2))


@pytest.fixture
def live_app(db_kind: str, tmp_path: Path) -> Iterator[LiveApp]:
    if db_kind != "sqlite":
        pytest.skip(
            "the example app is SQLite-only by design; the browser journey runs in the SQLite pass"
        )
    require_chromium()
    # CONFIRM_AFTER=0 as in scripts/demo.sh: two sweeps in a row confirm an unsafe verdict.
    app = LiveApp(tmp_path, {"EXAMPLE_DOMAINGUARD_CONFIRM_AFTER": "0"})
    seeded = app.flask("seed")
    assert seeded.returncode == 0, seeded.stderr
    now = datetime.now(timezone.utc)
    long_ago = _iso(now - timedelta(days=3000))
    _write_status(
        app,
        **{
            "pat-studio.example": {
                "registered": True,
                "statuses": ["active"],
                "registered_at": long_ago,
                "expires_at": _iso(now + timedelta(days=20)),
            },
            "pat-side.example": {
                "registered": True,
                "statuses": ["active"],
                "registered_at": long_ago,
                "expires_at": _iso(now + timedelta(days=700)),
            },
        },
    )
    app.start()
    try:
        yield app
    finally:
        app.stop()


def _sweep(app: LiveApp, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    result = app.flask("domainguard", "sweep", "--json", *args, env=env)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def _row(page: Any, address: str) -> Any:
    return page.locator(f'tr.address-row[data-address="{address}"]')


def test_the_whole_journey_in_chromium(live_app: LiveApp) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = live_app.url
    check = PageChecker(fresh_artifact_dir("journey"))
    with sync_playwright() as playwright, chromium(playwright) as browser:
        page = new_page(browser)  # Pat's laptop
        inbox = Mailbox(new_page(browser), base)  # Pat's mail client, on another device

        # -- register -------------------------------------------------------------------
        page.goto(base + "/")
        check(page, "index")
        page.get_by_role("link", name="Register", exact=True).first.click()
        check(page, "register")
        page.fill("#name", "Pat")
        page.fill("#email", PAT)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Register").click()
        # The same answer whether or not the address has an account: nobody is logged in.
        expect(page.locator("h1")).to_have_text("Check your mail")
        check(page, "register-done")

        # -- verify the address from the mailbox (GET shows a button, POST verifies) -------
        mail = inbox.wait_for(PAT, "Verify your email address for Example App")
        check(inbox.page, "mailbox-verification")
        (link,) = [u for u in mail.links if "/domainguard/verify/" in u]
        confirm = new_page(browser)  # opened from the mail: no session there
        confirm.goto(link)
        confirm.reload()  # fetching the link, as mail scanners do, verifies nothing
        expect(confirm.locator("h1")).to_have_text("Verify your address")
        check(confirm, "verify-confirm")
        confirm.get_by_role("button", name="Verify this address").click()
        expect(confirm.locator("h1")).to_have_text("Address verified")
        check(confirm, "verify-done")

        # -- log in; active users must have 2FA: enrolment comes first --------------------
        page.goto(base + "/login?next=/account")
        page.fill("#email", PAT)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{base}/domainguard/2fa/enroll?next=/account")
        expect(page.locator("h1")).to_have_text("Set up two-factor authentication")
        expect(page.locator("figure.dg-qr svg")).to_be_visible()  # the QR code
        secret = page.inner_text("#dg-secret").replace(" ", "")  # and the same secret as text
        authenticator = Authenticator(secret)
        check(page, "enroll")
        page.fill("#code", authenticator.code())
        page.get_by_role("button", name="Turn on two-factor authentication").click()
        expect(page.locator("h1")).to_have_text("Two-factor authentication is on")
        assert page.locator("ul.dg-codes li").count() == 10
        check(page, "recovery-codes")
        page.get_by_role("link", name="I have saved my recovery codes, continue").click()
        expect(page).to_have_url(base + "/account")
        row = _row(page, PAT)
        expect(row).to_have_attribute("data-verified", "yes")
        expect(page.locator("#only-custom-warning")).to_be_visible()
        check(page, "account-enrolled")

        # -- log out, log in with password and code -----------------------------------------
        page.locator("header").get_by_role("button", name="Log out").click()
        page.goto(base + "/login")
        check(page, "login")
        page.fill("#email", PAT)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("h1")).to_have_text("Two-factor authentication")
        check(page, "twofactor-verify")
        page.fill("#code", authenticator.wrong_code())
        page.get_by_role("button", name="Verify").click()
        expect(page.locator("#code-errors")).to_contain_text("not right")
        check(page, "twofactor-wrong-code")
        page.fill("#code", authenticator.code())
        page.get_by_role("button", name="Verify").click()
        expect(page).to_have_url(base + "/")
        page.goto(base + "/account")
        expect(page.locator("h1")).to_have_text("Your account")
        assert page.goto(base + "/admin").status == 403  # Pat is no admin

        # -- add a second address (password again, and a code when the last is stale) ------
        page.goto(base + "/account")
        page.get_by_role("link", name="Add an address").click()
        expect(page.locator("h1")).to_have_text("Confirm it is you")
        check(page, "confirm-identity")
        page.fill("#password", PASSWORD)
        if page.locator("#code").count():
            page.fill("#code", authenticator.code())
        page.get_by_role("button", name="Confirm").click()
        expect(page.locator("h1")).to_have_text("Add an email address")
        check(page, "add-address")
        page.fill("#email", SIDE)
        page.get_by_role("button", name="Add address").click()
        expect(page).to_have_url(base + "/account")
        expect(_row(page, SIDE)).to_have_attribute("data-verified", "no")
        check(page, "account-address-added")
        mail = inbox.wait_for(SIDE, "Verify your email address")
        (link,) = [u for u in mail.links if "/domainguard/verify/" in u]
        confirm.goto(link)
        confirm.get_by_role("button", name="Verify this address").click()
        expect(confirm.locator("h1")).to_have_text("Address verified")
        page.reload()
        expect(_row(page, SIDE)).to_have_attribute("data-verified", "yes")
        check(page, "account-two-addresses")

        # -- the sweep, from the command line: pat-side.example is released ---------------
        _write_status(live_app, **{"pat-side.example": {"registered": False}})
        code, first = _sweep(live_app)
        # 1: the demo's deliberately unknown domain (mystery.example) failed its lookup.
        assert code == 1 and first["errors"] == 1, first
        assert first["unverified"] == 0 and first["verdicts"]["released"] == 2  # + erin's
        code, second = _sweep(live_app)
        assert second["unverified"] == 4, second  # dave, erin, frank (demo) and Pat's side
        page.reload()
        side = _row(page, SIDE)
        expect(side).to_have_attribute("data-verified", "no")
        expect(side).to_have_attribute("data-verdict", "released")
        expect(side).to_contain_text("Unverified because")
        primary = _row(page, PAT)
        expect(primary).to_have_attribute("data-verdict", "expiring_soon")
        expect(primary.locator(".domain-warning")).to_contain_text("Expires soon")
        check(page, "account-after-sweep")
        inbox.wait_for(PAT, "expires soon")  # the sweep's expiry warning
        inbox.wait_for(PAT, "can no longer receive password resets")  # the notice...
        assert [m.subject for m in inbox.to(SIDE)] == [  # ...never to the released address
            "Verify your email address for Example App"
        ]
        page.locator("header").get_by_role("button", name="Log out").click()

        # -- forgot password: refused and allowed look the same -----------------------------
        answers = []
        for address in (SIDE, PAT):
            page.goto(base + "/forgot")
            page.fill("#email", address)
            with page.expect_navigation() as navigation:
                page.get_by_role("button", name="Send reset link").click()
            answers.append((navigation.value.status, page.inner_text("main")))
            check(page, f"forgot-done-{address.split('@')[1].split('.')[0]}")
        assert answers[0] == answers[1]
        assert answers[0][0] == 200 and "Check your mail" in answers[0][1]
        # The reset is decided and mailed in the background: poll the mailbox.
        reset_mail = inbox.wait_for(PAT, "Reset your Example App password")
        inbox.wait_for(PAT, "password reset for your Example App account was refused")
        check(inbox.page, "mailbox-after-resets")
        assert not [m for m in inbox.to(SIDE) if "eset" in m.subject]

        # -- follow the reset link, log in with the new password and a code ---------------
        (link,) = [u for u in reset_mail.links if "/reset/" in u]
        page.goto(link)
        check(page, "reset-password")
        page.fill("#password", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page).to_have_url(base + "/login")
        page.goto(link)  # the link dies with the old password
        expect(page.locator(".flash-error")).to_contain_text("invalid or has expired")
        page.goto(base + "/login")
        page.fill("#email", PAT)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".flash-error")).to_contain_text("Wrong address or password")
        page.fill("#email", PAT)
        page.fill("#password", NEW_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("h1")).to_have_text("Two-factor authentication")
        page.fill("#code", authenticator.code())  # a reset never skips the second factor
        page.get_by_role("button", name="Verify").click()
        page.goto(base + "/account")
        expect(page.locator("h1")).to_have_text("Your account")

        # -- the admin's report, with unverifications held by the circuit breaker -----------
        _write_status(
            live_app,
            **{
                "renew-soon.example": {"registered": False},
                "lapsing.example": {"registered": False},
            },
        )
        few = {"EXAMPLE_DOMAINGUARD_MAX_UNVERIFY": "1"}
        domains = ("--domain", "renew-soon.example", "--domain", "lapsing.example")
        _sweep(live_app, *domains, env=few)
        code, held = _sweep(live_app, *domains, env=few)
        assert code == 3 and held["held"] == 2 and held["unverified"] == 0, held

        admin = new_page(browser)
        admin.goto(base + "/login")
        admin.fill("#email", "alice@healthy-corp.example")
        admin.fill("#password", DEMO_PASSWORD)
        admin.get_by_role("button", name="Log in").click()
        alice = Authenticator(admin.inner_text("#dg-secret").replace(" ", ""))
        admin.fill("#code", alice.code())
        admin.get_by_role("button", name="Turn on two-factor authentication").click()
        admin.goto(base + "/admin")
        expect(admin.locator("h1")).to_have_text("Sweep report")
        expect(admin.locator("#report-held")).to_have_attribute("data-count", "2")
        expect(admin.locator("#report-held")).to_contain_text("bob@renew-soon.example")
        expect(admin.locator("#report-held")).to_contain_text("carol@lapsing.example")
        expect(admin.locator("#report-custom_only")).to_contain_text(PAT)
        expect(admin.locator("#report-expiring")).to_contain_text("pat-studio.example")
        check(admin, "admin-report")

        # CSRF is enforced, not just rendered: a form post without its token is refused.
        bare = page.context.request.post(base + "/forgot", form={"email": PAT})
        assert bare.status == 400

    assert check.forms >= 20, check.pages
    assert "Traceback" not in live_app.log(), live_app.log()
