from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from accounts.models import ApiKey, AuditEntry, Invitation, Membership, User
from tenants.models import Workspace


def membership_role(*, user_id: int, workspace_id: int) -> str | None:
    return Membership.objects.filter(user_id=user_id, workspace_id=workspace_id).values_list("role", flat=True).first()


def membership_get(*, workspace: Workspace, membership_id: int) -> Membership | None:
    return Membership.objects.select_related("user").filter(workspace=workspace, pk=membership_id).first()


def membership_list(*, workspace: Workspace) -> QuerySet[Membership]:
    return Membership.objects.filter(workspace=workspace).select_related("user").order_by("created_at")


def user_workspaces(*, user: User) -> QuerySet[Workspace]:
    return Workspace.objects.filter(memberships__user=user).exclude(schema_name="public").order_by("name")


def invitation_list(*, workspace: Workspace) -> QuerySet[Invitation]:
    return Invitation.objects.filter(workspace=workspace, accepted_at__isnull=True, revoked_at__isnull=True).order_by(
        "-created_at"
    )


def api_key_list(*, workspace: Workspace) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(workspace=workspace).order_by("-created_at")


def api_key_get(*, workspace: Workspace, key_id: int) -> ApiKey | None:
    return ApiKey.objects.filter(workspace=workspace, pk=key_id).first()


def audit_list(*, workspace: Workspace) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(workspace=workspace).select_related("actor").order_by("-created_at")


def invitation_get(*, workspace: Workspace, invitation_id: int) -> Invitation | None:
    return Invitation.objects.filter(workspace=workspace, pk=invitation_id).first()


AUDIT_CSV_COLUMNS = ("created_at", "actor", "action", "target", "data")


def _csv_cell(value: str) -> str:
    # A cell that starts like a formula would run in a spreadsheet (CSV injection): make it text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def audit_csv_lines(*, workspace: Workspace) -> Iterator[str]:
    """The workspace's whole audit log as CSV lines (header first, oldest entry first), streamed from the database."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row: Iterable[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_csv_cell(cell) for cell in row])
        return buffer.getvalue()

    yield line(AUDIT_CSV_COLUMNS)
    entries = AuditEntry.objects.filter(workspace=workspace).order_by("created_at", "id")
    for entry in entries.iterator(chunk_size=1000):
        yield line((entry.created_at.isoformat(), entry.actor_label, entry.action, entry.target,
                    json.dumps(entry.data, sort_keys=True, default=str)))
