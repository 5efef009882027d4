"""The durable job table: work promised by a commit is done at least once, or journalled.

A reset request, a verification mail, an expiry warning and an unverify notice each become a
row of ``domainguard_job``, written in the same transaction as the state change (and journal
row) that causes it: the transactional-outbox pattern. A crash after that commit loses
nothing; a crash before it loses the change and the job together.

Workers (the in-process thread pool of :mod:`.background`, the Celery task of
:mod:`flask_domainguard.contrib.celery`, ``flask domainguard jobs --drain``) take rows as the
sweep takes domains: :func:`claim` leases due rows to one owner, with ``SELECT ... FOR UPDATE
SKIP LOCKED`` on PostgreSQL and one ``UPDATE ... WHERE <lease free>`` under SQLite's write
lock, so two workers never hold the same job. A job that raises is tried again after a
backoff (30 s, doubling, capped at an hour) up to ``DOMAINGUARD_JOBS_MAX_ATTEMPTS`` runs,
then marked ``failed``; a job whose worker died runs again once its lease
(``DOMAINGUARD_JOBS_LEASE``) has expired.

Mail is sent at least once: each delivery attempt is journalled (``mail_attempt``) and
committed before the SMTP conversation starts, and the job is marked done after it, so a
crash in between sends one duplicate, never nothing (a batch of warnings or notices, run
together by :func:`run_claimed_together`, may send each of its mails once more; the claim of
such a batch is committed with its attempts, and a batch that fails before that commit sent
nothing and is claimed again to run one job at a time). The journal row that says what was
decided (``expiry_warning_sent``, ``reset_sent``, ...) is written once: with the job, or in
the same transaction that marks the job done.

Reset requests for the same address coalesce into one waiting job (``dedupe_key``). Past
``DOMAINGUARD_JOBS_MAX_PENDING`` waiting reset requests the workers shed load
(:func:`shed`): requests for unknown addresses first (nothing is lost: no mail would have
gone out), then the newest requests for known accounts, each with a ``reset_shed`` journal
row. Shed rows stay in the table (state ``shed``) and are counted by ``flask domainguard
status``.
"""

from __future__ import annotations

from .drain import (
    DrainReport,
    deliver_now,
    drain,
    has_due_jobs,
    has_pending_jobs,
    housekeeping,
    purge,
    retry_failed,
)
from .queue import (
    DONE,
    EXPIRY_WARNING,
    FAILED,
    KINDS,
    PENDING,
    RESET_REQUEST,
    SHED,
    UNVERIFY_NOTICE,
    VERIFICATION_MAIL,
    BatchHandler,
    ClaimedJob,
    Handler,
    JobRun,
    claim,
    digest,
    enqueue,
    enqueue_many,
    handler_for,
    record_attempts,
    register,
    register_batch,
)
from .running import retry_delay, run_claimed, run_claimed_together
from .shedding import ShedReport, shed
from .stats import job_stats

__all__ = [
    "DONE",
    "EXPIRY_WARNING",
    "FAILED",
    "KINDS",
    "PENDING",
    "RESET_REQUEST",
    "SHED",
    "UNVERIFY_NOTICE",
    "VERIFICATION_MAIL",
    "BatchHandler",
    "ClaimedJob",
    "DrainReport",
    "Handler",
    "JobRun",
    "ShedReport",
    "claim",
    "deliver_now",
    "digest",
    "drain",
    "enqueue",
    "enqueue_many",
    "handler_for",
    "has_due_jobs",
    "has_pending_jobs",
    "housekeeping",
    "job_stats",
    "purge",
    "record_attempts",
    "register",
    "register_batch",
    "retry_delay",
    "retry_failed",
    "run_claimed",
    "run_claimed_together",
    "shed",
]
