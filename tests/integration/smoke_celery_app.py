"""Tiny Celery app that the smoke test runs in a real `celery worker`.

The worker process reads its broker from SMOKE_CELERY_REDIS_URL. Task names
are fixed so that the test's client app and the worker agree on them.
"""

from __future__ import annotations

import os

from celery import Celery

#: Environment variable with the Redis URL of the worker process.
REDIS_URL_VARIABLE = "SMOKE_CELERY_REDIS_URL"

ADD_TASK = "smoke.add"


def make_app(redis_url: str) -> Celery:
    """Return an app using `redis_url` as both broker and result backend."""
    app = Celery("smoke", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    # Not shared, so apps made by other tests do not get a copy of the task.
    @app.task(name=ADD_TASK, shared=False)
    def add(left: int, right: int) -> dict[str, int]:
        """Add two numbers and report which process did it."""
        return {"sum": left + right, "pid": os.getpid(), "ppid": os.getppid()}

    return app


app = make_app(os.environ.get(REDIS_URL_VARIABLE, "redis://127.0.0.1:26379/0"))
