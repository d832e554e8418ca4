"""The API's one pagination: `?limit=&offset=`, with `limit` capped so one request can't ask for a whole table."""
from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination


class ApiPagination(LimitOffsetPagination):
    """LimitOffsetPagination whose `limit` is at most settings.API_PAGE_MAX_LIMIT (a larger one is lowered to it,
    as DRF does with `max_limit`; the response's `next` link carries the capped value)."""

    @property
    def max_limit(self) -> int:  # type: ignore[override]  (read at request time: settings may be overridden)
        return settings.API_PAGE_MAX_LIMIT
