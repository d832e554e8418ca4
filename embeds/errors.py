"""Error codes of the widget (rendered by the one error family of config.errors)."""
from __future__ import annotations

from enum import StrEnum


class EmbedErrorCode(StrEnum):
    EMBED_NOT_FOUND = "embed_not_found"  # unknown or rotated public key: the two look the same
    EMBED_INACTIVE = "embed_inactive"
    ORIGIN_REQUIRED = "origin_required"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    ORIGIN_INVALID = "origin_invalid"
    FRAME_ONLY = "frame_only"  # the frame page opened as a top-level page, or a call not made by the frame
    VISITOR_TOKEN_INVALID = "visitor_token_invalid"
    VISITOR_TOKEN_EXPIRED = "visitor_token_expired"
    IDENTITY_INVALID = "identity_invalid"
    IDENTITY_NOT_CONFIGURED = "identity_not_configured"
    IDENTITY_EXPIRED = "identity_expired"  # user_ts older than WIDGET_IDENTITY_MAX_AGE
    IDENTITY_TIMESTAMP_INVALID = "identity_timestamp_invalid"  # not Unix seconds, or ahead of our clock beyond skew
    IDENTITY_TIMESTAMP_REQUIRED = "identity_timestamp_required"  # legacy hash (no user_ts) on an embed refusing it
    LEAD_FORM_OFF = "lead_form_off"  # a lead sent to a widget whose lead form is off (400)
    LEAD_INVALID = "lead_invalid"  # a required field missing, a bad email or phone, a field the form doesn't ask (400)
