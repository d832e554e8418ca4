"""Knowledge-base documents and their chunks, in the workspace's own schema."""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Q


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PROCESSING = "processing", "Processing"
    RETRYING = "retrying", "Retrying"
    INDEXED = "indexed", "Indexed"
    FAILED = "failed", "Failed"


class DocumentStage(models.TextChoices):
    UPLOAD = "upload", "Upload"
    FETCH = "fetch", "Fetch"
    PARSE = "parse", "Parse"
    CHUNK = "chunk", "Chunk"
    EMBED = "embed", "Embed"
    INDEX = "index", "Index"
    DONE = "done", "Done"


class DocumentSource(models.TextChoices):
    UPLOAD = "upload", "Upload"
    URL = "url", "URL"
    TEXT = "text", "Text"
    FAQ = "faq", "FAQ"


class Document(models.Model):
    title = models.CharField(max_length=300)
    # False while the title is a placeholder (file name, URL) that the parsed document's own title may replace.
    title_is_custom = models.BooleanField(default=False)
    source = models.CharField(max_length=20, choices=DocumentSource.choices, default=DocumentSource.UPLOAD)
    source_url = models.URLField(max_length=2000, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True, help_text="Sniffed from the content.")
    size_bytes = models.BigIntegerField(default=0)
    # Blank until the content is known (a URL import learns it when the page is fetched).
    sha256 = models.CharField(max_length=64, db_index=True, blank=True)
    file = models.CharField(max_length=500, blank=True, help_text="Storage path of the original upload.")
    status = models.CharField(max_length=20, choices=DocumentStatus.choices, default=DocumentStatus.QUEUED)
    stage = models.CharField(max_length=20, choices=DocumentStage.choices, default=DocumentStage.UPLOAD)
    stage_progress = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    # Pipeline bookkeeping: which queue the job went to, which run is current (a newer run supersedes older ones),
    # and the timestamps that let the dashboard say why a document is where it is.
    queue = models.CharField(max_length=40, default="ingest")
    run_token = models.CharField(max_length=32, blank=True)
    indexed_run_token = models.CharField(max_length=32, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    text_preview = models.TextField(blank=True, help_text="The beginning of the parsed text.")
    timings = models.JSONField(default=dict, blank=True, help_text="Milliseconds per stage of the last run.")
    # Users live in the public schema; PostgreSQL enforces this cross-schema foreign key.
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "-created_at"])]
        constraints = [
            # Same content twice in one workspace is refused (duplicate_document); the race is settled here.
            models.UniqueConstraint(fields=["sha256"], condition=~Q(sha256=""), name="document_unique_sha256"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    heading_path = models.CharField(max_length=1000, blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    search_vector = SearchVectorField(null=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_document_ordinal")]
        indexes = [GinIndex(fields=["search_vector"], name="chunk_search_vector_gin")]

    @property
    def vector_id(self) -> str:
        return chunk_vector_id(self.document_id, self.ordinal)


def chunk_vector_id(document_id: int, ordinal: int) -> str:
    """The id of a chunk's vector: derived from the chunk's identity, so a re-run overwrites instead of adding."""
    return f"{document_id}:{ordinal}"


def chunk_vector_id_parse(vector_id: str) -> tuple[int, int] | None:
    document_id, _, ordinal = vector_id.partition(":")
    if not (document_id.isdigit() and ordinal.isdigit()):
        return None
    return int(document_id), int(ordinal)


class CuratedAnswer(models.Model):
    """An answer the team wrote for a question ("fix a wrong answer once"), served ahead of retrieval when a new
    question matches one of its phrasings (documents/curated.py; docs/answers.md "Curated answers")."""

    question = models.CharField(max_length=1000)
    # Further ways customers ask it; the question and these are the phrasings a new question is matched against.
    examples = models.JSONField(default=list, blank=True)
    answer = models.TextField()
    # One unit vector per phrasing (question first), by `embedding_model`; recomputed when either changes.
    embeddings = models.JSONField(default=list, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    # The assistant reply it corrects, when written from a transcript (chat sits above documents: an id, no key).
    source_message_id = models.BigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.question[:80]

    @property
    def phrasings(self) -> list[str]:
        return [self.question, *[str(e) for e in self.examples or []]]
