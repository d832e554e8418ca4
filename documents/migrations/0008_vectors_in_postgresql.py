"""Vectors kept in the workspace's own schema, next to their chunks.

- documents_chunkvector: every chunk's vector (float32, little-endian), written with the vector store's
  (documents/vectors.py). Small workspaces are searched exactly from these, in the process, instead of loading an
  index into the vector store (documents/resident_vectors.py, issue #21): no per-workspace index in web and worker
  memory, no load on a first visit.
- documents_vectorversion: one row, bumped by every statement that changes documents_chunkvector, with a token
  drawn when the row is made: a process knows its copy of a workspace's vectors is current by reading it.
- documents_sentencevector: the vectors retrieval's sentence signals read, one row per (chunk, digest of model
  identity + sentence text), stored at ingestion for small knowledge bases and written back when a question first
  embeds them (documents/sentence_vectors.py): a process that has not seen a workspace yet does not embed its
  sentences again (~8 ms of CPU each).

Rows go with their chunk (ON DELETE CASCADE, whatever deletes the chunk). The trigger names its table through
TG_TABLE_SCHEMA, never the search_path, as the lexical index's does.
"""

from django.db import migrations

FORWARD_SQL = r"""
CREATE TABLE documents_chunkvector (
    chunk_id bigint PRIMARY KEY REFERENCES documents_chunk (id) ON DELETE CASCADE,
    vector bytea NOT NULL
);
CREATE TABLE documents_vectorversion (
    id boolean PRIMARY KEY CHECK (id),
    version bigint NOT NULL,
    token uuid NOT NULL DEFAULT gen_random_uuid()
);
CREATE FUNCTION documents_vector_version_bump() RETURNS trigger LANGUAGE plpgsql AS $function$
BEGIN
    -- A statement that changed no row (a cascade from a chunk without a vector) changes nothing.
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
        PERFORM 1 FROM new_rows LIMIT 1;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM 1 FROM old_rows LIMIT 1;
    ELSE
        PERFORM 1;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE format('INSERT INTO %I.documents_vectorversion AS v (id, version) VALUES (true, 1) '
                   'ON CONFLICT (id) DO UPDATE SET version = v.version + 1', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$function$;
CREATE TRIGGER documents_chunkvector_insert AFTER INSERT ON documents_chunkvector
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION documents_vector_version_bump();
CREATE TRIGGER documents_chunkvector_update AFTER UPDATE ON documents_chunkvector
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION documents_vector_version_bump();
CREATE TRIGGER documents_chunkvector_delete AFTER DELETE ON documents_chunkvector
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION documents_vector_version_bump();
CREATE TRIGGER documents_chunkvector_truncate AFTER TRUNCATE ON documents_chunkvector
    FOR EACH STATEMENT EXECUTE FUNCTION documents_vector_version_bump();
CREATE TABLE documents_sentencevector (
    chunk_id bigint NOT NULL REFERENCES documents_chunk (id) ON DELETE CASCADE,
    digest bytea NOT NULL,
    vector bytea NOT NULL,
    CONSTRAINT documents_sentencevector_pkey PRIMARY KEY (chunk_id, digest)
);
"""

REVERSE_SQL = """
DROP TABLE documents_sentencevector;
DROP TRIGGER documents_chunkvector_insert ON documents_chunkvector;
DROP TRIGGER documents_chunkvector_update ON documents_chunkvector;
DROP TRIGGER documents_chunkvector_delete ON documents_chunkvector;
DROP TRIGGER documents_chunkvector_truncate ON documents_chunkvector;
DROP FUNCTION documents_vector_version_bump();
DROP TABLE documents_chunkvector, documents_vectorversion;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('documents', '0007_lexical_index'),
    ]

    operations = [
        migrations.RunSQL(FORWARD_SQL, REVERSE_SQL),
    ]
