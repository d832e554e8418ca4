"""Accounts' background work."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="accounts.workspace_export_run", ignore_result=True)
def workspace_export_run(export_id: int) -> None:
    """Write an export an owner asked for (accounts.portability). Runs from public; it enters the workspace itself."""
    from accounts.portability import export_run

    export_run(export_id=export_id)
