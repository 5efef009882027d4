"""The second attack review, after the domain-state engine: the lapsed domain's new owner plays
each case with default settings, through public entry points (the reset decision and pages,
the sweep and check commands, Flask-Mail through a real SMTP server).

Each test is an attack that must fail."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_mail import Message
from freezegun import freeze_time

from flask_domainguard.journal import EventKind
from flask_domainguard.mail.recipients import has_reset_evidence
from flask_domainguard.models import UnverifyReason
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink
from tests.guard_helpers import COUNTING, OK, CountingBackend, add, csrf_of, events, write_status
from tests.sweep_support import StatusServer

UTC = timezone.utc
VERIFIED = datetime(2015, 3, 1, tzinfo=UTC)
VICTIM = "maintainer@lapsed-shop.com"
DOMAIN = "lapsed-shop.com"
BACKUP = "maintainer.backup@gmail.com"  # a trusted provider: the owner's safe address


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def victim(guard: Any, make_user: Any) -> Any:
    user = make_user()
    add(guard, user, VICTIM, verified_at=VERIFIED, primary=True)
    add(guard, user, BACKUP)
    return user


def host_sends(app: Flask, **fields: Any) -> None:
    """The host's own code mailing through Flask-Mail (a flow that forgot to ask DomainGuard)."""
    message = Message("Reset your password", sender="accounts@host.test", body="link", **fields)
    app.extensions["mail"].send(message)


def ask(app: Flask, address: str) -> None:
    """The attacker asks for a reset on the blueprint's page."""
    client = app.test_client()
    form = client.get("/domainguard/reset")
    data = {"csrf_token": csrf_of(form.data), "email": address}
    assert client.post("/domainguard/reset", data=data).status_code == 200


def sweep(app: Flask, *names: str, codes: tuple[int, ...] = (0,)) -> None:
    args = ["domainguard", "sweep"]
    for name in names:
        args += ["--domain", name]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code in codes, result.output


def domain_row(guard: Any, name: str = DOMAIN) -> Any:
    guard.db.session.expire_all()
    return guard.db.session.get(guard.models.Domain, name)


# -- the mail safety net ----------------------------------------------------------------------


STRASSE = "kontakt@straße.com"  # stored as kontakt@xn--strae-oqa.com (IDNA 2008, UTS #46)


def test_the_safety_net_judges_the_domain_flask_mail_delivers_to(
    smtp_app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink
) -> None:
    """The victim's address is on ``straße.com``; the attacker holds ``strasse.com`` (released
    and caught: anyone could). The host mails the address as the user typed it, inside the
    reset scope opened with an allowed decision and outside it: Flask-Mail's IDNA 2003 codec
    maps ß to ss and the mail goes to the attacker's domain."""
    user = make_user()
    row = add(guard, user, STRASSE, verified_at=VERIFIED, primary=True)
    assert row.registrable == "xn--strae-oqa.com"
    write_status(smtp_app, {"xn--strae-oqa.com": OK, "strasse.com": {"registered": False}})
    decision = guard.reset_decision(STRASSE)
    assert decision.allowed, "the victim's own domain is healthy"
    with guard.reset_mail_scope(decision):
        host_sends(smtp_app, recipients=[STRASSE])
    host_sends(smtp_app, recipients=[("Kontakt", STRASSE)])
    host_sends(smtp_app, recipients=["someone@example.org"], cc=[f"K <{STRASSE}>"])
    delivered = smtp_sink.recipients()
    assert delivered == ["someone@example.org"], delivered


def test_spellings_of_an_unsafe_address_are_all_withheld(
    smtp_app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink
) -> None:
    """Held: an unsafe stored address in any spelling Flask-Mail accepts (U-label and
    A-label, upper case, display names, tuples, cc and bcc) is withheld, in the reset scope
    and outside it."""
    user = make_user()
    add(guard, user, "ana@bücher.example", verified_at=VERIFIED)
    add(guard, user, BACKUP, primary=True)
    write_status(smtp_app, {"xn--bcher-kva.example": {"registered": False}})
    assert guard.reset_decision("ana@bücher.example").reason == "domain_released"
    spellings: list[Any] = [
        "ana@bücher.example",
        "ANA@BÜCHER.EXAMPLE",
        "ana@xn--bcher-kva.example",
        "Ana <ana@XN--BCHER-KVA.EXAMPLE.>",
        ("Ana", "Ana@Bücher.Example"),
        '"ana@gmail.com" <ana@bücher.example>',
    ]
    for spelling in spellings:
        host_sends(smtp_app, recipients=[spelling])
        host_sends(smtp_app, recipients=[BACKUP], cc=[spelling], bcc=[spelling])
        with guard.reset_mail_scope():
            host_sends(smtp_app, recipients=[spelling])
    assert set(smtp_sink.recipients()) == {BACKUP}


def test_the_safety_net_stays_shut_after_the_sweep_unverifies(
    smtp_app: Flask, guard: Any, victim: Any, smtp_sink: SMTPSink
) -> None:
    """The domain was registered again after the victim verified; the safety net withholds
    the host's own reset mail. The sweep confirms the verdict and unverifies the address:
    from then on the same host mail is delivered to the new registrant."""
    now = utcnow()
    caught = now - timedelta(days=2)
    write_status(smtp_app, {DOMAIN: {**OK, "registered_at": iso(caught)}})
    with freeze_time(now - timedelta(hours=8)) as clock:
        sweep(smtp_app, DOMAIN)
        host_sends(smtp_app, recipients=[VICTIM])  # still verified: withheld
        clock.tick(timedelta(hours=7))
        sweep(smtp_app, DOMAIN)
    row = guard.find_address(VICTIM)
    assert row.verified_at is None
    assert row.unverify_reason is UnverifyReason.DOMAIN_REREGISTERED
    host_sends(smtp_app, recipients=[VICTIM])  # the host's forgot-password flow, unguarded
    assert VICTIM not in smtp_sink.recipients()
    # DomainGuard's own re-verification link still goes (it needs the owner logged in).
    guard.send_verification(VICTIM)
    assert smtp_sink.recipients()[-1] == VICTIM
    assert "verify" in smtp_sink.messages[-1]["Subject"].lower()


# -- the lapse memory -------------------------------------------------------------------------


@pytest.mark.parametrize("asked_after", [timedelta(hours=6), timedelta(days=2)])
def test_a_lifted_hold_in_the_auto_renew_period_does_not_erase_the_lapse(
    app: Flask, guard: Any, victim: Any, asked_after: timedelta
) -> None:
    """The registrar suspends the unpaid name (auto-renew period and client hold: a lapse,
    remembered). It lifts the hold to sell the name at its expired-domain auction; the date
    still reads a year on, as Verisign set it at expiry. A check in between (the attacker's own
    reset request forces one: the stored verdict is not OK) must not forget the lapse, or the
    transfer to the buyer that follows is an ordinary change of registrar; nor may its OK
    stand as evidence for a day while the lapse is unresolved."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    pushed = start + timedelta(days=350)  # the expiration Verisign moved on at expiry
    held = {
        "registered": True,
        "statuses": ["auto renew period", "client hold"],
        "registered_at": "2010-01-01T00:00:00Z",
        "expires_at": iso(pushed),
    }
    with freeze_time(start) as clock:
        write_status(app, {DOMAIN: held})
        first = guard.reset_decision(VICTIM)
        assert first.verdict is not None and first.verdict.kind.value == "in_grace"
        assert domain_row(guard).lapse_seen_at == start

        clock.tick(timedelta(days=5))
        write_status(app, {DOMAIN: {**held, "statuses": ["auto renew period"]}})
        guard.reset_decision(VICTIM)  # the attacker's probe: stored in_grace is looked up

        clock.tick(asked_after)
        sale = utcnow() - timedelta(hours=3)
        sold = {**held, "statuses": ["active"], "transferred_at": iso(sale)}
        write_status(app, {DOMAIN: {**sold, "expires_at": iso(sale + timedelta(days=365))}})
        decision = guard.reset_decision(VICTIM)
    assert decision.reason == "domain_reregistered"


@pytest.mark.use_status_server
@pytest.mark.parametrize("lapse", ["inactive", "deleting"])
def test_a_release_then_a_registration_is_a_change_of_hands_without_dates(
    smtp_app: Flask,
    guard: Any,
    victim: Any,
    status_server: StatusServer,
    smtp_sink: SMTPSink,
    lapse: str,
) -> None:
    """Fastly gives flags, never dates. The product sees the name released (``inactive``) or
    pending delete (``deleting``: no restore possible any more), by the attacker's own probe
    or a sweep. Minutes later it is ``active`` again: only a new registrant can have done
    that, and the threat model promises this is seen as a release followed by a registration."""
    status_server.answers[DOMAIN] = lapse
    ask(smtp_app, VICTIM)
    assert events(guard, EventKind.RESET_REFUSED)[-1].details["reason"].startswith("domain_")
    status_server.answers[DOMAIN] = "active"  # drop-caught
    ask(smtp_app, VICTIM)
    assert VICTIM not in smtp_sink.recipients()


@pytest.mark.use_status_server
@pytest.mark.settings(DOMAINGUARD_MAX_UNVERIFY=1)
def test_apply_held_does_not_release_a_caught_domain(
    smtp_app: Flask,
    guard: Any,
    victim: Any,
    make_user: Any,
    status_server: StatusServer,
    smtp_sink: SMTPSink,
) -> None:
    """The circuit breaker holds the release's unverifications for review (here two, over a
    limit of one). By the time a person applies them the name was caught: the fresh lookup
    says ``active``."""
    add(guard, make_user(), "colleague@lapsed-shop.com", verified_at=VERIFIED)
    status_server.answers[DOMAIN] = "inactive"
    with freeze_time(utcnow() - timedelta(hours=8)) as clock:
        sweep(smtp_app, DOMAIN)
        clock.tick(timedelta(hours=7))
        sweep(smtp_app, DOMAIN, codes=(3,))  # 3: the circuit breaker held them
    assert len(events(guard, EventKind.UNVERIFY_HELD)) == 2
    status_server.answers[DOMAIN] = "active"
    result = smtp_app.test_cli_runner().invoke(args=["domainguard", "sweep", "--apply-held"])
    assert result.exit_code in (0, 1), result.output
    ask(smtp_app, VICTIM)
    assert VICTIM not in smtp_sink.recipients()


# -- concurrent writers -----------------------------------------------------------------------


def test_a_sweep_batch_does_not_store_older_facts_over_a_newer_live_check(
    app: Flask, guard: Any, victim: Any
) -> None:
    """A sweep claims the domain and looks it up (healthy, registered 2001). Before the batch
    is applied, the registry shows a new registration and the attacker's reset request looks
    it up live: refused. Then the batch lands. The steps are the ones two processes take; on
    PostgreSQL each runs in its own transaction with the row locks the engine takes."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    with freeze_time(start) as clock:
        write_status(app, {DOMAIN: OK})
        batch = Sweep(guard)
        claims = batch.claim_batch(names=[DOMAIN])
        looked_up = batch.lookup_batch([c.name for c in claims])

        clock.tick(timedelta(minutes=2))
        caught = utcnow() - timedelta(minutes=1)
        write_status(app, {DOMAIN: {**OK, "registered_at": iso(caught)}})
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"

        clock.tick(timedelta(minutes=1))
        batch.apply_results(claims, looked_up)
        batch.close()
        batch.finish()

        row = domain_row(guard)
        assert row.registered_at == caught and row.lease_owner is None, "only the lease went"
        clock.tick(timedelta(minutes=1))
        decision = guard.reset_decision(VICTIM)
    assert not decision.allowed, (decision.reason, domain_row(guard).registered_at)


# -- attacks that held --------------------------------------------------------------------------


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=COUNTING)
def test_the_evidence_window_ends_exactly_at_reset_live_check_after(
    app: Flask, guard: Any, victim: Any
) -> None:
    """Held: an OK check is evidence for less than ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER``; at
    exactly that age the reset decision looks up again (and sees the new registration), and
    the reset scope without a decision stops vouching too."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    window = guard.settings.reset_live_check_after
    CountingBackend.calls.clear()
    with freeze_time(start) as clock:
        write_status(app, {DOMAIN: OK})
        assert guard.reset_decision(VICTIM).allowed
        row = guard.find_address(VICTIM)
        write_status(app, {DOMAIN: {**OK, "registered_at": iso(start + timedelta(hours=1))}})
        clock.tick(window - timedelta(microseconds=1))
        assert has_reset_evidence(guard, row)
        assert guard.reset_decision(VICTIM).allowed, "the documented window"
        assert CountingBackend.calls == [DOMAIN]
        clock.tick(timedelta(microseconds=1))
        assert not has_reset_evidence(guard, row)
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
        assert CountingBackend.calls == [DOMAIN, DOMAIN]


def test_check_writes_nothing(app: Flask, guard: Any, victim: Any) -> None:
    """Held: ``flask domainguard check`` on a lapsing, then sold domain reports the verdict
    the sweep would reach and leaves the row, its memories and the journal as they were."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    D = guard.models.Domain.__table__

    def snapshot() -> list[Any]:
        guard.db.session.expire_all()
        rows = guard.db.session.execute(sa.select(D)).all()
        journal = guard.db.session.scalar(sa.select(sa.func.count(guard.models.Event.id)))
        return [sorted(map(tuple, rows)), journal]

    runner = app.test_cli_runner()
    with freeze_time(start) as clock:
        lapsing = {**OK, "expires_at": iso(start - timedelta(days=3))}
        write_status(app, {DOMAIN: lapsing, "never-seen.example": OK})
        before = snapshot()
        for target in (DOMAIN, VICTIM, "never-seen.example", "x@never-seen.example"):
            result = runner.invoke(args=["domainguard", "check", target])
            assert result.exit_code == 0, result.output
        assert snapshot() == before
        sweep(app, DOMAIN)  # the lapse is remembered
        clock.tick(timedelta(days=1))
        sale = start + timedelta(hours=20)
        write_status(app, {DOMAIN: {**OK, "transferred_at": iso(sale)}})
        before = snapshot()
        result = runner.invoke(args=["domainguard", "check", VICTIM])
        assert result.exit_code == 3, result.output
        assert "reregistered" in result.output
        assert snapshot() == before


def test_a_change_of_hands_after_a_release_outlives_a_later_answer(
    app: Flask, guard: Any, victim: Any
) -> None:
    """Held: the sweep sees the release, then the new registration; a later answer that
    shows the old registration date again (a registry's correction, or a hostile answer)
    does not make the victim's address safe: the change of hands is remembered for good, by
    the sweep, the live check and the mail safety net alike."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    with freeze_time(start) as clock:
        write_status(app, {DOMAIN: {"registered": False}})
        sweep(app, DOMAIN)
        clock.tick(timedelta(hours=2))
        caught = utcnow() - timedelta(hours=1)
        write_status(app, {DOMAIN: {**OK, "registered_at": iso(caught)}})
        sweep(app, DOMAIN)
        assert domain_row(guard).changed_hands_at == caught
        clock.tick(timedelta(days=3))
        write_status(app, {DOMAIN: OK})  # registered 2001 again
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
        assert not guard.safe_to_mail(VICTIM)


@pytest.mark.parametrize(
    "answer",
    [
        # a transfer dated in the future (a registry clock ahead), after a seen lapse
        {"transferred_at": "2024-06-03T00:00:00Z"},
        # a registration dated in the far future: later than any proof
        {"registered_at": "9999-01-01T00:00:00Z"},
        # a registration in the future by minutes and no expiration date at all
        {"registered_at": "2024-06-02T00:10:00Z", "expires_at": None},
    ],
)
def test_odd_dates_do_not_hide_a_change_of_hands(
    app: Flask, guard: Any, victim: Any, answer: dict[str, Any]
) -> None:
    """Held: dates in the future count (a clock ahead of ours must not hide a sale)."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    with freeze_time(start) as clock:
        write_status(app, {DOMAIN: {**OK, "expires_at": "2024-05-20T00:00:00Z"}})
        assert guard.reset_decision(VICTIM).allowed  # in grace: still the owner's
        clock.tick(timedelta(days=1))
        write_status(app, {DOMAIN: {**OK, **answer}})
        assert guard.reset_decision(VICTIM).reason == "domain_reregistered"


def test_a_naive_proof_date_is_read_as_utc(app: Flask, guard: Any, victim: Any) -> None:
    """Held: a host or migration writing a naive ``verified_at`` does not shift the proof
    past a re-registration (on PostgreSQL a naive value would take the session's zone)."""
    row = guard.find_address(VICTIM)
    row.verified_at = datetime(2024, 6, 1, 12, 0)  # naive: noon UTC
    guard.db.session.commit()
    write_status(app, {DOMAIN: {**OK, "registered_at": "2024-06-01T12:30:00Z"}})
    assert guard.reset_decision(VICTIM).reason == "domain_reregistered"
