"""Routes of the analytics dashboard (under /analytics/); the API is analytics.api_urls.

Downloads get one literal route each (no path converters): an unknown table or format is simply no route, a 404 in
the project's shape, and the generated role-matrix and isolation tests walk every file there is."""
from django.urls import path

from analytics import views
from analytics.exports import TABLES

dashboard_urlpatterns = [
    path("", views.analytics_index, name="analytics"),
    path("review/", views.analytics_review, name="analytics-review"),
    *(path(f"export/{table}.csv", views.analytics_export, {"table": table}, name="analytics-export")
      for table in TABLES),
    *(path(f"export/transcripts.{fmt}", views.analytics_export_transcripts, {"fmt": fmt},
           name="analytics-export-transcripts") for fmt in ("csv", "jsonl")),
]
