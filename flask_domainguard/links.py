"""Links in mail, built on the site's configured address and never on the request's ``Host``.

A reset link built with ``url_for(..., _external=True)`` inside a request takes its host from
the ``Host`` header, which the requester chooses: a forged header would mail the victim a
link to the attacker's site, token included. So every mailed link is built on
``DOMAINGUARD_EXTERNAL_URL``, else on ``SERVER_NAME`` with ``PREFERRED_URL_SCHEME`` and
``APPLICATION_ROOT``; :func:`check_link_base` makes ``init_app`` refuse an app with neither,
outside debug and testing. Hosts whose front end is a JavaScript app point the links at it
with ``DOMAINGUARD_RESET_URL`` / ``DOMAINGUARD_VERIFY_URL`` templates.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from flask import Flask, current_app, has_request_context, url_for

from .config import ConfigError
from .context import current_settings

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

_NO_BASE = (
    "DomainGuard mails links (password reset, address verification) and must not build them "
    "from the request's Host header, which the requester chooses. Set DOMAINGUARD_EXTERNAL_URL "
    "to the site's public address (e.g. 'https://example.com'), or SERVER_NAME (with "
    "PREFERRED_URL_SCHEME)."
)


def check_link_base(app: Flask, settings: Settings) -> None:
    """Refuse an app that has no link base, unless it runs in debug or testing mode.

    :raises ConfigError: naming ``DOMAINGUARD_EXTERNAL_URL`` and ``SERVER_NAME``.
    """
    if settings.external_url or app.config.get("SERVER_NAME"):
        return
    if app.debug or app.testing:
        return
    raise ConfigError(_NO_BASE)


def _base(app: Flask) -> tuple[str, str, str] | None:
    """``(scheme, host[:port], root path)`` of mailed links, or ``None`` when none is set."""
    external = current_settings(app).external_url
    if external:
        parts = urlsplit(external)
        return parts.scheme, parts.netloc, parts.path or "/"
    server_name = app.config.get("SERVER_NAME")
    if server_name:
        scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
        return scheme, server_name, app.config.get("APPLICATION_ROOT") or "/"
    return None


def _warn_about_host_header(app: Flask) -> None:
    if not app.extensions.get("domainguard.host_warning"):
        app.extensions["domainguard.host_warning"] = True
        log.warning(
            "mailed links take their host from the request (allowed in debug and testing "
            "only): set DOMAINGUARD_EXTERNAL_URL or SERVER_NAME so a forged Host header "
            "cannot point them elsewhere"
        )


def external_link(endpoint: str, **values: Any) -> str:
    """An absolute URL for ``endpoint`` on the site's configured address.

    Works outside requests (the sweep, the CLI, a worker). Without a configured address, which
    ``init_app`` allows only in debug and testing, the request's own host is used, with a
    warning.

    :raises RuntimeError: no configured address and no request to fall back on.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    base = _base(app)
    if base is None:
        if not has_request_context():
            raise RuntimeError(_NO_BASE)
        _warn_about_host_header(app)
        return url_for(endpoint, _external=True, **values)
    scheme, netloc, root = base
    app.inject_url_defaults(endpoint, values)
    adapter = app.url_map.bind(netloc, script_name=root, url_scheme=scheme)
    return adapter.build(endpoint, values, force_external=True)


def _from_template(template: str, token: str) -> str:
    return template.format(token=quote(token, safe=""))


def reset_link(token: str) -> str:
    """The link a reset mail carries: ``DOMAINGUARD_RESET_URL`` or the blueprint's page."""
    template = current_settings().reset_url
    if template:
        return _from_template(template, token)
    return external_link("domainguard.reset_password", token=token)


def verify_link(token: str) -> str:
    """The link a verification mail carries: ``DOMAINGUARD_VERIFY_URL`` or the blueprint's page."""
    template = current_settings().verify_url
    if template:
        return _from_template(template, token)
    return external_link("domainguard.verify_address", token=token)
