"""The takeover chain on an account without 2FA, and the way back, in Chromium against the
example app: a reset forced through by a stale check, the attacker's password and their own
authenticator; the owner's "this wasn't me" from the other address; the attacker's session,
remember cookie, device and password gone; the owner's reset through the safe address.

Frank (a demo user) signed up with ``frank@resurrected.example``; its domain was registered
again two days ago by someone else. With ``DOMAINGUARD_RESET_LIVE_CHECK = "off"`` (the stale
state decides, as on a site that turned the live check off) the reset goes through. His other
address, ``frank@outlook.com``, is on a trusted provider. Every page is screenshotted
(``test-artifacts/screenshots/takeover/``) and checked like the journey's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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

LOST = "frank@resurrected.example"  # the attacker reads this mailbox now
SAFE = "frank@outlook.com"  # Frank's other address
ATTACKER_PASSWORD = "attacker-password-1"
OWNER_PASSWORD = "franks-new-password-2"


@pytest.fixture
def live_app(db_kind: str, tmp_path: Path) -> Iterator[LiveApp]:
    if db_kind == "postgresql":
        pytest.skip("the example app is SQLite-only by design; this runs in the SQLite pass")
    require_chromium()
    app = LiveApp(tmp_path, {"EXAMPLE_DOMAINGUARD_RESET_LIVE_CHECK": "off"})
    seeded = app.flask("seed")
    assert seeded.returncode == 0, seeded.stderr
    app.start()
    try:
        yield app
    finally:
        app.stop()


def _ask_reset(page: Any, base: str, address: str) -> None:
    page.goto(base + "/forgot")
    page.fill("#email", address)
    page.get_by_role("button", name="Send reset link").click()
    page.wait_for_load_state("load")


def _set_password(page: Any, link: str, password: str) -> None:
    page.goto(link)
    page.fill("#password", password)
    page.fill("#confirm", password)
    page.get_by_role("button", name="Change password").click()


def _log_in(page: Any, base: str, address: str, password: str, *, remember: bool = False) -> None:
    page.goto(base + "/login")
    page.fill("#email", address)
    page.fill("#password", password)
    if remember:
        page.check("#remember")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("load")


def _enrol(page: Any) -> Authenticator:
    authenticator = Authenticator(page.inner_text("#dg-secret").replace(" ", ""))
    page.fill("#code", authenticator.code())
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    page.get_by_role("link", name="I have saved my recovery codes, continue").click()
    return authenticator


def test_takeover_and_this_wasnt_me_in_chromium(live_app: LiveApp) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = live_app.url
    check = PageChecker(fresh_artifact_dir("takeover"))
    with sync_playwright() as playwright, chromium(playwright) as browser:
        attacker = new_page(browser)
        attackers_mail = Mailbox(new_page(browser), base)  # the MX of the resurrected domain
        owner = new_page(browser)
        owners_mail = Mailbox(new_page(browser), base)  # Frank's mail client

        # -- the attacker: a reset forced through, a password, their own authenticator -----
        _ask_reset(attacker, base, LOST)
        mail = attackers_mail.wait_for(LOST, "Reset your Example App password")
        (link,) = [u for u in mail.links if "/reset/" in u]
        _set_password(attacker, link, ATTACKER_PASSWORD)
        expect(attacker).to_have_url(base + "/login")
        _log_in(attacker, base, LOST, ATTACKER_PASSWORD, remember=True)
        # No 2FA on a dormant account: the gate sends the new "owner" to enrol their own.
        expect(attacker.locator("h1")).to_have_text("Set up two-factor authentication")
        _enrol(attacker)
        attacker.goto(base + "/account")
        expect(attacker.locator("h1")).to_have_text("Your account")
        check(attacker, "attacker-owns-the-account")

        # -- Frank reads his other address: the change, and the new authenticator ----------
        changed = owners_mail.wait_for(SAFE, "Your Example App password was changed")
        assert LOST in changed.body
        enrolled = owners_mail.wait_for(SAFE, "Two-factor authentication is on")
        assert any("/domainguard/undo/" in u for u in enrolled.links)
        check(owners_mail.page, "owners-mailbox")
        (undo,) = [u for u in changed.links if "/domainguard/undo/" in u]
        owner.goto(undo)
        expect(owner.locator("h1")).to_have_text("Was this you?")
        check(owner, "undo-confirm")
        owner.reload()  # fetching the link again changes nothing
        owner.get_by_role("button", name="This wasn't me: lock my account").click()
        expect(owner.locator("h1")).to_have_text("Your account is locked back to you")
        check(owner, "undo-done")
        owners_mail.wait_for(SAFE, "locked back to you")

        # -- the attacker's session, remember cookie, password and device are gone ---------
        attacker.goto(base + "/account")
        expect(attacker).to_have_url(f"{base}/login?next=%2Faccount")
        session_cookies = [c for c in attacker.context.cookies() if c["name"] == "session"]
        attacker.context.clear_cookies()
        attacker.context.add_cookies(session_cookies)
        attacker.goto(base + "/account")
        expect(attacker).to_have_url(f"{base}/login?next=%2Faccount")
        _log_in(attacker, base, LOST, ATTACKER_PASSWORD)
        expect(attacker.locator(".flash-error")).to_contain_text("no longer works")
        check(attacker, "attacker-password-refused")
        attacker.goto(base + "/account")
        expect(attacker).to_have_url(f"{base}/login?next=%2Faccount")
        # Their address sends no more resets (it is unverified now).
        before = len(attackers_mail.to(LOST))

        # -- Frank resets through the safe address and logs in -----------------------------
        _ask_reset(attacker, base, LOST)
        _ask_reset(owner, base, SAFE)
        mail = owners_mail.wait_for(SAFE, "Reset your Example App password")
        (link,) = [u for u in mail.links if "/reset/" in u]
        _set_password(owner, link, OWNER_PASSWORD)
        _log_in(owner, base, LOST, OWNER_PASSWORD)
        # The attacker's authenticator is gone: Frank is asked to set up his own, not for a code.
        expect(owner.locator("h1")).to_have_text("Set up two-factor authentication")
        _enrol(owner)
        owner.goto(base + "/account")
        expect(owner.locator("h1")).to_have_text("Your account")
        row = owner.locator(f'tr.address-row[data-address="{LOST}"]')
        expect(row).to_have_attribute("data-verified", "no")
        expect(owner.locator(f'tr.address-row[data-address="{SAFE}"]')).to_have_attribute(
            "data-verified", "yes"
        )
        check(owner, "owner-back-in")
        time.sleep(1)  # the attacker's request was handled in the background by now
        assert len(attackers_mail.to(LOST)) == before, "no mail to the attacker's address"

    assert "Traceback" not in live_app.log(), live_app.log()
