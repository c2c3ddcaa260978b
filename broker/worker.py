"""Entry point for `celery --app broker.worker:celery_app worker|beat` (and `tiers worker`)."""

from __future__ import annotations

from broker.app import create_app
from common.tasks import celery_app

flask_app = create_app()

__all__ = ["celery_app", "flask_app"]
