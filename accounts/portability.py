"""Workspace export / import, accounts' part: memberships travel as (email, role) and come back for the people who
have an account on the importing platform; nobody gets an account or a password from an archive.

Also the two operator entry points (used by `export_workspace` / `import_workspace`): they run the generic
export/import of tenants.portability inside the workspace's schema.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.dispatch import receiver
from django_tenants.utils import tenant_context

from accounts.models import Membership, User
from accounts.roles import Role
from accounts.services import workspace_signup
from tenants import portability
from tenants.models import Workspace
from tenants.signals import workspace_exporting, workspace_importing


@receiver(workspace_exporting, dispatch_uid="accounts.workspace_export_members")
def workspace_export_members(sender: type, *, workspace: Workspace, archive: Any, **kwargs: Any) -> tuple[str, str]:
    members = [{"email": email, "role": role} for email, role in
               Membership.objects.filter(workspace=workspace).values_list("user__email", "role").order_by("user__email")]
    archive.add_json("members.json", members)
    return "members", f"{len(members)} members"


@receiver(workspace_importing, dispatch_uid="accounts.workspace_import_members")
def workspace_import_members(sender: type, *, workspace: Workspace, archive: Any, manifest: dict[str, Any],
                             **kwargs: Any) -> tuple[str, str] | None:
    if "members" not in manifest.get("parts", {}):
        return None
    members = archive.json("members.json")
    added = 0
    for entry in members if isinstance(members, list) else []:
        role = entry.get("role") if isinstance(entry, dict) else None
        user = User.objects.filter(email__iexact=str(entry.get("email", ""))).first() if role else None
        if user is None or role not in {r.value for r in Role} or role == Role.OWNER:
            continue  # the importing owner is the one owner; unknown people are not created
        _membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
        added += int(created)
    return "members", f"{added} of {len(members)} members matched"


def workspace_export_to(*, slug: str, path: Path | None = None) -> dict[str, Any]:
    workspace = Workspace.objects.filter(slug=slug).first()
    if workspace is None:
        from config.errors import ErrorCode, NotFound

        raise NotFound(f"No workspace {slug!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
    if path is None:
        stamp = secrets.token_hex(4)
        path = Path(settings.DATA_DIR) / "exports" / f"{slug}-{stamp}.tar.gz"
    with tenant_context(workspace):
        report = portability.workspace_export(workspace=workspace, path=path)
    return {"slug": slug, **asdict(report)}


def workspace_import_from(*, path: Path, slug: str, name: str | None, owner_email: str, owner_password: str | None,
                          plan: str | None) -> dict[str, Any]:
    reader, manifest = portability.archive_open(path)
    workspace = None
    try:
        source = manifest.get("workspace", {})
        with transaction.atomic():  # a failed import leaves no workspace row or schema behind
            owner, result = workspace_signup(
                email=owner_email, password=owner_password or secrets.token_urlsafe(12),
                workspace_name=name or source.get("name") or slug, slug=slug, plan=plan or source.get("plan") or "free",
                existing_user_ok=True,
            )
            workspace = result.workspace
            with tenant_context(workspace):
                report = portability.workspace_import(workspace=workspace, reader=reader, manifest=manifest, owner=owner)
    except BaseException:
        if workspace is not None:  # ...nor files or vectors written before the failure
            _outside_schema_remove(workspace)
        raise
    finally:
        reader.close()
    return {"slug": workspace.slug, "schema": workspace.schema_name, "from": source.get("slug"),
            "owner_email": owner.email, **asdict(report)}


def _outside_schema_remove(workspace: Workspace) -> None:
    import shutil

    from tenants.signals import workspace_purging

    workspace_purging.send(sender=Workspace, workspace=workspace)
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "workspaces" / workspace.schema_name, ignore_errors=True)


# --- exports asked for from the dashboard ---------------------------------------------------------------------------
EXPORT_KEEP = 5  # archives kept per workspace; older ones are deleted when a new one is asked for


def workspace_export_request(*, workspace: Workspace, user: User) -> Any:
    """Queue an export of the workspace (owner only, checked by the caller); at most one pending at a time."""
    from config.errors import Conflict
    from tenants.models import ExportStatus, WorkspaceExport

    with transaction.atomic():
        Workspace.objects.select_for_update().get(pk=workspace.pk)
        if WorkspaceExport.objects.filter(workspace=workspace, status=ExportStatus.PENDING).exists():
            raise Conflict("An export of this workspace is already being prepared.")
        export = WorkspaceExport.objects.create(workspace=workspace, requested_by_id=user.pk)
        from accounts.tasks import workspace_export_run

        transaction.on_commit(lambda: workspace_export_run.delay(export.pk))
    from accounts.services import audit_record

    audit_record(workspace=workspace, actor=user, action="workspace.export_requested", target=str(export.pk))
    for old in WorkspaceExport.objects.filter(workspace=workspace).order_by("-created_at")[EXPORT_KEEP:]:
        export_delete(old)
    return export


def export_run(*, export_id: int) -> None:
    from django.utils import timezone

    from tenants.models import ExportStatus, WorkspaceExport

    # Tasks are delivered at least once: a second delivery (a redelivered message, a retry racing the first run)
    # finds the export done, or being made by a run that holds its advisory lock, and leaves it alone. (Not a
    # transaction: the export takes its own snapshot with SET TRANSACTION ISOLATION LEVEL.)
    key = int.from_bytes(hashlib.blake2b(f"workspace-export:{export_id}".encode(), digest_size=8).digest(), "big",
                         signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            return
    try:
        export = (WorkspaceExport.objects.select_related("workspace")
                  .filter(pk=export_id, status=ExportStatus.PENDING).first())
        if export is None:
            return
        workspace = export.workspace
        relative = f"workspaces/{workspace.schema_name}/exports/{export.pk}-{secrets.token_hex(8)}.tar.gz"
        try:
            data = workspace_export_to(slug=workspace.slug, path=Path(settings.MEDIA_ROOT) / relative)
        except Exception as exc:  # recorded for the owner; the traceback goes to the log
            import logging

            logging.getLogger(__name__).exception("export failed", extra={"workspace": workspace.slug})
            WorkspaceExport.objects.filter(pk=export.pk).update(status=ExportStatus.FAILED, error=str(exc)[:300],
                                                                 finished_at=timezone.now())
            return
        WorkspaceExport.objects.filter(pk=export.pk).update(status=ExportStatus.READY, path=relative,
                                                             size_bytes=data["bytes"], finished_at=timezone.now())
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        except Exception:  # the connection is gone, and the session's lock with it
            pass


def export_delete(export: Any) -> None:
    if export.path:
        (Path(settings.MEDIA_ROOT) / export.path).unlink(missing_ok=True)
    export.delete()
