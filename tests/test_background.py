"""background: jobs after the response, in a copy of the request's context."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from flask import Flask, g, request, session, url_for

from flask_domainguard.background import BackgroundJobs, jobs_for


def test_job_sees_the_request_but_not_the_response(app: Flask) -> None:
    seen: dict[str, Any] = {}
    release = threading.Event()

    @app.route("/work", methods=["POST"])
    def work() -> str:
        session["before"] = "kept"

        def job() -> None:
            release.wait(5)
            seen["form"] = request.form.get("email")
            seen["link"] = url_for("domainguard.reset_request", _external=True)
            seen["thread"] = threading.current_thread().name
            seen["g_empty"] = not hasattr(g, "marker")
            session["from_job"] = "never in the cookie"

        g.marker = "request only"
        assert jobs_for().submit(job)
        return "ok"

    client = app.test_client()
    response = client.post("/work", data={"email": "a@example.com"}, base_url="https://shop.test")
    assert response.status_code == 200
    release.set()
    assert jobs_for(app).join(timeout=5)
    assert seen["form"] == "a@example.com"
    assert seen["link"] == "https://shop.test/domainguard/reset"
    assert seen["thread"].startswith("domainguard")
    assert seen["g_empty"]
    with client.session_transaction(base_url="https://shop.test") as sess:
        assert sess.get("before") == "kept"
        assert "from_job" not in sess


def test_a_full_queue_drops_jobs_and_a_failing_job_is_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = BackgroundJobs(app, workers=1, max_pending=1)
    release = threading.Event()
    ran: list[str] = []
    caplog.set_level(logging.WARNING, logger="flask_domainguard.background")
    with app.test_request_context("/"):

        def first() -> None:
            release.wait(5)
            ran.append("first")

        assert jobs.submit(first)
        assert not jobs.submit(lambda: ran.append("dropped"))
        assert not jobs.join(timeout=0.05)
        release.set()
        assert jobs.join(timeout=5)

        def boom() -> None:
            raise RuntimeError("job failed")

        assert jobs.submit(boom)
        assert jobs.join(timeout=5)
        assert jobs.submit(lambda: ran.append("after"))
        assert jobs.join(timeout=5)
    assert ran == ["first", "after"]
    assert "background job failed" in caplog.text
    assert "queue full" in caplog.text


def test_one_pool_per_app(app: Flask) -> None:
    assert jobs_for(app) is jobs_for(app)
    other = Flask("other")
    assert jobs_for(other) is not jobs_for(app)
