"""The test host app with Flask-Migrate, for ``flask --app tests.migrate_host db ...``.

The database URL and the migrations folder come from ``MIGRATE_TEST_DB`` and
``MIGRATE_TEST_DIR``: the migration tests run the real ``flask db`` commands against it.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_migrate import Migrate

from tests import hostapp


def create_app() -> Flask:
    app = hostapp.create_app({"SQLALCHEMY_DATABASE_URI": os.environ["MIGRATE_TEST_DB"]})
    # Flask-Migrate as its documentation sets it up: nothing DomainGuard-specific.
    Migrate(app, hostapp.db, directory=os.environ["MIGRATE_TEST_DIR"])
    return app
