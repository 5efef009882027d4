"""tokens: per-purpose salts, lifetimes on our clock, bindings, single use by nonce."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from freezegun import freeze_time

from flask_domainguard import tokens

HOUR = timedelta(hours=1)


def test_round_trip_keeps_the_claims(app: Flask) -> None:
    token = tokens.issue(tokens.RESET, {"a": 7, "u": "42"})
    checked = tokens.read(tokens.RESET, token, lifetime=HOUR)
    assert checked.claims == {"a": 7, "u": "42"}
    assert checked.expires_at - checked.issued_at == HOUR
    # Two tokens for the same claims differ: each has its own nonce.
    assert tokens.issue(tokens.RESET, {"a": 7}) != tokens.issue(tokens.RESET, {"a": 7})


def test_a_token_of_one_purpose_is_worthless_for_another(app: Flask) -> None:
    token = tokens.issue(tokens.VERIFY, {"a": 1})
    with pytest.raises(tokens.TokenError):
        tokens.read(tokens.RESET, token, lifetime=HOUR)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),  # signature changed
        lambda t: "x" + t[1:],  # payload changed
        lambda t: t.split(".")[0],  # signature cut off
        lambda t: "",
        lambda t: t + "." * 2000,  # absurdly long
    ],
)
def test_tampered_tokens_are_refused(app: Flask, mangle: Any) -> None:
    token = tokens.issue(tokens.RESET, {"a": 1})
    with pytest.raises(tokens.TokenError):
        tokens.read(tokens.RESET, mangle(token), lifetime=HOUR)


def test_expiry_follows_the_current_lifetime(app: Flask) -> None:
    with freeze_time("2024-01-01T12:00:00Z") as clock:
        token = tokens.issue(tokens.RESET, {"a": 1})
        clock.tick(timedelta(minutes=59, seconds=59))
        tokens.read(tokens.RESET, token, lifetime=HOUR)
        # A shorter configured lifetime shortens links already sent.
        with pytest.raises(tokens.TokenExpired):
            tokens.read(tokens.RESET, token, lifetime=timedelta(minutes=30))
        clock.tick(timedelta(seconds=1))
        with pytest.raises(tokens.TokenExpired):
            tokens.read(tokens.RESET, token, lifetime=HOUR)


def test_a_token_stamped_in_the_future_is_refused(app: Flask) -> None:
    with freeze_time("2030-01-01T00:00:00Z"):
        token = tokens.issue(tokens.RESET, {"a": 1})
    with freeze_time("2029-12-31T23:00:00Z"), pytest.raises(tokens.TokenError):
        tokens.read(tokens.RESET, token, lifetime=HOUR)


def test_single_use_is_by_nonce_not_by_spelling(app: Flask, guard: Any, db: Any) -> None:
    token = tokens.issue(tokens.RESET, {"a": 1})
    # The signature's last base64 character carries two unused bits: flip them and the token
    # still verifies. Spending must still count both spellings as one token.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    respelled = token[:-1] + alphabet[last ^ 1]
    assert respelled != token
    first = tokens.read(tokens.RESET, token, lifetime=HOUR)
    second = tokens.read(tokens.RESET, respelled, lifetime=HOUR)
    assert not tokens.is_used(guard, first)
    assert tokens.consume(guard, first)
    db.session.commit()
    assert tokens.is_used(guard, second)
    assert not tokens.consume(guard, second)


def test_consume_rolls_back_with_its_transaction(app: Flask, guard: Any, db: Any) -> None:
    checked = tokens.read(tokens.RESET, tokens.issue(tokens.RESET, {}), lifetime=HOUR)
    assert tokens.consume(guard, checked)
    db.session.rollback()
    assert not tokens.is_used(guard, checked)


def test_spent_tokens_are_purged_after_they_expire(app: Flask, guard: Any, db: Any) -> None:
    with freeze_time("2024-01-01T00:00:00Z") as clock:
        old = tokens.read(tokens.RESET, tokens.issue(tokens.RESET, {}), lifetime=HOUR)
        assert tokens.consume(guard, old)
        db.session.commit()
        clock.tick(timedelta(days=3))
        new = tokens.read(tokens.RESET, tokens.issue(tokens.RESET, {}), lifetime=HOUR)
        assert tokens.consume(guard, new)
        db.session.commit()
        assert db.session.query(guard.models.UsedToken).count() == 1


def test_bindings_are_keyed_and_survive_key_rotation(app: Flask) -> None:
    token = tokens.issue(tokens.RESET, {"b": tokens.bind(tokens.RESET, "alice|pw-hash")})
    binding = tokens.read(tokens.RESET, token, lifetime=HOUR).claims["b"]
    assert tokens.bound_to(tokens.RESET, "alice|pw-hash", binding)
    assert not tokens.bound_to(tokens.RESET, "alice|other-hash", binding)
    assert not tokens.bound_to(tokens.VERIFY, "alice|pw-hash", binding)
    assert not tokens.bound_to(tokens.RESET, "alice|pw-hash", None)

    old_key = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "a-new-secret-key"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    checked = tokens.read(tokens.RESET, token, lifetime=HOUR)
    assert tokens.bound_to(tokens.RESET, "alice|pw-hash", checked.claims["b"])
    app.config["SECRET_KEY_FALLBACKS"] = []
    with pytest.raises(tokens.TokenError):
        tokens.read(tokens.RESET, token, lifetime=HOUR)


def test_no_secret_key_is_a_clear_error(app: Flask) -> None:
    app.config["SECRET_KEY"] = None
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        tokens.issue(tokens.RESET, {})


def test_one_token_spent_at_once_by_many_wins_once(app: Flask, guard: Any, db: Any) -> None:
    """Each spender in its own thread and transaction (on MySQL/MariaDB the INSERT in a
    savepoint; elsewhere ON CONFLICT DO NOTHING RETURNING): exactly one gets through."""
    checked = tokens.read(tokens.RESET, tokens.issue(tokens.RESET, {"u": 1}), lifetime=HOUR)
    barrier = threading.Barrier(6)
    results: list[bool] = []
    errors: list[BaseException] = []
    on_sqlite = db.engine.dialect.name == "sqlite"

    def spend() -> None:
        with app.app_context():
            barrier.wait()
            try:
                spent = tokens.consume(guard, checked)
                db.session.commit()
                results.append(spent)
            except sa.exc.OperationalError as exc:
                db.session.rollback()
                if not on_sqlite:
                    errors.append(exc)
                # SQLite's writers may time out waiting for the file lock: that spender lost.
                results.append(False)
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=spend) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(results) == [False] * 5 + [True]
