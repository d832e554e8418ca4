"""The sentence vectors retrieval keeps per process (documents/sentence_vectors.py): per workspace even for identical
text, the same answers with and without them, gone with the workspace."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from django_tenants.utils import tenant_context

from documents.embedding import embedder
from documents.retrieval import knowledge_retrieve
from documents.sentence_vectors import SentenceVectorCache, sentence_vector_cache, sentence_vectors_get
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
