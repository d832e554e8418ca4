"""What documents does when lower floors announce something (connected in DocumentsConfig.ready)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.dispatch import receiver

from tenants.signals import workspace_purging

if TYPE_CHECKING:
    from tenants.models import Workspace


@receiver(workspace_purging, dispatch_uid="documents.workspace_vectors_purge")
def workspace_vectors_purge(sender: type, *, workspace: Workspace, **kwargs: object) -> str:
    """Drop the workspace's vector collection; the schema (documents, chunks) goes with the schema drop."""
    from documents.vectors import vector_collection_name, vectors_drop_collection

    vectors_drop_collection(schema_name=workspace.schema_name)
    return f"vector collection: {vector_collection_name(workspace.schema_name)}"
