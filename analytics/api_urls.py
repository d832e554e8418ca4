"""/api/v1/analytics/... (included from config/urls_tenant.py)."""
from django.urls import path

from analytics import apis, webhook_apis

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

# /api/v1/webhooks/... (analytics.webhook_apis; docs/webhooks.md)
webhook_api_urlpatterns = [
    path("", webhook_apis.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path("<int:webhook_id>/", webhook_apis.WebhookDetailApi.as_view(), name="api-webhook"),
    path("<int:webhook_id>/rotate-secret/", webhook_apis.WebhookRotateSecretApi.as_view(),
         name="api-webhook-rotate-secret"),
    path("<int:webhook_id>/test/", webhook_apis.WebhookTestApi.as_view(), name="api-webhook-test"),
    path("<int:webhook_id>/deliveries/", webhook_apis.WebhookDeliveryListApi.as_view(), name="api-webhook-deliveries"),
    path("<int:webhook_id>/deliveries/<int:delivery_id>/", webhook_apis.WebhookDeliveryDetailApi.as_view(),
         name="api-webhook-delivery"),
    path("<int:webhook_id>/deliveries/<int:delivery_id>/redeliver/", webhook_apis.WebhookRedeliverApi.as_view(),
         name="api-webhook-redeliver"),
]
