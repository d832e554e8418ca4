"""The sentence vectors retrieval keeps per process and with their chunks (documents/sentence_vectors.py): per
workspace even for identical text, the same answers with and without them, gone with their chunks and workspace."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import tenant_context

from documents.embedding import embedder
from documents.models import Chunk, Document
from documents.retrieval import knowledge_retrieve, passage_sentences
from documents.sentence_vectors import (
    SentenceVectorCache,
    _key_digest,
    _vector_kind,
    sentence_vector_cache,
    sentence_vectors_get,
)
from documents.services import document_delete
from tests.chat.knowledge import knowledge_workspace

# Short chunks, so the sentence signals always run (the best chunks hold few sentences); the same text in both.
SAME_TEXT = {
    "Returns": "# Returns\n\nYou can return any item within 30 days of purchase. Refunds go back to the card you "
               "paid with. Sale items are final.\n",
    "Shipping": "# Shipping\n\nOrders ship within two business days. Shipping is free on orders over $50. We ship "
                "from our warehouse in Riverton.\n",
}
QUESTION = "How long do I have to return something?"


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return (knowledge_workspace("Sentences A", SAME_TEXT), knowledge_workspace("Sentences B", SAME_TEXT))


def outcome(result) -> tuple:
    return ([c.chunk_id for c in result.chunks], result.covered, result.reason, result.signals,
            [c.sentence_score for c in result.chunks], [c.sentence_evidence for c in result.chunks])


def test_identical_text_in_two_workspaces_is_never_shared(pair):
    a, b = pair
    cache = sentence_vector_cache()
    cache.clear()
    with tenant_context(a.workspace):
        first = knowledge_retrieve(query=QUESTION)
    assert first.signals and first.signals["sentences"] > 0, "the sentence signals must run for this test to mean it"
    a_keys = cache.keys_for(schema_name=a.workspace.schema_name)
    # Each sentence's vector and stems (and the chunks' title/section stems).
    assert len(a_keys) >= 2 * first.signals["sentences"]
    assert {key[1] for key in a_keys} == {a.workspace.pk}
    assert cache.keys_for(schema_name=b.workspace.schema_name) == []

    hits, misses = cache.hits, cache.misses
    with tenant_context(b.workspace):
        other = knowledge_retrieve(query=QUESTION)
    # B computed its own, although A's identical sentences were cached: not one of B's lookups found A's.
    assert cache.hits == hits
    assert cache.misses - misses == len(a_keys)
    b_keys = cache.keys_for(schema_name=b.workspace.schema_name)
    assert len(b_keys) == len(a_keys) and {key[1] for key in b_keys} == {b.workspace.pk}
    assert not set(a_keys) & set(b_keys)
    assert other.signals == first.signals


def test_cached_vectors_answer_as_freshly_embedded_ones(pair):
    a, _b = pair
    cache = sentence_vector_cache()
    cache.clear()
    with tenant_context(a.workspace):
        cold = knowledge_retrieve(query=QUESTION)
        hits, misses = cache.hits, cache.misses
        warm = knowledge_retrieve(query=QUESTION)
        assert cache.misses == misses
        assert cache.hits - hits == len(cache.keys_for(schema_name=a.workspace.schema_name)) > 0
        assert outcome(warm) == outcome(cold)
        sentences = ["You can return any item within 30 days of purchase.", "Sale items are final."]
        cached = sentence_vectors_get(sentences=sentences)
        fresh = np.asarray(embedder().embed(sentences), dtype=np.float32)
        assert np.allclose(cached, fresh, atol=1e-5)


def test_capacity_bounds_the_cache_least_recently_used_first():
    cache = SentenceVectorCache(capacity=2)
    vector = np.zeros(3, dtype=np.float32)
    cache.put(("s", 1, b"a"), vector)
    cache.put(("s", 1, b"b"), vector)
    assert cache.get(("s", 1, b"a")) is not None  # now the most recently used
    cache.put(("s", 1, b"c"), vector)
    assert len(cache) == 2
    assert cache.get(("s", 1, b"b")) is None
    assert cache.get(("s", 1, b"a")) is not None and cache.get(("s", 1, b"c")) is not None
    assert SentenceVectorCache(capacity=0).get(("s", 1, b"a")) is None


def test_a_purged_workspace_leaves_no_sentence_vectors(django_db_blocker):
    with django_db_blocker.unblock():
        gone = knowledge_workspace("Sentences purge", SAME_TEXT)
        kept = knowledge_workspace("Sentences kept", SAME_TEXT)
    cache = sentence_vector_cache()
    for ws in (gone, kept):
        with tenant_context(ws.workspace):
            assert knowledge_retrieve(query=QUESTION).signals["sentences"] > 0
    assert cache.keys_for(schema_name=gone.workspace.schema_name)
    kept_keys = cache.keys_for(schema_name=kept.workspace.schema_name)
    out = io.StringIO()
    call_command("delete_workspace", "--slug", gone.workspace.slug, "--yes", "--json", stdout=out)
    assert "cached sentence vectors" in out.getvalue()
    assert cache.keys_for(schema_name=gone.workspace.schema_name) == []
    assert cache.keys_for(schema_name=kept.workspace.schema_name) == kept_keys


# --- kept with their chunks in the workspace's schema (documents_sentencevector) ----------------------------------

RETURN_SENTENCE = "You can return any item within 30 days of purchase."


def _stored(ws) -> dict[tuple[int, bytes], bytes]:
    with tenant_context(ws.workspace), connection.cursor() as cursor:
        cursor.execute("SELECT chunk_id, digest, vector FROM documents_sentencevector")
        return {(chunk_id, bytes(digest)): bytes(vector) for chunk_id, digest, vector in cursor.fetchall()}


def _chunk_holding(ws, sentence: str) -> int:
    with tenant_context(ws.workspace):
        return next(c.pk for c in Chunk.objects.all() if sentence in passage_sentences(c.text))


def _digest(sentence: str) -> bytes:
    return _key_digest(_vector_kind(embedder()), sentence)


def test_a_small_knowledge_base_keeps_every_sentence_vector_from_ingestion(pair):
    a, _b = pair
    with tenant_context(a.workspace):
        expected = {(c.pk, _digest(s)) for c in Chunk.objects.all() for s in passage_sentences(c.text)}
    stored = _stored(a)
    assert expected and set(stored) == expected
    chunk_id = _chunk_holding(a, RETURN_SENTENCE)
    fresh = np.asarray(embedder().embed([RETURN_SENTENCE])[0], dtype=np.float32)
    assert np.array_equal(np.frombuffer(stored[(chunk_id, _digest(RETURN_SENTENCE))], dtype="<f4"), fresh)


def test_a_process_that_never_saw_the_workspace_reads_the_stored_vectors_of_that_workspace_only(pair):
    a, b = pair
    a_chunk, b_chunk = _chunk_holding(a, RETURN_SENTENCE), _chunk_holding(b, RETURN_SENTENCE)
    marker = np.full(embedder().dimension, 1 / np.sqrt(embedder().dimension), dtype=np.float32)
    original = _stored(a)[(a_chunk, _digest(RETURN_SENTENCE))]
    cache = sentence_vector_cache()
    with tenant_context(a.workspace), connection.cursor() as cursor:
        cursor.execute("UPDATE documents_sentencevector SET vector = %s WHERE chunk_id = %s AND digest = %s",
                       [marker.astype("<f4").tobytes(), a_chunk, _digest(RETURN_SENTENCE)])
    try:
        cache.clear()  # as in a process that has not answered in either workspace yet
        with tenant_context(a.workspace):
            got = sentence_vectors_get(sentences=[RETURN_SENTENCE], chunk_ids=[a_chunk])
        assert np.array_equal(got[0], marker), "the stored row was not read: the sentence was embedded again"
        with tenant_context(b.workspace):
            other = sentence_vectors_get(sentences=[RETURN_SENTENCE], chunk_ids=[b_chunk])
        assert np.allclose(other[0], embedder().embed([RETURN_SENTENCE])[0], atol=1e-5)
    finally:
        with tenant_context(a.workspace), connection.cursor() as cursor:
            cursor.execute("UPDATE documents_sentencevector SET vector = %s WHERE chunk_id = %s AND digest = %s",
                           [original, a_chunk, _digest(RETURN_SENTENCE)])
        cache.clear()


def test_a_large_knowledge_base_stores_the_sentences_its_questions_embed(settings, django_db_blocker):
    settings.RETRIEVAL_SENTENCE_VECTORS_AT_INGESTION_MAX_CHUNKS = 0  # as a workspace above the limit
    with django_db_blocker.unblock():
        big = knowledge_workspace("Sentences large", SAME_TEXT)
    assert _stored(big) == {}
    sentence_vector_cache().clear()
    with tenant_context(big.workspace):
        result = knowledge_retrieve(query=QUESTION)
    scored = result.signals["sentences"]
    assert scored > 0
    stored = _stored(big)
    assert 0 < len(stored) <= scored
    assert (_chunk_holding(big, RETURN_SENTENCE), _digest(RETURN_SENTENCE)) in stored
    sentence_vector_cache().clear()
    with tenant_context(big.workspace):
        again = knowledge_retrieve(query=QUESTION)
    assert outcome(again) == outcome(result)
    assert len(_stored(big)) == len(stored)  # read back, nothing written twice


def test_stored_sentence_vectors_go_with_their_chunks(django_db_blocker):
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Sentences cascade", SAME_TEXT)
    with tenant_context(ws.workspace):
        returns = Document.objects.get(title="Returns")
        returns_chunks = set(Chunk.objects.filter(document=returns).values_list("pk", flat=True))
    before = _stored(ws)
    assert {chunk_id for chunk_id, _ in before} & returns_chunks
    with tenant_context(ws.workspace):
        document_delete(document=returns)
    after = _stored(ws)
    assert not {chunk_id for chunk_id, _ in after} & returns_chunks
    assert after == {key: value for key, value in before.items() if key[0] not in returns_chunks}


def test_the_byte_budget_bounds_the_cache_whatever_the_entries_weigh():
    """Entries are counted and weighed: a long sentence's stems weigh as much as ten vectors (review of issue #21)."""
    cache = SentenceVectorCache(capacity=1000, budget_bytes=20_000)
    vector = np.zeros(384, dtype=np.float32)
    for n in range(8):
        cache.put(("s", 1, bytes([n])), vector)
    assert len(cache) == 8 and cache.nbytes <= 20_000
    heavy = frozenset(f"word{n:03d}" for n in range(200))
    cache.put(("s", 1, b"stems"), heavy)
    assert cache.nbytes <= 20_000 and cache.get(("s", 1, b"stems")) is heavy
    assert len(cache) < 8  # vectors went first to make room
    cache.purge(schema_name="s")
    assert len(cache) == 0 and cache.nbytes == 0


def test_embedded_sentence_vectors_are_kept_without_their_batch():
    from documents.sentence_vectors import _vectors_embed

    rows = _vectors_embed(embedder(), ["The shop opens at nine.", "Returns are free within 30 days."])
    assert all(row.base is None and not row.flags.writeable for row in rows)  # not views into one batch
