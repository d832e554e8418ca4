"""Celery app whose tasks carry the workspace schema (tenant-schemas-celery) and run in it.

`send_task`/`delay` record the current schema in the `_schema_name` header; the worker switches to that schema
before the task runs. Tasks that do a workspace's work use `base=WorkspaceTask`, which refuses to run in `public`.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from tenant_schemas_celery.app import CeleryApp
from tenant_schemas_celery.task import TenantTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
logger = logging.getLogger(__name__)

app = CeleryApp("customercare")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["config"])  # config is no installed app; its diagnostic task lives in config/tasks.py


class WorkspaceTask(TenantTask):
    """A task that belongs to one workspace: sent from inside that workspace's schema, it runs only there."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from django.db import connection

        from config.errors import ApplicationError, ErrorCode

        if getattr(connection, "schema_name", "public") == "public":
            # Celery's own failure line shows the message only; operators search for the code.
            logger.error("task %s[%s] refused: %s", self.name, self.request.id, ErrorCode.WRONG_SCHEMA,
                         extra={"task": self.name})
            raise ApplicationError(
                f"Task {self.name} is workspace work and refuses to run in the public schema.",
                code=ErrorCode.WRONG_SCHEMA,
            )
        return super().__call__(*args, **kwargs)
