"""The Celery app object and Flask's `celery_init_app` recipe: every task runs in an app context.

Embedded default: no broker, tasks run eagerly in-process. Production: a real worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask


class FlaskTask(Task):
    """Runs each task in a fresh app context of the app last configured, so an eager task
    gets its own session and unit of work, never the caller's."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flask_app: Flask = self.app.flask_app
        with flask_app.app_context():
            return self.run(*args, **kwargs)


# task_cls here, not later: tasks declared at import time must get FlaskTask too.
celery_app = Celery("tiers", task_cls=FlaskTask)


def celery_init_app(app: Flask) -> Celery:
    """Configure the one Celery app from Flask settings."""
    celery_app.flask_app = app
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
