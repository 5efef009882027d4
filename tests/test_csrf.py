"""CSRF always: the library's forms and the reset decorator check the token themselves, also
when the host installed CSRFProtect with ``WTF_CSRF_CHECK_DEFAULT = False`` (it then checks
nothing unless a view asks) or exempted the view."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect

from flask_domainguard.views import VIEW_MODULES
from tests.guard_helpers import OK, add, csrf_of, write_status
from tests.test_reset_enumeration import install_host_view

ADDRESS = "ana@safe-shop.com"


def _setup(app: Flask, guard: Any, make_user: Any) -> Any:
    write_status(app, {"safe-shop.com": OK})
    user = make_user()
    add(guard, user, ADDRESS, primary=True)
    return user


@pytest.mark.settings(WTF_CSRF_CHECK_DEFAULT=False, DOMAINGUARD_RESET_PROCESSING="inline")
def test_the_decorator_checks_when_csrfprotect_does_not(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], fresh_request_globals: None
) -> None:
    CSRFProtect(app)
    calls = install_host_view(app, guard)
    _setup(app, guard, make_user)
    client = app.test_client()
    forged = client.post("/forgot", data={"email": ADDRESS})
    assert forged.status_code == 400
    assert calls == [] and outbox == []
    page = client.get("/forgot")
    client.post("/forgot", data={"csrf_token": csrf_of(page.data), "email": ADDRESS})
    assert len(calls) == 1


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="inline")
def test_the_decorator_checks_a_view_exempted_from_csrfprotect(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], fresh_request_globals: None
) -> None:
    protect = CSRFProtect(app)
    calls = install_host_view(app, guard)
    protect.exempt(app.view_functions["forgot"])
    _setup(app, guard, make_user)
    assert app.test_client().post("/forgot", data={"email": ADDRESS}).status_code == 400
    assert calls == []


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="inline")
def test_the_decorator_takes_the_token_from_a_header(
    app: Flask, guard: Any, make_user: Any, fresh_request_globals: None
) -> None:
    calls = install_host_view(app, guard)
    _setup(app, guard, make_user)
    client = app.test_client()
    token = csrf_of(client.get("/forgot").data)
    client.post("/forgot", data={"email": ADDRESS}, headers={"X-CSRFToken": token})
    assert len(calls) == 1


def _library_forms() -> list[type[FlaskForm]]:
    assert len(VIEW_MODULES) >= 4  # imported above: every module with pages, so their forms
    found: list[type[FlaskForm]] = []
    pending = list(FlaskForm.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("flask_domainguard."):
            found.append(cls)
    return found


@pytest.mark.settings(WTF_CSRF_CHECK_DEFAULT=False)
def test_every_library_form_checks_the_token_itself(app: Flask) -> None:
    CSRFProtect(app)
    forms = _library_forms()
    assert len(forms) >= 10, [f.__name__ for f in forms]
    for form_class in forms:
        with app.test_request_context("/", method="POST", data={}):
            form = form_class()
            assert not form.validate_on_submit(), form_class.__name__
            assert "csrf_token" in form.errors, form_class.__name__


@pytest.mark.settings(WTF_CSRF_CHECK_DEFAULT=False)
def test_the_librarys_pages_refuse_a_post_without_its_token(
    app: Flask, guard: Any, make_user: Any, fresh_request_globals: None
) -> None:
    CSRFProtect(app)
    user = _setup(app, guard, make_user)
    guard.set_password_setter(lambda u, pw: u.set_password(pw))
    try:
        token = guard.reset_token(user, guard.find_address(ADDRESS))
        before = user.password_hash
        client = app.test_client()
        assert client.post("/domainguard/reset", data={"email": ADDRESS}).status_code == 400
        data = {"password": "n" * 12, "confirm": "n" * 12}
        assert client.post(f"/domainguard/reset/{token}", data=data).status_code == 400
        guard.db.session.refresh(user)
        assert user.password_hash == before
    finally:
        guard.password_setter = None
