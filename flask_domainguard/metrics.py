"""Prometheus metrics with the figures of ``flask domainguard status`` (the ``metrics`` extra).

``pip install flask-domainguard[metrics]``, then register a collector for the app and serve
the registry the way your app already serves metrics::

    from prometheus_client import make_wsgi_app
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from flask_domainguard.metrics import register_metrics

    register_metrics(app)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})

The collector reads the database at each scrape (:func:`.overview.overview`), so every
process reports the same, shared figures: scrape one process, not each of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

from flask import Flask

from .context import current_guard
from .overview import overview

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "flask_domainguard.metrics needs prometheus_client: "
        "pip install 'flask-domainguard[metrics]'"
    ) from exc

__all__ = ["DomainGuardCollector", "register_metrics"]

PREFIX = "domainguard_"


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def _timestamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


class DomainGuardCollector:
    """Collects the status figures of one app's DomainGuard at each scrape (a custom
    collector: anything with ``collect()`` registers)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        with self.app.app_context():
            data = overview(current_guard(self.app))
        jobs = data["jobs"]

        pending = _gauge("jobs_pending", "Jobs waiting to run or running, by kind.", ["kind"])
        for kind, count in jobs["pending_by_kind"].items():
            pending.add_metric([kind], count)
        yield pending
        oldest = _gauge("jobs_oldest_pending_seconds", "Age of the oldest pending job.")
        oldest.add_metric([], jobs["oldest_pending_seconds"] or 0.0)
        yield oldest
        for name, key, doc in (
            ("jobs_retrying", "retrying", "Pending jobs waiting for a retry after a failure."),
            ("jobs_running", "running", "Jobs leased to a worker now."),
            ("jobs_failed", "failed", "Jobs that gave up (flask domainguard jobs --retry)."),
            ("jobs_shed", "shed", "Jobs shed under load, kept for DOMAINGUARD_JOBS_KEEP."),
            ("jobs_shed_requests", "shed_requests", "Reset requests in the shed jobs."),
        ):
            gauge = _gauge(name, doc)
            gauge.add_metric([], jobs[key])
            yield gauge

        leases = _gauge(
            "domain_leases", "Domains leased by sweep runs, by owner process state.", ["process"]
        )
        planned = _gauge(
            "planned_unverifications",
            "Unverifications planned by sweep runs, by run process state.",
            ["process"],
        )
        for gauge, rows, field in (
            (leases, data["leases"]["owners"], "domains"),
            (planned, data["planned_unverifications"]["runs"], "actions"),
        ):
            totals = {"alive": 0, "dead": 0, "unknown": 0}
            for row in rows:
                totals[row["process"]] += row[field]
            for state, count in totals.items():
                gauge.add_metric([state], count)
            yield gauge
        held = _gauge("held_unverifications", "Unverifications held for review.")
        held.add_metric([], data["held_unverifications"])
        yield held

        run = data["last_sweep"] or {}
        finished = data["last_finished_sweep"] or {}
        for name, value, doc in (
            ("last_sweep_start_timestamp_seconds", _timestamp(run.get("started_at")), "Start."),
            (
                "last_sweep_end_timestamp_seconds",
                _timestamp(finished.get("finished_at")),
                "End of the last finished sweep run.",
            ),
            ("last_sweep_exit_code", finished.get("exit_code"), "Its exit code (docs/cli.md)."),
            ("last_sweep_checked", finished.get("checked"), "Domains it checked."),
            ("last_sweep_errors", finished.get("errors"), "Its failed lookups and mails."),
        ):
            if value is not None:
                gauge = _gauge(name, doc)
                gauge.add_metric([], float(value))
                yield gauge
        died = _gauge("last_sweep_died", "1 when the latest sweep run died before its end.")
        died.add_metric([], 1.0 if run.get("outcome") == "died" else 0.0)
        yield died

        failing = _gauge(
            "failing_lookups", "Domains whose lookups currently fail, by status server.", ["server"]
        )
        for server, count in data["failing_lookups"]["by_server"].items():
            failing.add_metric([server], count)
        yield failing


def register_metrics(app: Flask, registry: CollectorRegistry | None = None) -> DomainGuardCollector:
    """Register a :class:`DomainGuardCollector` for ``app`` (default: the global registry)."""
    collector = DomainGuardCollector(app)
    target = registry if registry is not None else REGISTRY
    target.register(cast("Any", collector))  # duck-typed: Collector is an ABC we skip
    return collector
