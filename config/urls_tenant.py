"""A workspace's host: the dashboard, the API, health."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import apis as account_apis
from accounts import views as account_views
from analytics import api_urls as analytics_api_urls
from analytics import urls as analytics_urls
from analytics import views as analytics_views
from chat import urls as chat_urls
from config import health
from documents import urls as document_urls
from documents import views as document_views
from embeds import urls as embed_urls
from embeds import views as embed_views
from tenants import apis as tenant_apis
from tenants import views as tenant_views


class PublicSchemaView(SpectacularAPIView):
    authentication_classes: list = []
    permission_classes: list = []


class PublicDocsView(SpectacularSwaggerSplitView):
    """Swagger UI; its start-up script is a separate response (`?script=`), so no inline script is needed."""

    authentication_classes: list = []
    permission_classes: list = []


api_v1 = [
    path("me/", account_apis.MeApi.as_view(), name="api-me"),
    path("members/", account_apis.MemberListApi.as_view(), name="api-members"),
    path("members/<int:membership_id>/", account_apis.MemberDetailApi.as_view(), name="api-member"),
    path("invitations/", account_apis.InvitationApi.as_view(), name="api-invitations"),
    path("api-keys/", account_apis.ApiKeyListCreateApi.as_view(), name="api-keys-list"),
    path("api-keys/<int:key_id>/revoke/", account_apis.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("audit-log/", account_apis.AuditLogApi.as_view(), name="api-audit-log"),
    path("audit-log/export/", account_apis.AuditLogExportApi.as_view(), name="api-audit-log-export"),
    path("ownership-transfer/", account_apis.OwnershipTransferApi.as_view(), name="api-ownership-transfer"),
    path("usage/", tenant_apis.UsageApi.as_view(), name="api-usage"),
    path("usage/ledger/", tenant_apis.LedgerApi.as_view(), name="api-usage-ledger"),
    path("plans/", tenant_apis.PlanListApi.as_view(), name="api-plans"),
    path("subscription/", tenant_apis.SubscriptionApi.as_view(), name="api-subscription"),
    path("documents/", include(document_urls.api_urlpatterns)),
    path("curated-answers/", include(document_urls.curated_api_urlpatterns)),
    path("sources/", include(document_urls.source_api_urlpatterns)),
    path("conversations/", include(chat_urls.api_urlpatterns)),
    path("leads/", include(chat_urls.lead_api_urlpatterns)),
    path("embeds/", include(embed_urls.api_urlpatterns)),
    path("analytics/", include(analytics_api_urls.api_urlpatterns)),
    path("webhooks/", include(analytics_api_urls.webhook_api_urlpatterns)),
]

urlpatterns = [
    path("", analytics_views.home, name="dashboard"),  # the home reads every app's state: the top floor renders it
    path("login/", account_views.workspace_login, name="login"),
    path("logout/", account_views.logout_view, name="logout"),
    path("auth/handoff/", account_views.login_handoff, name="login-handoff"),
    path("switch/<slug:slug>/", account_views.workspace_switch, name="workspace-switch"),
    path("invitations/<str:token>/", account_views.invitation_accept, name="invitation-accept"),
    path("knowledge/", document_views.knowledge_index, name="knowledge"),
    path("knowledge/", include(document_urls.dashboard_urlpatterns)),
    path("conversations/", include(chat_urls.dashboard_urlpatterns)),
    path("widgets/", embed_views.widgets_index, name="widgets"),
    path("widgets/", include(embed_urls.dashboard_urlpatterns)),
    path("widget/v1/", include(embed_urls.widget_urlpatterns)),
    path("analytics/", include(analytics_urls.dashboard_urlpatterns)),  # the index is named "analytics"
    path("team/", account_views.team, name="team"),
    path("team/<int:membership_id>/", account_views.member_update, name="member-update"),
    path("team/transfer/", account_views.ownership_transfer, name="ownership-transfer"),
    path("team/invitations/<int:invitation_id>/revoke/", account_views.invitation_revoke, name="invitation-revoke"),
    path("settings/", tenant_views.workspace_settings, name="settings"),
    path("settings/api-keys/", account_views.api_keys, name="api-keys"),
    path("settings/audit-log/", account_views.audit_log, name="audit-log"),
    path("settings/audit-log/export/", account_views.audit_log_export, name="audit-log-export"),
    path("settings/retention/", tenant_views.workspace_retention, name="settings-retention"),
    path("settings/export/", account_views.workspace_export_request, name="workspace-export"),
    path("settings/export/<int:export_id>/download/", account_views.workspace_export_download,
         name="workspace-export-download"),
    path("settings/webhooks/", include(analytics_urls.webhook_urlpatterns)),
    path("settings/billing/", tenant_views.billing_overview, name="billing"),
    path("settings/billing/plan/", tenant_views.billing_plan_change, name="billing-plan"),
    path("settings/billing/overage/", tenant_views.billing_overage, name="billing-overage"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", PublicSchemaView.as_view(), name="api-schema"),
    path("api/docs/", PublicDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]

handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
