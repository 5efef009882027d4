"""The sweep engine end to end against a real Fastly-style status server on 127.0.0.1.

Time moves with an explicit clock: :func:`rewind` shifts every stored moment into the past,
which is what the next run would see hours later (the lookups run in a thread with real
sockets and timeouts, which a frozen clock would stall).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_domainguard import signals
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.sweep import Sweep, next_check_after_failure
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.sweep_support import StatusServer, seed

pytestmark = pytest.mark.use_status_server


def sweep(guard: Any, **kwargs: Any) -> Any:
    return Sweep(guard, retry_base=0.01, **kwargs).run()


def domain(guard: Any, name: str) -> Any:
    hostapp.db.session.expire_all()
    return hostapp.db.session.get(guard.models.Domain, name)


def address(guard: Any, row_id: int) -> Any:
    hostapp.db.session.expire_all()
    return hostapp.db.session.get(guard.models.EmailAddress, row_id)


def events(guard: Any, kind: EventKind) -> list[Any]:
    Event = guard.models.Event
    return list(hostapp.db.session.scalars(sa.select(Event).where(Event.kind == kind.value)))


def rewind(guard: Any, hours: float) -> None:
    """Pretend ``hours`` passed: move every stored moment back, and make all domains due."""
    Domain = guard.models.Domain
    delta = timedelta(hours=hours)
    for row in hostapp.db.session.scalars(sa.select(Domain)):
        for attr in ("unsafe_since", "checked_at", "lapse_seen_at", "changed_hands_at"):
            if getattr(row, attr) is not None:
                setattr(row, attr, getattr(row, attr) - delta)
        row.next_check_at = utcnow()
    hostapp.db.session.commit()


def test_one_lookup_per_domain_and_trusted_domains_never_looked_up(
    guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"shared.com": 5, "solo.org": 1, "gmail.com": 3, "outlook.com": 1})
    report = sweep(guard)
    assert report.checked == 2
    assert report.skipped_trusted == 2
    assert dict(status_server.hits) == {"shared.com": 1, "solo.org": 1}
    assert report.verdicts == {"ok": 2}
    assert domain(guard, "gmail.com").checked_at is None


def test_unverified_only_domains_are_not_due(guard: Any, status_server: StatusServer) -> None:
    seed(guard, {"pending.com": 2}, verified=False)
    seed(guard, {"alive.org": 1})
    report = sweep(guard)
    assert report.checked == 1
    assert "pending.com" not in status_server.hits


def test_each_verdict_and_the_confirmation_rule(guard: Any, status_server: StatusServer) -> None:
    status_server.answers.update(
        {
            "gone.com": "undelegated inactive",
            "deleting.com": "active deleting",
            "lapsing.com": "active expiring",
            "unknown.com": "unknown",
        }
    )
    ids = seed(
        guard,
        {"fine.com": 1, "gone.com": 2, "deleting.com": 1, "lapsing.com": 1, "unknown.com": 1},
    )
    before = utcnow()
    first = sweep(guard)
    assert first.verdicts == {
        "ok": 1,
        "released": 1,
        "expired": 1,
        "in_grace": 1,
        "unknown": 1,
    }
    assert first.unsafe_first_seen == 2 and first.unverified == 0
    # Nothing acts on a single sighting.
    assert all(address(guard, i).verified for rows in ids.values() for i in rows)
    gone = domain(guard, "gone.com")
    assert gone.verdict == "released" and gone.unsafe_since is not None
    assert gone.next_check_at == gone.unsafe_since + timedelta(hours=6)
    assert domain(guard, "unknown.com").verdict is None  # failing proves nothing
    assert domain(guard, "unknown.com").failures == 1
    lapsing = domain(guard, "lapsing.com")
    assert lapsing.lapse_seen_at is not None and lapsing.unsafe_since is None
    assert lapsing.next_check_at <= before + timedelta(days=1, minutes=1)

    # One hour later (checked early, e.g. with --domain): still not confirmed.
    rewind(guard, 1)
    early = sweep(guard)
    assert early.unverified == 0
    assert all(address(guard, i).verified for i in ids["gone.com"])

    # Seven hours after the first sighting: confirmed, acted on.
    rewind(guard, 6)
    second = sweep(guard)
    assert second.unverified == 3
    for row_id in ids["gone.com"]:
        row = address(guard, row_id)
        assert not row.verified and row.unverify_reason is UnverifyReason.DOMAIN_RELEASED
    assert address(guard, ids["deleting.com"][0]).unverify_reason is UnverifyReason.DOMAIN_EXPIRED
    for safe in ("fine.com", "lapsing.com", "unknown.com"):
        assert address(guard, ids[safe][0]).verified
    journal = events(guard, EventKind.ADDRESS_UNVERIFIED)
    assert sorted(e.address_id for e in journal) == sorted(ids["gone.com"] + ids["deleting.com"])
    assert all(e.actor == "sweep" for e in journal)
    verdict_events = {e.details["domain"] for e in events(guard, EventKind.DOMAIN_VERDICT)}
    assert verdict_events == {"gone.com", "deleting.com", "lapsing.com"}  # not fine.com's first ok


def test_a_safe_answer_in_between_starts_the_confirmation_over(
    guard: Any, status_server: StatusServer
) -> None:
    status_server.answers["flap.com"] = "active expiring"
    ids = seed(guard, {"flap.com": 1})
    guard.db.session.execute(
        sa.update(guard.models.Domain).values(lapse_seen_at=utcnow() - timedelta(days=40))
    )
    guard.db.session.commit()
    sweep(guard)  # lapsing for 40 days: past grace, expired
    assert domain(guard, "flap.com").unsafe_since is not None
    rewind(guard, 7)
    status_server.answers["flap.com"] = "active"  # restored in time after all
    sweep(guard)
    assert domain(guard, "flap.com").unsafe_since is None
    assert address(guard, ids["flap.com"][0]).verified


def test_a_release_then_a_holder_without_dates_is_a_change_of_hands(
    guard: Any, status_server: StatusServer
) -> None:
    """Fastly gives flags, no dates: ``inactive`` (anyone may register it) and then ``active``
    can only be a new registrant. Remembered as a change of hands, confirmed by the next
    check and acted on: the trade-off of a source without dates, where one wrong
    ``inactive`` answer costs the owner a re-verification (timeouts answer ``unknown``)."""
    status_server.answers["flap.com"] = "undelegated inactive"
    ids = seed(guard, {"flap.com": 1})
    sweep(guard)
    rewind(guard, 7)
    status_server.answers["flap.com"] = "active"
    sweep(guard)
    row = domain(guard, "flap.com")
    assert row.verdict == "reregistered" and row.changed_hands_at is not None
    assert not address(guard, ids["flap.com"][0]).verified


def test_a_failure_in_between_keeps_the_first_sighting(
    guard: Any, status_server: StatusServer
) -> None:
    status_server.answers["gone.com"] = "undelegated inactive"
    ids = seed(guard, {"gone.com": 1})
    sweep(guard)
    first_seen = domain(guard, "gone.com").unsafe_since
    rewind(guard, 3)
    status_server.answers["gone.com"] = "500"
    sweep(guard)
    row = domain(guard, "gone.com")
    assert row.verdict == "released" and row.unsafe_since == first_seen - timedelta(hours=3)
    rewind(guard, 4)
    status_server.answers["gone.com"] = "undelegated inactive"
    assert sweep(guard).unverified == 1
    assert not address(guard, ids["gone.com"][0]).verified


def test_rescheduling(guard: Any, status_server: StatusServer) -> None:
    status_server.answers.update({"bad.com": "500", "lapsing.com": "active expiring"})
    seed(guard, {f"ok{i}.com": 1 for i in range(20)} | {"bad.com": 1, "lapsing.com": 1})
    start = utcnow()
    sweep(guard)
    spread = {domain(guard, f"ok{i}.com").next_check_at - start for i in range(20)}
    week = timedelta(days=7)
    assert all(week * 0.89 < delta < week * 1.11 + timedelta(minutes=1) for delta in spread)
    assert len(spread) > 10, "healthy domains are spread with jitter, not due all at once"
    bad = domain(guard, "bad.com")
    assert bad.failures == 1 and "500" in bad.last_error
    assert timedelta(minutes=25) < bad.next_check_at - start < timedelta(minutes=40)
    lapsing = domain(guard, "lapsing.com")
    assert timedelta(hours=23) < lapsing.next_check_at - start <= timedelta(days=1, minutes=1)
    assert bad.lease_owner is None and lapsing.lease_until is None


def test_failure_backoff_grows_and_is_capped_at_a_day() -> None:
    delays = [next_check_after_failure(n) for n in range(1, 12)]
    assert delays[0] < timedelta(minutes=40) and delays[1] > timedelta(minutes=50)
    assert all(d <= timedelta(days=1) for d in delays)
    assert delays[-1] > timedelta(hours=20)
    assert next_check_after_failure(1, retry_after=7200) >= timedelta(hours=2)


def test_notices_go_to_the_users_other_safe_addresses_only(
    app_config: dict[str, Any],
    status_server: StatusServer,
    smtp_sink: SMTPSink,
    request: pytest.FixtureRequest,
) -> None:
    use_smtp(app_config, smtp_sink)
    request.getfixturevalue("app")
    guard = hostapp.guard
    status_server.answers["gone.com"] = "undelegated inactive"
    status_server.answers["alsogone.com"] = "undelegated inactive"
    user = hostapp.User(email=None)
    hostapp.db.session.add(user)
    hostapp.db.session.commit()
    lost = guard.add_address(user, "me@gone.com", verified=True, primary=True)
    guard.add_address(user, "me@gmail.com", verified=True)
    guard.add_address(user, "me@alsogone.com", verified=True)
    guard.add_address(user, "new@fine.com", verified=False)
    received: list[dict[str, Any]] = []

    def listener(sender: Any, **info: Any) -> None:
        received.append(info)

    signals.address_unverified.connect(listener)
    try:
        sweep(guard)
        rewind(guard, 7)
        report = sweep(guard)
    finally:
        signals.address_unverified.disconnect(listener)
    assert report.unverified == 2 and report.notices_sent == 1
    assert smtp_sink.recipients() == ["me@gmail.com"]
    text = smtp_sink.messages[0].get_payload(decode=True).decode()
    assert "me@gone.com" in text and "me@alsogone.com" in text and "renew" in text
    assert {r["address"] for r in received} == {"me@gone.com", "me@alsogone.com"}
    assert not address(guard, lost.id).verified
    assert len(events(guard, EventKind.UNSAFE_NOTICE_SENT)) == 2


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND="static")
def test_reregistered_depends_on_each_addresses_verified_at(
    guard: Any, app_config: dict[str, Any]
) -> None:
    ids = seed(guard, {"reborn.com": 2})
    EmailAddress = guard.models.EmailAddress
    old, recent = ids["reborn.com"]
    now = utcnow()
    hostapp.db.session.get(EmailAddress, old).verified_at = now - timedelta(days=400)
    hostapp.db.session.get(EmailAddress, recent).verified_at = now - timedelta(days=2)
    hostapp.db.session.commit()
    created = (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(app_config["DOMAINGUARD_STATIC_STATUS_FILE"]).write_text(
        json.dumps(
            {
                "reborn.com": {
                    "registered": True,
                    "statuses": ["active"],
                    "registered_at": created,
                    "expires_at": "2031-01-01T00:00:00Z",
                }
            }
        )
    )
    sweep(guard)
    assert domain(guard, "reborn.com").verdict == "reregistered"
    rewind(guard, 7)
    report = sweep(guard)
    assert report.unverified == 1
    assert address(guard, old).unverify_reason is UnverifyReason.DOMAIN_REREGISTERED
    assert address(guard, recent).verified, "verified after the new registration: safe"


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND="static")
def test_expiring_soon_warns_the_owner_once_per_expiry_date(
    guard: Any, app_config: dict[str, Any], outbox: list[Any]
) -> None:
    status_file = Path(app_config["DOMAINGUARD_STATIC_STATUS_FILE"])

    def expires(when: datetime) -> None:
        doc = {
            "mine.com": {
                "registered": True,
                "statuses": ["active"],
                "expires_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        }
        status_file.write_text(json.dumps(doc))

    ids = seed(guard, {"mine.com": 2})
    soon = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    expires(soon)
    report = sweep(guard)
    assert report.verdicts == {"expiring_soon": 1} and report.warnings_sent == 2
    assert len(outbox) == 2  # one per user, to their own (still safe) address
    assert {m.recipients[0] for m in outbox} == {address(guard, i).address for i in ids["mine.com"]}
    assert "expires on" in outbox[0].body and "renew" in outbox[0].body
    assert all(address(guard, i).verified for i in ids["mine.com"])
    assert address(guard, ids["mine.com"][0]).expiry_warned_for == soon
    rewind(guard, 24)
    sweep(guard)
    assert len(outbox) == 2, "one warning per expiry date"
    expires(soon + timedelta(days=5))
    rewind(guard, 24)
    sweep(guard)
    assert len(outbox) == 4
    assert len(events(guard, EventKind.EXPIRY_WARNING_SENT)) == 4


def test_limit_and_explicit_domains(guard: Any, status_server: StatusServer) -> None:
    seed(guard, {f"d{i}.com": 1 for i in range(10)})
    assert sweep(guard, backend=None).checked == 10
    assert sweep(guard).checked == 0, "nothing is due any more"
    report = Sweep(guard).run(names=["d3.com", "gmail.com"])
    assert report.checked == 1 and status_server.hits["d3.com"] == 2
    rewind(guard, 0)
    assert Sweep(guard).run(limit=4).checked == 4
    assert Sweep(guard).run().checked == 6


@pytest.mark.settings(DOMAINGUARD_SWEEP_BATCH_SIZE=7)
def test_batches_stream_through_many_domains(guard: Any, status_server: StatusServer) -> None:
    seed(guard, {f"n{i:03d}.com": 1 for i in range(60)})
    progress: list[int] = []
    report = Sweep(guard).run(on_progress=progress.append)
    assert report.checked == 60 and sum(progress) == 60 and max(progress) <= 7
    assert len(status_server.hits) == 60 and set(status_server.hits.values()) == {1}


def test_timestamps_are_aware_utc(guard: Any, status_server: StatusServer) -> None:
    seed(guard, {"tz.com": 1})
    sweep(guard)
    row = domain(guard, "tz.com")
    assert row.checked_at.tzinfo is not None
    assert row.checked_at.utcoffset() == timezone.utc.utcoffset(None)


# -- one run in chunks (what flask_domainguard.contrib.celery builds on) ----------------------


def test_chunk_ranges_cover_every_due_domain_once(guard: Any, status_server: StatusServer) -> None:
    names = [f"r{i:02d}.com" for i in range(23)]
    seed(guard, {name: 1 for name in names})
    run = Sweep(guard)
    ranges = run.chunk_ranges(5)
    assert len(ranges) == 5
    assert ranges[0][0] is None and ranges[-1][1] is None
    assert [stop for _, stop in ranges[:-1]] == [first for first, _ in ranges[1:]]
    seen: list[str] = []
    for first, stop in ranges:
        part = Sweep(guard, run_id=run.run_id, cutoff=run.cutoff, name_range=(first, stop))
        claims = part.claim_batch(100)
        assert claims and len(claims) <= 5
        seen += [c.name for c in claims]
    assert sorted(seen) == names
    assert Sweep(guard).chunk_ranges(5) == []  # every due domain is leased now


@pytest.mark.settings(DOMAINGUARD_MAX_UNVERIFY=5)
def test_chunks_of_one_run_share_the_breaker_and_finish_once(
    guard: Any, status_server: StatusServer
) -> None:
    names = [f"s{i:02d}.com" for i in range(12)]
    for name in names[:6]:
        status_server.answers[name] = "undelegated inactive"
    seed(guard, {name: 1 for name in names})
    hostapp.db.session.execute(
        sa.update(guard.models.Domain)
        .where(guard.models.Domain.name.in_(names[:6]))
        .values(verdict="released", unsafe_since=utcnow() - timedelta(hours=7))
    )
    hostapp.db.session.commit()
    run = Sweep(guard)
    reports = []
    for first, stop in run.chunk_ranges(4):
        part = Sweep(
            guard,
            run_id=run.run_id,
            cutoff=run.cutoff,
            lease_owner=f"chunk-{first}",
            name_range=(first, stop),
            retry_base=0.01,
        )
        reports.append(part.run(finish=False))
    assert [r.checked for r in reports] == [4, 4, 4]
    assert [r.planned for r in reports] == [4, 2, 0]
    assert all(r.unverified == 0 and r.skipped_trusted == 0 for r in reports)
    HeldAction = guard.models.HeldAction
    planned = list(hostapp.db.session.scalars(sa.select(HeldAction)))
    assert {(h.run_id, h.resolution) for h in planned} == {(run.run_id, "planned")}
    for report in reports:
        run.report.merge(report)
    done = run.finish()  # no chunk planned more than 5, the run did
    assert (done.checked, done.planned, done.held, done.unverified) == (12, 6, 6, 0)
    assert done.breaker_tripped


def test_report_round_trips_through_a_dict() -> None:
    from flask_domainguard.sweep import SweepReport

    report = SweepReport(run_id="r", checked=3, errors=1, not_found=["x.com"])
    report.count_verdict("ok")
    report.count_verdict("released")
    again = SweepReport.from_dict({**report.as_dict(), "chunk_failed": False})
    assert again.as_dict() == report.as_dict()
    again.merge(report)
    assert (again.checked, again.errors, again.verdicts) == (6, 2, {"ok": 2, "released": 2})
    assert again.not_found == ["x.com"]


def test_a_batch_writes_every_domains_columns_whatever_the_first_row_holds(
    guard: Any, status_server: StatusServer
) -> None:
    # A domain judged on DNS evidence alone has no status columns to write; a status-checked
    # domain after it in the same batch must still get its own (they were silently dropped).
    seed(guard, {"dns-only.com": 1, "status.com": 1})
    run = Sweep(guard)
    claims = run.claim_batch(10)
    assert {c.name for c in claims} == {"dns-only.com", "status.com"}
    run.store.write_domains(
        [
            {"b_name": "dns-only.com", "verdict": "ok", "failures": 0},
            {
                "b_name": "status.com",
                "verdict": "released",
                "failures": 0,
                "registered": False,
                "statuses": "inactive",
            },
        ]
    )
    hostapp.db.session.commit()
    assert (domain(guard, "status.com").registered, domain(guard, "status.com").statuses) == (
        False,
        "inactive",
    )
    assert domain(guard, "dns-only.com").verdict == "ok"
    assert domain(guard, "status.com").lease_owner is None
