"""The service: app factory, CLI, Celery wiring and (later) holders, grants and the gateway."""
