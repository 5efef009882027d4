"""No enumeration: unknown, unverified, unsafe, rate-limited and allowed reset requests get
byte-identical answers (CSRF tokens aside) from the decorator on a host view and from the
blueprint's own page, and, with background processing, the same time.

The timing figures in the report come from ``test_timing_spread`` (``-s`` shows them).
"""

from __future__ import annotations

import random
import re
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g, render_template_string, request
from flask.testing import FlaskClient
from flask_mail import Message
from flask_wtf.csrf import generate_csrf

from flask_domainguard.journal import EventKind
from flask_domainguard.ratelimit import _digest, _window_start
from flask_domainguard.reset.flow import mail_budget_keys
from flask_domainguard.status.static import StaticBackend
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import OK, RELEASED, add, csrf_of, events, write_status

CASES = ("unknown", "unverified", "unsafe", "rate_limited", "allowed")
ADDRESSES = {
    "unknown": "nobody@safe-shop.com",
    "unverified": "pending@safe-shop.com",
    "unsafe": "owner@gone-shop.com",
    "rate_limited": "busy@safe-shop.com",
    "allowed": "happy@safe-shop.com",
}

FORM = """<form method="post"><input name="csrf_token" type="hidden" value="{{ csrf }}">
<label for="email">Email</label><input id="email" name="email"></form>"""
SENT = """<p>If that address can receive password resets, a link is on its way.</p>
<form method="post"><input name="csrf_token" type="hidden" value="{{ csrf }}">
<button>Send again</button></form>"""

_CSRF = re.compile(r'name="csrf_token" (type="hidden" )?value="[^"]+"')


def sent_page() -> str:
    return render_template_string(SENT, csrf=generate_csrf())


def install_host_view(app: Flask, guard: Any) -> list[Any]:
    """The host's own forgot-password view, decorated; returns the decisions it was called with."""
    calls: list[Any] = []

    @app.route("/forgot", methods=["GET", "POST"])
    @guard.guarded_reset_request(field="email", template_or_response=sent_page)
    def forgot() -> str:
        if request.method == "POST":
            decision = g.domainguard_reset
            calls.append(decision)
            app.extensions["mail"].send(
                Message(
                    "Reset your password",
                    recipients=[decision.address.address],
                    body="The host's own reset link",
                    sender="security@host.test",
                )
            )
            return sent_page()
        return render_template_string(FORM, csrf=generate_csrf())

    return calls


def exhaust(guard: Any, key: str, limit: Any) -> None:
    """Fill a rate-limit counter as if ``limit`` were already spent."""
    table = guard.models.RateCounter.__table__
    guard.db.session.execute(sa.delete(table).where(table.c.key == _digest(key)))
    guard.db.session.execute(
        sa.insert(table).values(
            key=_digest(key), window_start=_window_start(utcnow(), limit.window), count=10**6
        )
    )
    guard.db.session.commit()


def populate(app: Flask, guard: Any, make_user: Any) -> dict[str, Any]:
    write_status(app, {"safe-shop.com": OK, "gone-shop.com": RELEASED})
    users = {}
    users["unverified"] = make_user()
    add(guard, users["unverified"], "first@gmail.com", primary=True)
    add(guard, users["unverified"], ADDRESSES["unverified"], verified=False)
    users["unsafe"] = make_user()
    add(guard, users["unsafe"], "backup@gmail.com", primary=True)
    add(guard, users["unsafe"], ADDRESSES["unsafe"])
    users["rate_limited"] = make_user()
    busy = add(guard, users["rate_limited"], ADDRESSES["rate_limited"])
    exhaust(guard, mail_budget_keys(busy, "127.0.0.1")[1], guard.settings.reset_limit_per_address)
    users["allowed"] = make_user()
    add(guard, users["allowed"], ADDRESSES["allowed"])
    return users


def shape(response: Any) -> tuple[int, list[tuple[str, str]], str]:
    """Status, headers (cookie values blanked, attributes kept) and body (CSRF blanked)."""
    headers = []
    for name, value in response.headers.items():
        if name.lower() == "set-cookie":
            cookie, _, attributes = value.partition(";")
            value = cookie.partition("=")[0] + "=<value>;" + attributes
        headers.append((name, value))
    body = _CSRF.sub('name="csrf_token" value="<csrf>"', response.get_data(as_text=True))
    return response.status_code, headers, body


def post(app: Flask, path: str, address: str) -> Any:
    client: FlaskClient = app.test_client()
    form = client.get(path)
    assert form.status_code == 200
    return client.post(path, data={"csrf_token": csrf_of(form.data), "email": address})


@pytest.fixture
def mode_app(app_config: dict[str, Any], request: pytest.FixtureRequest) -> Flask:
    app_config["DOMAINGUARD_RESET_PROCESSING"] = request.param
    app: Flask = request.getfixturevalue("app")
    return app


@pytest.mark.parametrize("mode_app", ["background", "inline"], indirect=True)
@pytest.mark.parametrize("path", ["/forgot", "/domainguard/reset"])
def test_five_cases_are_indistinguishable(
    mode_app: Flask,
    guard: Any,
    make_user: Any,
    outbox: list[Any],
    path: str,
    fresh_request_globals: None,
) -> None:
    app = mode_app
    calls = install_host_view(app, guard)
    users = populate(app, guard, make_user)

    shapes = {}
    for case in CASES:
        shapes[case] = shape(post(app, path, ADDRESSES[case]))
        assert guard.wait_for_background(timeout=10)
    reference = shapes["allowed"]
    assert reference[0] == 200
    for case in CASES:
        assert shapes[case] == reference, f"{case} differs from allowed"

    # The cases really were different inside: one reset, refusals journalled, notices sent.
    reset_recipients = [m.recipients for m in outbox if "Reset your" in m.subject]
    assert reset_recipients == [[ADDRESSES["allowed"]]]
    if path == "/forgot":
        assert [d.reason for d in calls] == ["allowed"]
    refused = {e.details["reason"] for e in events(guard, EventKind.RESET_REFUSED)}
    assert refused == {"unverified", "domain_released", "rate_limited"}
    notices = sorted(tuple(m.recipients) for m in outbox if "refused" in m.subject)
    assert notices == [("backup@gmail.com",), ("first@gmail.com",)]
    assert users  # every case had its account


@pytest.mark.parametrize("path", ["/forgot", "/domainguard/reset"])
def test_client_rate_limit_gives_the_same_answer(
    app: Flask,
    guard: Any,
    make_user: Any,
    outbox: list[Any],
    path: str,
    fresh_request_globals: None,
) -> None:
    install_host_view(app, guard)
    populate(app, guard, make_user)
    allowed = shape(post(app, path, ADDRESSES["allowed"]))
    guard.wait_for_background(timeout=10)
    exhaust(guard, "reset:client:127.0.0.1", guard.settings.reset_limit_per_client)
    limited = shape(post(app, path, ADDRESSES["allowed"]))
    guard.wait_for_background(timeout=10)
    assert limited == allowed
    assert len([m for m in outbox if "Reset your" in m.subject]) == 1


def test_missing_csrf_is_refused_before_anything_happens(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], fresh_request_globals: None
) -> None:
    calls = install_host_view(app, guard)
    populate(app, guard, make_user)
    client = app.test_client()
    for path in ("/forgot", "/domainguard/reset"):
        response = client.post(path, data={"email": ADDRESSES["allowed"]})
        assert response.status_code == 400
    guard.wait_for_background(timeout=10)
    assert calls == [] and outbox == []


def test_get_reaches_the_host_view_unchanged(
    app: Flask, guard: Any, fresh_request_globals: None
) -> None:
    install_host_view(app, guard)
    page = app.test_client().get("/forgot")
    assert page.status_code == 200 and b'<label for="email">' in page.data


# -- timing --------------------------------------------------------------------------------


class SlowStatic:
    """The static backend behind 50 ms of latency: a fast registry, seen from afar."""

    name = "static"

    def __init__(self, settings: Any) -> None:
        self.inner = StaticBackend(settings.static_status_file)

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        import asyncio

        await asyncio.sleep(0.05)
        return await self.inner.observe(domain)

    def server_key(self, domain: str) -> str:
        return "static"

    async def aclose(self) -> None:
        return None


@pytest.fixture
def timing_app(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    use_smtp(app_config, smtp_sink)
    app_config.update(
        DOMAINGUARD_STATUS_BACKEND="tests.test_reset_enumeration:SlowStatic",
        # Every request looks its domain up: the worst case for a timing side channel.
        DOMAINGUARD_RESET_LIVE_CHECK_AFTER=timedelta(0),
        DOMAINGUARD_RESET_LIMIT_PER_ACCOUNT="1000000 per hour",
        DOMAINGUARD_RESET_LIMIT_PER_CLIENT="1000000 per hour",
        DOMAINGUARD_RESET_NOTICE_LIMIT="1000000 per hour",
        DOMAINGUARD_RESET_PROCESSING=request.param,
    )
    yield request.getfixturevalue("app")


def measure(app: Flask, guard: Any, path: str, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {case: [] for case in CASES}
    clients: dict[str, tuple[FlaskClient, str]] = {}
    for case in CASES:
        client = app.test_client()
        clients[case] = (client, csrf_of(client.get(path).data))
    order = list(CASES)
    shuffler = random.Random(5)
    for round_ in range(rounds + 3):
        # Interleaved and shuffled, so drift, and whatever the previous request left behind
        # (the SMTP sink runs in this process), hits every case alike.
        shuffler.shuffle(order)
        for case in order:
            client, token = clients[case]
            started = time.perf_counter()
            response = client.post(path, data={"csrf_token": token, "email": ADDRESSES[case]})
            elapsed = time.perf_counter() - started
            assert response.status_code == 200
            # Background work is awaited outside the measured window, so one request's
            # leftovers do not slow the next (an attacker can also space requests out).
            assert guard.wait_for_background(timeout=30)
            if round_ >= 3:  # warm-up rounds are not counted
                timings[case].append(elapsed * 1000)
    return timings


def summary(timings: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    return {
        case: (statistics.median(values), statistics.quantiles(values, n=10)[-1])
        for case, values in timings.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("timing_app", ["background", "inline"], indirect=True)
@pytest.mark.parametrize("path", ["/forgot", "/domainguard/reset"])
def test_timing_spread(
    timing_app: Flask,
    guard: Any,
    make_user: Any,
    smtp_sink: SMTPSink,
    path: str,
    fresh_request_globals: None,
) -> None:
    app = timing_app
    install_host_view(app, guard)
    populate(app, guard, make_user)
    mode = app.config["DOMAINGUARD_RESET_PROCESSING"]
    stats = summary(measure(app, guard, path, rounds=40))
    medians = [median for median, _ in stats.values()]
    spread = max(medians) - min(medians)
    print(f"\n{mode:10} {path:20} median / p90 in ms")
    for case, (median, p90) in stats.items():
        print(f"  {case:13} {median:7.2f} {p90:7.2f}")
    print(f"  spread of medians: {spread:.2f} ms")
    assert any("happy@safe-shop.com" in rcpts for _, rcpts in smtp_sink.envelopes)
    if mode == "background":
        # The 50 ms lookup and the SMTP delivery happen after the answer: no case shows them.
        assert spread < 10, stats
    else:
        # Inline, known verified addresses pay for the lookup (and the allowed one for
        # SMTP): the channel background processing closes.
        assert stats["allowed"][0] - stats["unknown"][0] > 40, stats


class BlockingBackend:
    """Holds every lookup until the test lets it go."""

    name = "static"
    release = threading.Event()

    def __init__(self, settings: Any) -> None:
        self.inner = StaticBackend(settings.static_status_file)

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        import asyncio

        while not BlockingBackend.release.is_set():
            await asyncio.sleep(0.01)
        return await self.inner.observe(domain)

    def server_key(self, domain: str) -> str:
        return "static"

    async def aclose(self) -> None:
        return None


@pytest.mark.settings(
    DOMAINGUARD_STATUS_BACKEND="tests.test_reset_enumeration:BlockingBackend",
    DOMAINGUARD_RESET_LIVE_TIMEOUT=30.0,
)
def test_background_answers_before_the_work_is_done(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], fresh_request_globals: None
) -> None:
    populate(app, guard, make_user)
    BlockingBackend.release.clear()
    try:
        response = post(app, "/domainguard/reset", ADDRESSES["allowed"])
        assert response.status_code == 200
        assert not guard.wait_for_background(timeout=0.2), "the lookup is still held"
        assert outbox == []
    finally:
        BlockingBackend.release.set()
    assert guard.wait_for_background(timeout=10)
    assert [m.recipients for m in outbox] == [[ADDRESSES["allowed"]]]
