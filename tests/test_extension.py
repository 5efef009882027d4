"""DomainGuard's setup: config defaults and validation, registration rules, factories, keys."""

from __future__ import annotations

import types
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import registry
from sqlalchemy.engine.default import DefaultDialect

from flask_domainguard import ConfigError, DomainGuard
from flask_domainguard.config import OPTIONS, RateLimit, load_settings
from tests import hostapp


def test_defaults_are_set_with_setdefault(app: Flask) -> None:
    for key in OPTIONS:
        assert key in app.config
    assert app.config["DOMAINGUARD_GRACE"] == timedelta(days=30)
    settings = hostapp.guard.settings
    assert settings.max_unverify == 50
    assert settings.confirm_after == timedelta(hours=6)
    assert settings.twofactor_limit == RateLimit(5, timedelta(minutes=5))
    assert "gmail.com" in settings.trusted_domains


@pytest.mark.settings(DOMAINGUARD_GRACE=86400, DOMAINGUARD_MAX_UNVERIFY=7)
def test_host_values_win_and_seconds_become_durations(app: Flask) -> None:
    assert hostapp.guard.settings.grace == timedelta(days=1)
    assert hostapp.guard.settings.max_unverify == 7


def test_unknown_key_is_an_error_naming_the_key_and_a_fix(database_url: str) -> None:
    expected = r"DOMAINGUARD_MAX_UNVERIFIED.*Did you mean DOMAINGUARD_MAX_UNVERIFY\?"
    with pytest.raises(ConfigError, match=expected):
        hostapp.create_app(
            {"SQLALCHEMY_DATABASE_URI": database_url, "DOMAINGUARD_MAX_UNVERIFIED": 3}
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DOMAINGUARD_MAX_UNVERIFY", "50", "expected an integer"),
        ("DOMAINGUARD_MAX_UNVERIFY", 0, "at least 1"),
        ("DOMAINGUARD_GRACE", "30 days", "timedelta"),
        ("DOMAINGUARD_GRACE", timedelta(days=-1), "negative"),
        ("DOMAINGUARD_STATUS_BACKEND", "whois", "rdap"),
        ("DOMAINGUARD_RESET_LIVE_CHECK", "always", "evidence"),
        ("DOMAINGUARD_2FA_LIMIT", "five a minute", "5 per 5 minutes"),
        ("DOMAINGUARD_TRUSTED_DOMAINS", "gmail.com", "set or list"),
        ("DOMAINGUARD_2FA_REQUIRED_SINCE", "last year", "ISO date"),
        ("DOMAINGUARD_RDAP_SERVERS", {"de": "ftp://x"}, "http"),
    ],
)
def test_wrong_types_are_errors_naming_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({key: value})
    assert key in str(info.value)
    assert message in str(info.value)


def test_rate_limit_text_forms() -> None:
    assert RateLimit.parse("20 per hour") == RateLimit(20, timedelta(hours=1))
    assert RateLimit.parse("5/5 minutes") == RateLimit(5, timedelta(minutes=5))
    with pytest.raises(ValueError):
        RateLimit.parse("0 per hour")


def test_second_registration_on_one_app_is_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already registered"):
        hostapp.guard.init_app(app)


def test_db_must_be_initialised_first(database_url: str) -> None:
    app = Flask("nodb")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    with pytest.raises(RuntimeError, match=r"db.init_app\(app\) before guard.init_app"):
        hostapp.guard.init_app(app)


def test_factory_pattern_serves_several_apps_in_one_process(
    database_url: str, tmp_path: Any
) -> None:
    first = hostapp.create_app(
        {"SQLALCHEMY_DATABASE_URI": database_url, "DOMAINGUARD_MAX_UNVERIFY": 3}
    )
    second = hostapp.create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'second.sqlite'}"}
    )
    assert first.extensions["domainguard"].guard is second.extensions["domainguard"].guard
    with first.app_context():
        assert hostapp.guard.settings.max_unverify == 3
    with second.app_context():
        assert hostapp.guard.settings.max_unverify == 50
        hostapp.db.create_all()
        user = hostapp.User(email="a@example.org")
        hostapp.db.session.add(user)
        hostapp.db.session.commit()
        hostapp.guard.add_address(user, "a@example.org")
        assert hostapp.guard.find_address("A@Example.org") is not None
        hostapp.db.drop_all()
    with first.app_context():
        hostapp.db.engine.dispose()


def test_settings_outside_an_app_say_what_to_do() -> None:
    app = Flask("other")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = hostapp.guard.settings


def test_string_uuid_user_keys(tmp_path: Any) -> None:
    app = Flask("uuidhost")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'uuid.sqlite'}",
        SECRET_KEY="x",
        DOMAINGUARD_EXTERNAL_URL="https://uuid.host.test",
    )
    hostapp.uuid_db.init_app(app)
    hostapp.uuid_guard.init_app(app)
    with app.app_context():
        hostapp.uuid_db.create_all()
        user = hostapp.UuidUser(email="u@example.net")
        hostapp.uuid_db.session.add(user)
        hostapp.uuid_db.session.commit()
        row = hostapp.uuid_guard.add_address(user, "u@example.net", verified=True)
        assert isinstance(row.user_id, str) and row.user_id == user.id
        fk = hostapp.uuid_guard.models.EmailAddress.__table__.c.user_id
        assert fk.type.__class__ is hostapp.UuidUser.__table__.c.id.type.__class__
        assert hostapp.uuid_guard.addresses_of(user)[0].address == "u@example.net"


def test_user_model_must_be_mapped() -> None:
    class NotAModel:
        pass

    with pytest.raises(TypeError, match="not a mapped SQLAlchemy model"):
        DomainGuard(db=SQLAlchemy(), user_model=NotAModel)


def test_host_user_table_is_unchanged(app: Flask) -> None:
    assert set(hostapp.User.__table__.c.keys()) == {"id", "email", "password_hash", "created_at"}
    tables = set(hostapp.db.metadata.tables)
    ours = {t for t in tables if t.startswith("domainguard_")}
    assert ours and tables - ours == {"users"}


@pytest.mark.settings(DOMAINGUARD_REGISTER_BLUEPRINT=False)
def test_without_pages_mail_templates_still_render(app: Flask, outbox: list[Any]) -> None:
    from flask_domainguard.mail.outgoing import send_mail

    assert not any(rule.endpoint.startswith("domainguard.") for rule in app.url_map.iter_rules())
    with app.test_request_context():
        send_mail(
            hostapp.guard,
            ["owner@example.com"],
            "domain_expiring",
            **_expiry_context(),
        )
    assert len(outbox) == 1 and outbox[0].recipients == ["owner@example.com"]


def test_mail_has_the_html_part_a_host_provides(app: Flask, outbox: list[Any]) -> None:
    """A missing HTML template is remembered (no search of every loader per mail) unless
    templates reload: then one the host adds is used from the next mail on."""
    from jinja2 import BaseLoader, ChoiceLoader, DictLoader

    from flask_domainguard.mail.outgoing import send_mail

    host: dict[str, str] = {}
    loaders: list[BaseLoader] = [DictLoader(host)]
    if app.jinja_env.loader is not None:
        loaders.append(app.jinja_env.loader)
    app.jinja_env.loader = ChoiceLoader(loaders)

    def html_of_next_mail() -> str | None:
        with app.test_request_context():
            send_mail(hostapp.guard, ["owner@example.com"], "domain_expiring", **_expiry_context())
        html: str | None = outbox[-1].html
        return html

    page = "domainguard/mail/domain_expiring.html"
    assert html_of_next_mail() is None
    host[page] = "<p>{{ domain }} expires</p>"
    assert html_of_next_mail() is None  # the miss is remembered: no reload, no new search
    app.jinja_env.auto_reload = True
    assert html_of_next_mail() == "<p>example.com expires</p>"
    assert "example.com" in outbox[-1].body  # the text part beside it, as before


def _expiry_context() -> dict[str, Any]:
    return {
        "stage": "expiring_soon",
        "until": datetime(2030, 1, 1, tzinfo=timezone.utc),
        "domain": "example.com",
        "addresses": ["owner@example.com"],
        "reason": "example.com expires on 2030-01-01.",
        "app_name": "hostapp",
    }


def test_importing_a_mapped_class_by_module_fails_at_once_naming_guard_models() -> None:
    with pytest.raises(ImportError, match=r"guard\.models\.EmailAddress"):
        from flask_domainguard.models import EmailAddress  # noqa: F401
    import flask_domainguard.models as models_module

    with pytest.raises(ImportError, match=r"guard\.models\.Domain"):
        _ = models_module.Domain
    with pytest.raises(AttributeError):
        _ = models_module.NoSuchThing


def test_guard_models_are_the_mapped_classes_for_queries(guard: Any, make_user: Any) -> None:
    import sqlalchemy as sa

    user = make_user("q@example.org")
    guard.add_address(user, "q@example.org", verified=True)
    guard.add_address(user, "q2@example.org")
    EmailAddress = guard.models.EmailAddress
    unverified = hostapp.db.session.scalars(
        sa.select(EmailAddress).where(
            EmailAddress.user_id == user.id, EmailAddress.verified_at.is_(None)
        )
    ).all()
    assert [row.address for row in unverified] == ["q2@example.org"]


class _UnsupportedDialect(DefaultDialect):
    """A database SQLAlchemy can name but DomainGuard was never built for."""

    name = "exoticdb"

    @classmethod
    def import_dbapi(cls) -> Any:
        return types.SimpleNamespace(paramstyle="qmark", Error=Exception)


registry.register("exoticdb", __name__, "_UnsupportedDialect")


def test_unsupported_database_fails_at_init_app_naming_the_supported_ones() -> None:
    app = Flask("exotic")
    app.config["SQLALCHEMY_DATABASE_URI"] = "exoticdb://"
    hostapp.db.init_app(app)
    with pytest.raises(RuntimeError) as info:
        hostapp.guard.init_app(app)
    message = str(info.value)
    assert "'exoticdb'" in message
    for name in ("SQLite", "PostgreSQL", "MySQL 8", "MariaDB 10.6"):
        assert name in message
    assert "domainguard" not in app.extensions


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mariadb+pymysql"])
def test_mysql_and_mariadb_urls_are_accepted(scheme: str, tmp_path: Any) -> None:
    pytest.importorskip("pymysql")
    app = Flask("mysqlhost")
    # Nothing listens there: making the engine does not connect, and init_app must not.
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"{scheme}://root@127.0.0.1:9/none",
        SECRET_KEY="x",
        DOMAINGUARD_EXTERNAL_URL="https://host.example",
    )
    hostapp.db.init_app(app)
    hostapp.guard.init_app(app)
    assert app.extensions["domainguard"].guard is hostapp.guard
