"""Per-process memory of the vector indexes (embedded Chroma): a budget of loaded collections that is kept by closing
and reopening the client, and never serves one workspace another's vectors when it does (docs/operations.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from chat.answering import answer_once
from documents.retrieval import dense_search
from documents.models import Chunk
from documents.vectors import INDEX_FIXED_BYTES, _store
from tests.chat.knowledge import documents_index
from tests.factories import workspace_with_owner

ROOT = Path(__file__).resolve().parents[2]
WORKSPACES = 7
# Room for two small collections: every third one loaded closes the client first.
BUDGET_MB = 6
CITIES = ["Bergen", "Porto", "Graz", "Lyon", "Ghent", "Tartu", "Bologna"]


def shop_text(n: int) -> tuple[str, str, str]:
    """One workspace's only document: the same kind of fact everywhere, with its own code and city."""
    code = f"LOCK-{4100 + n * 37}"
    title = f"{CITIES[n]} bike storage"
    text = (f"# {title}\n\n## Storage room door code\n"
            f"The door code of the bike storage room at our {CITIES[n]} shop is {code}. Enter the code on the keypad "
            f"next to the side entrance and push the door after the green light.\n")
    return title, text, code


@pytest.fixture(scope="module")
def shops(django_db_setup, django_db_blocker):
    made = []
    with django_db_blocker.unblock():
        for n in range(WORKSPACES):
            created = workspace_with_owner(name=f"Shop {CITIES[n]}")
            connection.set_tenant(created.workspace)
            try:
                # Chunk ids of their own in every workspace (each schema counts from 1), so a hit from another
                # workspace's collection can't pass for one of ours.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT setval(pg_get_serial_sequence('documents_chunk', 'id'), %s)",
                                   [1000 * (n + 1)])
                title, text, code = shop_text(n)
                documents_index({title: text})
            finally:
                connection.set_schema_to_public()
            made.append((created.workspace, title, code))
    return made


def test_every_workspace_answers_from_its_own_knowledge_past_the_memory_budget(shops):
    reopens_before = _store.reopens
    # Forward, backward, then in a stride: each visit finds its collection evicted or loaded, in every combination.
    order = list(range(WORKSPACES)) + list(reversed(range(WORKSPACES))) + [(3 * i) % WORKSPACES for i in range(WORKSPACES)]
    # These workspaces are small: searched from their schema's copy by default (test_resident_vectors.py). Here the
    # vector store serves them, as it serves every workspace above VECTORS_RESIDENT_MAX_CHUNKS.
    with override_settings(CHROMA_MEMORY_BUDGET_MB=BUDGET_MB, VECTORS_RESIDENT_MAX_CHUNKS=0):
        for n in order:
            workspace, title, code = shops[n]
            connection.set_tenant(workspace)
            try:
                own = set(Chunk.objects.values_list("id", flat=True))
                hits = dense_search(schema_name=workspace.schema_name, query="What is the door code of the bike room?",
                                    limit=10)
                assert hits and {chunk_id for chunk_id, _score in hits} <= own, (workspace.schema_name, hits, own)
                done = answer_once(question="What is the door code of the bike storage room?", history=[])
                assert done["answered"], (workspace.schema_name, done)
                assert code in done["answer"], (workspace.schema_name, done["answer"])
                assert {c["title"] for c in done["citations"]} == {title}
                for other in CITIES:
                    assert other == CITIES[n] or other not in done["answer"]
            finally:
                connection.set_schema_to_public()
            loaded = dict(_store._loaded)
            assert len(loaded) <= BUDGET_MB * 2**20 // INDEX_FIXED_BYTES, loaded
            assert sum(loaded.values()) <= BUDGET_MB * 2**20, loaded
    # Two collections fit, so most visits had to close the client first: the budget was really exercised.
    assert _store.reopens - reopens_before >= len(order) // 2


_MANY_COLLECTIONS_SCRIPT = """
import resource, sys
# Chroma sizes its own index cache from this limit (// 5): 20 indexes here.
resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from django.conf import settings
settings.configure(CHROMA_PATH=sys.argv[1], CHROMA_URL="", CHROMA_MEMORY_BUDGET_MB=0)
from documents.vectors import vectors_query, vectors_upsert
count = 30
for n in range(count):
    ids = [n * 100 + 1, n * 100 + 2]
    vectors_upsert(schema_name=f"ws_many_{n}", ids=[str(i) for i in ids],
                   embeddings=[[1.0, float(n), 0.0], [0.0, 1.0, float(n)]],
                   metadatas=[{"chunk_id": i, "document_id": n} for i in ids], documents=["a", "b"])
wrong = []
for round_ in range(3):
    for n in range(count):
        try:
            hits = vectors_query(schema_name=f"ws_many_{n}", embedding=[1.0, float(n), 0.0], limit=5)
            got = sorted(hit.chunk_id for hit in hits)
            if got != [n * 100 + 1, n * 100 + 2]:
                wrong.append((round_, n, got))
        except Exception as exc:
            wrong.append((round_, n, type(exc).__name__ + ": " + str(exc)[:120]))
print("wrong", len(wrong), wrong[:3])
"""


def test_more_workspaces_than_chromas_own_cache_holds_keep_answering(tmp_path: Path) -> None:
    # chromadb 1.5 evicts an index when its cache (RLIMIT_NOFILE // 5 indexes) is full, and then fails to load it
    # again: "Error creating hnsw segment reader: Nothing found on disk". A process with the common limit of 1,024
    # files broke once it had served more than 204 workspaces. We close the client before Chroma's cache fills, so it never evicts.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-c", _MANY_COLLECTIONS_SCRIPT, str(tmp_path / "chroma")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "wrong 0 []", result.stdout[-3000:]
