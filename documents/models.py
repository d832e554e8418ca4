"""Knowledge-base documents and their chunks, in the workspace's own schema."""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PROCESSING = "processing", "Processing"
    INDEXED = "indexed", "Indexed"
    FAILED = "failed", "Failed"


class DocumentStage(models.TextChoices):
    UPLOAD = "upload", "Upload"
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
    source = models.CharField(max_length=20, choices=DocumentSource.choices, default=DocumentSource.UPLOAD)
    source_url = models.URLField(max_length=2000, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True, help_text="Sniffed from the content.")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
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
    # Users live in the public schema; PostgreSQL enforces this cross-schema foreign key.
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"])]

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
