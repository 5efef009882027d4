"""Registers DomainGuard's pages on an app: the blueprint of :mod:`.blueprint` with the
routes each flow adds to it (importing a flow's views module adds its routes)."""

from __future__ import annotations

from flask import Flask

from . import undo_views
from .addresses import views as address_views
from .blueprint import bp, templates_only
from .config import Settings
from .reset import views as reset_views
from .twofactor import views as twofactor_views

#: The modules whose routes :func:`register_views` registers (imported for that).
VIEW_MODULES = (reset_views, address_views, twofactor_views, undo_views)


def register_views(app: Flask, settings: Settings) -> None:
    """Register the blueprint on ``app`` under ``DOMAINGUARD_URL_PREFIX``.

    With ``DOMAINGUARD_REGISTER_BLUEPRINT = False`` only the templates are registered: the
    extension still sends mail (verification, notices) and the host serves its own pages.
    """
    if not settings.register_blueprint:
        app.register_blueprint(templates_only)
        return
    app.register_blueprint(bp, url_prefix=settings.url_prefix)
