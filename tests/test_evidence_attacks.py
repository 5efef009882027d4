"""The attack review's cases, as the lapsed domain's new owner plays them, through public entry
points: each got a reset mailed to the attacker before the domain-state engine and the
evidence rule; each must be refused now. The legitimate paths stay open."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from tests.conftest import SMTPSink
from tests.guard_helpers import OK, add, csrf_of, events, set_domain, write_status
from tests.sweep_support import StatusServer

UTC = timezone.utc
VERIFIED = datetime(2015, 3, 1, tzinfo=UTC)
LAPSED = datetime(2024, 5, 1, tzinfo=UTC)  # the registration's expiration date
VICTIM = "maintainer@lapsed-shop.com"
BACKUP = "maintainer.backup@gmail.com"  # a trusted provider: the owner's safe address


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def lapsing(now: datetime) -> dict[str, Any]:
    """Expired 14 days before ``now``, no pendingDelete yet: in grace."""
    return {
        "registered": True,
        "statuses": ["active"],
        "registered_at": "2010-01-01T00:00:00Z",
        "expires_at": iso(now - timedelta(days=14)),
    }


def sold(on: datetime) -> dict[str, Any]:
    """Sold at auction while lapsing: a transfer, the expiration pushed a year on, nothing
    left that looks like a lapse."""
    return {
        "registered": True,
        "statuses": ["active"],
        "registered_at": "2010-01-01T00:00:00Z",
        "transferred_at": iso(on),
        "expires_at": iso(on + timedelta(days=365)),
    }


@pytest.fixture
def victim(guard: Any, make_user: Any) -> Any:
    user = make_user()
    add(guard, user, VICTIM, verified_at=VERIFIED, primary=True)
    add(guard, user, BACKUP)
    return user


def test_primed_freshness_cannot_carry_a_reset_across_a_sale(
    app: Flask, guard: Any, victim: Any
) -> None:
    """Case 2: the attacker's own request stores an in-grace check while the domain lapses,
    buys the domain three hours later and asks again. The stored check is young, but it is
    not an OK check: it is looked up again, and the sale after the lapse is seen."""
    start = LAPSED + timedelta(days=14)
    with freeze_time(start) as clock:
        write_status(app, {"lapsed-shop.com": lapsing(start)})
        primed = guard.reset_decision(VICTIM)
        assert primed.allowed, "in grace the domain is still its owner's"
        assert primed.verdict is not None and primed.verdict.kind.value == "in_grace"

        clock.tick(timedelta(hours=3))
        write_status(app, {"lapsed-shop.com": sold(start + timedelta(hours=2, minutes=50))})
        decision = guard.reset_decision(VICTIM)
    assert not decision.allowed and decision.reason == "domain_reregistered"


def test_a_sale_while_lapsing_is_remembered_by_every_later_sweep(
    app: Flask, guard: Any, victim: Any
) -> None:
    """Case 4: the sweep sees the lapse, then a clean answer with the sale. The sale is
    judged against the lapse seen before it, remembered, confirmed by the next sweep, and
    the address is unverified; its owner hears about it at the safe address."""
    runner = app.test_cli_runner()
    start = LAPSED + timedelta(days=10)
    with freeze_time(start) as clock:
        write_status(app, {"lapsed-shop.com": lapsing(start)})
        sweep = ["domainguard", "sweep", "--domain", "lapsed-shop.com"]
        assert runner.invoke(args=sweep).exit_code == 0
        domain = guard.db.session.get(guard.models.Domain, "lapsed-shop.com")
        assert domain.verdict == "in_grace" and domain.lapse_seen_at == start

        sale = start + timedelta(days=3)
        clock.move_to(sale + timedelta(days=2))
        write_status(app, {"lapsed-shop.com": sold(sale)})
        for _ in range(3):  # seen, confirmed, and still so a day later
            result = runner.invoke(args=["domainguard", "sweep", "--domain", "lapsed-shop.com"])
            assert result.exit_code == 0, result.output
            clock.tick(guard.settings.confirm_after + timedelta(minutes=1))
            assert not guard.reset_decision(VICTIM).allowed
        guard.db.session.expire_all()
        domain = guard.db.session.get(guard.models.Domain, "lapsed-shop.com")
        assert domain.verdict == "reregistered" and domain.changed_hands_at == sale
        row = guard.find_address(VICTIM)
        assert row.verified_at is None
        assert row.unverify_reason is UnverifyReason.DOMAIN_REREGISTERED

        # The buyer renews; nothing about the domain looks odd any more. Still remembered.
        clock.tick(timedelta(days=40))
        renewed = {**sold(sale), "expires_at": iso(sale + timedelta(days=730))}
        write_status(app, {"lapsed-shop.com": renewed})
        runner.invoke(args=["domainguard", "sweep", "--domain", "lapsed-shop.com"])
        guard.db.session.expire_all()
        assert guard.db.session.get(guard.models.Domain, "lapsed-shop.com").verdict == (
            "reregistered"
        )


def test_a_sale_first_seen_by_the_live_check_is_remembered_by_the_sweep(
    app: Flask, guard: Any, victim: Any
) -> None:
    """Whichever path sees the change of hands first, the other keeps it: here a reset
    request sees it, then a sweep that only sees a healthy domain confirms it."""
    start = LAPSED + timedelta(days=10)
    with freeze_time(start) as clock:
        write_status(app, {"lapsed-shop.com": lapsing(start)})
        assert guard.reset_decision(VICTIM).allowed
        sale = start + timedelta(days=1)
        clock.move_to(sale + timedelta(hours=1))
        write_status(app, {"lapsed-shop.com": sold(sale)})
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
        clock.tick(timedelta(hours=7))
        result = app.test_cli_runner().invoke(
            args=["domainguard", "sweep", "--domain", "lapsed-shop.com"]
        )
        assert result.exit_code == 0, result.output
        # The live check's sighting started the confirmation clock: this sweep confirms it.
        row = guard.find_address(VICTIM)
        assert row.unverify_reason is UnverifyReason.DOMAIN_REREGISTERED
        assert guard.reset_decision(VICTIM).reason == "unverified"
        assert not guard.safe_to_mail(VICTIM)


def test_the_attackers_newer_address_never_makes_the_victims_kinder(
    app: Flask, guard: Any, victim: Any, make_user: Any
) -> None:
    """Verdicts belong to addresses: the buyer verifies an address of their own on the
    domain (their own account); the victim's address stays refused and unsafe to mail."""
    start = LAPSED + timedelta(days=10)
    with freeze_time(start) as clock:
        write_status(app, {"lapsed-shop.com": lapsing(start)})
        guard.reset_decision(VICTIM)
        sale = start + timedelta(days=1)
        clock.move_to(sale + timedelta(days=1))
        write_status(app, {"lapsed-shop.com": sold(sale)})
        attacker = make_user()
        add(guard, attacker, "me@lapsed-shop.com")  # verified now, after the sale
        assert guard.reset_decision("me@lapsed-shop.com").allowed
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
        assert not guard.safe_to_mail(VICTIM)
        assert guard.safe_to_mail("me@lapsed-shop.com")
        domain = guard.db.session.get(guard.models.Domain, "lapsed-shop.com")
        assert domain.verdict == "reregistered", "the summary is the oldest proof's verdict"


def test_reverification_after_the_sale_gives_the_new_proof_a_clean_slate(
    app: Flask, guard: Any, victim: Any
) -> None:
    """The remembered change of hands stays until the address is verified again: a proof
    made after it is judged on its own date."""
    start = LAPSED + timedelta(days=10)
    with freeze_time(start) as clock:
        write_status(app, {"lapsed-shop.com": lapsing(start)})
        guard.reset_decision(VICTIM)
        sale = start + timedelta(days=1)
        clock.move_to(sale + timedelta(days=1))
        write_status(app, {"lapsed-shop.com": sold(sale)})
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
        row = guard.find_address(VICTIM)
        row.verified_at = sale + timedelta(hours=12)  # proved again after the sale
        guard.db.session.commit()
        assert guard.reset_decision(VICTIM).allowed


# -- case 1, through the real parts: a status API that fails, mail over SMTP ----------------


def ask(app: Flask, address: str) -> None:
    client = app.test_client()
    form = client.get("/domainguard/reset")
    data = {"csrf_token": csrf_of(form.data), "email": address}
    assert client.post("/domainguard/reset", data=data).status_code == 200


@pytest.mark.use_status_server
@pytest.mark.parametrize("failure", ["500", "garbage", "truncated", "unknown", "undelegated"])
def test_a_failed_lookup_mails_no_reset(
    smtp_app: Flask,
    guard: Any,
    victim: Any,
    status_server: StatusServer,
    smtp_sink: SMTPSink,
    failure: str,
) -> None:
    """Case 1: the status API fails (5xx, garbage, a cut body, Domainr's `unknown`), or
    answers something that proves nothing about the owner (`undelegated` alone), and the
    domain has no recent OK check: no reset mail; the journal says why and the owner's safe
    address hears that a reset was refused."""
    status_server.answers["lapsed-shop.com"] = failure
    set_domain(guard, "lapsed-shop.com", checked_at=None, verdict=None, registered=None)
    ask(smtp_app, VICTIM)
    assert VICTIM not in smtp_sink.recipients()
    [refused] = events(guard, EventKind.RESET_REFUSED)
    expected = "domain_released" if failure == "undelegated" else "no_evidence"
    assert refused.details["reason"] in {expected, "no_evidence"}
    assert smtp_sink.recipients() == [BACKUP]
    assert "did not send a reset" in str(smtp_sink.messages[0].get_payload(decode=True))


@pytest.mark.use_status_server
def test_a_healthy_domain_with_a_working_source_gets_its_reset(
    smtp_app: Flask, guard: Any, victim: Any, status_server: StatusServer, smtp_sink: SMTPSink
) -> None:
    status_server.answers["lapsed-shop.com"] = "active"
    ask(smtp_app, VICTIM)
    assert smtp_sink.recipients() == [VICTIM]
    assert status_server.hits["lapsed-shop.com"] == 1


@pytest.mark.use_status_server
def test_a_trusted_provider_gets_its_reset_with_the_source_down(
    smtp_app: Flask, guard: Any, victim: Any, status_server: StatusServer, smtp_sink: SMTPSink
) -> None:
    status_server.default = "500"
    ask(smtp_app, BACKUP)
    assert smtp_sink.recipients() == [BACKUP]
    assert sum(status_server.hits.values()) == 0, "trusted providers are never looked up"


def test_a_registration_before_the_proof_is_allowed(app: Flask, guard: Any, victim: Any) -> None:
    """A domain registered (even re-registered) before the address was verified is the one
    its owner proved: allowed."""
    write_status(
        app,
        {"lapsed-shop.com": {**OK, "registered_at": iso(VERIFIED - timedelta(days=30))}},
    )
    assert guard.reset_decision(VICTIM).allowed


def test_a_release_answered_once_by_a_dated_source_changes_nothing(
    app: Flask, guard: Any, victim: Any
) -> None:
    """The outage rule holds where the source gives dates: one 404 (a registry hiccup), then
    the same registration as before (registered 2010). No change of hands is remembered, the
    confirmation starts over, the address keeps its standing."""
    runner = app.test_cli_runner()
    sweep = ["domainguard", "sweep", "--domain", "lapsed-shop.com"]
    healthy = {**OK, "registered_at": "2010-01-01T00:00:00Z"}
    with freeze_time(LAPSED) as clock:
        write_status(app, {"lapsed-shop.com": {"registered": False}})
        runner.invoke(args=sweep)
        clock.tick(timedelta(hours=7))
        write_status(app, {"lapsed-shop.com": healthy})
        assert runner.invoke(args=sweep).exit_code == 0
        domain = guard.db.session.get(guard.models.Domain, "lapsed-shop.com")
        guard.db.session.refresh(domain)
        assert domain.changed_hands_at is None and domain.unsafe_since is None
        assert domain.verdict == "ok"
        assert guard.find_address(VICTIM).verified_at == VERIFIED
