"""Small workspaces searched exactly from the vectors kept in their schema (documents/resident_vectors.py): the same
ranking as the vector store's, current after every change, never another workspace's, within a memory budget."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from chat.answering import answer_once
from documents.embedding import embedder
from documents.models import Chunk, Document
from documents.resident_vectors import resident_query, resident_vectors
from documents.retrieval import dense_search
from documents.services import document_delete
from documents.vectors import _store, vectors_query
from tests.chat.knowledge import ROUTER_DOCS, documents_index, knowledge_workspace
from tests.documents.test_vector_memory import CITIES, WORKSPACES, shops  # noqa: F401 — shops: the same fixture

QUESTION = "How do I change the Wi-Fi password?"


@pytest.fixture(scope="module")
def router(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return knowledge_workspace("Resident router", ROUTER_DOCS)


def _vector(text: str) -> list[float]:
    return list(embedder().embed([text])[0])


def test_the_exact_search_ranks_as_the_vector_store(router):
    schema = router.workspace.schema_name
    with tenant_context(router.workspace):
        chunks = Chunk.objects.count()
        for question in (QUESTION, "The router is slow", "Error E-4711", "refund of an annual plan"):
            resident = resident_query(schema_name=schema, embedding=_vector(question), limit=chunks)
            stored = vectors_query(schema_name=schema, embedding=_vector(question), limit=chunks)  # Chroma's
            assert resident is not None and len(resident) == len(stored) == chunks
            assert [h.chunk_id for h in resident[:5]] == [h.chunk_id for h in stored[:5]], question
            assert np.allclose([h.score for h in resident], [h.score for h in stored], atol=1e-5)
            assert [(h.chunk_id, h.document_id) for h in sorted(resident, key=lambda h: h.chunk_id)] == \
                   [(h.chunk_id, h.document_id) for h in sorted(stored, key=lambda h: h.chunk_id)]


def test_a_small_workspace_never_loads_a_vector_store_index(router):
    _store._loaded.pop(f"kb_{router.workspace.schema_name}", None)
    with tenant_context(router.workspace):
        done = answer_once(question=QUESTION, history=[])
    assert done["answered"] and done["citations"][0]["title"] == "Wi-Fi setup", done
    assert f"kb_{router.workspace.schema_name}" not in _store._loaded
    assert router.workspace.schema_name in resident_vectors()


def test_every_change_is_seen_by_the_next_search(django_db_blocker):
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Resident changes", {"Wi-Fi setup": ROUTER_DOCS["Wi-Fi setup"]})
    schema = ws.workspace.schema_name
    question = _vector("Error E-4711 during the firmware update")
    with tenant_context(ws.workspace):
        before = resident_query(schema_name=schema, embedding=question, limit=20)
        loads = resident_vectors().loads
        assert resident_query(schema_name=schema, embedding=question, limit=20) == before
        assert resident_vectors().loads == loads  # unchanged: served from memory
        (added,) = documents_index({"Firmware updates": ROUTER_DOCS["Firmware updates"]})
        after = resident_query(schema_name=schema, embedding=question, limit=20)
        new_chunks = set(Chunk.objects.filter(document_id=added).values_list("id", flat=True))
        assert after[0].chunk_id in new_chunks and after[0].document_id == added
        assert {h.chunk_id for h in after} == set(Chunk.objects.values_list("id", flat=True))
        document_delete(document=Document.objects.get(pk=added))
        gone = resident_query(schema_name=schema, embedding=question, limit=20)
        assert not {h.chunk_id for h in gone} & new_chunks
        assert [h.chunk_id for h in gone] == [h.chunk_id for h in before]


def test_a_workspace_whose_chunks_lack_their_rows_is_searched_by_the_vector_store(django_db_blocker):
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Resident legacy", {"Port forwarding": ROUTER_DOCS["Port forwarding"],
                                                      "Wi-Fi setup": ROUTER_DOCS["Wi-Fi setup"]})
    schema = ws.workspace.schema_name
    with tenant_context(ws.workspace):
        every = set(Chunk.objects.values_list("id", flat=True))
        missing = Chunk.objects.filter(document__title="Port forwarding").values_list("id", flat=True)[0]
        with connection.cursor() as cursor:  # as a workspace indexed before the rows existed
            cursor.execute("DELETE FROM documents_chunkvector WHERE chunk_id = %s", [missing])
        question = "How do I forward a port to my camera?"
        assert resident_query(schema_name=schema, embedding=_vector(question), limit=20) is None
        hits = dense_search(schema_name=schema, query=question, limit=20)
        assert hits[0][0] == missing and {chunk_id for chunk_id, _score in hits} == every


SHOPS = WORKSPACES


def test_every_workspace_answers_from_its_own_vectors_past_the_memory_budget(shops):
    cache = resident_vectors()
    workspace = shops[0][0]
    with tenant_context(workspace):
        resident_query(schema_name=workspace.schema_name, embedding=_vector("door code"), limit=5)
    one = cache._entries[workspace.schema_name].nbytes
    # Room for two workspaces' vectors: every visit in this order finds its copy evicted or kept, in every combination.
    order = list(range(SHOPS)) + list(reversed(range(SHOPS))) + [(3 * i) % SHOPS for i in range(SHOPS)]
    saved = cache.budget_bytes
    cache.clear()
    cache.budget_bytes = 2 * one + one // 2
    try:
        for n in order:
            workspace, title, code = shops[n]
            with tenant_context(workspace):
                own = set(Chunk.objects.values_list("id", flat=True))
                hits = dense_search(schema_name=workspace.schema_name,
                                    query="What is the door code of the bike room?", limit=10)
                assert hits and {chunk_id for chunk_id, _score in hits} == own, (workspace.schema_name, hits)
                done = answer_once(question="What is the door code of the bike storage room?", history=[])
                assert done["answered"] and code in done["answer"], (workspace.schema_name, done)
                assert {c["title"] for c in done["citations"]} == {title}
                for other in CITIES:
                    assert other == CITIES[n] or other not in done["answer"]
            assert len(cache) <= 2 and cache.nbytes <= cache.budget_bytes
        # Most visits had to read their workspace's vectors again: the budget was really exercised.
        assert cache.loads >= len(order) // 2
    finally:
        cache.budget_bytes = saved


def test_a_copy_that_cannot_be_searched_sends_the_workspace_to_the_vector_store(django_db_blocker):
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Resident broken", {"Port forwarding": ROUTER_DOCS["Port forwarding"],
                                                      "Wi-Fi setup": ROUTER_DOCS["Wi-Fi setup"]})
    schema = ws.workspace.schema_name
    question = "How do I forward a port to my camera?"
    with tenant_context(ws.workspace):
        expected = dense_search(schema_name=schema, query=question, limit=20)
        with connection.cursor() as cursor:  # a vector of another dimension (a model change half done)
            cursor.execute("UPDATE documents_chunkvector SET vector = %s WHERE chunk_id = "
                           "(SELECT min(chunk_id) FROM documents_chunkvector)",
                           [np.ones(3, dtype="<f4").tobytes()])
        assert resident_query(schema_name=schema, embedding=_vector(question), limit=20) is None
        hits = dense_search(schema_name=schema, query=question, limit=20)  # Chroma's, not "dense unavailable"
        assert [chunk_id for chunk_id, _ in hits] == [chunk_id for chunk_id, _ in expected]


def test_a_missing_version_row_still_serves_the_whole_copy(django_db_blocker):
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Resident versionless", {"Wi-Fi setup": ROUTER_DOCS["Wi-Fi setup"],
                                                           "Port forwarding": ROUTER_DOCS["Port forwarding"]})
    schema = ws.workspace.schema_name
    resident_vectors().purge(schema_name=schema)
    with tenant_context(ws.workspace):
        with connection.cursor() as cursor:  # as after a restore that skipped the trigger's row
            cursor.execute("DELETE FROM documents_vectorversion")
        hits = resident_query(schema_name=schema, embedding=_vector(QUESTION), limit=20)
        assert hits is not None and {h.chunk_id for h in hits} == set(Chunk.objects.values_list("id", flat=True))
