"""Conversations and messages, in the workspace's own schema."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Channel(models.TextChoices):
    WIDGET = "widget", "Widget"
    DASHBOARD = "dashboard", "Dashboard"
    API = "api", "API"


class ConversationStatus(models.TextChoices):
    BOT = "bot", "Bot"
    WAITING = "waiting", "Waiting for agent"
    AGENT = "agent", "Agent"
    CLOSED = "closed", "Closed"


class Conversation(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.WIDGET)
    status = models.CharField(max_length=20, choices=ConversationStatus.choices, default=ConversationStatus.BOT)
    title = models.CharField(max_length=200, blank=True)
    visitor_id = models.CharField(max_length=64, blank=True, db_index=True)
    verified_user_id = models.CharField(max_length=200, blank=True, db_index=True)
    visitor_name = models.CharField(max_length=200, blank=True)
    visitor_email = models.EmailField(blank=True)
    # The embeds app sits above chat (STYLE.md floors), so the widget is referenced by id, not by a foreign key.
    embed_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    origin = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    handoff_reason = models.CharField(max_length=40, blank=True)
    last_seq = models.BigIntegerField(default=0, help_text="Highest event seq issued in this conversation.")
    unanswered_streak = models.PositiveSmallIntegerField(default=0)
    # Customer messages no agent has read yet (the inbox's unread count); reset when an agent reads or replies.
    agent_unread = models.PositiveIntegerField(default=0)
    handoff_at = models.DateTimeField(null=True, blank=True, help_text="When it last started waiting for a person.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["status", "-updated_at"])]

    def __str__(self) -> str:
        return str(self.public_id)


class Lead(models.Model):
    """What a visitor told us about themselves in the widget's lead form (embeds.leads validates it against the
    widget's form). One per conversation; deleted with it (retention, visitor erasure, workspace purge)."""

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="lead")
    visitor_id = models.CharField(max_length=64, blank=True, db_index=True)
    embed_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    custom_label = models.CharField(max_length=60, blank=True)
    custom_value = models.CharField(max_length=500, blank=True)
    stage = models.CharField(max_length=20, blank=True, help_text="before_chat or handoff: when the form was shown.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.email or self.name or self.phone or f"lead {self.pk}"


class MessageRole(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    ASSISTANT = "assistant", "Assistant"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"
    NOTE = "note", "Internal note"


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=20, choices=MessageRole.choices)
    client_message_id = models.CharField(max_length=64, blank=True)
    content = models.TextField()
    citations = models.JSONField(default=list, blank=True)
    answered = models.BooleanField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    provider = models.CharField(max_length=60, blank=True)
    model = models.CharField(max_length=120, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_total_ms = models.PositiveIntegerField(null=True, blank=True)
    feedback = models.SmallIntegerField(default=0, help_text="-1 thumbs down, 0 none, 1 thumbs up")
    feedback_comment = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    seq = models.BigIntegerField(null=True, blank=True, help_text="Event seq at which the message was completed.")
    # The customer message an assistant (or agent) message answers; a customer message is answered at most once.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    timings_ms = models.JSONField(default=dict, blank=True, help_text="Per-stage latencies reported by the answerer.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Provider fallbacks and other answer details.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"], condition=~models.Q(client_message_id=""),
                name="message_unique_client_id",
            )
        ]


class ProvidersField(models.JSONField):
    """AssistantSettings.providers: every write (save, update, admin) stores `api_key` values encrypted, with a
    masked hint; reads keep the ciphertext — only building a provider decrypts (chat/providers/secrets.py)."""

    def get_prep_value(self, value):  # type: ignore[no-untyped-def]
        from chat.providers.secrets import providers_encrypt  # lazy: chat.providers pulls in LangChain

        return super().get_prep_value(providers_encrypt(value))


class AssistantSettingsQuerySet(models.QuerySet):
    """Writes that bypass `save()` still move the settings' cache version (chat.selectors.assistant_settings_current):
    post_save / post_delete cover the rest (chat.apps)."""

    def update(self, **kwargs):  # type: ignore[no-untyped-def]
        from chat.selectors import assistant_settings_changed

        result = super().update(**kwargs)
        assistant_settings_changed()  # after the write: a reader in between must not cache the old row as new
        return result

    def bulk_create(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from chat.selectors import assistant_settings_changed

        result = super().bulk_create(*args, **kwargs)
        assistant_settings_changed()  # after the write: a reader in between must not cache the old row as new
        return result

    def bulk_update(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from chat.selectors import assistant_settings_changed

        result = super().bulk_update(*args, **kwargs)
        assistant_settings_changed()  # after the write: a reader in between must not cache the old row as new
        return result


class AssistantSettings(models.Model):
    """Per-workspace assistant persona and answer providers (one row per workspace schema). Read through
    chat.selectors.assistant_settings_current (cached per process, invalidated on every write)."""

    objects = AssistantSettingsQuerySet.as_manager()

    name = models.CharField(max_length=80, default="Assistant")
    tone = models.CharField(max_length=40, default="friendly")
    language = models.CharField(max_length=20, default="auto", help_text="'auto' answers in the customer's language.")
    instructions = models.TextField(blank=True)
    grounded_only = models.BooleanField(default=True)
    # Ordered fallback chain, e.g. [{"kind": "openai", "base_url": ..., "model": ..., "api_key": ...},
    # {"kind": "builtin"}]. The built-in extractive answerer is always the last resort. `api_key` is stored
    # encrypted ("fernet:..."), next to `api_key_hint`; show chat.providers.secrets.providers_public(...), never this.
    providers = ProvidersField(default=list, blank=True)
    handoff_after_unanswered = models.PositiveSmallIntegerField(default=0, help_text="0 = never by rule")
    updated_at = models.DateTimeField(auto_now=True)


class OfficeHours(models.Model):
    """When the workspace's people answer (one row per workspace schema). Outside these hours, or when no agent has
    the inbox open, a customer who asks for a person is told so and offered to leave an email address."""

    enabled = models.BooleanField(default=False, help_text="Off: always within office hours (presence still counts).")
    timezone = models.CharField(max_length=64, default="UTC")
    # {"mon": [["09:00", "17:00"]], "tue": [...], ...}; a missing or empty day is closed.
    weekly_hours = models.JSONField(default=dict, blank=True)
    # Staff notifications (issue #18, chat.notifications): e-mail the agents when a customer waits and nobody has the
    # inbox open, this long after the customer asked; and a daily digest of unanswered / thumbs-down questions.
    notify_agents = models.BooleanField(default=True)
    notify_after_seconds = models.PositiveIntegerField(default=120, help_text="0 = at once; at most 1800.")
    daily_digest = models.BooleanField(default=True, help_text="Owners get the day's unanswered and thumbs-down questions.")
    updated_at = models.DateTimeField(auto_now=True)
