"""Every Celery beat entry names a task that exists: beat sends by name, and a misspelt or removed task is only noticed
by a worker logging "Received unregistered task" every period, while the job silently never runs."""
from __future__ import annotations

import os

import pytest
from django.conf import settings

from config.celery import app


def scheduled_tasks() -> dict[str, str]:
    return {entry: spec["task"] for entry, spec in settings.CELERY_BEAT_SCHEDULE.items()}


def test_the_schedule_is_the_one_beat_reads_and_is_not_empty():
    assert scheduled_tasks(), "no beat entries: the periodic jobs (billing periods, retention, ...) never run"
    assert {entry: spec["task"] for entry, spec in app.conf.beat_schedule.items()} == scheduled_tasks()


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()  # what a worker imports at start: every installed app's tasks module
    unknown = {entry: task for entry, task in scheduled_tasks().items() if task not in app.tasks}
    assert not unknown, f"beat entries naming no registered task: {unknown}"


@pytest.mark.parametrize("entry", sorted(settings.CELERY_BEAT_SCHEDULE))
def test_every_beat_entry_has_a_positive_schedule(entry):
    schedule = settings.CELERY_BEAT_SCHEDULE[entry]["schedule"]
    seconds = schedule if isinstance(schedule, (int, float)) else schedule.run_every.total_seconds()
    assert seconds > 0, (entry, schedule)


def test_the_running_worker_knows_every_scheduled_task(celery_worker):
    """The real worker process (its own imports, its own settings) registers them too."""
    replies = app.control.inspect(timeout=10).registered() or {}
    mine = [tasks for node, tasks in replies.items() if node.startswith(f"{celery_worker.name}-{os.getpid()}@")]
    assert mine, f"the worker did not answer: {sorted(replies)}\n{celery_worker.log_tail()}"
    registered = {line.split()[0] for line in mine[0]}  # "name [rate_limit=...]"
    missing = sorted(set(scheduled_tasks().values()) - registered)
    assert not missing, f"the worker has no task for these beat entries: {missing}"


def test_the_schedule_names_the_periodic_jobs_we_rely_on():
    """Entries that nothing else would notice missing: a website whose daily re-sync never starts looks fine."""
    assert {"documents.stalled_resend_all", "documents.sources_sync_due_all"} <= set(scheduled_tasks().values())
