"""Hosts whose front end is a JavaScript app: mailed links to its own pages
(DOMAINGUARD_RESET_URL / DOMAINGUARD_VERIFY_URL), and JSON from the library's endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import check_password_hash

from flask_domainguard import ConfigError
from flask_domainguard.config import load_settings
from tests.guard_helpers import add

ANA = "ana@gmail.com"  # a trusted provider: resets need no lookup
JSON = {"Accept": "application/json"}

pytestmark = [
    pytest.mark.settings(
        DOMAINGUARD_EXTERNAL_URL="https://api.example",
        DOMAINGUARD_RESET_URL="https://app.example/reset?token={token}",
        DOMAINGUARD_VERIFY_URL="https://app.example/#/verify/{token}",
        DOMAINGUARD_RESET_PROCESSING="inline",
    ),
    pytest.mark.usefixtures("fresh_request_globals"),
]


@pytest.fixture
def ana(guard: Any, make_user: Any) -> Iterator[Any]:
    user = make_user(ANA, password="old-password-123")
    add(guard, user, ANA, primary=True)
    guard.set_password_setter(lambda u, pw: u.set_password(pw))
    yield user
    guard.password_setter = None


def spa_token(body: str, prefix: str) -> str:
    (link,) = [line.strip() for line in body.splitlines() if line.strip().startswith(prefix)]
    if "?" in link:
        return parse_qs(urlsplit(link).query)["token"][0]
    return link.removeprefix(prefix)


def csrf(client: FlaskClient, path: str) -> str:
    answer = client.get(path, headers=JSON)
    assert answer.status_code == 200 and answer.is_json, answer.data
    token: str = answer.json["csrf_token"]
    return token


def test_the_reset_flow_in_json_with_a_link_to_the_front_end(
    client: FlaskClient, ana: Any, outbox: list[Any]
) -> None:
    token = csrf(client, "/domainguard/reset")
    answers = [
        client.post("/domainguard/reset", json={"email": address, "csrf_token": token})
        for address in (ANA, "nobody@example.org")
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json == answers[1].json and answers[0].json["status"] == "sent"
    [mail] = outbox
    assert "https://app.example/reset?token=" in mail.body
    assert "/domainguard/reset/" not in mail.body  # the front end's page, not ours
    reset_token = spa_token(mail.body, "https://app.example/reset?token=")

    path = f"/domainguard/reset/{reset_token}"
    page = client.get(path, headers=JSON)
    assert page.status_code == 200 and page.json["csrf_token"]
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    form = {"csrf_token": page.json["csrf_token"]}
    mismatch = client.post(path, json={**form, "password": "new-password-1", "confirm": "x"})
    assert mismatch.status_code == 400 and mismatch.json["error"] == "invalid_form"
    assert "confirm" in mismatch.json["errors"]
    no_csrf = client.post(path, json={"password": "new-password-1", "confirm": "new-password-1"})
    assert no_csrf.status_code == 400 and "csrf_token" in no_csrf.json["errors"]
    done = client.post(
        path, json={**form, "password": "new-password-1", "confirm": "new-password-1"}
    )
    assert done.status_code == 200 and done.json["status"] == "password_changed"
    assert check_password_hash(ana.password_hash, "new-password-1")
    spent = client.get(path, headers=JSON)
    assert spent.status_code == 400 and spent.json["error"] == "invalid_token"


def test_the_verification_flow_in_json_with_a_link_to_the_front_end(
    client: FlaskClient, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    row = guard.add_address(make_user(ANA), ANA)
    guard.send_verification(row)
    [mail] = outbox
    token = spa_token(mail.body, "https://app.example/#/verify/")
    path = f"/domainguard/verify/{token}"

    page = client.get(path, headers=JSON)
    assert page.status_code == 200
    assert page.json["address"] == ANA and page.json["already_verified"] is False
    assert page.headers["Referrer-Policy"] == "no-referrer"
    done = client.post(path, json={"csrf_token": page.json["csrf_token"]})
    assert done.status_code == 200 and done.json == {"status": "verified", "address": ANA}
    assert guard.find_address(ANA).verified
    assert client.get(path, headers=JSON).json["error"] == "invalid_token"


def test_browsers_still_get_the_pages(client: FlaskClient, ana: Any) -> None:
    accept = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = client.get("/domainguard/reset", headers=accept)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert client.get("/domainguard/reset/not-a-token", headers=accept).mimetype == "text/html"


def test_the_address_list_and_resend_in_json(
    client: FlaskClient, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user(ANA)
    row = guard.add_address(user, ANA)
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
    listing = client.get("/domainguard/verify/", headers=JSON)
    assert listing.status_code == 200
    [entry] = listing.json["addresses"]
    assert entry["id"] == row.id and entry["verified"] is False and entry["label"]
    form = {"address_id": str(row.id), "csrf_token": listing.json["csrf_token"]}
    sent = client.post("/domainguard/verify/send", json=form)
    assert sent.status_code == 200 and sent.json == {"status": "sent", "address": ANA}
    assert len(outbox) == 1
    other = client.post("/domainguard/verify/send", json={**form, "address_id": "99999"})
    assert other.status_code == 404


@pytest.mark.parametrize(
    "template",
    [
        "https://app.example/reset",  # no {token}
        "https://app.example/{token}/{token}",
        "https://app.example/reset?t={token}&u={user}",
        "/reset?token={token}",  # not absolute
    ],
)
def test_link_templates_are_checked_at_start_up(template: str) -> None:
    for key in ("DOMAINGUARD_RESET_URL", "DOMAINGUARD_VERIFY_URL"):
        with pytest.raises(ConfigError, match=key):
            load_settings({key: template})


def test_a_forged_host_cannot_reach_a_front_end_link(
    app: Flask, guard: Any, ana: Any, outbox: list[Any]
) -> None:
    with app.test_request_context("/", headers={"Host": "evil.example"}):
        assert guard.send_reset_mail(ANA)
    assert "evil.example" not in outbox[0].body
