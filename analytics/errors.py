"""Error codes of analytics (rendered by the one error family of config.errors)."""
from __future__ import annotations

from enum import StrEnum


class AnalyticsErrorCode(StrEnum):
    INVALID_DATE = "invalid_date"
    INVALID_TIMEZONE = "invalid_timezone"
    INVALID_INTERVAL = "invalid_interval"
    INVALID_RANGE = "invalid_range"  # end before start
    RANGE_TOO_LONG = "range_too_long"  # over 400 days, or over 31 days by the hour
    INVALID_EMBED = "invalid_embed"
    WEBHOOK_DISABLED = "webhook_disabled"  # a redelivery to a switched-off endpoint (docs/webhooks.md)
    TOO_MANY_WEBHOOKS = "too_many_webhooks"  # WEBHOOK_ENDPOINTS_MAX endpoints already (409)
