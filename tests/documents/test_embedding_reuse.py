"""A text the workspace has already embedded with the same model is not embedded again: its stored vector is reused
(documents/pipeline.py, `_vectors_reusable`). Against the real worker, PostgreSQL and Chroma."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile

from documents import pipeline, selectors, services
from documents.embedding import embedder
from documents.models import Chunk, chunk_vector_id
from documents.vectors import vectors_count, vectors_get
from tests.documents.test_pipeline import add_file, manual_text, wait_settled, word_marker, workspace_schema
from tests.factories import WorkspaceWithOwner, workspace_with_owner


@pytest.fixture(scope="module")
def ws(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Reuse Co")


def digests_and_vectors(workspace: Any, document_id: int) -> list[tuple[str, np.ndarray]]:
    with workspace_schema(workspace):
        rows = list(Chunk.objects.filter(document_id=document_id).order_by("ordinal")
                    .values_list("ordinal", "embed_digest"))
    ids = [chunk_vector_id(document_id, ordinal) for ordinal, _ in rows]
    stored = vectors_get(schema_name=workspace.schema_name, ids=ids)
    assert len(stored) == len(rows)
    return [(digest, np.asarray(stored[vector_id], dtype=np.float32)) for (_, digest), vector_id in zip(rows, ids)]


def same_vector(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the vector store's rounding: Chroma normalises what it stores again (cosine space), which moves the
    last bit of some values (measured: at most 1.5e-8), so a vector copied from the store is not always bit-equal."""
    return bool(np.allclose(a, b, rtol=0, atol=1e-6))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_identical_text_in_another_document_reuses_the_vector_which_matches_a_fresh_one(ws, celery_worker):
    text = manual_text(title="Reuse manual", sections=3, paragraphs=3, seed=21)
    first = wait_settled(ws.workspace, add_file(ws.workspace, "reuse-1.md", text.encode()))
    assert first.status == "indexed", first.error_message
    before = digests_and_vectors(ws.workspace, first.pk)
    assert all(digest for digest, _ in before)

    # The same manual with one more section: every chunk of the first is in the second, word for word.
    extra = "\n## Appendix\n\nCustoms forms for parcels shipped abroad are printed with the invoice.\n"
    second = wait_settled(ws.workspace, add_file(ws.workspace, "reuse-2.md", (text + extra).encode()))
    assert second.status == "indexed", second.error_message
    after = digests_and_vectors(ws.workspace, second.pk)
    assert second.chunk_count == first.chunk_count + 1
    old = dict(before)
    shared = [(digest, vector) for digest, vector in after if digest in old]
    assert len(shared) == first.chunk_count
    for digest, vector in shared:
        # Reused, not recomputed: the values stored for the first document.
        assert same_vector(vector, old[digest])

    # And what was reused is what the model makes of that text now.
    with workspace_schema(ws.workspace):
        chunk = Chunk.objects.filter(document_id=first.pk).order_by("ordinal").first()
    from documents.chunking import document_chunk
    from documents.parsers import document_parse

    with workspace_schema(ws.workspace), services.stored_file_local(first.file) as path:
        parsed = document_parse(path=path, kind=first.content_type, filename=first.original_name)
    drafts = document_chunk(parsed=parsed, title=first.title)
    fresh = np.asarray(embedder().embed([drafts[chunk.ordinal].embed_text])[0], dtype=np.float32)
    assert pipeline.embed_digest(model_name=pipeline.model_identity(embedder()), text=drafts[chunk.ordinal].embed_text) == \
        chunk.embed_digest
    assert cosine(fresh, old[chunk.embed_digest]) > 0.999

    # The lookup finds exactly the digests this workspace holds.
    unknown = pipeline.embed_digest(model_name=pipeline.model_identity(embedder()), text="never embedded " + word_marker("zz"))
    with workspace_schema(ws.workspace):
        known = pipeline._vectors_reusable(ws.workspace.schema_name, {digest for digest, _ in before} | {unknown})
    assert set(known) == {digest for digest, _ in before}


def test_a_row_whose_vector_was_made_from_other_text_is_not_reused(ws, celery_worker):
    text = manual_text(title="Stale rows", sections=2, paragraphs=2, seed=22)
    document = wait_settled(ws.workspace, add_file(ws.workspace, "stale.md", text.encode()))
    assert document.status == "indexed", document.error_message
    foreign = pipeline.embed_digest(model_name=pipeline.model_identity(embedder()), text="some other text " + word_marker("qq"))
    with workspace_schema(ws.workspace):
        # A row that claims a text its vector was not made from (as while a document's rows and vectors are being
        # replaced): the vector's own metadata says otherwise, so it is not used.
        chunk = Chunk.objects.filter(document_id=document.pk).order_by("ordinal").first()
        Chunk.objects.filter(pk=chunk.pk).update(embed_digest=foreign)
        assert pipeline._vectors_reusable(ws.workspace.schema_name, {foreign}) == {}


def test_new_version_reuses_unchanged_chunks_and_embeds_the_changed_ones(ws, celery_worker):
    marker = word_marker("nv")
    first_text = manual_text(title="Versioned guide", sections=3, paragraphs=2, seed=23)
    document = wait_settled(ws.workspace, add_file(ws.workspace, "guide.md", first_text.encode()))
    assert document.status == "indexed", document.error_message
    before = dict(digests_and_vectors(ws.workspace, document.pk))
    with workspace_schema(ws.workspace):
        assert set(pipeline._vectors_reusable(ws.workspace.schema_name, set(before))) == set(before)
    second_text = first_text + f"\n## Changes\n\nThe {marker} replaces the old cable in every kit.\n"
    with workspace_schema(ws.workspace):
        services.document_new_version(document=document,
                                      uploaded_file=ContentFile(second_text.encode(), name="guide-2.md"))
    document = wait_settled(ws.workspace, document.pk)
    assert document.status == "indexed" and document.version == 2, document.error_message
    after = digests_and_vectors(ws.workspace, document.pk)
    assert len(after) == document.chunk_count == vectors_count(schema_name=ws.workspace.schema_name,
                                                               document_id=document.pk)
    kept = [(digest, vector) for digest, vector in after if digest in before]
    assert len(kept) == len(before) and len(after) == len(before) + 1
    assert all(same_vector(vector, before[digest]) for digest, vector in kept)
    with workspace_schema(ws.workspace):
        hits = selectors.chunk_vector_search(query=f"Which part replaces the old cable? {marker}", limit=3)
    assert hits and hits[0].document_id == document.pk


def test_repeated_chunks_within_a_document_get_one_vector_each_of_the_same_values(ws, celery_worker):
    section = "## Contact\n\nWrite to the service desk with your order number and a photo of the label.\n"
    text = "# Repeated footer\n\n" + "\n".join(
        f"## Part {n}\n\n{manual_text(title='x', sections=1, paragraphs=1, seed=30 + n).split(chr(10), 4)[4]}\n"
        + section for n in range(3))
    document = wait_settled(ws.workspace, add_file(ws.workspace, "footer.md", text.encode()))
    assert document.status == "indexed", document.error_message
    rows = digests_and_vectors(ws.workspace, document.pk)
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document.pk) == len(rows)
    groups: dict[str, list[np.ndarray]] = {}
    for digest, vector in rows:
        groups.setdefault(digest, []).append(vector)
    repeated = [vectors for vectors in groups.values() if len(vectors) > 1]
    assert repeated, "the three Contact sections should chunk alike"
    for vectors in repeated:
        assert all(same_vector(vectors[0], other) for other in vectors[1:])


def test_another_workspace_never_reuses_this_ones_vectors(ws, celery_worker):
    other = workspace_with_owner(name="Reuse Other").workspace
    text = manual_text(title="Shared wording", sections=2, paragraphs=2, seed=24)
    mine = wait_settled(ws.workspace, add_file(ws.workspace, "shared.md", text.encode()))
    theirs = wait_settled(other, add_file(other, "shared.md", text.encode()))
    assert mine.status == theirs.status == "indexed"
    # Their vectors are in their own collection, written by their own run.
    assert vectors_count(schema_name=other.schema_name, document_id=theirs.pk) == theirs.chunk_count
    mine_digests = {digest for digest, _ in digests_and_vectors(ws.workspace, mine.pk)}
    with workspace_schema(other):
        found = pipeline._vectors_reusable(other.schema_name, mine_digests)
    # Same digests exist in both, but what is found in `other` are vectors of `other`'s collection only.
    theirs_vectors = dict(digests_and_vectors(other, theirs.pk))
    assert set(found) == mine_digests
    assert all(same_vector(found[digest], theirs_vectors[digest]) for digest in found)
