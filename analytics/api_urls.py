"""/api/v1/analytics/... (included from config/urls_tenant.py)."""
from django.urls import path

from analytics import apis

api_urlpatterns = [
    path("summary/", apis.SummaryApi.as_view(), name="api-analytics-summary"),
    path("queries-over-time/", apis.QueriesOverTimeApi.as_view(), name="api-analytics-queries-over-time"),
    path("top-queries/", apis.TopQueriesApi.as_view(), name="api-analytics-top-queries"),
    path("unanswered/", apis.UnansweredApi.as_view(), name="api-analytics-unanswered"),
    path("documents/", apis.DocumentsApi.as_view(), name="api-analytics-documents"),
    path("embeds/", apis.EmbedsApi.as_view(), name="api-analytics-embeds"),
    path("quality/", apis.QualityApi.as_view(), name="api-analytics-quality"),
    path("handoffs/", apis.HandoffsApi.as_view(), name="api-analytics-handoffs"),
]
