"""Routes of the analytics dashboard (under /analytics/); the API is analytics.api_urls.

Downloads get one literal route each (no path converters): an unknown table or format is simply no route, a 404 in
the project's shape, and the generated role-matrix and isolation tests walk every file there is."""
from django.urls import path

from analytics import views, webhook_views
from analytics.exports import TABLES

dashboard_urlpatterns = [
    path("", views.analytics_index, name="analytics"),
    path("review/", views.analytics_review, name="analytics-review"),
    *(path(f"export/{table}.csv", views.analytics_export, {"table": table}, name="analytics-export")
      for table in TABLES),
    *(path(f"export/transcripts.{fmt}", views.analytics_export_transcripts, {"fmt": fmt},
           name="analytics-export-transcripts") for fmt in ("csv", "jsonl")),
]

# Settings → Webhooks (analytics.webhook_views), under /settings/webhooks/.
webhook_urlpatterns = [
    path("", webhook_views.webhooks_index, name="webhooks"),
    path("<int:webhook_id>/deliveries/<int:delivery_id>/redeliver/", webhook_views.webhook_redeliver,
         name="webhook-redeliver-page"),
]
