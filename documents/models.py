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
    CRAWL = "crawl", "Website"


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
    # The id of the chunk's heading in its web page (crawled pages), so a citation can link to the heading.
    anchor = models.CharField(max_length=200, blank=True, default="")
    search_vector = SearchVectorField(null=True)
    # What the model read and which model read it, hashed (documents/pipeline.py, `embed_digest`): a chunk whose text
    # was already embedded in this workspace reuses that vector instead of embedding it again.
    embed_digest = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_document_ordinal")]
        indexes = [GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
                   models.Index(fields=["embed_digest"], name="chunk_embed_digest")]

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


# --- websites as sources (docs/knowledge.md "Websites") -------------------------------------------------------------


class SourceKind(models.TextChoices):
    SITE = "site", "Start URL (follow links)"
    SITEMAP = "sitemap", "Sitemap"


class SourceSchedule(models.TextChoices):
    OFF = "off", "Off"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"


class Source(models.Model):
    """A website whose pages become documents: crawled once, then re-synced on demand or on a schedule."""

    url = models.URLField(max_length=2000)
    kind = models.CharField(max_length=10, choices=SourceKind.choices, default=SourceKind.SITE)
    title = models.CharField(max_length=300, blank=True)
    max_pages = models.PositiveIntegerField(default=100)
    max_depth = models.PositiveSmallIntegerField(default=3)
    include = models.JSONField(default=list, blank=True, help_text="Path patterns (fnmatch); empty: every path.")
    exclude = models.JSONField(default=list, blank=True, help_text="Path patterns (fnmatch) never crawled.")
    schedule = models.CharField(max_length=10, choices=SourceSchedule.choices, default=SourceSchedule.OFF)
    next_sync_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title or self.url


class SourceRunKind(models.TextChoices):
    CRAWL = "crawl", "Crawl"
    SYNC = "sync", "Re-sync"


class SourceRunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    STOPPED = "stopped", "Stopped"  # ended early with a reason (plan limit, robots.txt unreadable, ...)
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


RUN_ACTIVE = (SourceRunStatus.QUEUED, SourceRunStatus.RUNNING, SourceRunStatus.CANCELLING)


class SourceRun(models.Model):
    """One crawl or re-sync of a source: its counters, its end, its report. Its frontier is its SourceRunPage rows."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=10, choices=SourceRunKind.choices, default=SourceRunKind.CRAWL)
    status = models.CharField(max_length=12, choices=SourceRunStatus.choices, default=SourceRunStatus.QUEUED)
    trigger = models.CharField(max_length=20, default="manual", help_text="manual, schedule, api or command.")
    discovered = models.PositiveIntegerField(default=0)
    fetched = models.PositiveIntegerField(default=0)
    indexed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    stop_code = models.CharField(max_length=60, blank=True)
    stop_message = models.TextField(blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0.0, help_text="Time spent working (resumes add up).")
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]


class SourcePage(models.Model):
    """A page of a source that is (or was) in the knowledge base, with what a conditional GET needs."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="pages")
    url = models.URLField(max_length=2000)
    depth = models.PositiveSmallIntegerField(default=0)
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    etag = models.CharField(max_length=300, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    content_sha256 = models.CharField(max_length=64, blank=True)
    links = models.JSONField(default=list, blank=True, help_text="Same-site links found on the page.")
    gone_count = models.PositiveSmallIntegerField(default=0, help_text="404/410 answers in a row.")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["url"]
        constraints = [models.UniqueConstraint(fields=["source", "url"], name="source_page_unique_url")]


class PageState(models.TextChoices):
    PENDING = "pending", "Pending"
    INDEXED = "indexed", "Indexed"
    UNCHANGED = "unchanged", "Unchanged"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    REMOVED = "removed", "Removed"


class SourceRunPage(models.Model):
    """A URL a run found: the frontier while pending (a resumed run continues from here), then its outcome."""

    run = models.ForeignKey(SourceRun, on_delete=models.CASCADE, related_name="pages")
    url = models.URLField(max_length=2000)
    depth = models.PositiveSmallIntegerField(default=0)
    is_sitemap = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=PageState.choices, default=PageState.PENDING)
    outcome = models.CharField(max_length=20, blank=True, help_text="added, changed, unchanged, removed, ...")
    reason_code = models.CharField(max_length=60, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    document_id = models.IntegerField(null=True, blank=True)
    # Times a runner took this address in hand; one that never finishes (its worker crashes on it) gives up.
    attempts = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "url"], name="source_run_page_unique_url")]
        indexes = [models.Index(fields=["run", "state", "id"])]
