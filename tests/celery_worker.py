"""The Celery app that test workers load: ``celery -A tests.celery_worker worker``.

The host app's config (database, status server, ``CELERY`` with the broker) comes as JSON in
``SWEEP_TEST_CONFIG``, as for ``tests.sweep_support:create_app``.
"""

from __future__ import annotations

from flask_domainguard.contrib.celery import celery_init_app
from tests.sweep_support import create_app

flask_app = create_app()
celery_app = celery_init_app(flask_app)
