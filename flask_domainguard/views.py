"""The extension's blueprint: its templates (overridable under ``templates/domainguard/``)
and the pages of the verification, reset and 2FA flows."""

from __future__ import annotations

from flask import Blueprint, Flask

from .config import Settings

bp = Blueprint("domainguard", __name__, template_folder="templates", static_folder="static")

#: Only the templates (mail above all), for apps that turn the pages off.
templates_only = Blueprint("domainguard_templates", __name__, template_folder="templates")


def register_views(app: Flask, settings: Settings) -> None:
    """Register the blueprint on ``app`` under ``DOMAINGUARD_URL_PREFIX``.

    With ``DOMAINGUARD_REGISTER_BLUEPRINT = False`` only the templates are registered: the
    extension still sends mail (verification, notices) and the host serves its own pages.
    """
    if not settings.register_blueprint:
        app.register_blueprint(templates_only)
        return
    from . import (  # noqa: F401  (importing them adds their routes to bp)
        reset_views,  # password reset pages
        twofactor_views,  # 2FA pages
        verification_views,  # address verification pages
    )

    app.register_blueprint(bp, url_prefix=settings.url_prefix)
