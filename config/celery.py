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

# Fail closed: without an explicit choice, the production settings (which refuse to start without secrets).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
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


# --- task metrics (config.metrics reads them back in /metrics) -----------------------------------------------------
_task_started: dict[str, float] = {}


def _task_queue(task: Any) -> str:
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("exchange") or "default")


def _on_task_prerun(task_id: str | None = None, **_: Any) -> None:
    import time

    if task_id:
        _task_started[task_id] = time.monotonic()


def _on_task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    import time

    from config.metrics import task_observe

    started = _task_started.pop(task_id or "", None)
    if started is not None and task is not None:
        task_observe(task=task.name, queue=_task_queue(task), state=state or "UNKNOWN",
                     seconds=time.monotonic() - started)


def _connect_task_metrics() -> None:
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="ccgpt.metrics.prerun")
    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="ccgpt.metrics.postrun")


_connect_task_metrics()


# --- warm-up (config/warmup.py): in each process that runs tasks, after the fork ----------------------------------
def _on_worker_process_init(**_: Any) -> None:
    from config.warmup import warm_up_start

    warm_up_start(process="worker")


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Pools without child processes run tasks in the main process: warm it (solo already did, through
    worker_process_init; warm_up_start runs once per process). A prefork parent only forks; its children warm
    themselves (a model loaded before a fork would leave onnxruntime's threads behind in the parent)."""
    pool = type(getattr(sender, "pool", None)).__module__
    if pool.endswith("prefork"):
        return
    from config.warmup import warm_up_start

    warm_up_start(process="worker")


def _connect_warm_up() -> None:
    from celery.signals import worker_process_init, worker_ready

    worker_process_init.connect(_on_worker_process_init, weak=False, dispatch_uid="ccgpt.warmup.process")
    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="ccgpt.warmup.ready")


_connect_warm_up()
