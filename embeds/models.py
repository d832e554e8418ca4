"""Embed codes: one per website placement of the chat widget, in the workspace's own schema."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from embeds.theme import BEHAVIOUR_DEFAULTS, THEME_DEFAULTS


class Embed(models.Model):
    name = models.CharField(max_length=100)
    # Identifies the embed in the snippet; not a secret (every visitor's browser sees it). Rotating it retires the
    # old one at once: the snippet must be updated.
    public_key = models.CharField(max_length=40, unique=True)
    # Canonical origins (embeds.origins), at least one: nothing is allowed by default.
    allowed_origins = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)

    # --- theme (validated by embeds.theme) ---
    color_primary = models.CharField(max_length=7, default=THEME_DEFAULTS["color_primary"])
    color_background = models.CharField(max_length=7, default=THEME_DEFAULTS["color_background"])
    color_text = models.CharField(max_length=7, default=THEME_DEFAULTS["color_text"])
    position = models.CharField(max_length=20, default=THEME_DEFAULTS["position"])
    title = models.CharField(max_length=60, blank=True)
    avatar_url = models.CharField(max_length=500, blank=True)
    greeting = models.TextField(blank=True)
    placeholder = models.CharField(max_length=100, blank=True)
    launcher_icon = models.CharField(max_length=20, default=THEME_DEFAULTS["launcher_icon"])
    language = models.CharField(max_length=8, default=THEME_DEFAULTS["language"])

    # --- behaviour ---
    auto_open = models.BooleanField(default=BEHAVIOUR_DEFAULTS["auto_open"])
    show_sources = models.BooleanField(default=BEHAVIOUR_DEFAULTS["show_sources"])
    collect_email = models.BooleanField(default=BEHAVIOUR_DEFAULTS["collect_email"])
    offer_human = models.BooleanField(default=BEHAVIOUR_DEFAULTS["offer_human"])
    show_followups = models.BooleanField(default=BEHAVIOUR_DEFAULTS["show_followups"])

    # --- starter questions and the lead form (embeds.leads) ---
    # Up to 6 questions shown as chips before the first message and after a decline; clicking one asks it.
    starter_questions = models.JSONField(default=list, blank=True)
    # {"when": "off" | "before_chat" | "handoff", "fields": {"name"|"email"|"phone"|"custom": "off"|"optional"|
    # "required"}, "custom_label": str}; the visitor's answers are stored on the conversation (chat.models.Lead).
    lead_form = models.JSONField(default=dict, blank=True)
    # Whether the knowledge base answers each starter question (embeds.followups): {question casefolded:
    # {"answerable": bool, "checked_at": ISO time, "knowledge": stamp of the documents it was checked against}}.
    # Only answerable ones are offered as follow-ups; refreshed on save, when documents change, and after a day.
    question_coverage = models.JSONField(default=dict, blank=True)

    # --- identity verification (HMAC of the host's user id) ---
    # Fernet token of the secret under a key derived from SECRET_KEY (embeds.security): the server must be able to
    # compute HMACs with it, so it can't be a one-way hash; shown once when generated. Empty: verification is off.
    identity_secret_encrypted = models.TextField(blank=True)
    identity_secret_hint = models.CharField(max_length=8, blank=True, help_text="Last characters, for recognition.")
    identity_secret_rotated_at = models.DateTimeField(null=True, blank=True)
    # Accept the legacy user_hash (HMAC of the bare user id, no timestamp: valid forever once leaked). Off for new
    # embeds; set by migration 0002 on embeds that verified identities before timestamps existed.
    identity_legacy_hashes = models.BooleanField(default=False)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    key_rotated_at = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def identity_verification_enabled(self) -> bool:
        return bool(self.identity_secret_encrypted)

    def theme(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in THEME_DEFAULTS}

    def behaviour(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in BEHAVIOUR_DEFAULTS}
