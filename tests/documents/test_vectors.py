"""The per-workspace vector index: isolation, delete, drop, scores, freshness across processes, server mode."""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from documents.vectors import (
    VectorHit,
    vector_collection_name,
    vectors_count,
    vectors_delete_document,
    vectors_drop_collection,
    vectors_query,
    vectors_upsert,
)

ROOT = Path(__file__).resolve().parents[2]
DIMENSION = 8


def unit(*values: float) -> list[float]:
    vector = list(values) + [0.0] * (DIMENSION - len(values))
    length = math.sqrt(sum(v * v for v in vector))
    return [v / length for v in vector]


def put(schema: str, document_id: int, chunk_ids: list[int], vectors: list[list[float]]) -> None:
    vectors_upsert(
        schema_name=schema, ids=[str(c) for c in chunk_ids], embeddings=vectors,
        metadatas=[{"chunk_id": c, "document_id": document_id} for c in chunk_ids],
        documents=[f"chunk {c} of {document_id}" for c in chunk_ids],
    )


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    a, b = f"ws_a{secrets.token_hex(4)}", f"ws_b{secrets.token_hex(4)}"
    yield a, b
    for schema in (a, b):
        vectors_drop_collection(schema_name=schema)


def test_collection_names_come_from_workspace_schemas_only() -> None:
    assert vector_collection_name("ws_acme_inc") == "kb_ws_acme_inc"
    for bad in ("public", "", "ws_", "WS_ACME", "ws-acme", "../ws_acme", "ws acme", None, "x" * 80):
        with pytest.raises(ValueError):
            vector_collection_name(bad)  # type: ignore[arg-type]


def test_the_schema_is_always_required() -> None:
    with pytest.raises(TypeError):
        vectors_query(embedding=unit(1), limit=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        vectors_query(schema_name="public", embedding=unit(1), limit=3)


def test_scores_are_cosine_similarities_best_first(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    put(a, 1, [10, 11, 12], [unit(1, 0), unit(1, 1), unit(0, 1)])
    hits = vectors_query(schema_name=a, embedding=unit(1, 0), limit=10)
    assert [hit.chunk_id for hit in hits] == [10, 11, 12]
    assert all(isinstance(hit, VectorHit) and hit.document_id == 1 for hit in hits)
    assert [round(hit.score, 4) for hit in hits] == [1.0, round(1 / math.sqrt(2), 4), 0.0]


def test_a_workspace_never_sees_another_workspaces_vectors(schemas: tuple[str, str]) -> None:
    a, b = schemas
    # Same chunk ids and documents ids in both: ids are per collection.
    put(a, 1, [1, 2], [unit(1, 0), unit(0, 1)])
    put(b, 1, [1, 2, 3], [unit(1, 0.01), unit(0.01, 1), unit(1, 1)])
    put(b, 7, [70], [unit(1, 0)])
    assert {hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(1, 0), limit=50)} == {1, 2}
    assert {hit.document_id for hit in vectors_query(schema_name=a, embedding=unit(1, 0), limit=50)} == {1}
    # B deletes its document and uploads it again with new chunks: A is untouched and still alone.
    vectors_delete_document(schema_name=b, document_id=7)
    put(b, 7, [71, 72], [unit(1, 0), unit(1, 0.2)])
    a_hits = vectors_query(schema_name=a, embedding=unit(1, 0), limit=50)
    assert {(hit.document_id, hit.chunk_id) for hit in a_hits} == {(1, 1), (1, 2)}
    assert vectors_count(schema_name=a) == 2
    assert vectors_count(schema_name=b) == 5
    b_hits = vectors_query(schema_name=b, embedding=unit(1, 0), limit=50)
    assert {hit.chunk_id for hit in b_hits} == {1, 2, 3, 71, 72}


def test_filters_stay_inside_the_workspace(schemas: tuple[str, str]) -> None:
    a, b = schemas
    put(a, 1, [1], [unit(1)])
    put(b, 2, [2], [unit(1)])
    hits = vectors_query(schema_name=a, embedding=unit(1), limit=5, where={"document_id": {"$in": [1, 2]}})
    assert [(hit.document_id, hit.chunk_id) for hit in hits] == [(1, 1)]


def test_delete_removes_only_that_document(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    put(a, 1, [1, 2], [unit(1, 0), unit(0, 1)])
    put(a, 2, [3], [unit(1, 1)])
    assert vectors_count(schema_name=a, document_id=1) == 2
    vectors_delete_document(schema_name=a, document_id=1)
    assert vectors_count(schema_name=a, document_id=1) == 0
    assert [hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(1, 0), limit=10)] == [3]


def test_upsert_replaces_a_chunk_in_place(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    put(a, 1, [1], [unit(1, 0)])
    put(a, 1, [1], [unit(0, 1)])
    hits = vectors_query(schema_name=a, embedding=unit(0, 1), limit=10)
    assert len(hits) == 1 and round(hits[0].score, 4) == 1.0


def test_drop_removes_the_collection_and_nothing_is_left(schemas: tuple[str, str]) -> None:
    a, b = schemas
    put(a, 1, [1], [unit(1)])
    put(b, 1, [1], [unit(1)])
    assert vectors_drop_collection(schema_name=a) is True
    assert vectors_count(schema_name=a) == 0
    assert vectors_query(schema_name=a, embedding=unit(1), limit=5) == []
    assert vectors_drop_collection(schema_name=a) is False
    assert not list(Path(settings.CHROMA_PATH).glob(f"generations/*{a}*"))
    assert not list(Path(settings.CHROMA_PATH).glob(f"generations/.*{a}*"))
    assert vectors_count(schema_name=b) == 1


def test_operations_on_a_missing_collection_do_not_create_it(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    vectors_delete_document(schema_name=a, document_id=1)
    assert vectors_query(schema_name=a, embedding=unit(1), limit=5) == []
    assert vectors_count(schema_name=a) == 0
    assert vectors_drop_collection(schema_name=a) is False


def test_bad_input_is_refused(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    with pytest.raises(ValueError):
        vectors_upsert(schema_name=a, ids=["1"], embeddings=[unit(1)], metadatas=[{"chunk_id": 1}], documents=["x"])
    with pytest.raises(ValueError):
        vectors_upsert(schema_name=a, ids=["1", "2"], embeddings=[unit(1)], metadatas=[], documents=[])


def _other_process(code: str) -> None:
    """Run vector calls in a separate Python process on the same CHROMA_PATH (like a Celery worker would)."""
    script = (
        "import django, json, os\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings.test'\n"
        "django.setup()\n"
        "from documents.vectors import *\n" + code
    )
    env = {**os.environ, "CHROMA_PATH": str(settings.CHROMA_PATH), "CHROMA_URL": settings.CHROMA_URL or ""}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)


def test_writes_of_another_process_are_seen_here(schemas: tuple[str, str]) -> None:
    a, _ = schemas
    put(a, 1, [1], [unit(1, 0)])
    assert [hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(0, 1), limit=10)] == [1]
    vectors = json.dumps([unit(0, 1), unit(0.1, 1)])
    _other_process(
        f"vectors_upsert(schema_name={a!r}, ids=['2', '3'], embeddings=json.loads({vectors!r}), "
        "metadatas=[{'chunk_id': 2, 'document_id': 2}, {'chunk_id': 3, 'document_id': 2}], documents=['b', 'c'])\n"
    )
    hits = vectors_query(schema_name=a, embedding=unit(0, 1), limit=10)
    assert [hit.chunk_id for hit in hits] == [2, 3, 1]
    _other_process(f"vectors_delete_document(schema_name={a!r}, document_id=2)\n")
    assert [hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(0, 1), limit=10)] == [1]
    _other_process(f"vectors_drop_collection(schema_name={a!r})\n")
    assert vectors_query(schema_name=a, embedding=unit(0, 1), limit=10) == []


def test_purging_a_workspace_drops_its_collection() -> None:
    from tenants.services import workspace_delete
    from tests.factories import workspace_with_owner

    doomed = workspace_with_owner(name="Doomed Co").workspace
    put(doomed.schema_name, 1, [1, 2], [unit(1), unit(0, 1)])
    assert vectors_count(schema_name=doomed.schema_name) == 2
    report = workspace_delete(slug=doomed.slug)
    assert f"vector collection: kb_{doomed.schema_name}" in report.removed
    assert vectors_count(schema_name=doomed.schema_name) == 0
    assert not list(Path(settings.CHROMA_PATH).glob(f"generations/*{doomed.schema_name}*"))


# --- server mode (CHROMA_URL): the same guarantees against a real `chroma run` -------------------------------

@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert executable, "the chroma command ships with the chromadb package"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("chroma-server")
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [executable, "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # until it listens (at most 30 s)
            if process.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_server_mode_isolates_deletes_and_drops(chroma_server: str, schemas: tuple[str, str]) -> None:
    a, b = schemas
    with override_settings(CHROMA_URL=chroma_server):
        put(a, 1, [1, 2], [unit(1, 0), unit(0, 1)])
        put(b, 1, [1], [unit(1, 0)])
        assert {hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(1, 0), limit=10)} == {1, 2}
        vectors_delete_document(schema_name=b, document_id=1)
        put(b, 2, [5], [unit(1, 0)])
        assert {hit.chunk_id for hit in vectors_query(schema_name=a, embedding=unit(1, 0), limit=10)} == {1, 2}
        assert [hit.chunk_id for hit in vectors_query(schema_name=b, embedding=unit(1, 0), limit=10)] == [5]
        _other_process(f"vectors_delete_document(schema_name={a!r}, document_id=1)\n")
        assert vectors_count(schema_name=a) == 0
        assert vectors_drop_collection(schema_name=a) is True
        assert vectors_drop_collection(schema_name=b) is True
        assert vectors_count(schema_name=b) == 0
    # The embedded store never saw any of it.
    assert vectors_count(schema_name=a) == 0


_FRESH_FOLDER_SCRIPT = """
import sys, time
from django.conf import settings
settings.configure(CHROMA_PATH=sys.argv[1], CHROMA_URL="")
from documents.vectors import vectors_count, vectors_upsert
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    vectors_upsert(schema_name="ws_fresh", ids=[sys.argv[3]], embeddings=[[1.0, 0.0]],
                   metadatas=[{"chunk_id": int(sys.argv[3]), "document_id": 1}], documents=["x"])
    print("ok", vectors_count(schema_name="ws_fresh"))
except Exception as exc:
    print("error", type(exc).__name__, exc)
"""


def test_processes_starting_together_on_a_fresh_folder_all_get_a_client(tmp_path: Path) -> None:
    # Without the lock around client creation, Chroma's migrations race: "table collections already exists"
    # (4 of 48 process starts in 8 rounds of 6 here). Several rounds of several processes, each on a fresh folder.
    base = Path(settings.BASE_DIR) if hasattr(settings, "BASE_DIR") else Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(base)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    outputs: list[str] = []
    for round_ in range(4):
        folder = tmp_path / f"chroma{round_}"
        start = time.time() + 4  # after every process has imported chromadb
        processes = [subprocess.Popen([sys.executable, "-c", _FRESH_FOLDER_SCRIPT, str(folder), str(start), str(n + 1)],
                                      cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for n in range(5)]
        outputs += [process.communicate(timeout=120)[0].strip().splitlines()[-1] for process in processes]
    assert all(line.startswith("ok") for line in outputs), outputs
