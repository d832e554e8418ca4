"""A workspace's host: the dashboard, the API, health."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import apis as account_apis
from accounts import views as account_views
from analytics import views as analytics_views
from chat import views as chat_views
from config import health
from documents import views as document_views
from embeds import views as embed_views
from tenants import views as tenant_views


class PublicSchemaView(SpectacularAPIView):
    authentication_classes: list = []
    permission_classes: list = []


class PublicDocsView(SpectacularSwaggerView):
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
]

urlpatterns = [
    path("", tenant_views.dashboard, name="dashboard"),
    path("login/", account_views.workspace_login, name="login"),
    path("logout/", account_views.logout_view, name="logout"),
    path("auth/handoff/", account_views.login_handoff, name="login-handoff"),
    path("switch/<slug:slug>/", account_views.workspace_switch, name="workspace-switch"),
    path("invitations/<str:token>/", account_views.invitation_accept, name="invitation-accept"),
    path("knowledge/", document_views.knowledge_index, name="knowledge"),
    path("conversations/", chat_views.conversations_index, name="conversations"),
    path("widgets/", embed_views.widgets_index, name="widgets"),
    path("analytics/", analytics_views.analytics_index, name="analytics"),
    path("team/", account_views.team, name="team"),
    path("team/<int:membership_id>/", account_views.member_update, name="member-update"),
    path("settings/", tenant_views.workspace_settings, name="settings"),
    path("settings/api-keys/", account_views.api_keys, name="api-keys"),
    path("settings/audit-log/", account_views.audit_log, name="audit-log"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", PublicSchemaView.as_view(), name="api-schema"),
    path("api/docs/", PublicDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]

handler404 = "config.views.not_found"
