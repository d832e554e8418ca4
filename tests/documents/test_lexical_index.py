"""The workspace's lexical (BM25) index, documents/lexical.py: kept exact by the chunk table's trigger on every write
path, ranked by PostgreSQL as the Python reference ranks, one per schema (workspace A never finds B's chunk for
the same words), gone with the workspace, carried by export/import, rebuilt by `reindex`."""
from __future__ import annotations

import io
import json
import math
import secrets
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import tenant_context

from documents.lexical import lexical_index_drift, lexical_index_size
from documents.retrieval import DEFAULT_PARAMS, QueryTerm, bm25_score, lexical_search, tsvector_parse
from tests.chat.knowledge import documents_index, knowledge_workspace

# The same words in both workspaces; each has one marker the other must never return.
SHARED = {
    "Router reset": "# Router reset\n\nPress the reset button for ten seconds to restore the router's factory "
                    "settings. The firmware stays installed.\n",
    "Router firmware": "# Router firmware\n\nThe router checks for new firmware every night and installs it. "
                       "Press Check now on the admin page to update the firmware by hand.\n",
}
A_ONLY = {"Router lights": "# Router lights\n\nA blinking amber light means the router firmware is updating; the "
                           "marker word is aardvarkalpha.\n"}
B_ONLY = {"Router lights": "# Router lights\n\nA blinking amber light means the router firmware is updating; the "
                           "marker word is aardvarkbravo.\n"}


def command(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command(*args, "--json", stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        a = knowledge_workspace("Lexical A", {**SHARED, **A_ONLY})
        b = knowledge_workspace("Lexical B", {**SHARED, **B_ONLY})
    return a, b


def scratch() -> tuple[dict[str, int], dict[tuple[str, int], tuple[int, int, int]], int, int]:
    """The statistics recomputed here, in Python, from the chunks' stored tsvectors."""
    df: Counter[str] = Counter()
    postings: dict[tuple[str, int], tuple[int, int, int]] = {}
    chunks = total_length = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, search_vector::text FROM documents_chunk")
        for chunk_id, text in cursor.fetchall():
            chunks += 1
            vector = tsvector_parse(text or "")
            length = sum(body for _, body in vector.values())
            total_length += length
            for lexeme, (heading, body) in vector.items():
                df[lexeme] += 1
                postings[(lexeme, chunk_id)] = (body, heading, length)
    return dict(df), postings, chunks, total_length


def kept() -> tuple[dict[str, int], dict[tuple[str, int], tuple[int, int, int]], int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT lexeme, df FROM documents_lexicalterm")
        df = dict(cursor.fetchall())
        cursor.execute("SELECT t.lexeme, p.chunk_id, p.tf, p.heading, p.length FROM documents_lexicalposting p "
                       "JOIN documents_lexicalterm t ON t.id = p.term_id")
        postings = {(lexeme, chunk_id): (tf, heading, length) for lexeme, chunk_id, tf, heading, length
                    in cursor.fetchall()}
    size = lexical_index_size()
    return df, postings, size["chunks"], size["length"]


def assert_exact() -> None:
    expected = scratch()
    assert expected[0], "no chunks: the comparison would prove nothing"
    assert kept() == expected
    assert lexical_index_drift() == {"terms": 0, "postings": 0, "chunks": 0, "length": 0}


def test_workspace_a_never_finds_b_chunks_for_the_same_words(pair):
    a, b = pair
    for mine, theirs, marker, other_marker in ((a, b, "aardvarkalpha", "aardvarkbravo"),
                                               (b, a, "aardvarkbravo", "aardvarkalpha")):
        with tenant_context(theirs.workspace):
            from documents.models import Chunk

            their_ids = set(Chunk.objects.values_list("id", flat=True))
        with tenant_context(mine.workspace):
            mine_ids = set(Chunk.objects.values_list("id", flat=True))
            terms, hits = lexical_search(query=f"router firmware {other_marker} {marker} reset")
            assert hits and {chunk_id for chunk_id, _, _ in hits} <= mine_ids
            assert any(marker[:8] in matched_term for _, _, matched in hits for matched_term in matched)
            # The other workspace's marker is a word this one never uses: no document frequency, no hit.
            assert [term.df for term in terms if term.lexeme == other_marker] == [0]
        # Chunk ids are per schema sequences and do overlap; the point is that every hit is one of ours.
        assert mine_ids and their_ids


def test_postgres_ranks_as_the_python_reference(pair):
    from documents.lexical import LexicalTotals, lexical_rank

    a, _ = pair
    with tenant_context(a.workspace):
        query = "update the router firmware by hand"
        terms, hits = lexical_search(query=query, params=DEFAULT_PARAMS)
        searchable = [QueryTerm(t.lexeme, t.df, t.idf) for t in terms if t.df > 0]
        assert searchable and hits
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, search_vector::text FROM documents_chunk")
            rows = cursor.fetchall()
        # The candidates: every chunk holding a term (fewer than the preselect here), scored with their own average
        # length, as the fusion weights were chosen with.
        holding = [(chunk_id, text) for chunk_id, text in rows
                   if set(tsvector_parse(text)) & {t.lexeme for t in searchable}]
        expected = bm25_score(holding, searchable)
        assert [chunk_id for chunk_id, _, _ in hits] == [chunk_id for chunk_id, _, _ in expected][:len(hits)]
        for (_, score, matched), (_, want, want_matched) in zip(hits, expected):
            assert math.isclose(score, want, rel_tol=1e-9) and matched == want_matched
        # With the workspace's average length instead (standard BM25).
        size = lexical_index_size()
        known = [t for t in terms if t.df > 0]
        workspace_hits = lexical_rank(terms=[(t.term_id, t.idf, t.lexeme) for t in known],
                                      totals=LexicalTotals(size["chunks"], size["length"]), limit=40,
                                      k1=DEFAULT_PARAMS.bm25_k1, b=DEFAULT_PARAMS.bm25_b, average="workspace")
        expected = bm25_score(holding, searchable, average=size["length"] / size["chunks"])
        assert [c for c, _, _ in workspace_hits] == [c for c, _, _ in expected][:len(workspace_hits)]
        assert all(math.isclose(x, y, rel_tol=1e-9) for (_, x, _), (_, y, _) in zip(workspace_hits, expected))


def test_statistics_stay_exact_through_ingest_delete_and_reingest(django_db_blocker):
    from documents import services
    from documents.models import Chunk, Document
    from tests.factories import document_ingest_now

    with django_db_blocker.unblock():
        ws = knowledge_workspace("Lexical churn", {**SHARED, **A_ONLY})
    with tenant_context(ws.workspace):
        assert_exact()
        before = lexical_index_size()
        # Deleting a document (the service: its row, its chunks by cascade) takes its words out.
        document = Document.objects.get(title="Router lights")
        services.document_delete(document=document)
        assert_exact()
        assert lexical_index_size()["chunks"] < before["chunks"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM documents_lexicalterm WHERE lexeme = 'aardvarkalpha'")
            assert cursor.fetchone()[0] == 0
        # Re-ingesting a document replaces its chunks: new words in, old ones out.
        document = Document.objects.get(title="Router reset")
        old_ids = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
        services.document_reindex(document=document)
        document_ingest_now(Document.objects.get(pk=document.pk))
        assert set(Chunk.objects.filter(document=document).values_list("id", flat=True)).isdisjoint(old_ids)
        assert_exact()
        # Another document added afterwards, and a chunk edited in place (a website sync's bulk_update path).
        documents_index({"Guest network": "# Guest network\n\nTurn on the guest network under Wireless > Guest.\n"})
        chunk = Chunk.objects.filter(document__title="Guest network").first()
        with connection.cursor() as cursor:
            cursor.execute("UPDATE documents_chunk SET search_vector = to_tsvector('english', 'visitors wifi "
                           "password') WHERE id = %s", [chunk.pk])
        assert_exact()
        # Rows whose tsvector did not change cost nothing and change nothing.
        Chunk.objects.filter(pk=chunk.pk).update(page=3)
        assert_exact()


def test_reindex_rebuilds_a_damaged_index(pair):
    a, _ = pair
    with tenant_context(a.workspace):
        assert_exact()
        with connection.cursor() as cursor:
            cursor.execute("UPDATE documents_lexicalterm SET df = df + 7")
            cursor.execute("DELETE FROM documents_lexicalposting WHERE chunk_id = (SELECT min(id) FROM documents_chunk)")
        assert lexical_index_drift()["terms"] > 0 and lexical_index_drift()["postings"] > 0
    code, body = command("reindex", "--workspace", a.workspace.slug, "--lexical")
    assert code == 0 and body["chunks"] > 0 and body["terms"] > 0
    with tenant_context(a.workspace):
        assert_exact()
        from accounts.models import AuditEntry

        assert AuditEntry.objects.filter(action="knowledge.lexical_reindexed").exists()


def test_export_then_import_answers_the_same(pair, tmp_path):
    from tenants.models import Workspace

    a, _ = pair
    archive = tmp_path / "lexical.tar.gz"
    code, exported = command("export_workspace", "--workspace", a.workspace.slug, "--output", str(archive))
    assert code == 0, exported
    assert "lexical index of" in exported["parts"]["documents"]
    slug = f"lex-{secrets.token_hex(3)}"
    code, imported = command("import_workspace", "--archive", str(archive), "--slug", slug,
                             "--owner-email", a.owner.email)
    assert code == 0, imported
    assert "(rebuilt)" not in imported["parts"]["documents"]  # the inserted chunks built the same index
    target = Workspace.objects.get(slug=slug)
    queries = ["router firmware aardvarkalpha", "reset the router to factory settings", "amber light"]
    with tenant_context(a.workspace):
        source_size, source_hits = lexical_index_size(), [lexical_search(query=q)[1] for q in queries]
    with tenant_context(target):
        assert lexical_index_size() == source_size
        target_hits = [lexical_search(query=q)[1] for q in queries]
        assert all(source_hits)
        for mine, theirs in zip(target_hits, source_hits):  # the same chunks, order, terms; the sums' last bits may differ
            assert [(c, m) for c, _, m in mine] == [(c, m) for c, _, m in theirs]
            assert all(math.isclose(x, y, rel_tol=1e-9) for (_, x, _), (_, y, _) in zip(mine, theirs))
        assert_exact()


def test_a_purged_workspace_leaves_no_lexical_index(django_db_blocker):
    from tenants.models import Workspace

    with django_db_blocker.unblock():
        ws = knowledge_workspace("Lexical purge", SHARED)
    schema = ws.workspace.schema_name
    with tenant_context(ws.workspace):
        assert lexical_index_size()["postings"] > 0
    code, body = command("delete_workspace", "--slug", ws.workspace.slug, "--yes")
    assert code == 0, body
    assert not Workspace.objects.filter(slug=ws.workspace.slug).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s", [schema])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                       "WHERE n.nspname = %s", [schema])
        assert cursor.fetchone()[0] == 0
