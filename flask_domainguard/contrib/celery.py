"""The sweep on Celery: one run split into chunks that any number of workers sweep.

Needs the ``celery`` extra (``pip install flask-domainguard[celery]``) and a Celery app with
a result backend (chords need one; Redis serves as broker and backend). One run is three
kinds of task, all on the engine of :mod:`flask_domainguard.sweep` that the
``flask domainguard sweep`` command runs:

1. :data:`start_sweep` (``flask_domainguard.sweep.start``, the one beat schedules) fixes the
   run's id and cutoff, splits the due domains into name ranges of ``chunk_size`` domains
   (:meth:`~flask_domainguard.sweep.Sweep.chunk_ranges`) and starts a chord;
2. :data:`sweep_chunk` (``flask_domainguard.sweep.chunk``), one per range, on any worker:
   claims, looks up and applies its range batch by batch under its own lease owner, and
   *plans* unverifications under the shared run id;
3. :data:`finish_sweep` (``flask_domainguard.sweep.finish``), the chord's callback, runs
   :meth:`~flask_domainguard.sweep.Sweep.finish` once for the whole run: the circuit
   breaker counts every chunk's planned unverifications together, in the database.

Leases keep two workers (or a worker and a cron sweep) off the same domain; the shared cutoff
keeps a domain to one check per run, even when a chunk is delivered twice. A chunk that fails
returns what it did and the run still finishes; a worker killed mid-chunk (``acks_late``)
gets its chunk delivered again, and its leases lapse after ``DOMAINGUARD_SWEEP_LEASE``. If
the chord never completes, the next run's finish adopts the planned unverifications.

The same module drains the durable job table (:mod:`flask_domainguard.jobs`: reset
requests, verification mail, expiry warnings, notices) on Celery workers:
:data:`drain_jobs` (``flask_domainguard.jobs.drain``), scheduled by
:func:`jobs_beat_schedule` for retries and for jobs left by processes that died, and sent
at once when a job is written if the app calls :func:`wake_celery_workers` (for apps that
set ``DOMAINGUARD_JOBS_WORKERS = 0``, so the web processes run no job threads).

Every task needs the Flask app context: make the Celery app with :func:`celery_init_app`
(Flask's documented pattern, whose :class:`FlaskTask` pushes it), or push it in your own
task base class. See docs/celery.md.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery, Task, chord, shared_task
from celery.result import EagerResult
from celery.signals import worker_process_init
from flask import Flask, current_app, has_app_context

from ..context import current_guard
from ..runid import new_run_id
from ..sweep import Sweep, SweepReport
from ..timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from ..context import Guard

__all__ = [
    "CHUNK_TASK",
    "DEFAULT_CHUNK_SIZE",
    "DRAIN_TASK",
    "FINISH_TASK",
    "START_TASK",
    "FlaskTask",
    "beat_schedule",
    "celery_init_app",
    "drain_jobs",
    "finish_sweep",
    "jobs_beat_schedule",
    "start_sweep",
    "sweep_chunk",
    "wake_celery_workers",
]

log = logging.getLogger(__name__)

START_TASK = "flask_domainguard.sweep.start"
CHUNK_TASK = "flask_domainguard.sweep.chunk"
FINISH_TASK = "flask_domainguard.sweep.finish"
DRAIN_TASK = "flask_domainguard.jobs.drain"

#: Domains per chunk: enough batches (DOMAINGUARD_SWEEP_BATCH_SIZE) that the lookups stay
#: busy while a chunk's slowest lookups finish, few enough that a chunk takes minutes, not
#: hours (a Redis broker redelivers unacknowledged tasks after its visibility timeout, 1 h).
DEFAULT_CHUNK_SIZE = 5000


class FlaskTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """A task base class that runs each task inside the Flask app's context.

    The app is the one :func:`celery_init_app` bound to the Celery app. A task called while
    an app context is already active (``task_always_eager`` inside a request or a test) gets
    a fresh context of that app, as a worker would.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flask_app: Flask | None = getattr(self.app, "flask_app", None)
        if flask_app is None:
            if not has_app_context():
                raise RuntimeError(
                    "This Celery app has no Flask app: make it with "
                    "flask_domainguard.contrib.celery.celery_init_app(app)."
                )
            flask_app = current_app._get_current_object()  # type: ignore[attr-defined]
        with flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app: Flask) -> Celery:
    """A Celery app for ``app`` whose tasks run in its context (Flask's documented pattern).

    Configured from ``app.config["CELERY"]`` (a dict of Celery settings, e.g. ``broker_url``,
    ``result_backend``), made the default Celery app, stored as ``app.extensions["celery"]``.
    Registers the sweep tasks of this module. In forked worker processes (prefork pool) the
    SQLAlchemy engines drop the connections inherited from the parent.
    """
    celery_app = Celery(app.import_name, task_cls=FlaskTask)
    celery_app.config_from_object(dict(app.config.get("CELERY", {})))
    celery_app.flask_app = app
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    def fresh_connections(**_: Any) -> None:
        db = app.extensions.get("sqlalchemy")
        if db is None:
            return
        with app.app_context():
            for engine in db.engines.values():
                # close=False: the parent's connections stay usable by the parent.
                engine.dispose(close=False)

    worker_process_init.connect(fresh_connections, weak=False)
    return celery_app


def beat_schedule(
    every: timedelta = timedelta(hours=1),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str | None = None,
    queue: str | None = None,
    name: str = "domainguard-sweep",
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry that starts a sweep run ``every`` so often::

        celery_app.conf.beat_schedule = {**beat_schedule(every=timedelta(hours=1))}

    Only due domains are looked up, so hourly is cheap. The start task expires after one
    period: when no worker was free to take it, the next period's run does the work.

    :param chunk_size: domains per chunk task.
    :param backend: status backend name instead of ``DOMAINGUARD_STATUS_BACKEND``.
    :param queue: queue of the run's tasks (default: Celery's default queue).
    """
    if every <= timedelta(0):
        raise ValueError("every must be a positive timedelta, e.g. timedelta(hours=1)")
    options: dict[str, Any] = {"expires": every.total_seconds()}
    if queue is not None:
        options["queue"] = queue
    return {
        name: {
            "task": START_TASK,
            "schedule": every,
            "kwargs": {"chunk_size": chunk_size, "backend": backend, "queue": queue},
            "options": options,
        }
    }


def _guard() -> Guard:
    if not has_app_context():
        raise RuntimeError(
            "The DomainGuard sweep tasks need the Flask app context: make the Celery app "
            "with flask_domainguard.contrib.celery.celery_init_app(app), or push "
            "app.app_context() in your task base class."
        )
    return current_guard()


def _start(
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    """Start a run: split the due domains into chunks and sweep them in a chord.

    Returns the run id, the number of chunks and the id of the finishing task (with
    ``task_always_eager``, the finished run's result as ``result``).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    guard = _guard()
    sweep = Sweep(guard, backend_name=backend)
    ranges = sweep.chunk_ranges(chunk_size)
    cutoff = sweep.cutoff.isoformat()
    skipped = sweep.count_trusted()
    started: dict[str, Any] = {"run_id": sweep.run_id, "cutoff": cutoff, "chunks": len(ranges)}
    if not ranges:
        # Nothing due; finishing still adopts unverifications planned by runs that died.
        started["result"] = _finish([], sweep.run_id, cutoff, skipped_trusted=skipped)
        started["finish_id"] = None
        return started
    options: dict[str, Any] = {} if queue is None else {"queue": queue}
    header = [
        sweep_chunk.si(sweep.run_id, cutoff, first, stop, backend=backend).set(**options)
        for first, stop in ranges
    ]
    body = finish_sweep.s(sweep.run_id, cutoff, skipped_trusted=skipped, backend=backend).set(
        **options
    )
    result = chord(header)(body)
    log.info("sweep run %s started: %d chunks of %d domains", sweep.run_id, len(ranges), chunk_size)
    started["finish_id"] = result.id
    if isinstance(result, EagerResult):
        started["result"] = result.get()
    return started


def _chunk(
    run_id: str,
    cutoff: str,
    first: str | None,
    stop: str | None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Sweep the due domains with ``first <= name < stop`` as part of run ``run_id``.

    Returns the chunk's report (:meth:`SweepReport.as_dict`) with ``chunk_failed``; a
    failure is logged and reported instead of raised, so that the run still finishes.
    """
    guard = _guard()
    sweep = Sweep(
        guard,
        backend_name=backend,
        run_id=run_id,
        cutoff=as_utc(datetime.fromisoformat(cutoff)),
        lease_owner=new_run_id(),
        name_range=(first, stop),
    )
    failed = False
    try:
        sweep.run(finish=False)
    except Exception as exc:
        # Its leases were given back (or lapse); the next run checks what it did not.
        log.error("sweep run %s: chunk %r..%r failed: %s", run_id, first, stop, type(exc).__name__)
        sweep.report.errors += 1
        failed = True
    data = sweep.report.as_dict()
    data["chunk_failed"] = failed
    return data


def _finish(
    chunk_reports: list[dict[str, Any]],
    run_id: str,
    cutoff: str,
    skipped_trusted: int = 0,
    backend: str | None = None,
) -> dict[str, Any]:
    """Apply or hold the whole run's planned unverifications (one circuit breaker).

    Returns the run's report (:meth:`SweepReport.as_dict`) with the chunk counts.
    """
    guard = _guard()
    began = as_utc(datetime.fromisoformat(cutoff))
    sweep = Sweep(guard, backend_name=backend, run_id=run_id, cutoff=began)
    report = SweepReport(run_id=run_id, skipped_trusted=skipped_trusted)
    failed = 0
    for data in chunk_reports:
        report.merge(SweepReport.from_dict(data))
        failed += bool(data.get("chunk_failed"))
    sweep.report = report
    sweep.record_start(began)
    sweep.finish()
    sweep.count_leftovers()
    report.seconds = (utcnow() - began).total_seconds()
    sweep.record_end()
    log.info(
        "sweep run %s finished: %d domains checked in %d chunks (%d failed), %d unverified, "
        "%d held, %d lookup errors",
        run_id,
        report.checked,
        len(chunk_reports),
        failed,
        report.unverified,
        report.held,
        report.errors,
    )
    data = report.as_dict()
    data.update(chunks=len(chunk_reports), failed_chunks=failed)
    return data


def _drain(max_seconds: float = 50.0, kinds: list[str] | None = None) -> dict[str, Any]:
    """Run due jobs from the job table for up to ``max_seconds`` (shedding load on the way).

    Returns what it did (:meth:`flask_domainguard.jobs.DrainReport.as_dict`).
    """
    import time

    from ..jobs import drain

    report = drain(_guard(), new_run_id(), kinds=kinds, deadline=time.monotonic() + max_seconds)
    return report.as_dict()


def jobs_beat_schedule(
    every: timedelta = timedelta(seconds=30),
    *,
    max_seconds: float | None = None,
    queue: str | None = None,
    name: str = "domainguard-jobs",
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry that drains the job table ``every`` so often: retries after
    their backoff, and jobs whose worker died. Each run stops after ``max_seconds`` (default:
    most of one period) and expires if no worker took it within the period."""
    if every <= timedelta(0):
        raise ValueError("every must be a positive timedelta, e.g. timedelta(seconds=30)")
    options: dict[str, Any] = {"expires": every.total_seconds()}
    if queue is not None:
        options["queue"] = queue
    seconds = max_seconds if max_seconds is not None else every.total_seconds() * 0.9
    return {
        name: {
            "task": DRAIN_TASK,
            "schedule": every,
            "kwargs": {"max_seconds": seconds},
            "options": options,
        }
    }


def wake_celery_workers(app: Flask, *, queue: str | None = None) -> None:
    """Send :data:`drain_jobs` whenever this app writes a job (a reset request, a mail), so a
    Celery worker runs it at once; for apps with ``DOMAINGUARD_JOBS_WORKERS = 0``."""
    from ..background import jobs_for

    options: dict[str, Any] = {"expires": 60}
    if queue is not None:
        options["queue"] = queue
    jobs_for(app).on_wake.append(lambda: drain_jobs.apply_async(**options))


#: ``start_sweep.delay(chunk_size=5000)`` starts a run (beat: :func:`beat_schedule`).
start_sweep: Any = shared_task(name=START_TASK, ignore_result=False)(_start)
#: One chunk; ``acks_late``: a chunk whose worker died is delivered again.
sweep_chunk: Any = shared_task(
    name=CHUNK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=False
)(_chunk)
#: The chord callback that finishes a run.
finish_sweep: Any = shared_task(name=FINISH_TASK, ignore_result=False)(_finish)
#: Drains the job table (beat: :func:`jobs_beat_schedule`; on each new job:
#: :func:`wake_celery_workers`). ``acks_late``: a worker that dies mid-drain leaves its jobs
#: leased; they run again once their leases expire.
drain_jobs: Any = shared_task(name=DRAIN_TASK, acks_late=True, ignore_result=True)(_drain)
