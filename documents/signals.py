"""What documents does when lower floors announce something (connected in DocumentsConfig.ready)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver

from tenants.signals import workspace_exporting, workspace_importing, workspace_purging

if TYPE_CHECKING:
    from tenants.models import Workspace


@receiver(workspace_purging, dispatch_uid="documents.workspace_vectors_purge")
def workspace_vectors_purge(sender: type, *, workspace: Workspace, **kwargs: object) -> str:
    """Drop the workspace's vector collection; the schema (documents, chunks) goes with the schema drop."""
    from documents.vectors import vector_collection_name, vectors_drop_collection

    vectors_drop_collection(schema_name=workspace.schema_name)
    return f"vector collection: {vector_collection_name(workspace.schema_name)}"


@receiver(workspace_purging, dispatch_uid="documents.workspace_sentence_vectors_purge")
def workspace_sentence_vectors_purge(sender: type, *, workspace: Workspace, **kwargs: object) -> str:
    """Forget this process's cached sentence vectors of the workspace (other processes' can no longer be reached:
    their keys hold the workspace's id; they age out)."""
    from documents.sentence_vectors import sentence_vectors_purge

    return f"cached sentence vectors: {sentence_vectors_purge(schema_name=workspace.schema_name)}"


@receiver(workspace_purging, dispatch_uid="documents.workspace_resident_vectors_purge")
def workspace_resident_vectors_purge(sender: type, *, workspace: Workspace, **kwargs: object) -> str:
    """Forget this process's copy of the workspace's vectors (other processes' no longer match: the schema's version
    row, and its token, go with it)."""
    from documents.resident_vectors import resident_vectors

    return f"resident vectors: {int(resident_vectors().purge(schema_name=workspace.schema_name))}"


@receiver(workspace_exporting, dispatch_uid="documents.workspace_export_files_vectors")
def workspace_export_files_vectors(sender: type, *, workspace: Workspace, archive: Any, **kwargs: object) -> tuple[str, str]:
    """Add the original files (files/<path under the workspace's folder>) and the vectors (vectors.jsonl)."""
    from django.core.files.storage import default_storage

    from documents.models import Document
    from documents.vectors import vectors_export

    prefix = f"workspaces/{workspace.schema_name}/"
    files = 0
    for name in Document.objects.exclude(file="").values_list("file", flat=True).iterator():
        if not name.startswith(prefix):
            continue  # never anything outside the workspace's own folder
        path = Path(default_storage.path(name))
        if path.is_file():
            archive.add_file(f"files/{name[len(prefix):]}", path)
            files += 1
    vectors = archive.add_jsonl("vectors.jsonl", vectors_export(schema_name=workspace.schema_name))
    # The lexical index is derived from the chunks (exported as rows): its size goes along, so the import can check
    # that the index it rebuilds by inserting the chunks is the same one.
    from documents.lexical import lexical_index_size

    lexical = lexical_index_size()
    archive.add_json("lexical.json", lexical)
    return "documents", f"{files} files, {vectors} vectors, lexical index of {lexical['terms']} terms"


@receiver(workspace_importing, dispatch_uid="documents.workspace_import_files_vectors")
def workspace_import_files_vectors(sender: type, *, workspace: Workspace, archive: Any, manifest: dict[str, Any],
                                   schema_map: dict[str, str], **kwargs: object) -> tuple[str, str] | None:
    """Put the files under the new workspace's folder (their stored paths rewritten) and load the vectors."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from documents.models import Document
    from documents.resident_vectors import resident_vectors_write
    from documents.vectors import vectors_upsert

    if "documents" not in manifest.get("parts", {}):
        return None
    old_prefix = f"workspaces/{manifest['workspace']['schema']}/"
    new_prefix = f"workspaces/{workspace.schema_name}/"
    files = 0
    for member in archive.names("files/"):
        relative = member[len("files/"):]
        stored = default_storage.save(new_prefix + relative, ContentFile(archive.read(member)))
        if stored != new_prefix + relative:
            raise ValueError(f"storage renamed {relative!r}; the archive holds it twice")
        files += 1
    for document in Document.objects.exclude(file=""):
        if document.file.startswith(old_prefix):
            document.file = new_prefix + document.file[len(old_prefix):]
        else:
            document.file = ""  # a path outside the old workspace's folder is not trusted
        document.save(update_fields=["file"])
    vectors = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            vectors_upsert(schema_name=workspace.schema_name, ids=[v["id"] for v in batch],
                           embeddings=[v["embedding"] for v in batch], metadatas=[v["metadata"] for v in batch],
                           documents=[v["document"] for v in batch])
            resident_vectors_write(schema_name=workspace.schema_name,
                                   chunk_ids=[int(v["metadata"]["chunk_id"]) for v in batch],
                                   embeddings=[v["embedding"] for v in batch])
            batch.clear()

    for vector in archive.jsonl("vectors.jsonl"):
        batch.append(vector)
        vectors += 1
        if len(batch) >= 500:
            flush()
    flush()
    return "documents", f"{files} files, {vectors} vectors, {_lexical_import_check(archive)}"


def _lexical_import_check(archive: Any) -> str:
    """The imported chunks built the lexical index as they were inserted (documents/lexical.py); when it differs
    from the exported one's size (an archive from before the index existed, or edited), rebuild it from them."""
    from documents.lexical import lexical_index_rebuild, lexical_index_size

    expected = archive.json("lexical.json") if "lexical.json" in archive.names("lexical.json") else None
    built = lexical_index_size()
    if expected == built:
        return f"lexical index of {built['terms']} terms"
    built = lexical_index_rebuild()
    return f"lexical index of {built['terms']} terms (rebuilt)"
