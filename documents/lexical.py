"""The workspace's lexical index: BM25 over its chunks, ranked by PostgreSQL from statistics kept in its own schema.

    terms, totals = lexical_terms(query="How do I list a package's files?")
    hits = lexical_rank(terms=..., totals=totals, limit=40)   # [(chunk_id, score, matched lexemes)]

State (documents/migrations/0007_lexical_index.py): per term its document frequency, per (term, chunk) the body and
title/heading frequencies and the chunk's body length, per schema the chunk count and summed length. A statement
trigger on the chunk table keeps them exact on every write (ingestion, website syncs, deletions, imports), in the
writer's transaction; a dropped schema takes them along, an export carries the chunks they are derived from and an
import rebuilds them by inserting those chunks. `lexical_index_rebuild` recomputes them from scratch (`reindex
--lexical`), `lexical_index_drift` compares the kept statistics with a from-scratch recomputation.

Why here and not in Python: the old path asked PostgreSQL for each term's frequency (one GIN bitmap scan per term),
preselected candidates, then parsed every candidate's tsvector in Python — ~125 ms at 10k chunks. Now a query is two
index reads: the terms' rows, then each kept term's postings as one range of the (term_id, chunk_id) primary key
(an index-only scan), summed per chunk by one SQL aggregate. docs/answers.md has the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

TERM_TABLE = "documents_lexicalterm"
POSTING_TABLE = "documents_lexicalposting"
TOTALS_TABLE = "documents_lexicaltotals"


@dataclass(frozen=True)
class LexicalTotals:
    chunks: int
    length: int
    last: int = 0  # the newest chunk id: with the two above, `lexical_version()`
    vector_version: tuple[int, str] | None = None  # documents_vectorversion's (version, token), read along

    @property
    def version(self) -> tuple[int, int, int, int, str]:
        """As `lexical_version()` reads it."""
        return self.chunks, self.length, self.last, *(self.vector_version or (0, ""))

    @property
    def average_length(self) -> float:
        return max(1.0, self.length / self.chunks) if self.chunks else 1.0


# The workspace's lexical version as one row of scalar subqueries (lexical_version, and along with the terms):
# count, summed length, newest chunk id, and the vector copy's version and token.
_VERSION_COLUMNS = (
    f"coalesce((SELECT chunks FROM {TOTALS_TABLE}), 0), coalesce((SELECT length FROM {TOTALS_TABLE}), 0), "
    f"coalesce((SELECT max(id) FROM documents_chunk), 0), "
    f"coalesce((SELECT version FROM documents_vectorversion), 0), "
    f"coalesce((SELECT token::text FROM documents_vectorversion), '')"
)


def lexical_terms(*, query: str) -> tuple[list[tuple[str, int | None, int]], LexicalTotals]:
    """The query's lexemes (english config, as the chunks were indexed) with their term id and document frequency
    in this workspace (None, 0 for a word no chunk uses), and the workspace's totals with its version (as
    `lexical_version()` reads it) and the vector copy's version (documents/resident_vectors.py reads it before a
    search: read here, it costs no round trip of its own). One round trip."""
    # The one-row tables are read by scalar subqueries, not joined: joined, the planner (which has no statistics for
    # a table that was never analysed, as in a new workspace) multiplied their guessed row counts into an estimate
    # over PostgreSQL's JIT threshold, and every call paid ~100 ms of JIT compilation.
    sql = (
        f"SELECT x.lexeme, t.id, coalesce(t.df, 0), {_VERSION_COLUMNS} "
        f"FROM (SELECT 1) one "
        f"LEFT JOIN unnest(to_tsvector('english', %s)) x ON true "
        f"LEFT JOIN {TERM_TABLE} t ON t.lexeme = x.lexeme"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [query])
        rows = cursor.fetchall()
    first = rows[0]  # (SELECT 1) LEFT JOIN ...: always one row at least
    totals = LexicalTotals(int(first[3]), int(first[4]), int(first[5]), (int(first[6]), first[7]))
    return [(lexeme, term_id, int(df)) for lexeme, term_id, df, *_ in rows if lexeme is not None], totals


def lexical_rank(
    *, terms: list[tuple[int, float, str]], totals: LexicalTotals, limit: int, k1: float, b: float,
    heading_weight: float = 0.0, preselect: int | None = None, average: str = "candidates",
) -> list[tuple[int, float, frozenset[str]]]:
    """BM25 of the chunks holding the terms (term id, IDF, lexeme), best first, chunks of indexed documents only:
    [(chunk id, score, matched lexemes)]. Body frequency is BM25's; a title/heading match adds heading_weight * IDF.

    As the ranking the fusion weights were chosen with (docs/answers.md): the `preselect` chunks (default 3 x limit)
    holding the most IDF of the terms are scored, with their own average length ("candidates"); "workspace" scores
    them with the workspace's average length instead. Chunks of documents that are not indexed (being replaced or
    deleted) are left out after the ranking."""
    if not terms:
        return []
    from documents.models import Chunk, Document

    quote = connection.ops.quote_name
    preselect = max(limit, preselect or limit * 3)
    avgdl = "(SELECT greatest(1.0, avg(length)) FROM candidates)" if average == "candidates" else "%(avgdl)s"
    # One pass over the terms' postings (an index-only scan of their key ranges) picks the candidates by matched IDF;
    # only the candidates' postings are read again, by primary-key probes, to score them, summed in the terms' order
    # as before (summed in another order, chunks with equal statistics got scores a last bit apart: ties broke
    # differently). Whether a chunk's document is indexed is probed best first, only until `limit` pass (OFFSET 0
    # keeps the probe above the sort): a join there let the planner, which can't estimate unnest(), walk every
    # indexed chunk of the workspace (67 of 100 ms at 10k chunks, docs/answers.md).
    sql = f"""
        WITH q AS MATERIALIZED (
            SELECT term_id, idf, lexeme, ordinality AS position
            FROM unnest(%(ids)s::bigint[], %(idfs)s::float8[], %(lexemes)s::text[])
                 WITH ORDINALITY AS q(term_id, idf, lexeme, ordinality)
        ), candidates AS MATERIALIZED (
            SELECT p.chunk_id, max(p.length) AS length FROM q JOIN {POSTING_TABLE} p ON p.term_id = q.term_id
            GROUP BY p.chunk_id ORDER BY sum(q.idf) DESC, p.chunk_id LIMIT %(preselect)s
        ), hits AS (
            SELECT c.chunk_id, h.tf, h.heading, h.length, h.idf, h.lexeme, h.position
            FROM candidates c CROSS JOIN LATERAL (
                SELECT p.tf, p.heading, p.length, q.idf, q.lexeme, q.position FROM q
                JOIN {POSTING_TABLE} p ON p.term_id = q.term_id AND p.chunk_id = c.chunk_id OFFSET 0) h
        ), scored AS (
            SELECT h.chunk_id,
                   sum(h.idf * ((h.tf * (%(k1)s + 1)) / (h.tf + %(k1)s * (1 - %(b)s + %(b)s * h.length / {avgdl}))
                                + %(hw)s * (h.heading > 0)::int) ORDER BY h.position) AS score,
                   array_agg(h.lexeme) AS lexemes
            FROM hits h
            GROUP BY h.chunk_id
        )
        SELECT s.chunk_id, s.score, s.lexemes
        FROM (SELECT * FROM scored WHERE score > 0 ORDER BY score DESC, chunk_id OFFSET 0) s
        WHERE (SELECT d.status FROM {quote(Chunk._meta.db_table)} c
               JOIN {quote(Document._meta.db_table)} d ON d.id = c.document_id WHERE c.id = s.chunk_id) = 'indexed'
        LIMIT %(limit)s
    """
    params: dict[str, Any] = {
        "k1": float(k1), "b": float(b), "avgdl": totals.average_length, "hw": float(heading_weight),
        "ids": [term_id for term_id, _, _ in terms], "idfs": [idf for _, idf, _ in terms],
        "lexemes": [lexeme for _, _, lexeme in terms], "preselect": preselect, "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(chunk_id), float(score), frozenset(lexemes)) for chunk_id, score, lexemes in cursor.fetchall()]


def lexical_vocabulary() -> dict[str, int]:
    """Every lexeme of the workspace with its document frequency."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT lexeme, df FROM {TERM_TABLE}")
        return {lexeme: int(df) for lexeme, df in cursor.fetchall()}


def lexical_version() -> tuple[int, int, int, int, str]:
    """Changes whenever the workspace's chunks do: count, summed length, newest chunk id, and the vector copy's
    version and token (documents_vectorversion, bumped by every statement that writes a chunk's vector: a chunk
    rewritten in place by a website sync keeps its id, and may keep the count and length). A cache key."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_VERSION_COLUMNS}")
        chunks, length, last, vectors, token = cursor.fetchone()
    return int(chunks), int(length), int(last), int(vectors), token


# --- building and checking ---------------------------------------------------------------------------------------

# Each chunk's (lexeme, body frequency, title/heading frequency), read from its tsvector: the index's source.
_SCRATCH_SQL = """
SELECT x.lexeme, c.id AS chunk_id,
       coalesce(cardinality(x.weights) - cardinality(array_positions(x.weights, 'A')), 1) AS tf,
       coalesce(cardinality(array_positions(x.weights, 'A')), 0) AS heading
FROM documents_chunk c, unnest(c.search_vector) x WHERE c.search_vector IS NOT NULL
"""

REBUILD_SQL = [
    f"TRUNCATE {POSTING_TABLE}, {TERM_TABLE}, {TOTALS_TABLE} RESTART IDENTITY",
    f"""INSERT INTO {TERM_TABLE} (lexeme, df)
        SELECT lexeme, count(*) FROM ({_SCRATCH_SQL}) u GROUP BY lexeme ORDER BY lexeme""",
    f"""INSERT INTO {POSTING_TABLE} (term_id, chunk_id, tf, heading, length)
        SELECT t.id, u.chunk_id, u.tf, u.heading, sum(u.tf) OVER (PARTITION BY u.chunk_id)
        FROM ({_SCRATCH_SQL}) u JOIN {TERM_TABLE} t ON t.lexeme = u.lexeme""",
    f"""INSERT INTO {TOTALS_TABLE} (id, chunks, length)
        SELECT true, (SELECT count(*) FROM documents_chunk), coalesce((SELECT sum(tf) FROM {POSTING_TABLE}), 0)""",
]


def lexical_index_rebuild() -> dict[str, int]:
    """Recompute the current workspace's lexical index from its chunks, in one transaction (writers of the
    workspace's chunks wait for it: it takes the same lock as the trigger)."""
    schema_name = connection.schema_name
    if schema_name == "public":
        raise ValueError("the lexical index lives in a workspace schema")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(7310201, hashtext(%s))", [schema_name])
        for statement in REBUILD_SQL:
            cursor.execute(statement)
    return lexical_index_size()


def lexical_index_size() -> dict[str, int]:
    """Chunks, summed body length, terms and postings of the current workspace's lexical index."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce((SELECT chunks FROM {TOTALS_TABLE}), 0), "
                       f"coalesce((SELECT length FROM {TOTALS_TABLE}), 0), "
                       f"(SELECT count(*) FROM {TERM_TABLE}), (SELECT count(*) FROM {POSTING_TABLE})")
        chunks, length, terms, postings = cursor.fetchone()
    return {"chunks": int(chunks), "length": int(length), "terms": int(terms), "postings": int(postings)}


def lexical_index_drift() -> dict[str, int]:
    """How far the kept statistics are from a from-scratch recomputation of the current workspace's chunks: counts of
    differing term rows, posting rows and totals (all 0 when exact)."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            WITH scratch AS ({_SCRATCH_SQL}),
            terms_expected AS (SELECT lexeme, count(*)::int AS df FROM scratch GROUP BY lexeme),
            postings_expected AS (SELECT lexeme, chunk_id, tf, heading,
                                         (sum(tf) OVER (PARTITION BY chunk_id))::int AS length FROM scratch),
            postings_kept AS (SELECT t.lexeme, p.chunk_id, p.tf::int, p.heading::int, p.length
                              FROM {POSTING_TABLE} p JOIN {TERM_TABLE} t ON t.id = p.term_id),
            terms_kept AS (SELECT lexeme, df FROM {TERM_TABLE})
            SELECT
              (SELECT count(*) FROM ((SELECT * FROM terms_expected EXCEPT ALL SELECT * FROM terms_kept)
                                     UNION ALL (SELECT * FROM terms_kept EXCEPT ALL SELECT * FROM terms_expected)) d),
              (SELECT count(*) FROM ((SELECT * FROM postings_expected EXCEPT ALL SELECT * FROM postings_kept)
                                     UNION ALL (SELECT * FROM postings_kept EXCEPT ALL SELECT * FROM postings_expected)) d),
              (SELECT count(*) FROM documents_chunk) - coalesce((SELECT chunks FROM {TOTALS_TABLE}), 0),
              coalesce((SELECT sum(tf) FROM scratch), 0) - coalesce((SELECT length FROM {TOTALS_TABLE}), 0)
        """)
        terms, postings, chunks, length = cursor.fetchone()
    return {"terms": int(terms), "postings": int(postings), "chunks": int(chunks), "length": int(length)}
