"""Pages whose URL carries a token: no caching, no Referer, whatever the answer (the form, an
error, JSON, a CSRF failure); and no token in the library's logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_wtf.csrf import CSRFProtect

from flask_domainguard.addresses.verification import verification_token
from flask_domainguard.undo import undo_token
from tests.guard_helpers import OK, add, csrf_of, write_status

ADDRESS = "ana@safe-shop.com"
OTHER = "ana@gmail.com"
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

pytestmark = pytest.mark.settings(
    DOMAINGUARD_EXTERNAL_URL="https://shop.example", DOMAINGUARD_RESET_PROCESSING="inline"
)


@pytest.fixture
def account(app: Flask, guard: Any, make_user: Any) -> Any:
    write_status(app, {"safe-shop.com": OK})
    user = make_user()
    add(guard, user, ADDRESS, primary=True)
    add(guard, user, OTHER)
    add(guard, user, "new@safe-shop.com", verified=False)
    guard.set_password_setter(lambda u, pw: u.set_password(pw))
    yield user
    guard.password_setter = None


def _valid_tokens(guard: Any, user: Any) -> dict[str, Callable[[], str]]:
    """A good token for each token page; a new token page must be added here."""
    address = guard.find_address(ADDRESS)
    return {
        "domainguard.reset_password": lambda: guard.reset_token(user, address),
        "domainguard.verify_address": lambda: verification_token(
            guard.find_address("new@safe-shop.com")
        ),
        "domainguard.undo_change": lambda: undo_token(
            guard.find_address(OTHER), changed_at=address.created_at, via_id=address.id
        ),
    }


def _token_rules(app: Flask) -> list[Any]:
    rules = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("domainguard.") and "token" in rule.arguments
    ]
    # The "this wasn't me" page locks the account, which ends the reset link: it goes last,
    # whatever order the blueprint's routes were registered in.
    return sorted(rules, key=lambda rule: rule.endpoint == "domainguard.undo_change")


def _assert_private(response: Any, what: str) -> None:
    for header, value in PRIVATE.items():
        assert response.headers.get(header) == value, f"{what}: {header}"


def test_every_page_with_a_token_in_its_url_is_private(
    app: Flask, guard: Any, account: Any, fresh_request_globals: None
) -> None:
    rules = _token_rules(app)
    factories = _valid_tokens(guard, account)
    assert {rule.endpoint for rule in rules} == set(factories), "a token page without a case"
    client = app.test_client()
    json = {"Accept": "application/json"}
    for rule in rules:
        token = factories[rule.endpoint]()
        good, bad = rule.build({"token": token})[1], rule.build({"token": "x" * 40})[1]
        cases = [("GET", good, {}), ("GET", bad, {}), ("GET", good, json), ("GET", bad, json)]
        cases += [("POST", good, {}), ("POST", bad, {}), ("POST", good, json)]
        for method, url, headers in cases:
            response = client.open(url, method=method, headers=headers)
            assert response.status_code < 500, (method, url)
            _assert_private(response, f"{method} {rule.endpoint} {headers}")
        # And the page reached with its form: the answer to a good POST is private too.
        page = client.get(good)
        done = client.post(
            good, data={"csrf_token": csrf_of(page.data), "password": "n" * 12, "confirm": "n" * 12}
        )
        assert done.status_code < 500
        _assert_private(done, f"POST {rule.endpoint} with its form")


def test_csrfprotects_own_refusal_is_private_too(
    app: Flask, guard: Any, account: Any, fresh_request_globals: None
) -> None:
    CSRFProtect(app)
    for rule in _token_rules(app):
        url = rule.build({"token": _valid_tokens(guard, account)[rule.endpoint]()})[1]
        response = app.test_client().post(url)
        assert response.status_code == 400
        _assert_private(response, rule.endpoint)


def test_no_token_reaches_the_librarys_logs(
    app: Flask,
    guard: Any,
    account: Any,
    outbox: list[Any],
    caplog: pytest.LogCaptureFixture,
    fresh_request_globals: None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_domainguard")
    client = app.test_client()
    # A reset, its page, a completed reset with its notices, a lock-back, and a verification.
    page = client.get("/domainguard/reset")
    client.post("/domainguard/reset", data={"csrf_token": csrf_of(page.data), "email": ADDRESS})
    links = [m for m in re.findall(r"https://shop\.example(\S+)", "".join(o.body for o in outbox))]
    [reset] = [link for link in links if "/reset/" in link]
    form = client.get(reset)
    client.post(
        reset,
        data={"csrf_token": csrf_of(form.data), "password": "n" * 12, "confirm": "n" * 12},
    )
    client.get(reset)  # spent: an error page
    guard.send_verification("new@safe-shop.com")
    mailed = "".join(o.body for o in outbox)
    links = re.findall(r"https://shop\.example(\S+)", mailed)
    for link in links:
        form = client.get(link)
        if b"csrf_token" in form.data:
            client.post(link, data={"csrf_token": csrf_of(form.data)})
    tokens = {
        link.rsplit("/", 1)[-1] for link in links if re.search(r"/(reset|verify|undo)/", link)
    }
    assert len(tokens) >= 3
    assert caplog.records, "the flows log something"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for token in tokens:
            assert token not in text, record.getMessage()
