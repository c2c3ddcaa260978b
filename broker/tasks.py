"""Celery tasks of broker/ (holder notifications come with the brokering issue).

Importing common.outbox registers the outbox relay task with the worker.
"""

from __future__ import annotations

from common import outbox as _outbox  # noqa: F401  (registers common.relay_outbox)
