"""Optional integrations, each behind its own extra (``pip install flask-domainguard[celery]``)."""
