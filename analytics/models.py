"""Analytics of one workspace, in its own schema: raw events (append-only), hourly and daily rollups, question
clusters. See docs/analytics.md for the design (buckets, time zones, percentile resolution)."""
from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class EventKind(models.TextChoices):
    CONVERSATION_STARTED = "conversation_started", "Conversation started"
    QUESTION_ASKED = "question_asked", "Question asked"
    ANSWER_COMPLETED = "answer_completed", "Answer completed"
    FEEDBACK_GIVEN = "feedback_given", "Feedback given"
    HANDOFF_REQUESTED = "handoff_requested", "Handoff requested"
    AGENT_JOINED = "agent_joined", "Agent joined"
    CONVERSATION_CLOSED = "conversation_closed", "Conversation closed"
    WIDGET_OPENED = "widget_opened", "Widget opened"
    DOCUMENT_INGESTED = "document_ingested", "Document ingested"
    DOCUMENT_FAILED = "document_failed", "Document failed"


class Outcome(models.TextChoices):
    ANSWERED = "answered", "Answered"
    LOW_CONFIDENCE = "low_confidence", "Answered with low confidence"
    DECLINED = "declined", "Declined"


class Event(models.Model):
    """One thing that happened. Rows are only ever inserted (receivers, the bench); nothing updates or deletes them
    except the workspace's purge (the schema goes). Ids of other apps' rows are plain integers/uuids, not foreign
    keys: the row outlives a deleted document or conversation, and the insert takes no extra lock."""

    kind = models.CharField(max_length=32, choices=EventKind.choices)
    occurred_at = models.DateTimeField()
    conversation_id = models.UUIDField(null=True, blank=True, help_text="The conversation's public id.")
    message_id = models.BigIntegerField(null=True, blank=True)
    embed_id = models.BigIntegerField(null=True, blank=True)
    origin = models.CharField(max_length=300, blank=True)
    channel = models.CharField(max_length=20, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    latency_first_token_ms = models.IntegerField(null=True, blank=True)
    latency_total_ms = models.IntegerField(null=True, blank=True)
    # Latency histogram bucket (analytics.histogram.bucket_of), stored so that raw and rollup paths bucket alike.
    first_token_bucket = models.SmallIntegerField(null=True, blank=True)
    total_bucket = models.SmallIntegerField(null=True, blank=True)
    tokens_in = models.IntegerField(default=0)
    tokens_out = models.IntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    provider = models.CharField(max_length=60, blank=True)
    cited_document_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    feedback = models.SmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=60, blank=True, help_text="Handoff reason or document error code.")
    document_id = models.BigIntegerField(null=True, blank=True)
    question_text = models.TextField(blank=True)
    # sha1 of the normalised question (analytics.text.question_normalise): groups equal questions and keys clusters.
    question_hash = models.CharField(max_length=40, blank=True)
    visitor_id = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["occurred_at"], name="analytics_event_at"),
            models.Index(fields=["kind", "occurred_at"], name="analytics_event_kind_at"),
            # The latest declined / low-confidence answer of a question (analytics_unanswered).
            models.Index(fields=["question_hash", "outcome", "-occurred_at"], name="analytics_event_unanswered",
                         # OR, not IN: PostgreSQL prints `IN (...)` back differently once the template DDL
                         # is replayed, and provisioning compares index definitions (tests/tenants).
                         condition=models.Q(kind="answer_completed")
                         & (models.Q(outcome="declined") | models.Q(outcome="low_confidence"))),
        ]


ALL_WIDGETS = -1


class RollupCounters(models.Model):
    """Counters of one period (an hour or a UTC day) and one widget: embed_id 0 is "no widget", ALL_WIDGETS (-1) the
    sum over every widget and none (what unfiltered queries read)."""

    embed_id = models.BigIntegerField(default=0)
    conversations = models.IntegerField(default=0)
    questions = models.IntegerField(default=0)
    answers = models.IntegerField(default=0)
    answered = models.IntegerField(default=0)  # answered, low confidence included
    low_confidence = models.IntegerField(default=0)
    declined = models.IntegerField(default=0)
    handoffs = models.IntegerField(default=0)
    feedback_up = models.IntegerField(default=0)
    feedback_down = models.IntegerField(default=0)
    widget_opens = models.IntegerField(default=0)
    documents_ingested = models.IntegerField(default=0)
    documents_failed = models.IntegerField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    # int32 little-endian counts per latency bucket (analytics.histogram.BUCKETS long)
    first_token_hist = models.BinaryField(default=bytes)
    total_hist = models.BinaryField(default=bytes)

    class Meta:
        abstract = True


class HourlyRollup(RollupCounters):
    hour = models.DateTimeField(help_text="Start of the UTC hour.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hour", "embed_id"], name="analytics_hourly_unique")]


class DailyRollup(RollupCounters):
    day = models.DateField(help_text="The UTC day.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "embed_id"], name="analytics_daily_unique")]


class Dimension(models.TextChoices):
    """Keyed rollups: what `key` means, and what n1..n3 count."""

    ORIGIN = "origin", "Widget origin (n1 opens, n2 conversations, n3 questions)"
    DOCUMENT = "document", "Cited document id (n1 answers citing it)"
    HANDOFF = "handoff", "Handoff reason (n1 handoffs)"
    CLUSTER = "cluster", "Question cluster id (n1 questions, n2 answered, n3 declined)"
    UNANSWERED = "unanswered", "outcome|question hash (n1 answers, n2 latest epoch ms: max, not sum)"


class KeyedCounters(models.Model):
    embed_id = models.BigIntegerField(default=0)
    dimension = models.CharField(max_length=20, choices=Dimension.choices)
    key = models.CharField(max_length=320)
    n1 = models.BigIntegerField(default=0)
    n2 = models.BigIntegerField(default=0)
    n3 = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class HourlyKeyedRollup(KeyedCounters):
    hour = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["dimension", "embed_id", "hour"], name="analytics_hkeyed_dim_emb_hour")]


class DailyKeyedRollup(KeyedCounters):
    day = models.DateField()

    class Meta:
        indexes = [models.Index(fields=["dimension", "embed_id", "day"], name="analytics_dkeyed_dim_emb_day")]


class RollupState(models.Model):
    """One row: hours before `rolled_until` are complete in the rollups; later events are read raw."""

    rolled_until = models.DateTimeField(null=True, blank=True)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class QuestionCluster(models.Model):
    """Questions that mean the same thing. `centroid` is the float32 mean of its members' unit embeddings."""

    representative = models.TextField()
    centroid = models.BinaryField()
    size = models.IntegerField(default=0, help_text="Distinct normalised questions assigned.")
    created_at = models.DateTimeField(auto_now_add=True)


class QuestionAssignment(models.Model):
    """Normalised question (by hash) → its cluster. Written by the clustering task, never on the answer path."""

    question_hash = models.CharField(max_length=40, primary_key=True)
    cluster = models.ForeignKey(QuestionCluster, on_delete=models.CASCADE, related_name="assignments")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


# --- outbound webhooks (issue #18 item 3, docs/webhooks.md) ---------------------------------------------------------
class WebhookEndpoint(models.Model):
    """A URL of the workspace's that receives the events it subscribes to, signed with its secret (encrypted at rest:
    signing needs the plain secret, so it can't be a hash; chat.providers.secrets' FIELD_ENCRYPTION_KEY cipher)."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = ArrayField(models.CharField(max_length=40), default=list)
    is_active = models.BooleanField(default=True)
    secret_encrypted = models.TextField()
    secret_hint = models.CharField(max_length=12, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    # Sustained failure: the first failure of the current run of failures (reset by any success) and the reason the
    # endpoint was switched off, if it was.
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_by_id = models.BigIntegerField(null=True, blank=True, help_text="accounts.User id (public schema).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"  # gave up: out of attempts, refused address, or the endpoint was switched off


class WebhookDelivery(models.Model):
    """One event for one endpoint, with its latest attempt. A redelivery is a new row pointing at the original."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(help_text="The event's id: equal on every delivery of one event (dedupe on it).")
    event_type = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # The gaps the retries were scheduled with, in seconds (what the backoff did, kept for the log and the tests).
    retry_delays = ArrayField(models.PositiveIntegerField(), default=list, blank=True)
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint")]
